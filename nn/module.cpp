// Module registry implementation: recursive parameter collection, in-place device/dtype moves,
// the parameter summary.
#include "nn/module.h"

#include <cmath>
#include <iomanip>
#include <sstream>

#include "core/autograd.h"

namespace engine::nn {

Tensor Init::uniform(const Shape& shape, double bound) {
  NoGradGuard ng;
  Tensor u = rand(shape, gen, dtype, device);  // [0, 1)
  return affine(u, 2.0 * bound, -bound);
}

Tensor Init::normal(const Shape& shape) {
  NoGradGuard ng;
  return randn(shape, gen, dtype, device);
}

Tensor Init::constant(const Shape& shape, double value) { return Tensor::full(shape, value, dtype, device); }

Tensor Module::register_parameter(const std::string& name, Tensor t) {
  ENGINE_CHECK(t.defined(), "Module", "parameter '", name, "' is undefined");
  for (const auto& [n, _] : params_)
    ENGINE_CHECK(n != name, "Module", "duplicate parameter name '", name, "'");
  t.set_requires_grad(true);
  params_.emplace_back(name, t);
  return t;
}

void Module::collect(const std::string& prefix, NamedTensors& out) const {
  for (const auto& [n, t] : params_) out.emplace_back(prefix + n, t);
  for (const auto& [n, m] : children_) m->collect(prefix + n + ".", out);
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect("", out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [_, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [_, t] : named_parameters()) n += t.numel();
  return n;
}

void Module::zero_grad() {
  for (auto& [_, t] : named_parameters()) t.zero_grad();
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [_, m] : children_) m->train(on);
}

namespace {
// Re-points the parameter's TensorImpl at `moved` so every holder of the handle sees the move.
void rebind(Tensor& p, const Tensor& moved) {
  TensorImpl* impl = p.impl();
  impl->storage = moved.storage();
  impl->offset = moved.offset();
  impl->shape = moved.shape();
  impl->strides = moved.strides();
  impl->dtype = moved.dtype();
  impl->grad.reset();
  impl->grad_fn.reset();
}
}  // namespace

void Module::to(Device device) {
  NoGradGuard ng;
  for (auto& [_, p] : named_parameters()) {
    if (p.device() == device) continue;
    rebind(p, p.detach().to(device).contiguous());
  }
}

void Module::to(DType dtype) {
  NoGradGuard ng;
  for (auto& [_, p] : named_parameters()) {
    if (p.dtype() == dtype) continue;
    rebind(p, p.detach().to(dtype).contiguous());
  }
}

std::string format_thousands(int64_t n) {
  std::string s = std::to_string(n < 0 ? -n : n);
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i > 0 && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return n < 0 ? "-" + out : out;
}

std::string Module::summary() const {
  NamedTensors named = named_parameters();
  size_t width = 0;
  for (auto& [n, _] : named) width = std::max(width, n.size());
  std::ostringstream os;
  int64_t total = 0;
  for (auto& [n, t] : named) {
    os << std::left << std::setw(static_cast<int>(width) + 2) << n << std::setw(18) << shape_str(t.shape())
       << std::right << std::setw(12) << format_thousands(t.numel()) << "\n";
    total += t.numel();
  }
  os << "total parameters: " << format_thousands(total) << " (" << named.size() << " tensors)\n";
  return os.str();
}

}  // namespace engine::nn
