// The AVX2 (8 channels per vector) tile-major transforms of the Winograd weight gradient
// (conv2d_winograd_wgrad.h). This file alone is compiled with -mavx2 -ffp-contract=off;
// conv2d_winograd_wgrad.cpp calls it only when cpu_isa() allows.
#include "kernels/cpu/conv2d_winograd_wgrad.h"
#include "kernels/cpu/conv2d_winograd_wgrad_tm_impl.h"

namespace kern::cpu::detail {

void winograd_input_tm_avx2(const Conv2dShape& s, const float* x, int64_t c0, int64_t c1, int64_t t0,
                            int64_t nt, float* out, int64_t xs, int64_t ldo, float* buf) {
  tm_transform<8, false>(s, x, c0, c1, t0, nt, out, xs, ldo, buf);
}

void winograd_dy_tm_avx2(const Conv2dShape& s, const float* dy, int64_t c0, int64_t c1, int64_t t0,
                         int64_t nt, float* out, int64_t xs, int64_t ldo, float* buf) {
  tm_transform<8, true>(s, dy, c0, c1, t0, nt, out, xs, ldo, buf);
}

}  // namespace kern::cpu::detail
