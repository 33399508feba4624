// The CPU settings read from the environment (ENGINE_CPU_ISA, ENGINE_CPU_PRECISION, ENGINE_CPU_CONV): an
// invalid value must reach a library user as an engine::Error from the first op, on the calling thread,
// never thrown inside an OpenMP region (where it would end the process through std::terminate). Each case
// runs in a fresh process (a death test re-executing the binary), because the settings are read once.
#include <gtest/gtest.h>
#include <omp.h>

#include <cstdio>
#include <cstdlib>

#include "core/error.h"
#include "core/ops.h"
#include "core/tensor.h"

namespace {

// In the child: sets name=value, then runs a 32 -> 32 channel 3x3 conv on a 16x16 image with 2 threads
// (Winograd: its transform-domain GEMMs run inside an OpenMP region) and exits 3 with the error's text on
// stderr if it threw engine::Error, 0 if it did not throw.
[[noreturn]] void first_op_with(const char* name, const char* value) {
  setenv(name, value, 1);
  omp_set_num_threads(2);
  try {
    const engine::Tensor x = engine::Tensor::ones({1, 32, 16, 16});
    const engine::Tensor w = engine::Tensor::ones({32, 32, 3, 3});
    (void)engine::conv2d(x, w, engine::Tensor(), engine::Conv2dOptions::same(1, 1));
  } catch (const engine::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::fflush(stderr);
    std::_Exit(3);
  }
  std::_Exit(0);
}

class CpuSettings : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(CpuSettings, InvalidPrecisionIsAnErrorFromTheFirstOp) {
  EXPECT_EXIT(first_op_with("ENGINE_CPU_PRECISION", "bogus"), ::testing::ExitedWithCode(3),
              "ENGINE_CPU_PRECISION='bogus': expected fp32 or bf16");
}

TEST_F(CpuSettings, InvalidIsaIsAnErrorFromTheFirstOp) {
  EXPECT_EXIT(first_op_with("ENGINE_CPU_ISA", "sse9"), ::testing::ExitedWithCode(3),
              "ENGINE_CPU_ISA='sse9': expected auto, avx512, avx2 or scalar");
}

TEST_F(CpuSettings, InvalidConvAlgoIsAnErrorFromTheFirstOp) {
  EXPECT_EXIT(first_op_with("ENGINE_CPU_CONV", "fft"), ::testing::ExitedWithCode(3),
              "ENGINE_CPU_CONV='fft': expected auto, winograd or im2col");
}

// The control: valid settings run the op to the end.
TEST_F(CpuSettings, ValidSettingsRunTheOp) {
  EXPECT_EXIT(first_op_with("ENGINE_CPU_PRECISION", "fp32"), ::testing::ExitedWithCode(0), "");
}

}  // namespace
