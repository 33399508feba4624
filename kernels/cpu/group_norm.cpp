// CPU GroupNorm forward/backward over x (N, C, HW); biased variance. Also the fused
// group_norm_silu (y = silu(gn(x))): the same loops with the SiLU applied per channel while it is in
// L1 (forward), and SiLU' applied to dy per channel before the group-norm sums (backward, gn(x)
// recomputed from the saved double statistics), so it is bitwise the unfused pair with one pass less
// over memory each way and no saved normalised copy.
// Formulation (group_norm_loops.h; kernels/cuda/group_norm.cu computes the same quantities, with its own
// summation order):
//   mean = K + sum(x - K) / M with the shift K = the group's first element, var in double accumulation
//   (float: one pass, var = (sum((x - K)^2) - sum(x - K)^2 / M) / M, exact differences, with a two-pass
//   fallback when K is an outlier; double: sum((x - mean)^2) / M), rstd = 1 / sqrt(var + eps),
//   y = fmaf((x - mh) - ml, float(rstd * gamma), float(beta)) with mh + ml = mean (float; double: one fma).
// A constant group therefore gives mean = x exactly and y = beta exactly, whatever its magnitude;
// x - mean keeps the mean's low part ml, so a mean much larger than the spread loses nothing.
// The backward refines the saved (rounded) mean in double from x, in the same pass as its sums, and
// forms
//   dx = rstd * (g*dy - mean(g*dy) - xhat * mean(g*dy*xhat)), xhat = (x - mean) * rstd,
// per element in double as rs * fma(-xhat, m2, fma(g, dy, -m1)): no x*a + c form that cancels
// when mean >> spread.
// x may also be given as two channel blocks (group_norm_silu_*_cat: an up block's hidden state and skip
// connection, read in place instead of concatenated; ChannelCat below), with the concatenation's bits.
// Every sum has a fixed order that depends only on the group size, so a group's results do not
// depend on N, on the group's position or on the thread count. NaN/Inf in a group make it NaN.
#include <algorithm>
#include <array>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/group_norm_loops.h"

namespace kern::cpu {
namespace {

using gn::backward_sums;

// x (N, C, HW) held as two channel blocks that are never concatenated: channels [0, C0) of image n at
// p0 + (n * C0 + c) * HW, channels [C0, C) at p1 + (n * (C - C0) + c - C0) * HW. A plain contiguous
// tensor is the block p0 alone (C0 = C). P is const T (an input) or T (an output).
template <typename P>
struct ChannelCat {
  P* p0;
  P* p1;
  int64_t C0, C, HW;
  // Channel c of image n: HW elements.
  P* row(int64_t n, int64_t c) const {
    return c < C0 ? p0 + (n * C0 + c) * HW : p1 + (n * (C - C0) + (c - C0)) * HW;
  }
};

// The group (n, channels [c0, c0 + Cg)) as one contiguous span of Cg * HW elements: in place when it lies in
// one block, else copied into scratch (a group straddling the two blocks, e.g. 64 + 32 channels in 32 groups
// of 3), so that its statistics are summed in the same order as over the concatenated tensor.
template <typename T>
const T* group_span(const ChannelCat<const T>& x, int64_t n, int64_t c0, int64_t Cg,
                    std::vector<T>& scratch) {
  if (c0 + Cg <= x.C0 || c0 >= x.C0) return x.row(n, c0);
  scratch.resize(Cg * x.HW);
  for (int64_t cc = 0; cc < Cg; ++cc) std::copy_n(x.row(n, c0 + cc), x.HW, scratch.data() + cc * x.HW);
  return scratch.data();
}

// The forward of group_norm (Silu = false) and group_norm_silu (Silu = true). Writes mean/rstd (T) when
// given and stats (double pairs mean, rstd) when given.
template <typename T, bool Silu>
void forward_impl(int64_t N, int64_t C, int64_t HW, int64_t G, double eps, const ChannelCat<const T>& x,
                  const T* gamma, const T* beta, T* y, T* mean, T* rstd, double* stats) {
  const int64_t Cg = C / G, M = Cg * HW;  // channels per group, elements per group
  if (M == 0) return;
  const int64_t NG = N * G;
  // Groups in pairs (2p, 2p + 1): their statistics in one interleaved loop (group_stats2, bitwise
  // group_stats of each), then each group's affine while the pair is in L1/L2.
#pragma omp parallel
  {
    std::vector<T> scratch[2];  // straddling groups only (group_span)
#pragma omp for schedule(static)
    for (int64_t p = 0; p < (NG + 1) / 2; ++p) {
      const int64_t ng0 = 2 * p, cnt = std::min<int64_t>(2, NG - ng0);
      const T* xa = group_span(x, ng0 / G, (ng0 % G) * Cg, Cg, scratch[0]);
      std::array<double, 2> st[2];
      if (cnt == 2)
        gn::group_stats2(xa, group_span(x, (ng0 + 1) / G, ((ng0 + 1) % G) * Cg, Cg, scratch[1]), M, eps, st);
      else
        st[0] = gn::group_stats(xa, M, eps);
      for (int64_t k = 0; k < cnt; ++k) {
        const int64_t ng = ng0 + k, n = ng / G, c0 = (ng % G) * Cg;
        T* yg = y + ng * M;
        const double mu = st[k][0], rs = st[k][1];
        if (mean) mean[ng] = static_cast<T>(mu);
        if (rstd) rstd[ng] = static_cast<T>(rs);
        if (stats) stats[2 * ng] = mu, stats[2 * ng + 1] = rs;
        for (int64_t cc = 0; cc < Cg; ++cc) {
          const double a = rs * (gamma ? double(gamma[c0 + cc]) : 1.0);
          const double b = beta ? double(beta[c0 + cc]) : 0.0;
          if constexpr (Silu)  // y = silu(gn(x)) while the channel is in registers
            gn::affine_silu(x.row(n, c0 + cc), HW, mu, a, b, yg + cc * HW);
          else
            gn::affine(x.row(n, c0 + cc), HW, mu, a, b, yg + cc * HW);
        }
      }
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
void backward_impl(int64_t N, int64_t C, int64_t HW, int64_t G, const T* dy, const ChannelCat<const T>& x,
                   const T* mean, const T* rstd, const double* stats, const T* gamma, const T* beta,
                   const ChannelCat<T>& dx, T* dgamma, T* dbeta) {
  const int64_t Cg = C / G, M = Cg * HW;
  if (M == 0) {
    for (int64_t c = 0; c < C; ++c) {
      if (dgamma) dgamma[c] = T(0);
      if (dbeta) dbeta[c] = T(0);
    }
    return;
  }
  (void)stats;
  (void)beta;
  // Per-(n, c) sums of dy and dy * (x - mean), reused for dgamma/dbeta.
  std::vector<double> sum_dy(N * C), sum_dy_xc(N * C);
#pragma omp parallel
  {
    std::vector<std::array<double, 3>> part(Cg);  // per channel of the group: backward_sums
#pragma omp for schedule(static)
    for (int64_t ng = 0; ng < N * G; ++ng) {
      const T* dyg = dy + ng * M;
      const double rs = rstd[ng];
      const int64_t n = ng / G, c0 = (ng % G) * Cg;
      // One pass per channel around the saved (rounded) mean K: sum(dy), sum(dy*(x - K)), sum(x - K).
      // Then mean = K + sum(x - K) / M in double and sum(dy*(x - mean)) = sum(dy*(x - K)) - (mean -
      // K)*sum(dy), where mean - K is below one ulp of the saved mean: no cancellation.
      const double K = mean[ng];
      double sum_xk = 0;
      for (int64_t cc = 0; cc < Cg; ++cc) {
        const T* dyc = dyg + cc * HW;
        const T* xc = x.row(n, c0 + cc);
        if constexpr (Silu) {  // dx := dv = dy * silu'(v), v recomputed as the forward made it; its sums
          const double gm = gamma ? double(gamma[c0 + cc]) : 1.0, b = beta ? double(beta[c0 + cc]) : 0.0;
          part[cc] =
              gn::silu_dv_sums(xc, dyc, HW, stats[2 * ng], stats[2 * ng + 1] * gm, b, K, dx.row(n, c0 + cc));
        } else {
          part[cc] = backward_sums(xc, dyc, HW, K);
        }
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
        T* dxc = dx.row(n, c0 + cc);
        const T* dyc = Silu ? dxc : dyg + cc * HW;  // Silu: dv, read back in place
        gn::dx_span(x.row(n, c0 + cc), dyc, HW, mu, rs, gm, m1, m2, dxc);
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

// One block: a plain contiguous (N, C, HW) tensor.
template <typename P>
ChannelCat<P> whole(P* x, int64_t C, int64_t HW) {
  return {x, nullptr, C, C, HW};
}

}  // namespace

template <typename T>
void group_norm_forward(int64_t N, int64_t C, int64_t HW, int64_t G, double eps, const T* x, const T* gamma,
                        const T* beta, T* y, T* mean, T* rstd) {
  forward_impl<T, false>(N, C, HW, G, eps, whole(x, C, HW), gamma, beta, y, mean, rstd, nullptr);
}

template <typename T>
void group_norm_backward(int64_t N, int64_t C, int64_t HW, int64_t G, const T* dy, const T* x, const T* mean,
                         const T* rstd, const T* gamma, T* dx, T* dgamma, T* dbeta) {
  backward_impl<T, false>(N, C, HW, G, dy, whole(x, C, HW), mean, rstd, nullptr, gamma, nullptr,
                          whole(dx, C, HW), dgamma, dbeta);
}

template <typename T>
void group_norm_silu_forward_cat(int64_t N, int64_t C0, int64_t C, int64_t HW, int64_t G, double eps,
                                 const T* x0, const T* x1, const T* gamma, const T* beta, T* y,
                                 double* stats) {
  forward_impl<T, true>(N, C, HW, G, eps, ChannelCat<const T>{x0, x1, C0, C, HW}, gamma, beta, y, nullptr,
                        nullptr, stats);
}

template <typename T>
void group_norm_silu_forward(int64_t N, int64_t C, int64_t HW, int64_t G, double eps, const T* x,
                             const T* gamma, const T* beta, T* y, double* stats) {
  group_norm_silu_forward_cat<T>(N, C, C, HW, G, eps, x, nullptr, gamma, beta, y, stats);
}

template <typename T>
void group_norm_silu_backward_cat(int64_t N, int64_t C0, int64_t C, int64_t HW, int64_t G, const T* dy,
                                  const T* x0, const T* x1, const double* stats, const T* gamma,
                                  const T* beta, T* dx0, T* dx1, T* dgamma, T* dbeta) {
  // The T-rounded statistics group_norm would have saved (the group-norm part of the backward uses them).
  std::vector<T> mean(N * G), rstd(N * G);
  for (int64_t ng = 0; ng < N * G; ++ng) mean[ng] = T(stats[2 * ng]), rstd[ng] = T(stats[2 * ng + 1]);
  backward_impl<T, true>(N, C, HW, G, dy, ChannelCat<const T>{x0, x1, C0, C, HW}, mean.data(), rstd.data(),
                         stats, gamma, beta, ChannelCat<T>{dx0, dx1, C0, C, HW}, dgamma, dbeta);
}

template <typename T>
void group_norm_silu_backward(int64_t N, int64_t C, int64_t HW, int64_t G, const T* dy, const T* x,
                              const double* stats, const T* gamma, const T* beta, T* dx, T* dgamma,
                              T* dbeta) {
  group_norm_silu_backward_cat<T>(N, C, C, HW, G, dy, x, nullptr, stats, gamma, beta, dx, nullptr, dgamma,
                                  dbeta);
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
#define GN_SILU_CAT(T)                                                                                     \
  template void group_norm_silu_forward_cat<T>(int64_t, int64_t, int64_t, int64_t, int64_t, double,        \
                                               const T*, const T*, const T*, const T*, T*, double*);       \
  template void group_norm_silu_backward_cat<T>(int64_t, int64_t, int64_t, int64_t, int64_t, const T*,     \
                                                const T*, const T*, const double*, const T*, const T*, T*, \
                                                T*, T*, T*);
GN_SILU_CAT(float)
GN_SILU_CAT(double)
#undef GN_SILU_CAT

}  // namespace kern::cpu
