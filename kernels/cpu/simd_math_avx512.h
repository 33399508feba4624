// AVX-512 float math shared by the -mavx512f kernel files (softmax_avx512.cpp, attention_small_avx512.cpp):
// exp for non-positive inputs on 16 lanes, operation for operation simd_math.h's 8-lane exp_nonpos (every
// step is exact or correctly rounded lane-wise, so each lane equals the AVX2 version's).
// Linkage: internal (anonymous namespace), as in simd_math.h, so that no AVX-512 copy of a function can be
// picked by the linker for an AVX2 caller. Include it only from files compiled with -mavx512f.
#pragma once
#include <immintrin.h>

namespace kern::cpu::simd {
namespace {

// exp(x0) for x0 <= 0 on 16 lanes: NaN gives NaN, -inf and anything below -87.3 give 0.
inline __m512 exp_nonpos16(__m512 x0) {
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
}  // namespace kern::cpu::simd
