// AdamW: groups parameters with a gradient by (device, dtype, step) and runs one fused multi-tensor
// adamw_step op per group (core/ops/adamw.cpp, which dispatches to the CPU or CUDA kernel).
#include "nn/adamw.h"

#include <map>
#include <tuple>

#include "core/autograd.h"
#include "core/ops.h"

namespace engine::nn {

AdamW::AdamW(std::vector<std::pair<std::string, Tensor>> params, AdamWOptions opt) : opt_(opt) {
  ENGINE_CHECK(opt.lr >= 0 && opt.eps >= 0 && opt.beta1 >= 0 && opt.beta1 < 1 && opt.beta2 >= 0 &&
                   opt.beta2 < 1 && opt.weight_decay >= 0,
               "AdamW", "invalid hyper-parameters lr=", opt.lr, " betas=(", opt.beta1, ", ", opt.beta2,
               ") eps=", opt.eps, " weight_decay=", opt.weight_decay);
  for (auto& [name, p] : params) {
    ENGINE_CHECK(p.defined() && is_floating(p.dtype()), "AdamW", "parameter '", name,
                 "' must be a defined floating-point tensor");
    ENGINE_CHECK(p.is_contiguous(), "AdamW", "parameter '", name, "' must be contiguous");
    names_.push_back(name);
    params_.push_back(p);
    m_.push_back(Tensor::zeros(p.shape(), p.dtype(), p.device()));
    v_.push_back(Tensor::zeros(p.shape(), p.dtype(), p.device()));
    steps_.push_back(0);
  }
}

void AdamW::zero_grad() {
  for (Tensor& p : params_) p.zero_grad();
}

void AdamW::step() {
  NoGradGuard ng;
  ++step_;
  struct Group {
    std::vector<Tensor> p, g, m, v;
  };
  // (device kind, device index, dtype, step) -> group; std::map keeps the order deterministic.
  std::map<std::tuple<int, int, int, int64_t>, Group> groups;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    Tensor g = p.grad();
    if (!g.defined()) continue;
    ENGINE_CHECK(g.shape() == p.shape(), "AdamW", "grad of '", names_[i], "' has shape ",
                 shape_str(g.shape()), ", parameter ", shape_str(p.shape()));
    // Moments follow the parameter if it was moved (Module::to) after the optimizer was built.
    if (m_[i].device() != p.device() || m_[i].dtype() != p.dtype()) {
      m_[i] = m_[i].to(p.dtype()).to(p.device());
      v_[i] = v_[i].to(p.dtype()).to(p.device());
    }
    if (g.dtype() != p.dtype()) g = g.to(p.dtype());
    if (g.device() != p.device()) g = g.to(p.device());
    ++steps_[i];
    auto key = std::make_tuple(static_cast<int>(p.device().kind), p.device().index,
                               static_cast<int>(p.dtype()), steps_[i]);
    Group& grp = groups[key];
    grp.p.push_back(p);
    grp.g.push_back(g.contiguous());
    grp.m.push_back(m_[i]);
    grp.v.push_back(v_[i]);
  }
  for (auto& [key, grp] : groups) {
    const int64_t step = std::get<3>(key);
    adamw_step(grp.p, grp.g, grp.m, grp.v,
               {opt_.lr, opt_.beta1, opt_.beta2, opt_.eps, opt_.weight_decay, step});
  }
}

void AdamW::load_state(int64_t step, const std::vector<Tensor>& exp_avg,
                       const std::vector<Tensor>& exp_avg_sq) {
  ENGINE_CHECK(step >= 0, "AdamW::load_state", "negative step ", step);
  ENGINE_CHECK(exp_avg.size() == params_.size() && exp_avg_sq.size() == params_.size(), "AdamW::load_state",
               "expected ", params_.size(), " moment tensors, got ", exp_avg.size(), " and ",
               exp_avg_sq.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    ENGINE_CHECK(exp_avg[i].shape() == params_[i].shape() && exp_avg_sq[i].shape() == params_[i].shape(),
                 "AdamW::load_state", "moment shape mismatch for '", names_[i], "': parameter ",
                 shape_str(params_[i].shape()), ", exp_avg ", shape_str(exp_avg[i].shape()), ", exp_avg_sq ",
                 shape_str(exp_avg_sq[i].shape()));
  }
  NoGradGuard ng;
  for (size_t i = 0; i < params_.size(); ++i) {
    m_[i] = Tensor::zeros(params_[i].shape(), params_[i].dtype(), params_[i].device());
    v_[i] = Tensor::zeros(params_[i].shape(), params_[i].dtype(), params_[i].device());
    m_[i].copy_(exp_avg[i]);
    v_[i].copy_(exp_avg_sq[i]);
    steps_[i] = step;
  }
  step_ = step;
}

}  // namespace engine::nn
