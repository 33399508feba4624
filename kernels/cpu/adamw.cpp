// CPU AdamW step over several tensors, mirroring torch.optim.AdamW's _single_tensor_adamw (non-amsgrad):
// scalar coefficients in double, cast to the element type; element math in the element type.
#include <cmath>

#include "kernels/cpu/cpu_kernels.h"

namespace kern::cpu {

template <typename T>
void adamw_step(int ntensors, T* const* p, const T* const* g, T* const* m, T* const* v, const int64_t* sizes,
                const AdamWParams& hp) {
  const double bc1 = 1.0 - std::pow(hp.beta1, double(hp.step));
  const double bc2 = 1.0 - std::pow(hp.beta2, double(hp.step));
  const T decay = T(1.0 - hp.lr * hp.weight_decay);
  const T w1 = T(1.0 - hp.beta1);  // lerp weight: m.lerp_(g, 1 - beta1)
  const T b2 = T(hp.beta2), one_minus_b2 = T(1.0 - hp.beta2);
  const T bc2_sqrt = T(std::sqrt(bc2));
  const T eps = T(hp.eps);
  const T neg_step = T(-(hp.lr / bc1));
  for (int t = 0; t < ntensors; ++t) {
    T* pt = p[t];
    const T* gt = g[t];
    T* mt = m[t];
    T* vt = v[t];
    const int64_t n = sizes[t];
#pragma omp parallel for simd schedule(static) if (n > 32768)
    for (int64_t i = 0; i < n; ++i) {
      const T gi = gt[i];
      const T pi = pt[i] * decay;
      // torch lerp: weight < 0.5 ? self + w * (end - self) : end - (end - self) * (1 - w)
      const T mi = w1 < T(0.5) ? mt[i] + w1 * (gi - mt[i]) : gi - (gi - mt[i]) * (T(1) - w1);
      const T vi = vt[i] * b2 + one_minus_b2 * gi * gi;
      const T denom = std::sqrt(vi) / bc2_sqrt + eps;
      mt[i] = mi;
      vt[i] = vi;
      pt[i] = pi + neg_step * mi / denom;
    }
  }
}

KERN_INSTANTIATE_CPU(adamw_step)

}  // namespace kern::cpu
