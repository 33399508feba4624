// Helpers shared by the test files: running an app binary of this build and capturing its output, the
// small wrapper config used by the nn/ and models/ tests, autograd leaves, seeded random vectors, bitwise
// comparison, and the CPU ISA paths this machine can run.
#pragma once
#include <gtest/gtest.h>
#include <omp.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "kernels/cpu/conv2d_winograd.h"
#include "kernels/cpu/cpu_kernels.h"
#include "models/unet2d_config.h"

namespace engine::test {

struct RunResult {
  bool exited = false;  // false: killed by a signal
  int code = -1;        // exit status (-1 when killed by a signal)
  std::string out;      // stdout + stderr
};

// Runs a shell command and captures stdout + stderr. Children get OMP_WAIT_POLICY=passive so a loaded
// test machine does not make OpenMP's spin-waiting threads crawl; it does not change results.
inline RunResult run(const std::string& cmd) {
  RunResult r;
  std::FILE* p = ::popen(("export OMP_WAIT_POLICY=passive; " + cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.exited = WIFEXITED(st);
  r.code = r.exited ? WEXITSTATUS(st) : -1;
  return r;
}

// Path of an app binary of this build (ENGINE_BIN_DIR, set by tests/CMakeLists.txt).
inline std::string bin(const std::string& name) {
  return (std::filesystem::path(ENGINE_BIN_DIR) / name).string();
}

// A small wrapper config with every block kind (the "tiny" fixture's architecture): channels 8/16/16.
inline models::ConditionalConfig tiny_config() {
  models::ConditionalConfig c;
  c.unet.block_out_channels = {8, 16, 16};
  c.unet.norm_num_groups = 4;
  c.unet.sample_size = 16;
  return c;
}

// A CPU tensor of shape s holding v, with requires_grad set (a leaf of the autograd graph).
template <typename T>
Tensor leaf(const std::vector<T>& v, const Shape& s) {
  Tensor t = Tensor::from_vector(v, s);
  t.set_requires_grad(true);
  return t;
}

// The message of the engine::Error that f() throws, or "no error" when it returns.
template <typename F>
std::string error_message(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// n values normal(mean, sd) from mt19937(seed), drawn as double and rounded to T.
template <typename T>
std::vector<T> normal_vector(size_t n, unsigned seed, double mean, double sd) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> d(mean, sd);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(d(gen));
  return v;
}

// n values uniform in [lo, hi) from mt19937(seed), drawn as double and rounded to T.
template <typename T = float>
std::vector<T> random_vector(size_t n, unsigned seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> d(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(d(gen));
  return v;
}

// True when a and b have the same size and the same bytes (NaN payloads and signed zeros included).
template <typename T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  // Empty vectors may hold null data(), which memcmp must not get even for 0 bytes.
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// Every CPU ISA path this machine supports (for kern::cpu::set_cpu_isa), scalar first.
inline std::vector<kern::cpu::CpuIsa> supported_isas() {
  using kern::cpu::CpuIsa;
  std::vector<CpuIsa> v;
  for (CpuIsa i : {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512})
    if (static_cast<int>(i) <= static_cast<int>(kern::cpu::cpu_isa_supported())) v.push_back(i);
  return v;
}

// Restores the run-time ISA choice (ENGINE_CPU_ISA / cpuid) at scope exit, after set_cpu_isa calls.
struct IsaGuard {
  ~IsaGuard() { kern::cpu::set_cpu_isa(kern::cpu::CpuIsa::Auto); }
};

// Sets the CPU matmul precision (kern::cpu::set_matmul_precision) for a scope and restores the previous
// setting at its end. active(): the requested precision is the one that runs (bf16 needs AVX512_BF16 and the
// avx512 ISA path; elsewhere bf16 runs fp32): a bf16 test skips when it is false.
class MatmulPrecisionScope {
 public:
  explicit MatmulPrecisionScope(kern::cpu::MatmulPrecision p) : want_(p) {
    kern::cpu::set_matmul_precision(p);
  }
  ~MatmulPrecisionScope() { kern::cpu::set_matmul_precision(old_); }
  MatmulPrecisionScope(const MatmulPrecisionScope&) = delete;
  MatmulPrecisionScope& operator=(const MatmulPrecisionScope&) = delete;
  bool active() const { return kern::cpu::matmul_precision_active() == want_; }

 private:
  kern::cpu::MatmulPrecision old_ = kern::cpu::matmul_precision(), want_;
};

// A test fixture that restores the run-time ISA choice, the CPU conv algorithm setting (ENGINE_CPU_CONV)
// and the OpenMP thread count after each test, whatever the test set.
class CpuSettingsRestored : public ::testing::Test {
 protected:
  void SetUp() override { threads_ = omp_get_max_threads(); }
  void TearDown() override {
    kern::cpu::set_cpu_isa(kern::cpu::CpuIsa::Auto);
    kern::cpu::set_cpu_conv_algo(kern::cpu::CpuConvAlgo::Auto);
    omp_set_num_threads(threads_);
  }
  int threads_ = 1;
};

// The shape of a 3x3, stride-1, pad-1 convolution (the Winograd domain): x (N, C, H, W) -> y (N, K, H, W).
inline kern::Conv2dShape shape3x3(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K) {
  return kern::Conv2dShape{N, C, H, W, K, 3, 3, 1, 1, 1, 1, H, W};
}

// Runs f with the OpenMP thread count set to n, restoring it afterwards.
template <typename F>
void with_threads(int n, F&& f) {
  const int old = omp_get_max_threads();
  omp_set_num_threads(n);
  f();
  omp_set_num_threads(old);
}

// Bitwise equal, except that any NaN equals any NaN: which NaN operand an x86 instruction passes on (and
// so the sign and payload of a NaN result) depends on the operand order the compiler picks, which differs
// between the optimised and the -O0 (sanitizer) builds. NaN positions must still match.
template <typename T>
bool same_bits_nan_equal(T a, T b) {
  if (a != a || b != b) return a != a && b != b;
  return std::memcmp(&a, &b, sizeof a) == 0;
}

}  // namespace engine::test
