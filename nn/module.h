// Module: the parameter/submodule registry every layer and model derives from. Parameters and
// children are registered by name in creation order, so named_parameters() yields dotted names
// identical to the PyTorch/diffusers state-dict keys (checkpoints load without a mapping table).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/ops.h"
#include "core/tensor.h"

namespace engine::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Where and how parameters are created: a counter-based generator (deterministic from the seed),
// the parameter dtype and device.
struct Init {
  Generator gen;
  DType dtype = DType::F32;
  Device device = Device::cpu();
  explicit Init(uint64_t seed = 0, DType dt = DType::F32, Device dev = Device::cpu())
      : gen(seed), dtype(dt), device(dev) {}
  // U(-bound, bound), a fresh leaf.
  Tensor uniform(const Shape& shape, double bound);
  Tensor normal(const Shape& shape);
  Tensor constant(const Shape& shape, double value);
};

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Pre-order, like torch: own parameters first, then each child's, in registration order.
  NamedTensors named_parameters() const;
  std::vector<Tensor> parameters() const;
  int64_t num_parameters() const;
  void zero_grad();
  // Recursive; no layer here behaves differently, but the flag is kept for parity with torch.
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  // Moves/casts every parameter in place: the Tensor handles (and the Module) keep their identity,
  // so optimizers built earlier still see the parameters. Gradients are dropped.
  void to(Device device);
  void to(DType dtype);
  // One line per parameter (name, shape, count) and a total line "total parameters: 1,707,307".
  std::string summary() const;

  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const { return children_; }

 protected:
  // Marks `t` as requiring grad and records it under `name`; returns it (a shared handle).
  Tensor register_parameter(const std::string& name, Tensor t);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    children_.emplace_back(name, m);
    return m;
  }

 private:
  void collect(const std::string& prefix, NamedTensors& out) const;
  NamedTensors params_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

// A list of submodules named "0", "1", ... (torch.nn.ModuleList), typed for convenient access.
template <typename M>
class ModuleList : public Module {
 public:
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    register_module(std::to_string(items_.size()), m);
    items_.push_back(m);
    return m;
  }
  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  M& operator[](size_t i) const { return *items_.at(i); }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  std::vector<std::shared_ptr<M>> items_;
};

// "1707307" -> "1,707,307".
std::string format_thousands(int64_t n);

}  // namespace engine::nn
