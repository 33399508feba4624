// AVX2 float math shared by the CPU kernels (exp and exp2 for non-positive inputs, masked tail
// loads). Compiled only when the target has AVX2+FMA (the Release build uses -march=x86-64-v3);
// callers keep a scalar path for other targets and for double.
//
// Non-finite values propagate as in PyTorch: exp_nonpos(NaN) = NaN, exp_nonpos(-inf) = 0.
// Lane independence: every function is lane-wise, so a kernel that runs its tail through the same
// vector code (load_tail/store_tail) gives bitwise the same value for an element whatever its
// position in the array.
// Linkage: everything here is in an anonymous namespace (internal linkage). The header is included by
// AVX2 TUs and by -mavx512f TUs (softmax_avx512.cpp, ...); with external linkage an out-of-line copy of
// an inline function would be a weak symbol, and the linker could keep the AVX-512 copy for the AVX2
// callers too, which would then fault on an AVX2-only CPU.
#pragma once
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#include <cstdint>
#define KERN_CPU_AVX2 1

namespace kern::cpu::simd {
namespace {

// Lane mask with the first n (0..8) lanes set, for _mm256_maskload_ps/_mm256_maskstore_ps.
inline __m256i tail_mask(int64_t n) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), lane);
}
// Loads the first n (< 8) floats of p; the other lanes are `fill` (never read from memory).
inline __m256 load_tail(const float* p, int64_t n, float fill = 0.0f) {
  const __m256i m = tail_mask(n);
  return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}
// Stores the first n (< 8) lanes of v to p.
inline void store_tail(float* p, int64_t n, __m256 v) { _mm256_maskstore_ps(p, tail_mask(n), v); }

// Cephes-style expf for x <= 0 (relative error ~1e-7). Below ln(FLT_MIN) = -87.33 the result is
// flushed to 0 (so exp(-inf) = 0); NaN gives NaN (the clamp keeps NaN: max_ps returns its second
// operand when either is NaN).
inline __m256 exp_nonpos(__m256 x0) {
  const __m256 lo = _mm256_set1_ps(-87.3f);
  __m256 x = _mm256_max_ps(lo, x0);
  const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  // Underflow to 0 (ordered compare: false for NaN, which stays NaN through the polynomial).
  return _mm256_andnot_ps(_mm256_cmp_ps(x0, lo, _CMP_LT_OQ), y);
}

// 2^t for t <= 0 (the attention softmax, whose scores are pre-scaled by log2(e)): n = round(t), f = t - n
// (exact, |f| <= 1/2), 2^f by a degree-5 polynomial (fitted for minimax relative error on [-1/2, 1/2]),
// times 2^n from the exponent bits. Max relative error 1.72e-7 (2.9 u) over -126 <= t <= 0 (measured on every
// float there against exp2 in double: bench/RESULTS.md 2026-12-01; test AttentionSmall.Exp2*). Below -126
// the result is 0 (so 2^-inf = 0); NaN gives NaN (the clamp keeps NaN); 2^0 = 1 exactly. Cheaper than
// exp_nonpos: no multiply by log2(e), no two-step ln 2 reduction, two fewer polynomial terms.
inline __m256 exp2_nonpos(__m256 t0) {
  const __m256 lo = _mm256_set1_ps(-126.0f);
  const __m256 t = _mm256_max_ps(lo, t0);
  const __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(t, n);
  __m256 y = _mm256_set1_ps(1.32647273e-3f);
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(9.67151299e-3f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(5.55073358e-2f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(2.40222424e-1f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(6.93147004e-1f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  return _mm256_andnot_ps(_mm256_cmp_ps(t0, lo, _CMP_LT_OQ), y);  // false for NaN
}

// For j <= i < n: row[i] = exp(row[i] - sub) (row[i] <= sub expected, NaN propagates); returns acc plus
// the values, summed lane-wise: whole blocks of 8 from j, then the rest (< 8) as one masked block whose
// dead lanes add +0. The softmax rows of attention.cpp (AVX2) and softmax_avx512.cpp (its tail after the
// 16-lane blocks) share it, so their bits agree by construction.
inline __m256 exp_sub_tail_avx2(float* row, int64_t j, int64_t n, float sub, __m256 acc) {
  const __m256 vs = _mm256_set1_ps(sub);
  for (; j + 8 <= n; j += 8) {
    const __m256 e = exp_nonpos(_mm256_sub_ps(_mm256_loadu_ps(row + j), vs));
    _mm256_storeu_ps(row + j, e);
    acc = _mm256_add_ps(acc, e);
  }
  if (j < n) {
    const __m256 live = _mm256_castsi256_ps(tail_mask(n - j));
    const __m256 e = _mm256_and_ps(live, exp_nonpos(_mm256_sub_ps(load_tail(row + j, n - j), vs)));
    store_tail(row + j, n - j, e);
    acc = _mm256_add_ps(acc, e);
  }
  return acc;
}

// The 8 lanes of v summed in double, lane 0 first.
inline double sum_lanes_f64(__m256 v) {
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, v);
  double sum = 0;
  for (float l : lanes) sum += l;
  return sum;
}

}  // namespace
}  // namespace kern::cpu::simd
#endif
