// AdamW optimizer with exactly torch.optim.AdamW semantics (decoupled weight decay, bias correction
// by each parameter's own step count, zero-initialised moments, parameters without .grad skipped).
// One adamw_step op call (core/ops.h; a fused multi-tensor kernel) per (device, dtype, step) group and step.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace engine::nn {

struct AdamWOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
};

class AdamW {
 public:
  AdamW(std::vector<std::pair<std::string, Tensor>> params, AdamWOptions opt = {});
  void step();
  void zero_grad();
  // Number of step() calls (or the loaded step).
  int64_t step_count() const { return step_; }
  void set_lr(double lr) { opt_.lr = lr; }
  const AdamWOptions& options() const { return opt_; }

  // Optimizer state for checkpoints, in parameter order. Moments exist from construction (zeros, which
  // is what torch's lazy initialisation produces).
  const std::vector<std::string>& names() const { return names_; }
  const std::vector<Tensor>& exp_avg() const { return m_; }
  const std::vector<Tensor>& exp_avg_sq() const { return v_; }
  // Per-parameter step counts (differ from step_count() only for parameters that had no grad).
  const std::vector<int64_t>& param_steps() const { return steps_; }
  // Copies the given moments (shapes must match) and sets every parameter's step count to `step`.
  void load_state(int64_t step, const std::vector<Tensor>& exp_avg, const std::vector<Tensor>& exp_avg_sq);

 private:
  AdamWOptions opt_;
  std::vector<std::string> names_;
  std::vector<Tensor> params_, m_, v_;
  std::vector<int64_t> steps_;
  int64_t step_ = 0;
};

}  // namespace engine::nn
