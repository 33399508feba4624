// Shared by the CUDA tests: skip with a reason when no GPU can run them.
#pragma once
#include <gtest/gtest.h>

#include "runtime/cuda_device.h"

#define SKIP_WITHOUT_CUDA()                                                                        \
  do {                                                                                             \
    if (!::engine::cuda::built_with_cuda())                                                        \
      GTEST_SKIP() << "CUDA test skipped: this build has no CUDA backend (built without CUDA)";    \
    if (::engine::cuda::device_count() == 0)                                                       \
      GTEST_SKIP() << "CUDA test skipped: no CUDA device present (CUDA driver/GPU not available)"; \
  } while (0)
