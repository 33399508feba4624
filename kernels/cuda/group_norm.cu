// GroupNorm over x (N, C, HW) with G groups: one block per (n, g) group, whose Cg*HW elements are
// contiguous. Statistics are two-pass in float (mean, then the sum of squared deviations), so there
// is no E[x^2] - E[x]^2 cancellation. dgamma/dbeta use one block per channel looping over n in order.
// All reductions are fixed-shape tree reductions: deterministic, no atomics.
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_kernels.h"

namespace kern::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    gn_forward_kernel(int64_t C, int64_t HW, int64_t G, float eps, const float* __restrict__ x,
                      const float* __restrict__ gamma, const float* __restrict__ beta, float* __restrict__ y,
                      float* __restrict__ mean, float* __restrict__ rstd) {
  __shared__ float scratch[32];
  const int64_t ng = blockIdx.x, Cg = C / G, M = Cg * HW;
  const int64_t c0 = (ng % G) * Cg;
  const float* xg = x + ng * M;  // (Cg, HW)
  float* yg = y + ng * M;

  float s = 0.f;
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) s += xg[i];
  const float mu = block_sum(s, scratch) / float(M);
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    const float d = xg[i] - mu;
    ss = fmaf(d, d, ss);
  }
  const float var = block_sum(ss, scratch) / float(M);
  const float rs = 1.0f / sqrtf(var + eps);
  if (threadIdx.x == 0) {
    mean[ng] = mu;
    rstd[ng] = rs;
  }
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    const int64_t c = c0 + i / HW;
    const float g = gamma ? gamma[c] : 1.f, b = beta ? beta[c] : 0.f;
    yg[i] = (xg[i] - mu) * rs * g + b;
  }
}

// dx = rstd * (g*dy - mean(g*dy) - xhat * mean(g*dy*xhat)), xhat = (x - mean) * rstd.
__global__ void __launch_bounds__(kThreads)
    gn_backward_dx_kernel(int64_t C, int64_t HW, int64_t G, const float* __restrict__ dy,
                          const float* __restrict__ x, const float* __restrict__ mean,
                          const float* __restrict__ rstd, const float* __restrict__ gamma,
                          float* __restrict__ dx) {
  __shared__ float scratch[32];
  const int64_t ng = blockIdx.x, Cg = C / G, M = Cg * HW;
  const int64_t c0 = (ng % G) * Cg;
  const float* xg = x + ng * M;
  const float* dyg = dy + ng * M;
  float* dxg = dx + ng * M;
  const float mu = mean[ng], rs = rstd[ng];

  float s1 = 0.f, s2 = 0.f;  // sum(g*dy), sum(g*dy*xhat)
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    const float g = gamma ? gamma[c0 + i / HW] : 1.f;
    const float gdy = g * dyg[i];
    s1 += gdy;
    s2 = fmaf(gdy, (xg[i] - mu) * rs, s2);
  }
  const float m1 = block_sum(s1, scratch) / float(M);
  const float m2 = block_sum(s2, scratch) / float(M);
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    const float g = gamma ? gamma[c0 + i / HW] : 1.f;
    const float xhat = (xg[i] - mu) * rs;
    dxg[i] = rs * (g * dyg[i] - m1 - xhat * m2);
  }
}

// dgamma[c] = sum_{n, hw} dy * xhat, dbeta[c] = sum_{n, hw} dy; one block per channel.
__global__ void __launch_bounds__(kThreads)
    gn_backward_affine_kernel(int64_t N, int64_t C, int64_t HW, int64_t G, const float* __restrict__ dy,
                              const float* __restrict__ x, const float* __restrict__ mean,
                              const float* __restrict__ rstd, float* __restrict__ dgamma,
                              float* __restrict__ dbeta) {
  __shared__ float scratch[32];
  const int64_t c = blockIdx.x, g = c / (C / G);
  float sg = 0.f, sb = 0.f;
  for (int64_t n = 0; n < N; ++n) {
    const float* xc = x + (n * C + c) * HW;
    const float* dyc = dy + (n * C + c) * HW;
    const float mu = mean[n * G + g], rs = rstd[n * G + g];
    for (int64_t i = threadIdx.x; i < HW; i += blockDim.x) {
      sb += dyc[i];
      sg = fmaf(dyc[i], (xc[i] - mu) * rs, sg);
    }
  }
  sg = block_sum(sg, scratch);
  sb = block_sum(sb, scratch);
  if (threadIdx.x == 0) {
    if (dgamma) dgamma[c] = sg;
    if (dbeta) dbeta[c] = sb;
  }
}

void check_args(int64_t N, int64_t C, int64_t HW, int64_t G, const char* fn) {
  if (N < 0 || C <= 0 || HW < 0 || G <= 0 || C % G != 0)
    throw std::invalid_argument(std::string("kern::cuda::") + fn + ": need C % G == 0 (C=" +
                                std::to_string(C) + ", G=" + std::to_string(G) + ")");
}

}  // namespace

void group_norm_forward(int64_t N, int64_t C, int64_t HW, int64_t G, double eps, const float* x,
                        const float* gamma, const float* beta, float* y, float* mean, float* rstd) {
  check_args(N, C, HW, G, "group_norm_forward");
  if (N == 0 || HW == 0) return;
  gn_forward_kernel<<<static_cast<unsigned>(N * G), kThreads, 0, engine_stream()>>>(
      C, HW, G, static_cast<float>(eps), x, gamma, beta, y, mean, rstd);
  CUDA_CHECK_LAUNCH();
}

void group_norm_backward(int64_t N, int64_t C, int64_t HW, int64_t G, const float* dy, const float* x,
                         const float* mean, const float* rstd, const float* gamma, float* dx, float* dgamma,
                         float* dbeta) {
  check_args(N, C, HW, G, "group_norm_backward");
  if (N > 0 && HW > 0) {
    gn_backward_dx_kernel<<<static_cast<unsigned>(N * G), kThreads, 0, engine_stream()>>>(
        C, HW, G, dy, x, mean, rstd, gamma, dx);
    CUDA_CHECK_LAUNCH();
  }
  if (dgamma || dbeta) {
    gn_backward_affine_kernel<<<static_cast<unsigned>(C), kThreads, 0, engine_stream()>>>(
        N, C, HW, G, dy, x, mean, rstd, dgamma, dbeta);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace kern::cuda
