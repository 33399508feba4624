// CPU GroupNorm forward/backward over x (N, C, HW); biased variance.
// Formulation (shared with kernels/cuda/group_norm.cu):
//   mean = K + sum(x - K) / M with the shift K = the group's first element, var = sum((x - mean)^2) / M
//   (two passes, double accumulation), rstd = 1 / sqrt(var + eps),
//   y = fma(x - mean, rstd * gamma, beta) in double.
// A constant group therefore gives mean = x exactly and y = beta exactly, whatever its magnitude;
// x - mean is formed in double, so a mean much larger than the spread loses nothing.
// The backward refines the saved (rounded) mean in double from x, in the same pass as its sums, and
// forms
//   dx = rstd * (g*dy - mean(g*dy) - xhat * mean(g*dy*xhat)), xhat = (x - mean) * rstd,
// per element in double as rs * fma(-xhat, m2, fma(g, dy, -m1)): no x*a + c form that cancels
// when mean >> spread.
// Every sum has a fixed order that depends only on the group size, so a group's results do not
// depend on N, on the group's position or on the thread count. NaN/Inf in a group make it NaN.
#include <array>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/group_norm_avx512.h"
#include "kernels/cpu/simd_math.h"

namespace kern::cpu {
namespace {

// The three reductions of this file, each with a fixed order: element i goes to partial sum i % 8,
// the 8 partial sums are combined pairwise. The AVX2 versions (float input) hold the 8 partial sums
// in two double vectors and run the tail through the same code with masked lanes; the generic ones
// use the same lanes in scalar code.
#ifdef KERN_CPU_AVX2
struct D8 {
  __m256d lo, hi;
};
// Floats p[0 .. min(n, 8)) as doubles; lanes >= n hold 0.
inline D8 load8(const float* p, int64_t n) {
  const __m256 v = n >= 8 ? _mm256_loadu_ps(p) : simd::load_tail(p, n);
  return {_mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))};
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
#endif

// AVX-512 loops (group_norm_avx512.h, bitwise the same results) when the active ISA path is avx512.
bool use_avx512() { return cpu_isa() == CpuIsa::Avx512; }

inline double combine8(const double (&a)[8]) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// sum_i (x_i - K)
template <typename T>
double sum_shifted(const T* x, int64_t n, double K) {
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>)
    if (use_avx512()) return detail::gn_sum_shifted_avx512(x, n, K);
#endif
#ifdef KERN_CPU_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256d k = _mm256_set1_pd(K);
    D8 acc{_mm256_setzero_pd(), _mm256_setzero_pd()};
    for (int64_t i = 0; i < n; i += 8) {
      const D8 v = load8(x + i, n - i);
      D8 d{_mm256_sub_pd(v.lo, k), _mm256_sub_pd(v.hi, k)};
      if (n - i < 8) d = keep(d, n - i);
      acc = {_mm256_add_pd(acc.lo, d.lo), _mm256_add_pd(acc.hi, d.hi)};
    }
    return hsum(acc);
  }
#endif
  double acc[8] = {};
  for (int64_t i = 0; i < n; ++i) acc[i % 8] += double(x[i]) - K;
  return combine8(acc);
}

// sum_i (x_i - mu)^2, each term as fma(d, d, acc)
template <typename T>
double sum_sq_dev(const T* x, int64_t n, double mu) {
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>)
    if (use_avx512()) return detail::gn_sum_sq_dev_avx512(x, n, mu);
#endif
#ifdef KERN_CPU_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256d m = _mm256_set1_pd(mu);
    D8 acc{_mm256_setzero_pd(), _mm256_setzero_pd()};
    for (int64_t i = 0; i < n; i += 8) {
      const D8 v = load8(x + i, n - i);
      D8 d{_mm256_sub_pd(v.lo, m), _mm256_sub_pd(v.hi, m)};
      if (n - i < 8) d = keep(d, n - i);
      acc = {_mm256_fmadd_pd(d.lo, d.lo, acc.lo), _mm256_fmadd_pd(d.hi, d.hi, acc.hi)};
    }
    return hsum(acc);
  }
#endif
  double acc[8] = {};
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(x[i]) - mu;
    acc[i % 8] = std::fma(d, d, acc[i % 8]);
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
  return K + sum_shifted(xg, M, K) / double(M);
}

}  // namespace

template <typename T>
void group_norm_forward(int64_t N, int64_t C, int64_t HW, int64_t G, double eps, const T* x, const T* gamma,
                        const T* beta, T* y, T* mean, T* rstd) {
  const int64_t Cg = C / G, M = Cg * HW;  // channels per group, elements per group
  if (M == 0) return;
  const bool avx512 = use_avx512();
  (void)avx512;
#pragma omp parallel for schedule(static)
  for (int64_t ng = 0; ng < N * G; ++ng) {
    const T* xg = x + ng * M;  // (Cg, HW)
    T* yg = y + ng * M;
    const double mu = group_mean(xg, M);
    const double ss = sum_sq_dev(xg, M, mu);
    const double rs = 1.0 / std::sqrt(ss / double(M) + eps);
    mean[ng] = static_cast<T>(mu);
    rstd[ng] = static_cast<T>(rs);
    const int64_t c0 = (ng % G) * Cg;
    for (int64_t cc = 0; cc < Cg; ++cc) {
      const double a = rs * (gamma ? double(gamma[c0 + cc]) : 1.0);
      const double b = beta ? double(beta[c0 + cc]) : 0.0;
      const T* xc = xg + cc * HW;
      T* yc = yg + cc * HW;
#if defined(__x86_64__)
      if constexpr (std::is_same_v<T, float>)
        if (avx512) {
          detail::gn_affine_avx512(xc, HW, mu, a, b, yc);
          continue;
        }
#endif
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i) yc[i] = static_cast<T>(std::fma(double(xc[i]) - mu, a, b));
    }
  }
}

template <typename T>
void group_norm_backward(int64_t N, int64_t C, int64_t HW, int64_t G, const T* dy, const T* x, const T* mean,
                         const T* rstd, const T* gamma, T* dx, T* dgamma, T* dbeta) {
  const int64_t Cg = C / G, M = Cg * HW;
  if (M == 0) {
    for (int64_t c = 0; c < C; ++c) {
      if (dgamma) dgamma[c] = T(0);
      if (dbeta) dbeta[c] = T(0);
    }
    return;
  }
  const bool avx512 = use_avx512();
  (void)avx512;
  // Per-(n, c) sums of dy and dy * (x - mean), reused for dgamma/dbeta.
  std::vector<double> sum_dy(N * C), sum_dy_xc(N * C);
#pragma omp parallel for schedule(static)
  for (int64_t ng = 0; ng < N * G; ++ng) {
    const T* xg = x + ng * M;
    const T* dyg = dy + ng * M;
    T* dxg = dx + ng * M;
    const double rs = rstd[ng];
    const int64_t n = ng / G, c0 = (ng % G) * Cg;
    // One pass per channel around the saved (rounded) mean K: sum(dy), sum(dy*(x - K)), sum(x - K).
    // Then mean = K + sum(x - K) / M in double and sum(dy*(x - mean)) = sum(dy*(x - K)) - (mean - K)*sum(dy),
    // where mean - K is below one ulp of the saved mean: no cancellation.
    const double K = mean[ng];
    std::vector<std::array<double, 3>> part(Cg);
    double sum_xk = 0;
    for (int64_t cc = 0; cc < Cg; ++cc) {
      const T* dyc = dyg + cc * HW;
      const T* xc = xg + cc * HW;
      part[cc] = backward_sums(xc, dyc, HW, K);
      sum_xk += part[cc][2];
    }
    const double delta = sum_xk / double(M), mu = K + delta;
    double sum_gdy = 0, sum_gdy_xc = 0;  // sum(g*dy), sum(g*dy*(x - mean))
    for (int64_t cc = 0; cc < Cg; ++cc) {
      const double gm = gamma ? double(gamma[c0 + cc]) : 1.0;
      const double a = part[cc][0], b = std::fma(-delta, a, part[cc][1]);
      sum_dy[n * C + c0 + cc] = a;
      sum_dy_xc[n * C + c0 + cc] = b;
      sum_gdy += gm * a;
      sum_gdy_xc += gm * b;
    }
    const double m1 = sum_gdy / double(M);
    const double m2 = sum_gdy_xc * rs / double(M);  // mean(g*dy*xhat)
    for (int64_t cc = 0; cc < Cg; ++cc) {
      const double gm = gamma ? double(gamma[c0 + cc]) : 1.0;
      const T* dyc = dyg + cc * HW;
      const T* xc = xg + cc * HW;
      T* dxc = dxg + cc * HW;
#if defined(__x86_64__)
      if constexpr (std::is_same_v<T, float>)
        if (avx512) {
          detail::gn_dx_avx512(xc, dyc, HW, mu, rs, gm, m1, m2, dxc);
          continue;
        }
#endif
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i) {
        const double xhat = (double(xc[i]) - mu) * rs;
        dxc[i] = static_cast<T>(rs * std::fma(-xhat, m2, std::fma(gm, double(dyc[i]), -m1)));
      }
    }
  }
  if (dgamma || dbeta) {
    // Fixed order over n: deterministic whatever the thread count.
    for (int64_t c = 0; c < C; ++c) {
      const int64_t g = c / Cg;
      double sg = 0, sb = 0;
      for (int64_t n = 0; n < N; ++n) {
        sb += sum_dy[n * C + c];
        sg += sum_dy_xc[n * C + c] * double(rstd[n * G + g]);
      }
      if (dgamma) dgamma[c] = T(sg);
      if (dbeta) dbeta[c] = T(sb);
    }
  }
}

KERN_INSTANTIATE_CPU(group_norm_forward)
KERN_INSTANTIATE_CPU(group_norm_backward)

}  // namespace kern::cpu
