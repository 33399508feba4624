// CPU GroupNorm forward/backward over x (N, C, HW); biased variance.
// Formulation (shared with kernels/cuda/group_norm.cu):
//   mean = K + sum(x - K) / M with the shift K = the group's first element, var = sum((x - mean)^2) / M
//   (two passes, double accumulation), rstd = 1 / sqrt(var + eps),
//   y = fma(x - mean, rstd * gamma, beta) in double.
// A constant group therefore gives mean = x exactly and y = beta exactly, whatever its magnitude;
// x - mean is formed in double, so a mean much larger than the spread loses nothing.
// The backward recomputes the same double mean from x (the saved float mean is rounded) and forms
//   dx = rstd * (g*dy - mean(g*dy) - xhat * mean(g*dy*xhat)), xhat = (x - mean) * rstd,
// per element in double: no x*a + c form that cancels when mean >> spread.
// Every sum has a fixed order that depends only on the group size, so a group's results do not
// depend on N, on the group's position or on the thread count. NaN/Inf in a group make it NaN.
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"

namespace kern::cpu {
namespace {

// sum_{i < n} f(i) in double, in a fixed order: 8 interleaved partial sums combined pairwise.
template <typename F>
double fixed_sum(int64_t n, F&& f) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += f(i + l);
  for (int l = 0; i < n; ++i, ++l) acc[l] += f(i);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// Shifted mean of the M elements at xg (M >= 1): exact for a constant group.
template <typename T>
double group_mean(const T* xg, int64_t M) {
  const double K = xg[0];
  return K + fixed_sum(M, [&](int64_t i) { return double(xg[i]) - K; }) / double(M);
}

}  // namespace

template <typename T>
void group_norm_forward(int64_t N, int64_t C, int64_t HW, int64_t G, double eps, const T* x, const T* gamma,
                        const T* beta, T* y, T* mean, T* rstd) {
  const int64_t Cg = C / G, M = Cg * HW;  // channels per group, elements per group
  if (M == 0) return;
#pragma omp parallel for schedule(static)
  for (int64_t ng = 0; ng < N * G; ++ng) {
    const T* xg = x + ng * M;  // (Cg, HW)
    T* yg = y + ng * M;
    const double mu = group_mean(xg, M);
    const double ss = fixed_sum(M, [&](int64_t i) {
      const double d = double(xg[i]) - mu;
      return d * d;
    });
    const double rs = 1.0 / std::sqrt(ss / double(M) + eps);
    mean[ng] = static_cast<T>(mu);
    rstd[ng] = static_cast<T>(rs);
    const int64_t c0 = (ng % G) * Cg;
    for (int64_t cc = 0; cc < Cg; ++cc) {
      const double a = rs * (gamma ? double(gamma[c0 + cc]) : 1.0);
      const double b = beta ? double(beta[c0 + cc]) : 0.0;
      const T* xc = xg + cc * HW;
      T* yc = yg + cc * HW;
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i) yc[i] = static_cast<T>(std::fma(double(xc[i]) - mu, a, b));
    }
  }
}

template <typename T>
void group_norm_backward(int64_t N, int64_t C, int64_t HW, int64_t G, const T* dy, const T* x, const T* mean,
                         const T* rstd, const T* gamma, T* dx, T* dgamma, T* dbeta) {
  (void)mean;  // recomputed in double from x: the saved value is rounded to T
  const int64_t Cg = C / G, M = Cg * HW;
  if (M == 0) {
    for (int64_t c = 0; c < C; ++c) {
      if (dgamma) dgamma[c] = T(0);
      if (dbeta) dbeta[c] = T(0);
    }
    return;
  }
  // Per-(n, c) sums of dy and dy * (x - mean), reused for dgamma/dbeta.
  std::vector<double> sum_dy(N * C), sum_dy_xc(N * C);
#pragma omp parallel for schedule(static)
  for (int64_t ng = 0; ng < N * G; ++ng) {
    const T* xg = x + ng * M;
    const T* dyg = dy + ng * M;
    T* dxg = dx + ng * M;
    const double mu = group_mean(xg, M), rs = rstd[ng];
    const int64_t n = ng / G, c0 = (ng % G) * Cg;
    double sum_gdy = 0, sum_gdy_xc = 0;  // sum(g*dy), sum(g*dy*(x - mean)), channel by channel
    for (int64_t cc = 0; cc < Cg; ++cc) {
      const double gm = gamma ? double(gamma[c0 + cc]) : 1.0;
      const T* dyc = dyg + cc * HW;
      const T* xc = xg + cc * HW;
      const double a = fixed_sum(HW, [&](int64_t i) { return double(dyc[i]); });
      const double b = fixed_sum(HW, [&](int64_t i) { return double(dyc[i]) * (double(xc[i]) - mu); });
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
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i) {
        const double xhat = (double(xc[i]) - mu) * rs;
        dxc[i] = static_cast<T>(rs * ((gm * double(dyc[i]) - m1) - xhat * m2));
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

#define KERN_INSTANTIATE(T)                                                                              \
  template void group_norm_forward<T>(int64_t, int64_t, int64_t, int64_t, double, const T*, const T*,    \
                                      const T*, T*, T*, T*);                                             \
  template void group_norm_backward<T>(int64_t, int64_t, int64_t, int64_t, const T*, const T*, const T*, \
                                       const T*, const T*, T*, T*, T*);
KERN_INSTANTIATE(float)
KERN_INSTANTIATE(double)
#undef KERN_INSTANTIATE

}  // namespace kern::cpu
