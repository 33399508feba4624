// The AVX2 (8 lanes) dy transform and 8-row transpose of the Winograd weight gradient
// (conv2d_winograd_wgrad.h). This file alone is compiled with -mavx2 -ffp-contract=off;
// conv2d_winograd_wgrad.cpp calls it only when cpu_isa() allows.
#include "kernels/cpu/conv2d_winograd_wgrad.h"
#include "kernels/cpu/conv2d_winograd_wgrad_simd_impl.h"

namespace kern::cpu::detail {

void winograd_dy_avx2(const Conv2dShape& s, const float* dy, int64_t t0, int64_t nt, float* D, int64_t ld) {
  dy_tiles<8>(s, dy, t0, nt, D, ld);
}

void transpose8_avx2(const float* src, int64_t lds, int64_t n, float* dst, int64_t ldd) {
  for (int64_t j0 = 0; j0 < n; j0 += 8) {
    __m256 r[8], t[8], u[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds + j0);
    for (int i = 0; i < 8; i += 2) {
      t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int h = 0; h < 8; h += 4) {
      u[h + 0] = _mm256_shuffle_ps(t[h + 0], t[h + 2], _MM_SHUFFLE(1, 0, 1, 0));
      u[h + 1] = _mm256_shuffle_ps(t[h + 0], t[h + 2], _MM_SHUFFLE(3, 2, 3, 2));
      u[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(1, 0, 1, 0));
      u[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; ++i) {  // column j0 + i in r[i], column j0 + 4 + i in r[4 + i]
      r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
      r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
    const int64_t m = n - j0 < 8 ? n - j0 : 8;
    for (int64_t j = 0; j < m; ++j) _mm256_storeu_ps(dst + (j0 + j) * ldd, r[j]);
  }
}

}  // namespace kern::cpu::detail
