// CpuSettings cases whose first read of ENGINE_CPU_ISA would otherwise happen inside an OpenMP region:
// group_norm's kernels pick their ISA path per (image, group) inside `omp parallel for`, so without
// check_cpu_settings() at the op's entry an invalid value would be thrown on a worker thread
// (std::terminate, SIGABRT) instead of reaching the caller as engine::Error. Also: the environment is
// validated even when the program has forced a path (set_cpu_isa) before its first op. Each case runs in a
// fresh process (a death test), because the settings are read once.
#include <gtest/gtest.h>
#include <omp.h>

#include <cstdio>
#include <cstdlib>

#include "core/error.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "kernels/cpu/cpu_kernels.h"

namespace {

// In the child: sets name=value (and forces the AVX2 path first when `force`), runs group_norm on
// (4, 8, 16, 16) with 2 threads, and exits 3 with the error's text on stderr if it threw engine::Error,
// 0 if it did not throw.
[[noreturn]] void group_norm_first_with(const char* name, const char* value, bool force) {
  setenv(name, value, 1);
  omp_set_num_threads(2);
  try {
    if (force) kern::cpu::set_cpu_isa(kern::cpu::CpuIsa::Avx2);
    const engine::Tensor x = engine::Tensor::ones({4, 8, 16, 16});
    (void)engine::group_norm(x, 4, engine::Tensor(), engine::Tensor(), 1e-5);
  } catch (const engine::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::fflush(stderr);
    std::_Exit(3);
  }
  std::_Exit(0);
}

class CpuSettingsOmp : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(CpuSettingsOmp, InvalidIsaBeforeGroupNormIsAnError) {
  EXPECT_EXIT(group_norm_first_with("ENGINE_CPU_ISA", "sse9", false), ::testing::ExitedWithCode(3),
              "ENGINE_CPU_ISA='sse9': expected auto, avx512, avx2 or scalar");
}

TEST_F(CpuSettingsOmp, InvalidIsaIsAnErrorEvenUnderAnOverride) {
  EXPECT_EXIT(group_norm_first_with("ENGINE_CPU_ISA", "sse9", true), ::testing::ExitedWithCode(3),
              "ENGINE_CPU_ISA='sse9': expected auto, avx512, avx2 or scalar");
}

// The control: a valid value runs the op to the end.
TEST_F(CpuSettingsOmp, ValidIsaRunsGroupNorm) {
  EXPECT_EXIT(group_norm_first_with("ENGINE_CPU_ISA", "scalar", false), ::testing::ExitedWithCode(0), "");
}

}  // namespace
