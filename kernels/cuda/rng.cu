// Counter-based Philox RNG fills: element i is a pure function of (seed, offset + i) through the
// shared header kernels/philox.h, so the CUDA stream is identical to the CPU one.
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/philox.h"

namespace kern::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void philox_uniform_kernel(int64_t n, uint64_t seed, uint64_t offset, float* __restrict__ y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = philox_uniform01(seed, offset + static_cast<uint64_t>(i));
}

__global__ void philox_normal_kernel(int64_t n, uint64_t seed, uint64_t offset, float* __restrict__ y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = philox_normal_f(seed, offset + static_cast<uint64_t>(i));
}

}  // namespace

void philox_uniform(int64_t n, uint64_t seed, uint64_t offset, float* y) {
  if (n <= 0) return;
  philox_uniform_kernel<<<grid_1d(n, kThreads), kThreads, 0, engine_stream()>>>(n, seed, offset, y);
  CUDA_CHECK_LAUNCH();
}

void philox_normal(int64_t n, uint64_t seed, uint64_t offset, float* y) {
  if (n <= 0) return;
  philox_normal_kernel<<<grid_1d(n, kThreads), kThreads, 0, engine_stream()>>>(n, seed, offset, y);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kern::cuda
