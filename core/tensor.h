// Tensor: a strided view (shape, strides, offset) of shared Storage with a dtype and a
// device, plus the autograd fields (requires_grad, grad, grad_fn). Views (reshape,
// permute, narrow, expand) share storage; ops in core/ops.h produce new tensors.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/storage.h"

namespace engine {

using Shape = std::vector<int64_t>;
struct Node;
struct TensorImpl;

int64_t numel_of(const Shape& s);
Shape contiguous_strides(const Shape& s);

class Tensor {
 public:
  Tensor() = default;  // undefined tensor (e.g. "no gradient")
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32,
                     Device device = Device::cpu());
  static Tensor scalar(double value, DType dtype = DType::F32, Device device = Device::cpu());
  // Copies host data (size must equal numel(shape)).
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device = Device::cpu());
  static Tensor from_bytes(const void* data, const Shape& shape, DType dtype, Device device = Device::cpu());

  // ---- metadata
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  const Shape& strides() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const;
  int64_t offset() const;
  DType dtype() const;
  Device device() const;
  bool is_cuda() const { return device().is_cuda(); }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const;
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  std::string str() const;  // "Tensor float32 cpu (2, 3)" plus values when small

  // Raw pointer to element 0 of this view (checks the dtype).
  template <typename T>
  T* data() const;
  void* raw_data() const;

  // ---- host access (copies from the device when needed)
  template <typename T>
  std::vector<T> to_vector() const;  // in logical (row-major) order
  double item() const;               // single-element tensors

  // ---- conversions (differentiable)
  Tensor contiguous() const;
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;
  Tensor clone() const;
  Tensor detach() const;  // shares storage, no grad history

  // ---- views (differentiable)
  Tensor reshape(const Shape& shape) const;  // one -1 allowed; copies when not viewable
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor expand(const Shape& shape) const;  // broadcast view (stride 0); -1 keeps a dim
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;
  Tensor flatten(int64_t start = 0, int64_t end = -1) const;

  // ---- autograd
  bool requires_grad() const;
  Tensor& set_requires_grad(bool r = true);
  Tensor grad() const;  // undefined if none yet
  void set_grad(const Tensor& g);
  void zero_grad();  // drops .grad
  const std::shared_ptr<Node>& grad_fn() const;
  void set_grad_fn(std::shared_ptr<Node> fn);
  bool is_leaf() const { return grad_fn() == nullptr; }
  // Reverse-mode autodiff from this tensor: a scalar, or any shape with an explicit gradient.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;

  // ---- in-place, outside autograd (optimizers, initialisation, checkpoint loading). Each bumps the
  // storage's version: using an updated tensor's old graph in backward throws (core/autograd.h).
  Tensor& copy_(const Tensor& src);  // same shape; any device/dtype conversion allowed
  Tensor& fill_(double value);

 private:
  std::shared_ptr<TensorImpl> impl_;
  TensorImpl& checked() const;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements
  Shape shape, strides;
  DType dtype = DType::F32;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<Node> grad_fn;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// The shape `a` and `b` broadcast to (NumPy rules: dims aligned from the right, each pair equal or one of
// them 1). Throws engine::Error naming `op` and both shapes when they do not broadcast.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

}  // namespace engine
