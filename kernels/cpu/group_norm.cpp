// CPU GroupNorm forward/backward over x (N, C, HW); biased variance. Also the fused
// group_norm_silu (y = silu(gn(x))): the same loops with the SiLU applied per channel while it is in
// L1 (forward), and SiLU' applied to dy per channel before the group-norm sums (backward, gn(x)
// recomputed from the saved double statistics), so it is bitwise the unfused pair with one pass less
// over memory each way and no saved normalised copy.
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
#include "kernels/cpu/silu_span.h"
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

// y_i = T(fma(double(x_i) - mu, a, b)) over one channel; then, with Silu, y = silu(y) in place while
// the channel is in L1 (detail::silu_span: the unfused silu's element code).
template <typename T, bool Silu>
void affine_channel(const T* xc, int64_t HW, double mu, double a, double b, T* yc, bool avx512) {
  (void)avx512;
  bool done = false;
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>)
    if (avx512) {
      detail::gn_affine_avx512(xc, HW, mu, a, b, yc);
      done = true;
    }
#endif
  if (!done) {
#pragma omp simd
    for (int64_t i = 0; i < HW; ++i) yc[i] = static_cast<T>(std::fma(double(xc[i]) - mu, a, b));
  }
  if constexpr (Silu) detail::silu_span(yc, yc, HW);
}

// The forward of group_norm (Silu = false) and group_norm_silu (Silu = true). Writes mean/rstd (T) when
// given and stats (double pairs mean, rstd) when given.
template <typename T, bool Silu>
void forward_impl(int64_t N, int64_t C, int64_t HW, int64_t G, double eps, const T* x, const T* gamma,
                  const T* beta, T* y, T* mean, T* rstd, double* stats) {
  const int64_t Cg = C / G, M = Cg * HW;  // channels per group, elements per group
  if (M == 0) return;
  const bool avx512 = use_avx512();
#pragma omp parallel for schedule(static)
  for (int64_t ng = 0; ng < N * G; ++ng) {
    const T* xg = x + ng * M;  // (Cg, HW)
    T* yg = y + ng * M;
    const double mu = group_mean(xg, M);
    const double ss = sum_dev<true>(xg, M, mu);
    const double rs = 1.0 / std::sqrt(ss / double(M) + eps);
    if (mean) mean[ng] = static_cast<T>(mu);
    if (rstd) rstd[ng] = static_cast<T>(rs);
    if (stats) stats[2 * ng] = mu, stats[2 * ng + 1] = rs;
    const int64_t c0 = (ng % G) * Cg;
    for (int64_t cc = 0; cc < Cg; ++cc) {
      const double a = rs * (gamma ? double(gamma[c0 + cc]) : 1.0);
      const double b = beta ? double(beta[c0 + cc]) : 0.0;
      affine_channel<T, Silu>(xg + cc * HW, HW, mu, a, b, yg + cc * HW, avx512);
    }
  }
}

// The backward of group_norm (Silu = false: dy is dL/dy of the normalisation) and of group_norm_silu
// (Silu = true: dy is dL/d silu(v); v = gn(x) is recomputed per channel from x and the double stats
// exactly as the forward made it, and dv = dy * silu'(v) is written into dx, where the group-norm
// part reads it back in place while the group is in cache). mean/rstd are the T-rounded statistics
// that group_norm saves (the group-norm part uses exactly these, so Silu = true is bitwise
// group_norm_backward(silu_backward(...))).
template <typename T, bool Silu>
void backward_impl(int64_t N, int64_t C, int64_t HW, int64_t G, const T* dy, const T* x, const T* mean,
                   const T* rstd, const double* stats, const T* gamma, const T* beta, T* dx, T* dgamma,
                   T* dbeta) {
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
  (void)stats;
  (void)beta;
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
      if constexpr (Silu) {  // dx := dv = dy * silu'(v), v recomputed as the forward made it
        T* dvc = dxg + cc * HW;
        const double gm = gamma ? double(gamma[c0 + cc]) : 1.0, b = beta ? double(beta[c0 + cc]) : 0.0;
        affine_channel<T, false>(xc, HW, stats[2 * ng], stats[2 * ng + 1] * gm, b, dvc, avx512);
        detail::silu_grad_span(dvc, dyc, dvc, HW);
        dyc = dvc;
      }
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
      const T* dyc = Silu ? dxg + cc * HW : dyg + cc * HW;  // Silu: dv, read back in place
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

}  // namespace

template <typename T>
void group_norm_forward(int64_t N, int64_t C, int64_t HW, int64_t G, double eps, const T* x, const T* gamma,
                        const T* beta, T* y, T* mean, T* rstd) {
  forward_impl<T, false>(N, C, HW, G, eps, x, gamma, beta, y, mean, rstd, nullptr);
}

template <typename T>
void group_norm_backward(int64_t N, int64_t C, int64_t HW, int64_t G, const T* dy, const T* x, const T* mean,
                         const T* rstd, const T* gamma, T* dx, T* dgamma, T* dbeta) {
  backward_impl<T, false>(N, C, HW, G, dy, x, mean, rstd, nullptr, gamma, nullptr, dx, dgamma, dbeta);
}

template <typename T>
void group_norm_silu_forward(int64_t N, int64_t C, int64_t HW, int64_t G, double eps, const T* x,
                             const T* gamma, const T* beta, T* y, double* stats) {
  forward_impl<T, true>(N, C, HW, G, eps, x, gamma, beta, y, nullptr, nullptr, stats);
}

template <typename T>
void group_norm_silu_backward(int64_t N, int64_t C, int64_t HW, int64_t G, const T* dy, const T* x,
                              const double* stats, const T* gamma, const T* beta, T* dx, T* dgamma,
                              T* dbeta) {
  // The T-rounded statistics group_norm would have saved (the group-norm part of the backward uses them).
  std::vector<T> mean(N * G), rstd(N * G);
  for (int64_t ng = 0; ng < N * G; ++ng) mean[ng] = T(stats[2 * ng]), rstd[ng] = T(stats[2 * ng + 1]);
  backward_impl<T, true>(N, C, HW, G, dy, x, mean.data(), rstd.data(), stats, gamma, beta, dx, dgamma, dbeta);
}

KERN_INSTANTIATE_CPU(group_norm_forward)
KERN_INSTANTIATE_CPU(group_norm_backward)
template void group_norm_silu_forward<float>(int64_t, int64_t, int64_t, int64_t, double, const float*,
                                             const float*, const float*, float*, double*);
template void group_norm_silu_forward<double>(int64_t, int64_t, int64_t, int64_t, double, const double*,
                                              const double*, const double*, double*, double*);
template void group_norm_silu_backward<float>(int64_t, int64_t, int64_t, int64_t, const float*, const float*,
                                              const double*, const float*, const float*, float*, float*,
                                              float*);
template void group_norm_silu_backward<double>(int64_t, int64_t, int64_t, int64_t, const double*,
                                               const double*, const double*, const double*, const double*,
                                               double*, double*, double*);

}  // namespace kern::cpu
