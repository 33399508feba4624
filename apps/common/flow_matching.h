// Class-conditional flow matching (rectified flow) on top of ConditionalUNet: the per-step random
// draws, the training loss, the EMA of the weights, and the Euler / Heun / midpoint samplers with
// classifier-free guidance (conditional and unconditional predictions evaluated in one 2B batch).
//
// Convention (the reference recipe): x_t = (1 - t) x + t noise, t in [0, 1], the model predicts the
// velocity v = noise - x at timestep t * 1000, and sampling integrates dx/dt = v from t = 0.994 down to 0.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/tensor.h"
#include "models/conditional_unet.h"

namespace engine::app {

constexpr double kSigmaMin = 0.006, kSigmaMax = 0.994;  // training range of t; sampling starts at kSigmaMax
constexpr double kTimestepScale = 1000.0;               // model timestep = t * 1000

// The random draws of one training step, in this order from the generator: noise (B, C, H, W) ~ N(0, 1),
// sigma (B,) ~ U[0.006, 0.994], drop (B,) U8 = U[0, 1) < cfg_drop.
struct StepDraws {
  Tensor noise;  // (B, C, H, W) on the model device
  Tensor sigma;  // (B,) F32 on the model device
  Tensor drop;   // (B,) U8 on the model device (1 = class embedding zeroed)
};
StepDraws draw_step(Generator& gen, int64_t B, int64_t C, int64_t H, int64_t W, double cfg_drop,
                    Device device);

// MSE(model(x_t, sigma * 1000, labels, drop), noise - x), a 0-d tensor with autograd history.
// x (B, C, H, W) in [-1, 1] and labels (B,) I64, both on the model device.
// With `per_sample`, also stores each sample's mean squared error (B doubles, in batch order), computed on
// the host from detached copies: the returned loss and its gradients are the same bits either way.
Tensor flow_matching_loss(const models::ConditionalUNet& model, const Tensor& x, const Tensor& labels,
                          const StepDraws& d, std::vector<double>* per_sample = nullptr);

// Number of sigma bins logged in metrics.csv (loss_sigma_0 .. loss_sigma_9 split [kSigmaMin, kSigmaMax]).
constexpr int kSigmaBins = 10;
// Mean per-sample loss in each of `bins` equal-width sigma bins over [kSigmaMin, kSigmaMax]; NaN for a bin
// no sample fell in. sigma and per_sample have the same length (sigmas outside the range clamp to the end
// bins).
std::vector<double> sigma_bin_means(const std::vector<float>& sigma, const std::vector<double>& per_sample,
                                    int bins = kSigmaBins);

// Exponential moving average of a model's parameters, stored as a second model (so it can be sampled
// and saved like the original). decay_t = min(decay, (1 + t) / (10 + t)) for the t-th update (t from 0).
class Ema {
 public:
  Ema(const models::ConditionalUNet& model, double decay, Device device);
  // ema = d * ema + (1 - d) * param for update number `t` (0-based); returns the decay used.
  double update(const models::ConditionalUNet& model, int64_t t);
  static double decay_at(double decay, int64_t t);
  models::ConditionalUNet& model() { return *ema_; }
  const models::ConditionalUNet& model() const { return *ema_; }
  double decay() const { return decay_; }

 private:
  std::unique_ptr<models::ConditionalUNet> ema_;
  double decay_;
};

enum class Solver { Euler, Heun, Midpoint };
Solver parse_solver(const std::string& s);  // "euler" | "heun" | "midpoint"; throws engine::Error
const char* solver_name(Solver s);

struct SampleOptions {
  int64_t steps = 15;
  double cfg_scale = 3.0;
  Solver solver = Solver::Euler;
  double t_start = kSigmaMax;
  // Images per model call (the call itself is 2x that for CFG); 0 = auto: kCpuSampleBatch on the CPU
  // (larger calls only cost memory traffic: 1,000 images in one call sampled 1.65x slower than calls of
  // 128 on a 2-core Zen 4), all at once on CUDA. The samples do not depend on it.
  int64_t max_batch = 0;
};
constexpr int64_t kCpuSampleBatch = 128;

// Guided velocity: s * v(x, t | class) + (1 - s) * v(x, t | no class), both halves in one batch of 2B.
// x (B, C, H, W), labels (B,) I64 on the model device; t in [0, 1].
Tensor guided_velocity(const models::ConditionalUNet& model, const Tensor& x, double t, const Tensor& labels,
                       double cfg_scale);

// Integrates from pure noise: x_0 ~ randn (N, C, H, W) drawn from `gen` for all N images first (so the
// result does not depend on max_batch), then the solver over t_i = t_start * (1 - i / steps).
// Euler: x += (t_{i+1} - t_i) v(x, t_i). Midpoint: the velocity at the half step. Heun: the average of the
// velocities at both ends, except for the last step to t = 0, which is an Euler step.
// labels (N,) I64 (any device). Returns (N, C, H, W) F32 on the CPU. Runs without autograd.
Tensor sample(const models::ConditionalUNet& model, const Tensor& labels, Generator& gen,
              const SampleOptions& opt, int64_t height, int64_t width);

// Labels for a grid with one row per class: classes[0] x per_class, classes[1] x per_class, ...
std::vector<int64_t> grid_labels(const std::vector<int64_t>& classes, int64_t per_class);

}  // namespace engine::app
