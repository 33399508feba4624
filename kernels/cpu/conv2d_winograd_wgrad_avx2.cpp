// The AVX2 (8 lanes) dy transform, tile-major transforms and 8-row transpose of the Winograd weight gradient
// (conv2d_winograd_wgrad.h). This file alone is compiled with -mavx2 -ffp-contract=off;
// conv2d_winograd_wgrad.cpp calls it only when cpu_isa() allows.
#include "kernels/cpu/conv2d_winograd_wgrad.h"
#include "kernels/cpu/conv2d_winograd_wgrad_simd_impl.h"
#include "kernels/cpu/conv2d_winograd_wgrad_tm_impl.h"
#include "kernels/cpu/transpose8x8_avx2.h"

namespace kern::cpu::detail {

void winograd_dy_avx2(const Conv2dShape& s, const float* dy, int64_t t0, int64_t nt, float* D, int64_t ld) {
  dy_tiles<8>(s, dy, t0, nt, D, ld);
}

void winograd_input_tm_avx2(const Conv2dShape& s, const float* x, int64_t c0, int64_t c1, int64_t t0,
                            int64_t nt, float* out, int64_t xs, int64_t ldo, float* buf) {
  tm_transform<8, false>(s, x, c0, c1, t0, nt, out, xs, ldo, buf);
}

void winograd_dy_tm_avx2(const Conv2dShape& s, const float* dy, int64_t c0, int64_t c1, int64_t t0,
                         int64_t nt, float* out, int64_t xs, int64_t ldo, float* buf) {
  tm_transform<8, true>(s, dy, c0, c1, t0, nt, out, xs, ldo, buf);
}

void transpose8_avx2(const float* src, int64_t lds, int64_t n, float* dst, int64_t ldd) {
  for (int64_t j0 = 0; j0 < n; j0 += 8) {
    __m256 r[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds + j0);
    transpose8x8(r);  // column j0 + j in r[j]
    const int64_t m = n - j0 < 8 ? n - j0 : 8;
    for (int64_t j = 0; j < m; ++j) _mm256_storeu_ps(dst + (j0 + j) * ldd, r[j]);
  }
}

}  // namespace kern::cpu::detail
