// AVX-512 softmax row kernel (see softmax_avx512.h). This file alone is compiled with -mavx512f; the
// caller checks cpu_isa() at run time, so the binary still runs on AVX2-only CPUs.
#include "kernels/cpu/softmax_avx512.h"

// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as the unused merge source, which
// -Wmaybe-uninitialized reports at every inlined call: a known false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "kernels/cpu/simd_math.h"
#include "kernels/cpu/simd_math_avx512.h"

namespace kern::cpu::detail {

double exp_sub_row_f32_avx512(float* row, int64_t n, float sub) {
  const __m512 vs = _mm512_set1_ps(sub);
  __m256 acc = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512 e = simd::exp_nonpos16(_mm512_sub_ps(_mm512_loadu_ps(row + j), vs));
    _mm512_storeu_ps(row + j, e);
    acc = _mm256_add_ps(acc, _mm512_castps512_ps256(e));
    acc = _mm256_add_ps(acc, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1)));
  }
  // The rest (< 16) exactly as the AVX2 row: a full block of 8, then a masked tail.
  return simd::sum_lanes_f64(simd::exp_sub_tail_avx2(row, j, n, sub, acc));
}

}  // namespace kern::cpu::detail
