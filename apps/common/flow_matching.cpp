// Flow-matching training step, weight EMA and guided ODE samplers.
#include "apps/common/flow_matching.h"

#include <algorithm>
#include <cmath>

#include "core/autograd.h"

namespace engine::app {

StepDraws draw_step(Generator& gen, int64_t B, int64_t C, int64_t H, int64_t W, double cfg_drop,
                    Device device) {
  StepDraws d;
  d.noise = randn({B, C, H, W}, gen, DType::F32, device);                                  // (B, C, H, W)
  d.sigma = affine(rand({B}, gen, DType::F32, device), kSigmaMax - kSigmaMin, kSigmaMin);  // (B,)
  // Philox gives the same numbers on every device, so the mask can be thresholded on the host.
  const std::vector<float> u = rand({B}, gen, DType::F32, Device::cpu()).to_vector<float>();
  std::vector<uint8_t> drop(static_cast<size_t>(B));
  for (int64_t i = 0; i < B; ++i) drop[i] = u[i] < cfg_drop ? 1 : 0;
  d.drop = Tensor::from_vector<uint8_t>(drop, {B}, device);  // (B,)
  return d;
}

Tensor flow_matching_loss(const models::ConditionalUNet& model, const Tensor& x, const Tensor& labels,
                          const StepDraws& d, std::vector<double>* per_sample) {
  const int64_t B = x.size(0);
  Tensor s = d.sigma.reshape({B, 1, 1, 1});                                   // (B, 1, 1, 1)
  Tensor xt = x * affine(s, -1.0, 1.0) + d.noise * s;                         // (B, C, H, W)
  Tensor pred = model.forward(xt, d.sigma * kTimestepScale, labels, d.drop);  // (B, C, H, W)
  Tensor target = d.noise - x;                                                // (B, C, H, W)
  if (per_sample) {
    const std::vector<float> p = pred.detach().to(Device::cpu()).contiguous().to_vector<float>();
    const std::vector<float> t = target.detach().to(Device::cpu()).contiguous().to_vector<float>();
    const size_t per = B > 0 ? p.size() / static_cast<size_t>(B) : 0;
    per_sample->assign(static_cast<size_t>(B), 0.0);
    for (int64_t i = 0; i < B; ++i) {
      double acc = 0;
      for (size_t j = i * per; j < (i + 1) * per; ++j) acc += (double(p[j]) - t[j]) * (double(p[j]) - t[j]);
      (*per_sample)[i] = per ? acc / double(per) : 0.0;
    }
  }
  return mse_loss(pred, target);
}

std::vector<double> sigma_bin_means(const std::vector<float>& sigma, const std::vector<double>& per_sample,
                                    int bins) {
  ENGINE_CHECK(bins >= 1 && sigma.size() == per_sample.size(), "sigma_bin_means",
               "need bins >= 1 and one loss per sigma, got ", bins, " bins, ", sigma.size(), " sigmas, ",
               per_sample.size(), " losses");
  std::vector<double> sum(static_cast<size_t>(bins), 0.0);
  std::vector<int64_t> cnt(static_cast<size_t>(bins), 0);
  for (size_t i = 0; i < sigma.size(); ++i) {
    const double u = (double(sigma[i]) - kSigmaMin) / (kSigmaMax - kSigmaMin);
    const int k = std::clamp(static_cast<int>(std::floor(u * bins)), 0, bins - 1);
    sum[k] += per_sample[i];
    ++cnt[k];
  }
  for (int k = 0; k < bins; ++k) sum[k] = cnt[k] ? sum[k] / double(cnt[k]) : std::nan("");
  return sum;
}

// ---- EMA

Ema::Ema(const models::ConditionalUNet& model, double decay, Device device) : decay_(decay) {
  ENGINE_CHECK(decay >= 0 && decay < 1, "ema", "decay must be in [0, 1), got ", decay);
  ema_ = std::make_unique<models::ConditionalUNet>(model.config(), 0, device);
  NoGradGuard ng;
  auto src = model.named_parameters();
  auto dst = ema_->named_parameters();
  for (size_t i = 0; i < dst.size(); ++i) dst[i].second.copy_(src[i].second);
}

double Ema::decay_at(double decay, int64_t t) {
  return std::min(decay, (1.0 + static_cast<double>(t)) / (10.0 + static_cast<double>(t)));
}

double Ema::update(const models::ConditionalUNet& model, int64_t t) {
  const double d = decay_at(decay_, t);
  NoGradGuard ng;
  auto src = model.named_parameters();
  auto dst = ema_->named_parameters();
  for (size_t i = 0; i < dst.size(); ++i) {
    Tensor& e = dst[i].second;
    e.copy_(e * d + src[i].second.detach() * (1.0 - d));
  }
  return d;
}

// ---- sampling

Solver parse_solver(const std::string& s) {
  if (s == "euler") return Solver::Euler;
  if (s == "heun") return Solver::Heun;
  if (s == "midpoint") return Solver::Midpoint;
  throw Error("solver: unknown solver '" + s + "' (expected euler, heun or midpoint)");
}

const char* solver_name(Solver s) {
  switch (s) {
    case Solver::Euler:
      return "euler";
    case Solver::Heun:
      return "heun";
    case Solver::Midpoint:
      return "midpoint";
  }
  return "?";
}

Tensor guided_velocity(const models::ConditionalUNet& model, const Tensor& x, double t, const Tensor& labels,
                       double cfg_scale) {
  const int64_t B = x.size(0);
  const Device dev = x.device();
  std::vector<int64_t> lab = labels.to_vector<int64_t>();
  lab.insert(lab.end(), lab.begin(), lab.end());
  std::vector<uint8_t> drop(static_cast<size_t>(2 * B), 0);
  std::fill(drop.begin() + B, drop.end(), uint8_t{1});  // second half: unconditional
  Tensor out = model.forward(concat({x, x}, 0), Tensor::full({2 * B}, t * kTimestepScale, DType::F32, dev),
                             Tensor::from_vector<int64_t>(lab, {2 * B}, dev),
                             Tensor::from_vector<uint8_t>(drop, {2 * B}, dev));  // (2B, C, H, W)
  Tensor cond = out.narrow(0, 0, B), uncond = out.narrow(0, B, B);
  return cond * cfg_scale + uncond * (1.0 - cfg_scale);
}

Tensor sample(const models::ConditionalUNet& model, const Tensor& labels, Generator& gen,
              const SampleOptions& opt, int64_t height, int64_t width) {
  ENGINE_CHECK(opt.steps >= 1, "sample", "steps must be >= 1, got ", opt.steps);
  ENGINE_CHECK(labels.defined() && labels.dim() == 1 && labels.dtype() == DType::I64, "sample",
               "labels must be (N,) int64");
  NoGradGuard ng;
  const Device dev = model.parameters().at(0).device();
  const int64_t N = labels.size(0), C = model.config().image_channels();
  const std::vector<int64_t> lab = labels.to_vector<int64_t>();
  for (int64_t l : lab)
    ENGINE_CHECK(l >= 0 && l < model.config().num_classes, "sample", "class ", l, " out of range [0, ",
                 model.config().num_classes, ")");
  Tensor x0 = randn({N, C, height, width}, gen, DType::F32, dev);  // (N, C, H, W)
  const int64_t mb = opt.max_batch > 0 ? opt.max_batch
                     : dev.is_cpu()    ? kCpuSampleBatch
                                       : std::max<int64_t>(N, 1);
  std::vector<float> result;
  result.reserve(static_cast<size_t>(N * C * height * width));
  for (int64_t b0 = 0; b0 < N; b0 += mb) {
    const int64_t n = std::min(mb, N - b0);
    Tensor x = x0.narrow(0, b0, n).contiguous();  // (n, C, H, W)
    Tensor y =
        Tensor::from_vector<int64_t>(std::vector<int64_t>(lab.begin() + b0, lab.begin() + b0 + n), {n}, dev);
    auto v = [&](const Tensor& xx, double t) { return guided_velocity(model, xx, t, y, opt.cfg_scale); };
    for (int64_t i = 0; i < opt.steps; ++i) {
      const double t0 = opt.t_start * (1.0 - static_cast<double>(i) / opt.steps);
      const double t1 = opt.t_start * (1.0 - static_cast<double>(i + 1) / opt.steps);
      const double dt = t1 - t0;
      Tensor v0 = v(x, t0);
      switch (opt.solver) {
        case Solver::Euler:
          x = x + v0 * dt;
          break;
        case Solver::Midpoint:
          x = x + v(x + v0 * (0.5 * dt), t0 + 0.5 * dt) * dt;
          break;
        case Solver::Heun: {
          Tensor xe = x + v0 * dt;
          x = (i + 1 == opt.steps) ? xe : x + (v0 + v(xe, t1)) * (0.5 * dt);
          break;
        }
      }
    }
    const std::vector<float> part = x.to(Device::cpu()).to_vector<float>();
    result.insert(result.end(), part.begin(), part.end());
  }
  return Tensor::from_vector<float>(result, {N, C, height, width});
}

std::vector<int64_t> grid_labels(const std::vector<int64_t>& classes, int64_t per_class) {
  std::vector<int64_t> out;
  for (int64_t c : classes)
    for (int64_t k = 0; k < per_class; ++k) out.push_back(c);
  return out;
}

}  // namespace engine::app
