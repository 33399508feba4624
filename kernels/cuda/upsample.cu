// Nearest-neighbour 2x upsampling, x (NC, H, W) -> y (NC, 2H, 2W), and its backward (each input
// element sums its 2x2 output block, in the same order as the CPU kernel). One thread per element.
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_kernels.h"

namespace kern::cuda {
namespace {

constexpr int kThreads = 256;

// One thread per output element (coalesced writes).
__global__ void upsample2x_forward_kernel(int64_t NC, int64_t H, int64_t W, const float* __restrict__ x,
                                          float* __restrict__ y) {
  const int64_t W2 = 2 * W, H2 = 2 * H, n = NC * H2 * W2;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = i % W2, t = i / W2, oh = t % H2, nc = t / H2;
    y[i] = x[(nc * H + oh / 2) * W + ow / 2];
  }
}

// One thread per input element.
__global__ void upsample2x_backward_kernel(int64_t NC, int64_t H, int64_t W, const float* __restrict__ dy,
                                           float* __restrict__ dx) {
  const int64_t W2 = 2 * W, n = NC * H * W;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t w = i % W, r = i / W;  // r = nc * H + h
    const float* d0 = dy + 2 * r * W2;
    const float* d1 = d0 + W2;
    dx[i] = (d0[2 * w] + d0[2 * w + 1]) + (d1[2 * w] + d1[2 * w + 1]);
  }
}

}  // namespace

void upsample_nearest2x_forward(int64_t NC, int64_t H, int64_t W, const float* x, float* y) {
  const int64_t n = NC * 4 * H * W;
  if (n <= 0) return;
  upsample2x_forward_kernel<<<grid_1d(n, kThreads), kThreads, 0, engine_stream()>>>(NC, H, W, x, y);
  CUDA_CHECK_LAUNCH();
}

void upsample_nearest2x_backward(int64_t NC, int64_t H, int64_t W, const float* dy, float* dx) {
  const int64_t n = NC * H * W;
  if (n <= 0) return;
  upsample2x_backward_kernel<<<grid_1d(n, kThreads), kThreads, 0, engine_stream()>>>(NC, H, W, dy, dx);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kern::cuda
