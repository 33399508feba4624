// CPU GroupNorm forward/backward over x (N, C, HW); statistics accumulated in double, biased variance.
#include <cmath>

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
    double s = 0;
    for (int64_t i = 0; i < M; ++i) s += xg[i];
    const double mu = s / double(M);
    double ss = 0;
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
      for (int64_t i = 0; i < HW; ++i) yc[i] = xc[i] * a + b;
    }
  }
}

template <typename T>
void group_norm_backward(int64_t N, int64_t C, int64_t HW, int64_t G, const T* dy, const T* x, const T* mean,
                         const T* rstd, const T* gamma, T* dx, T* dgamma, T* dbeta) {
  const int64_t Cg = C / G, M = Cg * HW;
  // dx = rstd * (g*dy - mean(g*dy) - xhat * mean(g*dy*xhat)), xhat = (x - mean) * rstd.
#pragma omp parallel for schedule(static)
  for (int64_t ng = 0; ng < N * G; ++ng) {
    const T* xg = x + ng * M;
    const T* dyg = dy + ng * M;
    T* dxg = dx + ng * M;
    const double mu = mean[ng], rs = rstd[ng];
    const int64_t c0 = (ng % G) * Cg;
    double sum_gdy = 0, sum_gdy_xc = 0;  // sum(g*dy), sum(g*dy*(x - mean))
    for (int64_t cc = 0; cc < Cg; ++cc) {
      const double gm = gamma ? double(gamma[c0 + cc]) : 1.0;
      double a = 0, b = 0;
      for (int64_t i = 0; i < HW; ++i) {
        a += dyg[cc * HW + i];
        b += double(dyg[cc * HW + i]) * (double(xg[cc * HW + i]) - mu);
      }
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
      for (int64_t i = 0; i < HW; ++i) dxg[cc * HW + i] = a * dyg[cc * HW + i] + b * xg[cc * HW + i] + c;
    }
  }
  if (dgamma || dbeta) {
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t g = c / Cg;
      double sg = 0, sb = 0;
      for (int64_t n = 0; n < N; ++n) {
        const T* xc = x + (n * C + c) * HW;
        const T* dyc = dy + (n * C + c) * HW;
        const double mu = mean[n * G + g], rs = rstd[n * G + g];
        double a = 0, b = 0;
        for (int64_t i = 0; i < HW; ++i) {
          a += dyc[i];
          b += double(dyc[i]) * (double(xc[i]) - mu);
        }
        sb += a;
        sg += b * rs;
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
