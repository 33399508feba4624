// The AVX2 (8 lanes) dy transform of the Winograd weight gradient (conv2d_winograd_wgrad.h). This file alone
// is compiled with -mavx2 -ffp-contract=off; conv2d_winograd_wgrad.cpp calls it only when cpu_isa() allows.
#include "kernels/cpu/conv2d_winograd_wgrad.h"
#include "kernels/cpu/conv2d_winograd_wgrad_simd_impl.h"

namespace kern::cpu::detail {

void winograd_dy_avx2(const Conv2dShape& s, const float* dy, int64_t t0, int64_t nt, float* D, int64_t ld) {
  dy_tiles<8>(s, dy, t0, nt, D, ld);
}

}  // namespace kern::cpu::detail
