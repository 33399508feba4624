// AVX-512 softmax row kernel (see softmax_avx512.h). This file alone is compiled with -mavx512f; the
// caller checks cpu_isa() at run time, so the binary still runs on AVX2-only CPUs.
#include "kernels/cpu/softmax_avx512.h"

// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as the unused merge source, which
// -Wmaybe-uninitialized reports at every inlined call: a known false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "kernels/cpu/simd_math.h"

namespace kern::cpu::detail {
namespace {

// simd::exp_nonpos on 16 lanes, operation for operation (every step is exact or correctly rounded
// lane-wise, so each lane equals the 8-lane version's).
__m512 exp_nonpos16(__m512 x0) {
  const __m512 lo = _mm512_set1_ps(-87.3f);
  __m512 x = _mm512_max_ps(lo, x0);  // NaN x0: x0 (the second operand), as _mm256_max_ps
  const __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
  __m512 y = _mm512_set1_ps(1.9875691500e-4f);
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507e-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073e-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894e-2f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459e-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201e-1f));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(fx), _mm512_set1_epi32(127)), 23);
  y = _mm512_mul_ps(y, _mm512_castsi512_ps(e));
  const __mmask16 under = _mm512_cmp_ps_mask(x0, lo, _CMP_LT_OQ);  // false for NaN
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~under), y);
}

}  // namespace

double exp_sub_row_f32_avx512(float* row, int64_t n, float sub) {
  const __m512 vs = _mm512_set1_ps(sub);
  __m256 acc = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512 e = exp_nonpos16(_mm512_sub_ps(_mm512_loadu_ps(row + j), vs));
    _mm512_storeu_ps(row + j, e);
    acc = _mm256_add_ps(acc, _mm512_castps512_ps256(e));
    acc = _mm256_add_ps(acc, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1)));
  }
  // The rest (< 16) exactly as the AVX2 row: a full block of 8, then a masked tail.
  return simd::sum_lanes_f64(simd::exp_sub_tail_avx2(row, j, n, sub, acc));
}

}  // namespace kern::cpu::detail
