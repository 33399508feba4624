// Internal: the per-span loops of group_norm.cpp (one channel or one group, no threading), each with its
// ISA dispatch: the AVX-512 version (group_norm_avx512.cpp) when cpu_isa() is Avx512, the portable code
// when it is Scalar (ENGINE_CPU_ISA=scalar) or the build has no AVX2, else the AVX2 version (the baseline
// build is x86-64-v3). All three give the same bits:
//  * the reductions have one fixed order: element i goes to partial sum i % 16 (the float statistics,
//    shifted_sums) or i % 8 (the rest), the partial sums are combined as documented at each function;
//    tails run through the same code with dead lanes zeroed;
//  * the elementwise steps (fma, sub, mul, div, conversions) round lane by lane exactly as the scalar
//    std:: functions do, and the SiLU is silu_math.h's (the same operations on 16, 8 or 1 lanes).
// Float group statistics: one pass for sum(x - K) and sum((x - K)^2), K = the group's first element
// (double differences), then var = (S2 - S1^2 / M) / M. As K is an element of the group,
// (K - mean)^2 <= M var, so the cancellation costs at most a factor M + 1 of double precision (var stays
// within ~2^-34 for the model's groups, M <= 2352); where it would cost more than 2^10 (var < S2 / (1024 M):
// K an outlier beyond 32 sigma), the variance is summed again around the mean (two-pass). Double: always two
// passes. Float affine: v = fmaf((x - mh) - ml, a, b), mh + ml = the double mean (mh = float(mean)), a =
// float(rstd * gamma), b = float(beta): float-rounding accurate (a few ulp of |x - mean| * a + |b|) for
// |x - mean| < FLT_MAX / 2; in double the formulation is fma(x - mean, a, b) rounded once.
// affine_silu (one pass over a channel) and silu_dv_sums give the bits of the separate loops run one
// after the other (the unfused group_norm + silu).
// Not kernel API.
#pragma once
#include <array>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/group_norm_avx512.h"
#include "kernels/cpu/silu_math.h"
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

// False under ENGINE_CPU_ISA=scalar: the portable loops run (in every build; the same bits).
inline bool use_simd() { return cpu_isa() != CpuIsa::Scalar; }

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
// Floats p[0 .. min(n, 8)); lanes >= n hold 0. (Float lanes, for the float affine.)
inline __m256 loadf8(const float* p, int64_t n) {
  return n >= 8 ? _mm256_loadu_ps(p) : simd::load_tail(p, n);
}
#endif

inline double combine8(const double (&a)[8]) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// The float affine's constants (see the header comment): v = fmaf((x - mh) - ml, a, b).
struct AffineF {
  float mh, ml, a, b;
};
inline AffineF affine_consts(double mu, double a, double b) {
  const float mh = static_cast<float>(mu);
  return {mh, static_cast<float>(mu - double(mh)), static_cast<float>(a), static_cast<float>(b)};
}
inline float affine1(float x, const AffineF& k) { return std::fma((x - k.mh) - k.ml, k.a, k.b); }
#ifdef KERN_CPU_AVX2
struct AffineF8 {
  __m256 mh, ml, a, b;
  explicit AffineF8(const AffineF& k)
      : mh(_mm256_set1_ps(k.mh)), ml(_mm256_set1_ps(k.ml)), a(_mm256_set1_ps(k.a)), b(_mm256_set1_ps(k.b)) {}
  __m256 operator()(__m256 x) const { return _mm256_fmadd_ps(_mm256_sub_ps(_mm256_sub_ps(x, mh), ml), a, b); }
};
#endif

// {sum_i (x_i - K), sum_i (x_i - K)^2 (as fma(d, d, acc))} over n floats, in double: element i in partial
// sum i % 16, the partials combined as c_l = p_l + p_(l+8) (l < 8), then
// ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7)).
inline std::array<double, 2> shifted_sums(const float* x, int64_t n, double K) {
#if defined(__x86_64__)
  if (use_avx512()) return detail::gn_shifted_sums_avx512(x, n, K);
#endif
#ifdef KERN_CPU_AVX2
  if (use_simd()) {
    const __m256d k = _mm256_set1_pd(K), z = _mm256_setzero_pd();
    __m256d s0 = z, s1 = z, s2 = z, s3 = z, q0 = z, q1 = z, q2 = z, q3 = z;  // partials 0-3, 4-7, 8-11, 12-15
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      const D8 a = load8(x + i, 8), b = load8(x + i + 8, 8);
      const __m256d d0 = _mm256_sub_pd(a.lo, k), d1 = _mm256_sub_pd(a.hi, k), d2 = _mm256_sub_pd(b.lo, k),
                    d3 = _mm256_sub_pd(b.hi, k);
      s0 = _mm256_add_pd(s0, d0), s1 = _mm256_add_pd(s1, d1), s2 = _mm256_add_pd(s2, d2),
      s3 = _mm256_add_pd(s3, d3);
      q0 = _mm256_fmadd_pd(d0, d0, q0), q1 = _mm256_fmadd_pd(d1, d1, q1), q2 = _mm256_fmadd_pd(d2, d2, q2),
      q3 = _mm256_fmadd_pd(d3, d3, q3);
    }
    for (int h = 0; h < 2 && i + 8 * h < n; ++h) {  // the tail (< 16): dead lanes add 0
      const int64_t r = n - i - 8 * h;
      const D8 v = load8(x + i + 8 * h, r);
      const D8 d = keep({_mm256_sub_pd(v.lo, k), _mm256_sub_pd(v.hi, k)}, r);
      __m256d& sl = h ? s2 : s0;
      __m256d& sh = h ? s3 : s1;
      __m256d& ql = h ? q2 : q0;
      __m256d& qh = h ? q3 : q1;
      sl = _mm256_add_pd(sl, d.lo), sh = _mm256_add_pd(sh, d.hi);
      ql = _mm256_fmadd_pd(d.lo, d.lo, ql), qh = _mm256_fmadd_pd(d.hi, d.hi, qh);
    }
    return {hsum({_mm256_add_pd(s0, s2), _mm256_add_pd(s1, s3)}),
            hsum({_mm256_add_pd(q0, q2), _mm256_add_pd(q1, q3)})};
  }
#endif
  double p[16] = {}, q[16] = {}, cp[8], cq[8];
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(x[i]) - K;
    p[i % 16] += d;
    q[i % 16] = std::fma(d, d, q[i % 16]);
  }
  for (int l = 0; l < 8; ++l) cp[l] = p[l] + p[l + 8], cq[l] = q[l] + q[l + 8];
  return {combine8(cp), combine8(cq)};
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
  if constexpr (std::is_same_v<T, float>)
    if (use_simd()) {
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
  if constexpr (std::is_same_v<T, float>)
    if (use_simd()) {
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

// The float statistics from shifted_sums' {s1, s2} around K = xg[0] (the two-pass fallback reads xg again).
inline std::array<double, 2> finish_stats(const float* xg, int64_t M, double eps, std::array<double, 2> s) {
  const double K = xg[0], s1 = s[0], s2 = s[1];
  const double q = s1 / double(M);
  const double mu = K + q;
  double ss = std::fma(-s1, q, s2);
  if (ss < s2 * 0x1p-10) ss = sum_dev<true>(xg, M, mu);  // cancellation (or ss < 0): around the mean
  return {mu, 1.0 / std::sqrt(ss / double(M) + eps)};
}

// The mean and 1 / sqrt(var + eps) (biased variance) of the M >= 1 elements at xg, in double: float by
// shifted_sums (one pass) with the two-pass fallback described in the header comment, double by two passes.
template <typename T>
std::array<double, 2> group_stats(const T* xg, int64_t M, double eps) {
  if constexpr (std::is_same_v<T, float>) {
    return finish_stats(xg, M, eps, shifted_sums(xg, M, double(xg[0])));
  } else {
    const double mu = group_mean(xg, M);
    const double ss = sum_dev<true>(xg, M, mu);
    return {mu, 1.0 / std::sqrt(ss / double(M) + eps)};
  }
}

// group_stats of two groups of M elements: out[0] of xa, out[1] of xb, bitwise two calls (AVX-512: their
// shifted sums in one loop, gn_shifted_sums2_avx512).
template <typename T>
void group_stats2(const T* xa, const T* xb, int64_t M, double eps, std::array<double, 2>* out) {
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>)
    if (use_avx512()) {
      std::array<double, 2> s[2];
      detail::gn_shifted_sums2_avx512(xa, xb, M, double(xa[0]), double(xb[0]), s);
      out[0] = finish_stats(xa, M, eps, s[0]);
      out[1] = finish_stats(xb, M, eps, s[1]);
      return;
    }
#endif
  out[0] = group_stats(xa, M, eps);
  out[1] = group_stats(xb, M, eps);
}

// The group-norm value v_i for i < n: float fmaf((x_i - mh) - ml, a, b) with affine_consts(mu, a, b),
// double fma(x_i - mu, a, b).
template <typename T>
void affine(const T* x, int64_t n, double mu, double a, double b, T* y) {
  if constexpr (std::is_same_v<T, float>) {
    const AffineF k = affine_consts(mu, a, b);
#if defined(__x86_64__)
    if (use_avx512()) return detail::gn_affine_avx512(x, n, k.mh, k.ml, k.a, k.b, y);
#endif
#ifdef KERN_CPU_AVX2
    if (use_simd()) {
      const AffineF8 f(k);
      for (int64_t i = 0; i < n; i += 8) store8(y + i, n - i, f(loadf8(x + i, n - i)));
      return;
    }
#endif
    for (int64_t i = 0; i < n; ++i) y[i] = affine1(x[i], k);
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = std::fma(x[i] - mu, a, b);
  }
}

// y_i = silu(v_i), v_i as in affine: the bits of affine then silu_span, in one pass (float).
template <typename T>
void affine_silu(const T* x, int64_t n, double mu, double a, double b, T* y) {
  if constexpr (std::is_same_v<T, float>) {
    const AffineF k = affine_consts(mu, a, b);
#if defined(__x86_64__)
    if (use_avx512()) return detail::gn_affine_silu_avx512(x, n, k.mh, k.ml, k.a, k.b, y);
#endif
#ifdef KERN_CPU_AVX2
    if (use_simd()) {
      const AffineF8 f(k);
      for (int64_t i = 0; i < n; i += 8) store8(y + i, n - i, silu_math::silu8(f(loadf8(x + i, n - i))));
      return;
    }
#endif
    for (int64_t i = 0; i < n; ++i) y[i] = silu_math::silu1(affine1(x[i], k));
  } else {
    affine(x, n, mu, a, b, y);
    detail::silu_span(y, y, n);
  }
}

// dv_i = dy_i * silu'(v_i) (v_i as in affine) written to dv, and returns backward_sums(x, dv, n, K):
// the same bits as affine, silu_grad_span and backward_sums one after the other (on AVX-512: two loops).
template <typename T>
std::array<double, 3> silu_dv_sums(const T* x, const T* dy, int64_t n, double mu, double a, double b,
                                   double K, T* dv) {
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>)
    if (use_avx512()) {
      const AffineF k = affine_consts(mu, a, b);
      return detail::gn_silu_dv_sums_avx512(x, dy, n, k.mh, k.ml, k.a, k.b, K, dv);
    }
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
  if constexpr (std::is_same_v<T, float>)
    if (use_simd()) {
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
