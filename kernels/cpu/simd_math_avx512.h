// AVX-512 (16-lane) versions of simd_math.h's float exp and exp2, for TUs compiled with -mavx512f
// whose caller checks cpu_isa() at run time (softmax_avx512.cpp, attention_small_avx512.cpp). exp_nonpos16
// is its 8-lane simd_math.h counterpart operation for operation, exp2_nonpos16 the same values by a shorter
// sequence (see there); every step is exact or correctly rounded lane-wise, so each lane's result is
// bitwise the AVX2 version's (and NaN/inf behave the same). Internal
// linkage for the reason given in simd_math.h (an out-of-line AVX-512 copy must never be linked into AVX2
// callers).
#pragma once
#if defined(__AVX512F__)
#include <immintrin.h>

namespace kern::cpu::simd {
namespace {

// simd::exp_nonpos on 16 lanes (x <= 0; below -87.3 the result is 0; NaN stays NaN).
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

// simd::exp2_nonpos on 16 lanes, bitwise (t <= 0; below -126 the result is 0; NaN stays NaN) in 9 instead
// of 13 instructions: the same n = round(t), f = t - n and polynomial y for -126 <= t <= 0 (there the clamp
// max(-126, t) is the identity, and below -126 both return the masked 0, so it is dropped); then y * 2^n
// by one vscalefps (the product rounded once: the bits of exp2_nonpos's multiplication by the exact,
// normal 2^n for -126 <= n <= 0; results are >= 2^-126, never subnormal) with the underflow mask folded in.
// Also the same bits for 0 < t < 127.5 (n <= 127); NaN in gives NaN out (payload aside), as exp2_nonpos.
inline __m512 exp2_nonpos16(__m512 t0) {
  const __m512 n = _mm512_roundscale_ps(t0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t0, n);
  __m512 y = _mm512_set1_ps(1.32647273e-3f);
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(9.67151299e-3f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(5.55073358e-2f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(2.40222424e-1f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(6.93147004e-1f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.0f));
  const __mmask16 under = _mm512_cmp_ps_mask(t0, _mm512_set1_ps(-126.0f), _CMP_LT_OQ);  // false for NaN
  return _mm512_maskz_scalef_ps(static_cast<__mmask16>(~under), y, n);
}

}  // namespace
}  // namespace kern::cpu::simd
#endif
