// CPU nearest-neighbour 2x upsampling: x (NC, H, W) -> y (NC, 2H, 2W); backward sums each 2x2 block.
#include "kernels/cpu/cpu_kernels.h"

namespace kern::cpu {

template <typename T>
void upsample_nearest2x_forward(int64_t NC, int64_t H, int64_t W, const T* x, T* y) {
  const int64_t W2 = 2 * W;
#pragma omp parallel for schedule(static) if (NC * H * W > 16384)
  for (int64_t r = 0; r < NC * H; ++r) {  // input row r -> output rows 2r, 2r+1
    const T* xr = x + r * W;
    T* y0 = y + 2 * r * W2;
    T* y1 = y0 + W2;
    for (int64_t w = 0; w < W; ++w) y0[2 * w] = y0[2 * w + 1] = xr[w];
    for (int64_t w = 0; w < W2; ++w) y1[w] = y0[w];
  }
}

template <typename T>
void upsample_nearest2x_backward(int64_t NC, int64_t H, int64_t W, const T* dy, T* dx) {
  const int64_t W2 = 2 * W;
#pragma omp parallel for schedule(static) if (NC * H * W > 16384)
  for (int64_t r = 0; r < NC * H; ++r) {
    const T* d0 = dy + 2 * r * W2;
    const T* d1 = d0 + W2;
    T* xr = dx + r * W;
    for (int64_t w = 0; w < W; ++w) xr[w] = (d0[2 * w] + d0[2 * w + 1]) + (d1[2 * w] + d1[2 * w + 1]);
  }
}

KERN_INSTANTIATE_CPU(upsample_nearest2x_forward)
KERN_INSTANTIATE_CPU(upsample_nearest2x_backward)

}  // namespace kern::cpu
