// Fused multi-tensor AdamW (torch.optim.AdamW, non-amsgrad): a table of per-tensor descriptors is
// uploaded once per call into allocator memory and ONE grid-stride kernel walks the concatenated
// element range. Scalar coefficients are computed in double on the host and cast to float, and the
// element math mirrors kernels/cpu/adamw.cpp (including torch's lerp for m).
#include <cmath>
#include <vector>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_kernels.h"

namespace kern::cuda {
namespace {

constexpr int kThreads = 256;

struct TensorDesc {
  float* p;
  const float* g;
  float* m;
  float* v;
  int64_t begin;  // offset of this tensor's first element in the concatenated range
  int64_t size;
};

struct Coeffs {
  float decay, w1, b2, one_minus_b2, bc2_sqrt, eps, neg_step;
};

// Index of the tensor holding global element e (tensors sorted by begin; empty ones never match).
__device__ __forceinline__ int find_tensor(const TensorDesc* __restrict__ t, int ntensors, int64_t e) {
  int lo = 0, hi = ntensors - 1;
  while (lo < hi) {  // last tensor with begin <= e
    const int mid = (lo + hi + 1) / 2;
    if (t[mid].begin <= e)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

__global__ void adamw_kernel(const TensorDesc* __restrict__ tensors, int ntensors, int64_t total, Coeffs c) {
  int cur = -1;
  int64_t cur_begin = 0, cur_end = 0;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    if (e < cur_begin || e >= cur_end) {
      cur = find_tensor(tensors, ntensors, e);
      cur_begin = tensors[cur].begin;
      cur_end = cur_begin + tensors[cur].size;
    }
    const TensorDesc& t = tensors[cur];
    const int64_t i = e - cur_begin;
    const float gi = t.g[i], mo = t.m[i];
    const float pi = t.p[i] * c.decay;
    // torch lerp: weight < 0.5 ? self + w * (end - self) : end - (end - self) * (1 - w)
    const float mi = c.w1 < 0.5f ? mo + c.w1 * (gi - mo) : gi - (gi - mo) * (1.f - c.w1);
    const float vi = t.v[i] * c.b2 + c.one_minus_b2 * gi * gi;
    const float denom = sqrtf(vi) / c.bc2_sqrt + c.eps;
    t.m[i] = mi;
    t.v[i] = vi;
    t.p[i] = pi + c.neg_step * mi / denom;
  }
}

}  // namespace

void adamw_step(int ntensors, float* const* p, const float* const* g, float* const* m, float* const* v,
                const int64_t* sizes, const AdamWParams& hp) {
  if (ntensors <= 0) return;
  std::vector<TensorDesc> table;
  table.reserve(ntensors);
  int64_t total = 0;
  for (int t = 0; t < ntensors; ++t) {
    if (sizes[t] < 0) throw ::engine::Error("kern::cuda::adamw_step: negative tensor size");
    if (sizes[t] == 0) continue;
    table.push_back({p[t], g[t], m[t], v[t], total, sizes[t]});
    total += sizes[t];
  }
  if (total == 0) return;

  const double bc1 = 1.0 - std::pow(hp.beta1, double(hp.step));
  const double bc2 = 1.0 - std::pow(hp.beta2, double(hp.step));
  Coeffs c;
  c.decay = float(1.0 - hp.lr * hp.weight_decay);
  c.w1 = float(1.0 - hp.beta1);
  c.b2 = float(hp.beta2);
  c.one_minus_b2 = float(1.0 - hp.beta2);
  c.bc2_sqrt = float(std::sqrt(bc2));
  c.eps = float(hp.eps);
  c.neg_step = float(-(hp.lr / bc1));

  const int nt = static_cast<int>(table.size());
  Workspace dev_table(table.size() * sizeof(TensorDesc));
  cudaStream_t stream = engine_stream();
  // Pageable source: the call returns once `table` has been staged, so it may be destroyed after.
  CUDA_CHECK(cudaMemcpyAsync(dev_table.get(), table.data(), table.size() * sizeof(TensorDesc),
                             cudaMemcpyHostToDevice, stream));
  adamw_kernel<<<grid_1d(total, kThreads, 4096), kThreads, 0, stream>>>(dev_table.as<TensorDesc>(), nt, total,
                                                                        c);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kern::cuda
