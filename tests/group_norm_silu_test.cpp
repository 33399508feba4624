// group_norm_silu (the fused CPU op) against the unfused silu(group_norm(...)) it replaces in the UNet:
//  * values and all three gradients are bitwise the unfused pair's, float32 and float64, on every ISA
//    path this CPU has (the fused kernel runs the same element code: group_norm.cpp's affine and
//    backward loops, silu_span.h's SiLU, the same double statistics);
//  * bitwise invariant to the OpenMP thread count and to the batch around a sample, and (the kernels) to
//    the ISA path, NaN/inf and saturated SiLU included;
//  * argument errors name the op.
// Gradient checks and NaN/inf semantics come from the op table (GradCheck.GroupNormSilu,
// NonFinite.GroupNormSilu).
#include <gtest/gtest.h>
#include <omp.h>

#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "kernels/cpu/cpu_kernels.h"
#include "tests/test_util.h"

namespace {

using namespace engine;
using engine::test::leaf;
using engine::test::supported_isas;
namespace kc = kern::cpu;
using kc::CpuIsa;

// Index of the first element whose bits differ, or -1.
template <typename T>
int64_t first_diff(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return static_cast<int64_t>(i);
  return -1;
}

// first_diff, but a NaN equals any NaN: which NaN (sign, payload) an operation on two NaNs returns depends
// on the operand order the compiler picks, so NaN bits are not part of the ISA-independence contract.
template <typename T>
int64_t first_diff_nan_equal(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (!engine::test::same_bits_nan_equal(a[i], b[i])) return static_cast<int64_t>(i);
  return -1;
}

struct Case {
  Shape shape;
  int64_t groups;
  bool affine;
};
// Channel sizes with SIMD blocks and tails, one element per channel, one channel per group, the
// model's 32 groups; an offset mean (3.0) so that SiLU sees both signs.
const Case kCases[] = {{{2, 8, 10, 15}, 4, true}, {{3, 4, 5}, 4, false},     {{2, 6, 1, 1}, 3, true},
                       {{1, 64, 7, 7}, 32, true}, {{4, 32, 3, 3}, 32, true}, {{2, 6, 13}, 2, false}};

// {y, dx, dgamma, dbeta} of f(x, gamma, beta) with the upstream gradient w (through sum(y * w)).
template <typename T, typename F>
std::vector<std::vector<T>> run(const Case& c, F f, unsigned seed) {
  const int64_t C = c.shape[1];
  int64_t n = 1;
  for (int64_t d : c.shape) n *= d;
  Tensor x = leaf(test::normal_vector<T>(n, seed, 3.0, 2.0), c.shape);
  Tensor g = c.affine ? leaf(test::normal_vector<T>(C, seed + 1, 1.0, 0.5), {C}) : Tensor();
  Tensor b = c.affine ? leaf(test::normal_vector<T>(C, seed + 2, 0.0, 1.0), {C}) : Tensor();
  Tensor w = Tensor::from_vector(test::normal_vector<T>(n, seed + 3, 0.0, 1.0), c.shape);
  Tensor y = f(x, g, b);
  sum(mul(y, w)).backward();
  std::vector<std::vector<T>> out{y.to_vector<T>(), x.grad().to_vector<T>()};
  if (c.affine) {
    out.push_back(g.grad().to_vector<T>());
    out.push_back(b.grad().to_vector<T>());
  }
  return out;
}

template <typename T>
void matches_unfused_bitwise() {
  const char* names[] = {"y", "dx", "dgamma", "dbeta"};
  for (CpuIsa isa : supported_isas()) {
    kc::set_cpu_isa(isa);
    unsigned seed = 10;
    for (const Case& c : kCases) {
      SCOPED_TRACE(::testing::Message() << kc::cpu_isa_name(isa) << " " << shape_str(c.shape) << " G"
                                        << c.groups << (c.affine ? " affine" : ""));
      const auto fused = run<T>(
          c, [&](auto& x, auto& g, auto& b) { return group_norm_silu(x, c.groups, g, b, 1e-5); }, seed);
      const auto unfused = run<T>(
          c, [&](auto& x, auto& g, auto& b) { return silu(group_norm(x, c.groups, g, b, 1e-5)); }, seed);
      ASSERT_EQ(fused.size(), unfused.size());
      for (size_t k = 0; k < fused.size(); ++k) {
        const int64_t i = first_diff(fused[k], unfused[k]);
        EXPECT_EQ(i, -1) << names[k] << "[" << i << "]: fused " << (i >= 0 ? double(fused[k][i]) : 0.0)
                         << " vs unfused " << (i >= 0 ? double(unfused[k][i]) : 0.0);
      }
      seed += 10;
    }
  }
  kc::set_cpu_isa(CpuIsa::Auto);
}

TEST(GroupNormSilu, MatchesUnfusedBitwiseFloat) { matches_unfused_bitwise<float>(); }
TEST(GroupNormSilu, MatchesUnfusedBitwiseDouble) { matches_unfused_bitwise<double>(); }

// A sample's y and dx do not depend on the thread count, on N or on the sample's position (bitwise);
// dgamma/dbeta (sums over the batch) do not depend on the thread count.
TEST(GroupNormSilu, BitwiseInvariantToThreadsAndBatch) {
  const int64_t C = 8, HW = 37, G = 4, N = 5, n0 = 3, S = C * HW;
  auto gamma = test::normal_vector<float>(C, 1, 1.0, 0.3), beta = test::normal_vector<float>(C, 2, 0.0, 1.0);
  auto x = test::normal_vector<float>(N * S, 3, 3.0, 2.0),
       dy = test::normal_vector<float>(N * S, 4, 0.0, 1.0);
  auto run_k = [&](int64_t n, const float* xs, const float* dys, int threads) {
    std::vector<float> y(n * S), dx(n * S), dg(C), db(C);
    std::vector<double> stats(n * G * 2);
    const int old = omp_get_max_threads();
    omp_set_num_threads(threads);
    kc::group_norm_silu_forward<float>(n, C, HW, G, 1e-5, xs, gamma.data(), beta.data(), y.data(),
                                       stats.data());
    kc::group_norm_silu_backward<float>(n, C, HW, G, dys, xs, stats.data(), gamma.data(), beta.data(),
                                        dx.data(), dg.data(), db.data());
    omp_set_num_threads(old);
    return std::vector<std::vector<float>>{y, dx, dg, db};
  };
  for (CpuIsa isa : supported_isas()) {
    kc::set_cpu_isa(isa);
    SCOPED_TRACE(kc::cpu_isa_name(isa));
    const auto t1 = run_k(N, x.data(), dy.data(), 1), t2 = run_k(N, x.data(), dy.data(), 2);
    for (int k = 0; k < 4; ++k)
      EXPECT_EQ(first_diff(t1[k], t2[k]), -1) << "output " << k << ", 1 vs 2 threads";
    const auto one = run_k(1, x.data() + n0 * S, dy.data() + n0 * S, 2);
    for (int k = 0; k < 2; ++k) {
      const std::vector<float> slice(t1[k].begin() + n0 * S, t1[k].begin() + (n0 + 1) * S);
      EXPECT_EQ(first_diff(one[k], slice), -1) << (k ? "dx" : "y") << ", N=1 vs sample 3 of N=5";
    }
  }
  kc::set_cpu_isa(CpuIsa::Auto);
}

// The fused kernels give the same bits on every ISA path this CPU has (the AVX-512 loops run 16 floats per
// step, the AVX2 ones 8): forward, stats and all three gradients, at channel sizes with every kind of
// 16-float tail (HW % 16 = 0, 1, 5, 8, 9, 13, ...), a gamma wide enough that v = gn(x) reaches the
// sigmoid's saturation and the exp clamp (|v| > 87), and groups holding NaN, +inf and -inf (NaN outputs
// must be NaN on every path; which NaN is not compared, see first_diff_nan_equal).
TEST(GroupNormSilu, KernelsBitwiseIndependentOfIsaPath) {
  struct Dims {
    int64_t N, C, HW, G;
  };
  const Dims dims[] = {{2, 8, 150, 4}, {3, 4, 1, 4},    {2, 6, 9, 3},     {2, 4, 13, 2},
                       {2, 4, 24, 2},  {2, 64, 49, 32}, {1, 32, 784, 32}, {2, 6, 37, 3}};
  unsigned seed = 100;
  for (const Dims& d : dims) {
    const int64_t n = d.N * d.C * d.HW;
    auto x = test::normal_vector<float>(n, seed, 3.0, 2.0),
         dy = test::normal_vector<float>(n, seed + 1, 0.0, 1.0);
    auto gamma = test::normal_vector<float>(d.C, seed + 2, 0.0, 40.0),
         beta = test::normal_vector<float>(d.C, seed + 3, 0.0, 5.0);
    gamma[0] = 150.0f, beta[0] = 0.0f;  // channel 0: |v| > 87 wherever |xhat| > 0.6
    seed += 10;
    const int64_t M = d.C / d.G * d.HW;  // elements per group
    if (d.N * d.G >= 4) {  // non-finite inputs in groups 1 (NaN), 2 (+inf), 3 (-inf) of sample 0
      x[1 * M + M / 2] = std::numeric_limits<float>::quiet_NaN();
      x[2 * M] = std::numeric_limits<float>::infinity();
      x[3 * M + M - 1] = -std::numeric_limits<float>::infinity();
    }
    auto run_isa = [&](CpuIsa isa) {
      kc::set_cpu_isa(isa);
      std::vector<float> y(n), dx(n), dg(d.C), db(d.C);
      std::vector<double> stats(2 * d.N * d.G);
      kc::group_norm_silu_forward<float>(d.N, d.C, d.HW, d.G, 1e-5, x.data(), gamma.data(), beta.data(),
                                         y.data(), stats.data());
      kc::group_norm_silu_backward<float>(d.N, d.C, d.HW, d.G, dy.data(), x.data(), stats.data(),
                                          gamma.data(), beta.data(), dx.data(), dg.data(), db.data());
      kc::set_cpu_isa(CpuIsa::Auto);
      return std::make_pair(std::vector<std::vector<float>>{y, dx, dg, db}, stats);
    };
    const auto ref = run_isa(CpuIsa::Scalar);
    // The test must be able to see the saturated and clamped SiLU: some v below -87 and above 87.
    int64_t saturated = 0;
    for (float v : ref.first[0]) saturated += v > 87.0f;
    if (d.HW >= 9) {
      EXPECT_GT(saturated, 0) << "no saturated SiLU output at HW " << d.HW;
    }
    for (CpuIsa isa : supported_isas()) {
      SCOPED_TRACE(::testing::Message()
                   << kc::cpu_isa_name(isa) << " N" << d.N << " C" << d.C << " HW" << d.HW << " G" << d.G);
      const auto got = run_isa(isa);
      const char* names[] = {"y", "dx", "dgamma", "dbeta"};
      for (int k = 0; k < 4; ++k) {
        const int64_t i = first_diff_nan_equal(got.first[k], ref.first[k]);
        EXPECT_EQ(i, -1) << names[k] << "[" << i << "]: " << (i >= 0 ? got.first[k][i] : 0.0f)
                         << " vs scalar path " << (i >= 0 ? ref.first[k][i] : 0.0f);
      }
      EXPECT_EQ(first_diff_nan_equal(got.second, ref.second), -1) << "stats";
    }
  }
}

TEST(GroupNormSilu, BadArgumentsNameTheOp) {
  Tensor x = Tensor::zeros({2, 6, 4});
  EXPECT_NE(
      test::error_message([&] { group_norm_silu(x, 4, Tensor(), Tensor(), 1e-5); }).find("group_norm_silu"),
      std::string::npos);
  EXPECT_NE(test::error_message([&] {
              group_norm_silu(x, 3, Tensor::ones({5}), Tensor::zeros({5}), 1e-5);
            }).find("must be (6,)"),
            std::string::npos);
  EXPECT_NE(test::error_message([&] {
              group_norm_silu(Tensor::zeros({6}), 3, Tensor(), Tensor(), 1e-5);
            }).find("(N, C, *)"),
            std::string::npos);
}

}  // namespace
