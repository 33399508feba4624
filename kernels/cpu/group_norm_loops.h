// Internal: the per-span loops of group_norm.cpp (one channel or one group, no threading), each with its
// ISA dispatch: the AVX-512 version (group_norm_avx512.cpp) when cpu_isa() is Avx512, else the AVX2
// version (the baseline build is x86-64-v3), else (a build without AVX2) the portable code. All three
// give the same bits:
//  * the reductions have one fixed order: element i goes to partial sum i % 8, the 8 partial sums are
//    combined pairwise; tails run through the same code with dead lanes zeroed;
//  * the elementwise double steps (fma, sub, mul, conversions) round lane by lane exactly as the scalar
//    std:: functions do, and the SiLU is silu_span.h's (simd_math.h's sigmoid; on 16 lanes
//    simd_math_avx512.h's, operation for operation the same).
// affine_silu and silu_dv_sums give the bits of the separate loops run one after the other (the unfused
// group_norm + silu). Only the AVX-512 path runs them as one pass of 16 floats; on AVX2 the fused 8-lane
// loop (double affine + float sigmoid + double sums, more live constants than 16 ymm registers) measured
// 15-25% slower than the three separate passes over a channel in L1, so AVX2 runs those.
// Not kernel API.
#pragma once
#include <array>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/group_norm_avx512.h"
#include "kernels/cpu/silu_span.h"
#include "kernels/cpu/simd_math.h"

namespace kern::cpu::gn {
namespace {

// True when the AVX-512 loops run (float only).
inline bool use_avx512() {
#if defined(__x86_64__)
  return cpu_isa() == CpuIsa::Avx512;
#else
  return false;
#endif
}

#ifdef KERN_CPU_AVX2
struct D8 {
  __m256d lo, hi;
};
// Floats p[0 .. min(n, 8)) as doubles; lanes >= n hold 0.
inline D8 load8(const float* p, int64_t n) {
  const __m256 v = n >= 8 ? _mm256_loadu_ps(p) : simd::load_tail(p, n);
  return {_mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))};
}
// Stores the first min(n, 8) lanes of v.
inline void store8(float* p, int64_t n, __m256 v) {
  if (n >= 8)
    _mm256_storeu_ps(p, v);
  else
    simd::store_tail(p, n, v);
}
// Keeps lanes < n of v, zeroes the others.
inline D8 keep(D8 v, int64_t n) {
  const __m256i nn = _mm256_set1_epi64x(n);
  const __m256d mlo = _mm256_castsi256_pd(_mm256_cmpgt_epi64(nn, _mm256_setr_epi64x(0, 1, 2, 3)));
  const __m256d mhi = _mm256_castsi256_pd(_mm256_cmpgt_epi64(nn, _mm256_setr_epi64x(4, 5, 6, 7)));
  return {_mm256_and_pd(v.lo, mlo), _mm256_and_pd(v.hi, mhi)};
}
inline double hsum(D8 a) {
  alignas(32) double l[8];
  _mm256_store_pd(l, a.lo);
  _mm256_store_pd(l + 4, a.hi);
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}
// float(fma(x - mu, a, b)) on 8 lanes: the group-norm value.
inline __m256 affine8(D8 x, __m256d vm, __m256d va, __m256d vb) {
  const __m128 lo = _mm256_cvtpd_ps(_mm256_fmadd_pd(_mm256_sub_pd(x.lo, vm), va, vb));
  const __m128 hi = _mm256_cvtpd_ps(_mm256_fmadd_pd(_mm256_sub_pd(x.hi, vm), va, vb));
  return _mm256_set_m128(hi, lo);
}
#endif

inline double combine8(const double (&a)[8]) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// Square = false: sum_i (x_i - c); Square = true: sum_i (x_i - c)^2, each term as fma(d, d, acc).
template <bool Square, typename T>
double sum_dev(const T* x, int64_t n, double c) {
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>)
    if (use_avx512())
      return Square ? detail::gn_sum_sq_dev_avx512(x, n, c) : detail::gn_sum_shifted_avx512(x, n, c);
#endif
#ifdef KERN_CPU_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256d k = _mm256_set1_pd(c);
    D8 acc{_mm256_setzero_pd(), _mm256_setzero_pd()};
    for (int64_t i = 0; i < n; i += 8) {
      const D8 v = load8(x + i, n - i);
      D8 d{_mm256_sub_pd(v.lo, k), _mm256_sub_pd(v.hi, k)};
      if (n - i < 8) d = keep(d, n - i);
      if constexpr (Square)
        acc = {_mm256_fmadd_pd(d.lo, d.lo, acc.lo), _mm256_fmadd_pd(d.hi, d.hi, acc.hi)};
      else
        acc = {_mm256_add_pd(acc.lo, d.lo), _mm256_add_pd(acc.hi, d.hi)};
    }
    return hsum(acc);
  }
#endif
  double acc[8] = {};
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(x[i]) - c;
    acc[i % 8] = Square ? std::fma(d, d, acc[i % 8]) : acc[i % 8] + d;
  }
  return combine8(acc);
}

// {sum dy_i, sum dy_i * (x_i - K) (as fma), sum (x_i - K)}
template <typename T>
std::array<double, 3> backward_sums(const T* x, const T* dy, int64_t n, double K) {
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>)
    if (use_avx512()) return detail::gn_backward_sums_avx512(x, dy, n, K);
#endif
#ifdef KERN_CPU_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256d k = _mm256_set1_pd(K);
    const __m256d z = _mm256_setzero_pd();
    D8 s0{z, z}, s1{z, z}, s2{z, z};
    for (int64_t i = 0; i < n; i += 8) {
      const D8 v = load8(x + i, n - i), g = load8(dy + i, n - i);  // g: 0 in unused lanes
      D8 d{_mm256_sub_pd(v.lo, k), _mm256_sub_pd(v.hi, k)};
      if (n - i < 8) d = keep(d, n - i);
      s0 = {_mm256_add_pd(s0.lo, g.lo), _mm256_add_pd(s0.hi, g.hi)};
      s1 = {_mm256_fmadd_pd(g.lo, d.lo, s1.lo), _mm256_fmadd_pd(g.hi, d.hi, s1.hi)};
      s2 = {_mm256_add_pd(s2.lo, d.lo), _mm256_add_pd(s2.hi, d.hi)};
    }
    return {hsum(s0), hsum(s1), hsum(s2)};
  }
#endif
  double a[8] = {}, b[8] = {}, c[8] = {};
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(x[i]) - K;
    a[i % 8] += double(dy[i]);
    b[i % 8] = std::fma(double(dy[i]), d, b[i % 8]);
    c[i % 8] += d;
  }
  return {combine8(a), combine8(b), combine8(c)};
}

// Shifted mean of the M elements at xg (M >= 1): exact for a constant group.
template <typename T>
double group_mean(const T* xg, int64_t M) {
  const double K = xg[0];
  return K + sum_dev<false>(xg, M, K) / double(M);
}

// y_i = T(fma(double(x_i) - mu, a, b)) for i < n.
template <typename T>
void affine(const T* x, int64_t n, double mu, double a, double b, T* y) {
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>)
    if (use_avx512()) return detail::gn_affine_avx512(x, n, mu, a, b, y);
#endif
#ifdef KERN_CPU_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256d vm = _mm256_set1_pd(mu), va = _mm256_set1_pd(a), vb = _mm256_set1_pd(b);
    for (int64_t i = 0; i < n; i += 8) store8(y + i, n - i, affine8(load8(x + i, n - i), vm, va, vb));
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<T>(std::fma(double(x[i]) - mu, a, b));
}

// y_i = silu(v_i), v_i = T(fma(double(x_i) - mu, a, b)): affine then silu_span (one pass on AVX-512).
template <typename T>
void affine_silu(const T* x, int64_t n, double mu, double a, double b, T* y) {
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>)
    if (use_avx512()) return detail::gn_affine_silu_avx512(x, n, mu, a, b, y);
#endif
  affine(x, n, mu, a, b, y);
  detail::silu_span(y, y, n);
}

// dv_i = dy_i * silu'(v_i) (v_i as in affine_silu) written to dv, and returns backward_sums(x, dv, n, K):
// the same bits as affine, silu_grad_span and backward_sums one after the other (one pass on AVX-512).
template <typename T>
std::array<double, 3> silu_dv_sums(const T* x, const T* dy, int64_t n, double mu, double a, double b,
                                   double K, T* dv) {
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>)
    if (use_avx512()) return detail::gn_silu_dv_sums_avx512(x, dy, n, mu, a, b, K, dv);
#endif
  affine(x, n, mu, a, b, dv);
  detail::silu_grad_span(dv, dy, dv, n);
  return backward_sums(x, dv, n, K);
}

// dx_i = T(rs * fma(-xhat, m2, fma(gm, double(dy_i), -m1))), xhat = (double(x_i) - mu) * rs.
template <typename T>
void dx_span(const T* x, const T* dy, int64_t n, double mu, double rs, double gm, double m1, double m2,
             T* dx) {
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>)
    if (use_avx512()) return detail::gn_dx_avx512(x, dy, n, mu, rs, gm, m1, m2, dx);
#endif
#ifdef KERN_CPU_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256d vmu = _mm256_set1_pd(mu), vrs = _mm256_set1_pd(rs), vgm = _mm256_set1_pd(gm),
                  vnm1 = _mm256_set1_pd(-m1), vm2 = _mm256_set1_pd(m2);
    for (int64_t i = 0; i < n; i += 8) {
      const D8 xd = load8(x + i, n - i), g = load8(dy + i, n - i);
      auto half = [&](__m256d xv, __m256d gv) {
        const __m256d xhat = _mm256_mul_pd(_mm256_sub_pd(xv, vmu), vrs);
        // fnmadd(a, b, c) = -(a * b) + c, one rounding: exactly std::fma(-xhat, m2, inner).
        return _mm256_cvtpd_ps(
            _mm256_mul_pd(vrs, _mm256_fnmadd_pd(xhat, vm2, _mm256_fmadd_pd(vgm, gv, vnm1))));
      };
      store8(dx + i, n - i, _mm256_set_m128(half(xd.hi, g.hi), half(xd.lo, g.lo)));
    }
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) {
    const double xhat = (double(x[i]) - mu) * rs;
    dx[i] = static_cast<T>(rs * std::fma(-xhat, m2, std::fma(gm, double(dy[i]), -m1)));
  }
}

}  // namespace
}  // namespace kern::cpu::gn
