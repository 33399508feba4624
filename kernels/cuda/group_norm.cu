// GroupNorm over x (N, C, HW) with G groups: one block per (n, g) group, whose Cg*HW elements are
// contiguous. Same formulation as kernels/cpu/group_norm.cpp:
//   mean = K + sum(x - K) / M (K = the group's first element), var = sum((x - mean)^2) / M, two
//   passes accumulated in double; y = fma(x - mean, rstd * gamma, beta) in double.
// A constant group gives y = beta exactly; x - mean is formed in double, so a mean much larger than
// the spread loses nothing. The backward refines the saved (float) mean in double from x, keeps it
// in a workspace shared by the dx and dgamma kernels, and forms dx per element in double.
// dgamma/dbeta use one block per channel looping over n in order.
// All reductions are fixed-shape tree reductions: deterministic, no atomics. NaN/Inf in a group make
// the whole group NaN (as on the CPU and in PyTorch).
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_kernels.h"

namespace kern::cuda {
namespace {

constexpr int kThreads = 256;

// Double mean K + sum(x - K) / M of the M elements at xg, shifted by K; every thread of the block
// must call it.
__device__ double group_mean(const float* __restrict__ xg, int64_t M, double K, double* scratch) {
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) s += double(xg[i]) - K;
  return K + block_sum(s, scratch) / double(M);
}

__global__ void __launch_bounds__(kThreads)
    gn_forward_kernel(int64_t C, int64_t HW, int64_t G, double eps, const float* __restrict__ x,
                      const float* __restrict__ gamma, const float* __restrict__ beta, float* __restrict__ y,
                      float* __restrict__ mean, float* __restrict__ rstd) {
  __shared__ double scratch[32];
  const int64_t ng = blockIdx.x, Cg = C / G, M = Cg * HW;
  const int64_t c0 = (ng % G) * Cg;
  const float* xg = x + ng * M;  // (Cg, HW)
  float* yg = y + ng * M;

  const double mu = group_mean(xg, M, double(xg[0]), scratch);  // exact for a constant group
  double ss = 0.0;
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    const double d = double(xg[i]) - mu;
    ss = fma(d, d, ss);
  }
  const double rs = 1.0 / sqrt(block_sum(ss, scratch) / double(M) + eps);
  if (threadIdx.x == 0) {
    mean[ng] = float(mu);
    rstd[ng] = float(rs);
  }
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    const int64_t c = c0 + i / HW;
    const double a = rs * (gamma ? double(gamma[c]) : 1.0), b = beta ? double(beta[c]) : 0.0;
    yg[i] = float(fma(double(xg[i]) - mu, a, b));
  }
}

// dx = rstd * (g*dy - mean(g*dy) - xhat * mean(g*dy*xhat)), xhat = (x - mean) * rstd, in double.
// Writes the recomputed double mean to mean_d[ng] for gn_backward_affine_kernel.
__global__ void __launch_bounds__(kThreads)
    gn_backward_dx_kernel(int64_t C, int64_t HW, int64_t G, const float* __restrict__ dy,
                          const float* __restrict__ x, const float* __restrict__ mean,
                          const float* __restrict__ rstd, const float* __restrict__ gamma,
                          float* __restrict__ dx, double* __restrict__ mean_d) {
  __shared__ double scratch[32];
  const int64_t ng = blockIdx.x, Cg = C / G, M = Cg * HW;
  const int64_t c0 = (ng % G) * Cg;
  const float* xg = x + ng * M;
  const float* dyg = dy + ng * M;
  float* dxg = dx + ng * M;
  // The saved mean is rounded to float: refine it in double (as the CPU backward does).
  const double mu = group_mean(xg, M, double(mean[ng]), scratch), rs = rstd[ng];
  if (threadIdx.x == 0) mean_d[ng] = mu;

  double s1 = 0.0, s2 = 0.0;  // sum(g*dy), sum(g*dy*(x - mean))
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    const double g = gamma ? double(gamma[c0 + i / HW]) : 1.0;
    const double gdy = g * double(dyg[i]);
    s1 += gdy;
    s2 = fma(gdy, double(xg[i]) - mu, s2);  // CPU: g * fma(dy, x - mean, .) per channel
  }
  const double m1 = block_sum(s1, scratch) / double(M);
  const double m2 = block_sum(s2, scratch) * rs / double(M);
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    const double g = gamma ? double(gamma[c0 + i / HW]) : 1.0;
    const double xhat = (double(xg[i]) - mu) * rs;
    dxg[i] = float(rs * fma(-xhat, m2, fma(g, double(dyg[i]), -m1)));
  }
}

// dgamma[c] = sum_{n, hw} dy * xhat, dbeta[c] = sum_{n, hw} dy; one block per channel, double sums.
__global__ void __launch_bounds__(kThreads)
    gn_backward_affine_kernel(int64_t N, int64_t C, int64_t HW, int64_t G, const float* __restrict__ dy,
                              const float* __restrict__ x, const double* __restrict__ mean_d,
                              const float* __restrict__ rstd, float* __restrict__ dgamma,
                              float* __restrict__ dbeta) {
  __shared__ double scratch[32];
  const int64_t c = blockIdx.x, g = c / (C / G);
  double sg = 0.0, sb = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    const float* xc = x + (n * C + c) * HW;
    const float* dyc = dy + (n * C + c) * HW;
    const double mu = mean_d[n * G + g], rs = rstd[n * G + g];
    for (int64_t i = threadIdx.x; i < HW; i += blockDim.x) {
      sb += double(dyc[i]);
      sg = fma(double(dyc[i]), (double(xc[i]) - mu) * rs, sg);
    }
  }
  sg = block_sum(sg, scratch);
  sb = block_sum(sb, scratch);
  if (threadIdx.x == 0) {
    if (dgamma) dgamma[c] = float(sg);
    if (dbeta) dbeta[c] = float(sb);
  }
}

void check_args(int64_t N, int64_t C, int64_t HW, int64_t G, const char* fn) {
  if (N < 0 || C <= 0 || HW < 0 || G <= 0 || C % G != 0)
    throw ::engine::Error(std::string("kern::cuda::") + fn + ": need C % G == 0 (C=" +
                                std::to_string(C) + ", G=" + std::to_string(G) + ")");
}

}  // namespace

void group_norm_forward(int64_t N, int64_t C, int64_t HW, int64_t G, double eps, const float* x,
                        const float* gamma, const float* beta, float* y, float* mean, float* rstd) {
  check_args(N, C, HW, G, "group_norm_forward");
  if (N == 0 || HW == 0) return;
  gn_forward_kernel<<<static_cast<unsigned>(N * G), kThreads, 0, engine_stream()>>>(C, HW, G, eps, x, gamma,
                                                                                    beta, y, mean, rstd);
  CUDA_CHECK_LAUNCH();
}

void group_norm_backward(int64_t N, int64_t C, int64_t HW, int64_t G, const float* dy, const float* x,
                         const float* mean, const float* rstd, const float* gamma, float* dx, float* dgamma,
                         float* dbeta) {
  check_args(N, C, HW, G, "group_norm_backward");
  Workspace mean_d(static_cast<std::size_t>(std::max<int64_t>(N * G, 1)) * sizeof(double));
  const bool run_dx = N > 0 && HW > 0;
  if (run_dx) {
    gn_backward_dx_kernel<<<static_cast<unsigned>(N * G), kThreads, 0, engine_stream()>>>(
        C, HW, G, dy, x, mean, rstd, gamma, dx, mean_d.as<double>());
    CUDA_CHECK_LAUNCH();
  }
  if (dgamma || dbeta) {
    gn_backward_affine_kernel<<<static_cast<unsigned>(C), kThreads, 0, engine_stream()>>>(
        run_dx ? N : 0, C, HW, G, dy, x, mean_d.as<double>(), rstd, dgamma, dbeta);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace kern::cuda
