// CPU GroupNorm forward/backward over x (N, C, HW); statistics accumulated in double, biased variance.
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"

namespace kern::cpu {

template <typename T>
void group_norm_forward(int64_t N, int64_t C, int64_t HW, int64_t G, double eps, const T* x, const T* gamma,
                        const T* beta, T* y, T* mean, T* rstd) {
  const int64_t Cg = C / G, M = Cg * HW;  // channels per group, elements per group
#pragma omp parallel for schedule(static)
  for (int64_t ng = 0; ng < N * G; ++ng) {
    const T* xg = x + ng * M;  // (Cg, HW)
    T* yg = y + ng * M;
    // Vectorised reductions: the summation order is fixed for a given binary (deterministic).
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < M; ++i) s += xg[i];
    const double mu = s / double(M);
    double ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < M; ++i) {
      const double d = double(xg[i]) - mu;
      ss += d * d;
    }
    const double rs = 1.0 / std::sqrt(ss / double(M) + eps);
    mean[ng] = static_cast<T>(mu);
    rstd[ng] = static_cast<T>(rs);
    const int64_t c0 = (ng % G) * Cg;
    for (int64_t cc = 0; cc < Cg; ++cc) {
      const double gm = gamma ? double(gamma[c0 + cc]) : 1.0;
      const double bt = beta ? double(beta[c0 + cc]) : 0.0;
      // y = x * a + b with a = rstd * gamma, b = beta - mean * a.
      const T a = static_cast<T>(rs * gm), b = static_cast<T>(bt - mu * rs * gm);
      const T* xc = xg + cc * HW;
      T* yc = yg + cc * HW;
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i) yc[i] = xc[i] * a + b;
    }
  }
}

template <typename T>
void group_norm_backward(int64_t N, int64_t C, int64_t HW, int64_t G, const T* dy, const T* x, const T* mean,
                         const T* rstd, const T* gamma, T* dx, T* dgamma, T* dbeta) {
  const int64_t Cg = C / G, M = Cg * HW;
  // Per-(n, c) partial sums of dy and dy * (x - mean), reused for dgamma/dbeta (one pass over x, dy).
  std::vector<double> sum_dy(N * C), sum_dy_xc(N * C);
  // dx = rstd * (g*dy - mean(g*dy) - xhat * mean(g*dy*xhat)), xhat = (x - mean) * rstd.
#pragma omp parallel for schedule(static)
  for (int64_t ng = 0; ng < N * G; ++ng) {
    const T* xg = x + ng * M;
    const T* dyg = dy + ng * M;
    T* dxg = dx + ng * M;
    const double mu = mean[ng], rs = rstd[ng];
    const int64_t n = ng / G, c0 = (ng % G) * Cg;
    double sum_gdy = 0, sum_gdy_xc = 0;  // sum(g*dy), sum(g*dy*(x - mean))
    for (int64_t cc = 0; cc < Cg; ++cc) {
      const double gm = gamma ? double(gamma[c0 + cc]) : 1.0;
      const T* dyc = dyg + cc * HW;
      const T* xc = xg + cc * HW;
      double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
      for (int64_t i = 0; i < HW; ++i) {
        a += dyc[i];
        b += double(dyc[i]) * (double(xc[i]) - mu);
      }
      sum_dy[n * C + c0 + cc] = a;
      sum_dy_xc[n * C + c0 + cc] = b;
      sum_gdy += gm * a;
      sum_gdy_xc += gm * b;
    }
    const double m1 = sum_gdy / double(M);
    const double m2 = sum_gdy_xc * rs / double(M);  // mean(g*dy*xhat)
    for (int64_t cc = 0; cc < Cg; ++cc) {
      const double gm = gamma ? double(gamma[c0 + cc]) : 1.0;
      // dx = A * dy + B * x + Cc
      const double A = rs * gm, B = -rs * rs * m2, Cc = rs * (rs * m2 * mu - m1);
      const T a = T(A), b = T(B), c = T(Cc);
      const T* dyc = dyg + cc * HW;
      const T* xc = xg + cc * HW;
      T* dxc = dxg + cc * HW;
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i) dxc[i] = a * dyc[i] + b * xc[i] + c;
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
