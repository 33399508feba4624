// adamw_step op: validates a parameter group and runs the fused multi-tensor AdamW kernel of its device
// (kernels/cpu/adamw.cpp, kernels/cuda/adamw.cu) through the common dispatch.
#include <string>

#include "core/ops.h"
#include "core/ops/dispatch.h"

namespace engine {

void adamw_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                const std::vector<Tensor>& exp_avg, const std::vector<Tensor>& exp_avg_sq,
                const AdamWStepParams& hp) {
  const size_t n = params.size();
  ENGINE_CHECK(grads.size() == n && exp_avg.size() == n && exp_avg_sq.size() == n, "adamw_step", "got ", n,
               " params, ", grads.size(), " grads, ", exp_avg.size(), " exp_avg and ", exp_avg_sq.size(),
               " exp_avg_sq");
  if (n == 0) return;
  ENGINE_CHECK(n <= 1u << 30, "adamw_step", "too many tensors in one group: ", n);
  std::vector<int64_t> sizes(n);
  for (size_t i = 0; i < n; ++i) {
    const Tensor* ts[] = {&params[i], &grads[i], &exp_avg[i], &exp_avg_sq[i]};
    for (const Tensor* t : ts) {
      ENGINE_CHECK(t->defined(), "adamw_step", "tensor ", i, " of the group is undefined");
      ENGINE_CHECK(t->shape() == params[i].shape(), "adamw_step", "tensor ", i, ": shapes ",
                   shape_str(params[i].shape()), " and ", shape_str(t->shape()), " differ");
      ENGINE_CHECK(t->is_contiguous(), "adamw_step", "tensor ", i, " must be contiguous");
    }
    detail::check_same("adamw_step", {&params[0], &params[i], &grads[i], &exp_avg[i], &exp_avg_sq[i]});
    sizes[i] = params[i].numel();
  }
  for (size_t i = 0; i < n; ++i)
    for (const Tensor* t : {&params[i], &exp_avg[i], &exp_avg_sq[i]}) t->storage()->bump_version();
  const kern::AdamWParams kp{hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay, hp.step};
  auto cost = [&] {  // bytes only: read p, g, m, v and write p, m, v once (the FLOP count is not modelled)
    double elems = 0;
    for (int64_t s : sizes) elems += static_cast<double>(s);
    return prof::Cost{-1.0, 7.0 * elems * static_cast<double>(dtype_size(params[0].dtype()))};
  };
  detail::dispatch_float(params[0], "adamw_step", cost, [&]<typename T, bool Cuda>() {
    std::vector<T*> p(n), m(n), v(n);
    std::vector<const T*> g(n);
    for (size_t i = 0; i < n; ++i) {
      p[i] = params[i].data<T>();
      g[i] = grads[i].data<T>();
      m[i] = exp_avg[i].data<T>();
      v[i] = exp_avg_sq[i].data<T>();
    }
    KERN(adamw_step, static_cast<int>(n), p.data(), g.data(), m.data(), v.data(), sizes.data(), kp);
  });
}

}  // namespace engine
