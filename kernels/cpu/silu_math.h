// SiLU math of the CPU kernels (silu_span.h, the fused group_norm_silu loops): silu(v) = v / (1 + e^-v) and
// sigmoid(v) = 1 / (1 + e^-v), with e^x from exp_wide below, on 8 lanes (AVX2), 16 lanes (AVX-512, in
// -mavx512f TUs only) and one lane (portable code). The three versions run the same IEEE operations in
// the same order (each exact or correctly rounded lane by lane; the portable one with explicit std::fma),
// so a lane's result is bitwise the same on every path.
// exp_wide(x), for any x (the Cephes polynomial of simd_math.h, ~1 ulp, with a wider range):
//   x < -87.3: exp(-87.3) ~ 1.2e-38 (so 1 + e = 1 exactly); x >= 88.38: +inf (true overflow is at 88.72);
//   NaN stays NaN. Round-to-nearest by the 1.5 * 2^23 shift, 2^n from the shifted value's bits.
// Hence silu(v) = v exactly for v > 87.3, -0 for v <= -88.38 (|true value| < 3e-37), silu(-inf) = NaN
// and silu(+inf) = +inf as in PyTorch, whose CPU SiLU is the same v / (1 + exp(-v)).
// Cost per vector: 19 operations and a division for silu, against 23 and a division for the sign-split
// v * sigmoid(v) of simd_math.h that it replaces here.
// Contraction: the one a * b + c the compiler could fuse in the portable code, 1 + y * 2^n, gives the same
// bits fused or not (y * 2^n is exact, or 0/inf/NaN-preserving at the range ends).
// Internal linkage (anonymous namespace) for the reason given in simd_math.h. Not kernel API.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/simd_math.h"

namespace kern::cpu::silu_math {
namespace {

constexpr float kLo = -87.3f, kHi = 89.0f;                  // input clamp of exp_wide
constexpr float kLog2e = 1.44269504088896341f;              // round(x * log2(e)) gives n
constexpr float kShift = 12582912.0f;                       // 1.5 * 2^23: fma(x, log2e, kShift) rounds to n
constexpr int32_t kBiasFix = 127 - 0x4B400000;              // bits(kShift + n) + kBiasFix = n + 127
constexpr float kC1 = 0.693359375f, kC2 = -2.12194440e-4f;  // ln 2 = kC1 + kC2 (Cody-Waite)
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f,
                kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;

// ---- one lane (portable code; the reference the vector versions follow operation for operation) ----

inline float exp_wide1(float x0) {
  float x = kLo > x0 ? kLo : x0;  // _mm*_max_ps(lo, x): x when x is NaN
  x = kHi < x ? kHi : x;          // _mm*_min_ps(hi, x): x when x is NaN
  const float t = std::fma(x, kLog2e, kShift);
  const float fx = t - kShift;  // n, exact
  x = std::fma(-fx, kC1, x);
  x = std::fma(-fx, kC2, x);
  float y = kP0;
  y = std::fma(y, x, kP1);
  y = std::fma(y, x, kP2);
  y = std::fma(y, x, kP3);
  y = std::fma(y, x, kP4);
  y = std::fma(y, x, kP5);
  const float xx = x * x, x1 = x + 1.0f;
  y = std::fma(y, xx, x1);
  int32_t tb;
  std::memcpy(&tb, &t, 4);
  const uint32_t eb = uint32_t(tb + kBiasFix) << 23;  // 2^n; n = 128 gives +inf
  float scale;
  std::memcpy(&scale, &eb, 4);
  return y * scale;
}
inline float neg1(float v) { return -v; }
// v / (1 + exp(-v))
inline float silu1(float v) {
  const float e = exp_wide1(neg1(v));
  const float den = 1.0f + e;
  return v / den;
}
// dy * (s * (1 + v * (1 - s))), s = 1 / (1 + exp(-v))
inline float silu_grad1(float v, float dy) {
  const float e = exp_wide1(neg1(v));
  const float den = 1.0f + e;
  const float s = 1.0f / den;
  const float oms = 1.0f - s;
  const float inner = std::fma(v, oms, 1.0f);
  const float sg = s * inner;
  return dy * sg;
}

#ifdef KERN_CPU_AVX2
// ---- 8 lanes (AVX2 + FMA) ----

inline __m256 exp_wide8(__m256 x0) {
  __m256 x = _mm256_max_ps(_mm256_set1_ps(kLo), x0);
  x = _mm256_min_ps(_mm256_set1_ps(kHi), x);
  const __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(kLog2e), _mm256_set1_ps(kShift));
  const __m256 fx = _mm256_sub_ps(t, _mm256_set1_ps(kShift));
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(kC1), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(kC2), x);
  __m256 y = _mm256_set1_ps(kP0);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(kP1));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(kP2));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(kP3));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(kP4));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(kP5));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(kBiasFix)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}
inline __m256 neg8(__m256 v) { return _mm256_xor_ps(v, _mm256_set1_ps(-0.0f)); }
inline __m256 silu8(__m256 v) {
  return _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), exp_wide8(neg8(v))));
}
inline __m256 silu_grad8(__m256 v, __m256 dy) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, exp_wide8(neg8(v))));
  return _mm256_mul_ps(dy, _mm256_mul_ps(s, _mm256_fmadd_ps(v, _mm256_sub_ps(one, s), one)));
}
#endif

#if defined(__AVX512F__)
// ---- 16 lanes (AVX-512F; only in TUs compiled with -mavx512f, called after a cpu_isa() check) ----

inline __m512 exp_wide16(__m512 x0) {
  __m512 x = _mm512_max_ps(_mm512_set1_ps(kLo), x0);
  x = _mm512_min_ps(_mm512_set1_ps(kHi), x);
  const __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(kLog2e), _mm512_set1_ps(kShift));
  const __m512 fx = _mm512_sub_ps(t, _mm512_set1_ps(kShift));
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(kC1), x);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(kC2), x);
  __m512 y = _mm512_set1_ps(kP0);
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(kP1));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(kP2));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(kP3));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(kP4));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(kP5));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
  const __m512i e =
      _mm512_slli_epi32(_mm512_add_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(kBiasFix)), 23);
  return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}
// -v (an integer XOR of the sign bit: _mm512_xor_ps needs AVX512DQ).
inline __m512 neg16(__m512 v) {
  return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), _mm512_set1_epi32(int(0x80000000u))));
}
inline __m512 silu16(__m512 v) {
  return _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), exp_wide16(neg16(v))));
}
inline __m512 silu_grad16(__m512 v, __m512 dy) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, exp_wide16(neg16(v))));
  return _mm512_mul_ps(dy, _mm512_mul_ps(s, _mm512_fmadd_ps(v, _mm512_sub_ps(one, s), one)));
}
#endif

}  // namespace
}  // namespace kern::cpu::silu_math
