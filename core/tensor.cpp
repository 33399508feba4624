// Tensor construction, metadata, host access, conversions and views (with their backward).
#include "core/tensor.h"

#include <algorithm>
#include <cstring>
#include <iomanip>
#include <numeric>
#include <ostream>
#include <sstream>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/ops/dispatch.h"
#include "runtime/cuda_device.h"

namespace engine {

int64_t numel_of(const Shape& s) {
  // A zero dimension makes the count 0 whatever the others are; otherwise every product is checked.
  for (int64_t d : s)
    if (d == 0) return 0;
  int64_t n = 1;
  for (int64_t d : s)
    ENGINE_CHECK(!__builtin_mul_overflow(n, d, &n), "numel", "element count of shape ", shape_str(s),
                 " overflows int64");
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int64_t i = static_cast<int64_t>(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    // The stride of dimension 0 is never needed by the loop after it, but the product must still fit:
    // a zero-size tensor of shape (0, 2^48, 2^48) would otherwise overflow here.
    if (i > 0)
      ENGINE_CHECK(!__builtin_mul_overflow(acc, s[i], &acc), "contiguous_strides", "strides of shape ",
                   shape_str(s), " overflow int64");
  }
  return st;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    ENGINE_CHECK(da == db || da == 1 || db == 1, op, "shapes ", shape_str(a), " and ", shape_str(b),
                 " cannot be broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

namespace {
std::shared_ptr<TensorImpl> make_impl(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) ENGINE_CHECK(d >= 0, "empty", "negative dimension in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  int64_t bytes = 0;
  ENGINE_CHECK(!__builtin_mul_overflow(numel_of(shape), static_cast<int64_t>(dtype_size(dtype)), &bytes),
               "empty", "byte size of shape ", shape_str(shape), " overflows int64");
  impl->storage = Storage::allocate(bytes, device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return impl;
}

// A view of `base` sharing storage.
Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.storage();
  impl->offset = offset;
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->dtype = base.dtype();
  return Tensor(impl);
}

int64_t wrap_dim(int64_t d, int64_t ndim, const char* op) {
  int64_t w = d < 0 ? d + ndim : d;
  ENGINE_CHECK(w >= 0 && w < std::max<int64_t>(ndim, 1), op, "dim ", d, " out of range for a ", ndim,
               "-d tensor");
  return w;
}
}  // namespace

// ---------------------------------------------------------------- factories
Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  return Tensor(make_impl(shape, dtype, device));
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}
Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}
Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) {
  return full(shape, 1.0, dtype, device);
}
Tensor Tensor::scalar(double value, DType dtype, Device device) { return full({}, value, dtype, device); }

Tensor Tensor::from_bytes(const void* data, const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  const std::size_t bytes = t.numel() * dtype_size(dtype);
  if (bytes == 0) return t;
  if (device.is_cpu())
    std::memcpy(t.raw_data(), data, bytes);
  else
    cuda::copy_h2d(t.raw_data(), data, bytes, device.index);
  return t;
}

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  ENGINE_CHECK(static_cast<int64_t>(values.size()) == numel_of(shape), "from_vector", values.size(),
               " values do not fill shape ", shape_str(shape));
  return from_bytes(values.data(), shape, dtype_of<T>(), device);
}
template Tensor Tensor::from_vector(const std::vector<float>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<double>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<int64_t>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<uint8_t>&, const Shape&, Device);

// ---------------------------------------------------------------- metadata
TensorImpl& Tensor::checked() const {
  if (!impl_) throw Error("tensor: use of an undefined tensor");
  return *impl_;
}
const Shape& Tensor::shape() const { return checked().shape; }
const Shape& Tensor::strides() const { return checked().strides; }
int64_t Tensor::size(int64_t d) const { return shape()[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::numel() const { return numel_of(shape()); }
int64_t Tensor::offset() const { return checked().offset; }
DType Tensor::dtype() const { return checked().dtype; }
Device Tensor::device() const { return checked().storage->device(); }
const std::shared_ptr<Storage>& Tensor::storage() const { return checked().storage; }

bool Tensor::is_contiguous() const {
  const auto& s = shape();
  const auto& st = strides();
  int64_t acc = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (s[i] != 1 && st[i] != acc) return false;
    acc *= s[i];
  }
  return true;
}

void* Tensor::raw_data() const {
  return static_cast<char*>(storage()->data()) + offset() * dtype_size(dtype());
}
template <typename T>
T* Tensor::data() const {
  ENGINE_CHECK(dtype() == dtype_of<T>(), "data", "tensor is ", dtype_name(dtype()), ", requested ",
               dtype_name(dtype_of<T>()));
  return static_cast<T*>(raw_data());
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;
template int64_t* Tensor::data<int64_t>() const;
template uint8_t* Tensor::data<uint8_t>() const;

template <typename T>
std::vector<T> Tensor::to_vector() const {
  Tensor c = detach().to(Device::cpu()).contiguous();
  const T* p = c.data<T>();
  return std::vector<T>(p, p + c.numel());
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;

double Tensor::item() const {
  ENGINE_CHECK(numel() == 1, "item", "expected one element, got shape ", shape_str(shape()));
  return visit_dtype(dtype(), [&]<typename T>() { return static_cast<double>(to_vector<T>()[0]); });
}

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream os;
  os << "Tensor " << dtype_name(dtype()) << " " << device().str() << " " << shape_str(shape());
  if (requires_grad()) os << " requires_grad";
  const int64_t n = numel();
  if (n > 0) {
    Tensor c = detach().to(DType::F64);
    auto v = c.to_vector<double>();
    os << " [" << std::setprecision(6);
    const int64_t show = std::min<int64_t>(n, 8);
    for (int64_t i = 0; i < show; ++i) os << (i ? ", " : "") << v[i];
    if (n > show) os << ", ... (" << n << " values)";
    os << "]";
  }
  return os.str();
}
std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

// ---------------------------------------------------------------- copies and conversions
Tensor& Tensor::fill_(double value) {
  const int64_t n = numel();
  if (n == 0) return *this;
  if (storage()) storage()->bump_version();
  if (!is_contiguous()) {
    Tensor tmp = Tensor::full(shape(), value, dtype(), device());
    detail::copy_into(tmp, *this);
    return *this;
  }
  if (device().is_cpu()) {
    visit_dtype(dtype(), [&]<typename T>() { kern::cpu::fill<T>(n, data<T>(), value); });
  } else if (dtype() == DType::F32) {
    cuda::DeviceScope on_device(device().index);
    kern::cuda::fill(n, data<float>(), value);
  } else {
    Tensor host = Tensor::full(shape(), value, dtype(), Device::cpu());
    copy_(host);
  }
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  ENGINE_CHECK(src.shape() == shape(), "copy_", "shape mismatch: destination ", shape_str(shape()),
               ", source ", shape_str(src.shape()));
  Tensor s = src.detach();
  if (storage()) storage()->bump_version();
  if (s.dtype() != dtype()) {
    NoGradGuard ng;
    s = s.to(dtype());
  }
  if (s.device() != device()) s = s.to(device());
  detail::copy_into(s, *this);
  return *this;
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = Tensor::empty(shape(), dtype(), device());
  detail::copy_into(*this, out);
  if (any_requires_grad({this})) {
    record("contiguous", out, {*this}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  }
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = Tensor::empty(shape(), dtype(), device());
  detail::copy_into(*this, out);
  if (any_requires_grad({this})) {
    record("clone", out, {*this}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  }
  return out;
}

Tensor Tensor::detach() const {
  const TensorImpl& me = checked();
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = me.storage;
  impl->offset = me.offset;
  impl->shape = me.shape;
  impl->strides = me.strides;
  impl->dtype = me.dtype;
  return Tensor(impl);
}

Tensor Tensor::to(Device dev) const {
  if (dev == device()) return *this;
  Tensor src = detach().contiguous();
  Tensor out = Tensor::empty(shape(), dtype(), dev);
  const std::size_t bytes = numel() * dtype_size(dtype());
  if (bytes > 0) {
    if (src.device().is_cpu() && dev.is_cuda())
      cuda::copy_h2d(out.raw_data(), src.raw_data(), bytes, dev.index);
    else if (src.device().is_cuda() && dev.is_cpu())
      cuda::copy_d2h(out.raw_data(), src.raw_data(), bytes, src.device().index);
    else {
      Tensor host = src.to(Device::cpu());
      cuda::copy_h2d(out.raw_data(), host.raw_data(), bytes, dev.index);
    }
  }
  if (any_requires_grad({this})) {
    Device from = device();
    record("to_device", out, {*this}, [from](const Tensor& g) { return std::vector<Tensor>{g.to(from)}; });
  }
  return out;
}

Tensor Tensor::to(DType dt) const {
  if (dt == dtype()) return *this;
  Tensor src = detach().contiguous();
  if (src.is_cuda()) {
    // Casts run on the host; device casts are not on any hot path.
    return src.to(Device::cpu()).to(dt).to(device());
  }
  Tensor out = Tensor::empty(shape(), dt, Device::cpu());
  const int64_t n = numel();
  // dst[i] = static_cast<D>(src[i]) for every pair of dtypes.
  auto cast_any = [&]<typename D>() {
    D* dst = out.data<D>();
    visit_dtype(dtype(), [&]<typename S>() {
      const S* s = src.data<S>();
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<D>(s[i]);
    });
  };
  if (dtype() == DType::F32 && dt == DType::F64)
    kern::cpu::cast_f32_to_f64(n, src.data<float>(), out.data<double>());
  else if (dtype() == DType::F64 && dt == DType::F32)
    kern::cpu::cast_f64_to_f32(n, src.data<double>(), out.data<float>());
  else {
    visit_dtype(dt, cast_any);
  }
  if (is_floating(dt) && is_floating(dtype()) && any_requires_grad({this})) {
    DType from = dtype();
    record("to_dtype", out, {*this}, [from](const Tensor& g) { return std::vector<Tensor>{g.to(from)}; });
  }
  return out;
}

// ---------------------------------------------------------------- views
Tensor Tensor::reshape(const Shape& new_shape_in) const {
  Shape ns = new_shape_in;
  int64_t infer = -1, known = 1;
  for (size_t i = 0; i < ns.size(); ++i) {
    if (ns[i] == -1) {
      ENGINE_CHECK(infer < 0, "reshape", "only one -1 allowed in ", shape_str(new_shape_in));
      infer = static_cast<int64_t>(i);
    } else {
      ENGINE_CHECK(ns[i] >= 0, "reshape", "invalid target shape ", shape_str(new_shape_in));
      known *= ns[i];
    }
  }
  if (infer >= 0) {
    ENGINE_CHECK(known > 0 && numel() % known == 0, "reshape", "cannot reshape ", shape_str(shape()), " to ",
                 shape_str(new_shape_in));
    ns[infer] = numel() / known;
  }
  ENGINE_CHECK(numel_of(ns) == numel(), "reshape", "cannot reshape ", shape_str(shape()), " (", numel(),
               " elements) to ", shape_str(new_shape_in));
  Tensor base = is_contiguous() ? *this : contiguous();
  Tensor out = make_view(base, ns, contiguous_strides(ns), base.offset());
  if (any_requires_grad({&base})) {
    Shape old = shape();
    record("reshape", out, {base}, [old](const Tensor& g) { return std::vector<Tensor>{g.reshape(old)}; });
  }
  return out;
}

Tensor Tensor::flatten(int64_t start, int64_t end) const {
  if (dim() == 0) return reshape({1});
  start = wrap_dim(start, dim(), "flatten");
  end = wrap_dim(end, dim(), "flatten");
  Shape ns(shape().begin(), shape().begin() + start);
  int64_t m = 1;
  for (int64_t i = start; i <= end; ++i) m *= shape()[i];
  ns.push_back(m);
  ns.insert(ns.end(), shape().begin() + end + 1, shape().end());
  return reshape(ns);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims_in) const {
  ENGINE_CHECK(static_cast<int64_t>(dims_in.size()) == dim(), "permute", "got ", dims_in.size(),
               " dims for a tensor of shape ", shape_str(shape()));
  std::vector<int64_t> dims(dims_in.size());
  std::vector<bool> seen(dims.size(), false);
  Shape ns(dims.size()), nst(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    dims[i] = wrap_dim(dims_in[i], dim(), "permute");
    ENGINE_CHECK(!seen[dims[i]], "permute", "repeated dim in permutation ", shape_str(dims_in));
    seen[dims[i]] = true;
    ns[i] = shape()[dims[i]];
    nst[i] = strides()[dims[i]];
  }
  Tensor out = make_view(*this, ns, nst, offset());
  if (any_requires_grad({this})) {
    std::vector<int64_t> inv(dims.size());
    for (size_t i = 0; i < dims.size(); ++i) inv[dims[i]] = static_cast<int64_t>(i);
    record("permute", out, {*this}, [inv](const Tensor& g) { return std::vector<Tensor>{g.permute(inv)}; });
  }
  return out;
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  d0 = wrap_dim(d0, dim(), "transpose");
  d1 = wrap_dim(d1, dim(), "transpose");
  std::vector<int64_t> p(dim());
  std::iota(p.begin(), p.end(), 0);
  std::swap(p[d0], p[d1]);
  return permute(p);
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  d = wrap_dim(d, dim(), "narrow");
  ENGINE_CHECK(start >= 0 && length >= 0 && start + length <= shape()[d], "narrow", "range [", start, ", ",
               start + length, ") out of bounds for dim ", d, " of ", shape_str(shape()));
  Shape ns = shape();
  ns[d] = length;
  Tensor out = make_view(*this, ns, strides(), offset() + start * strides()[d]);
  if (any_requires_grad({this})) {
    Shape full = shape();
    record("narrow", out, {*this}, [full, d, start, length](const Tensor& g) {
      Tensor z = Tensor::zeros(full, g.dtype(), g.device());
      detail::copy_into(g, z.narrow(d, start, length));
      return std::vector<Tensor>{z};
    });
  }
  return out;
}

Tensor Tensor::expand(const Shape& target) const {
  ENGINE_CHECK(static_cast<int64_t>(target.size()) >= dim(), "expand", "cannot expand ", shape_str(shape()),
               " to ", shape_str(target));
  const int64_t off = static_cast<int64_t>(target.size()) - dim();
  Shape ns(target.size()), nst(target.size(), 0);
  for (int64_t i = 0; i < static_cast<int64_t>(target.size()); ++i) {
    if (i < off) {
      ENGINE_CHECK(target[i] >= 0, "expand", "cannot expand ", shape_str(shape()), " to ", shape_str(target));
      ns[i] = target[i];
      continue;
    }
    int64_t cur = shape()[i - off];
    int64_t want = target[i] == -1 ? cur : target[i];
    ENGINE_CHECK(cur == want || cur == 1, "expand", "cannot expand ", shape_str(shape()), " to ",
                 shape_str(target));
    ns[i] = want;
    nst[i] = cur == want ? strides()[i - off] : 0;
  }
  Tensor out = make_view(*this, ns, nst, offset());
  if (any_requires_grad({this})) {
    Shape old = shape();
    record("expand", out, {*this}, [old](const Tensor& g) { return std::vector<Tensor>{sum_to(g, old)}; });
  }
  return out;
}

Tensor Tensor::unsqueeze(int64_t d) const {
  const int64_t nd = dim() + 1;
  int64_t w = d < 0 ? d + nd : d;
  ENGINE_CHECK(w >= 0 && w < nd, "unsqueeze", "dim ", d, " out of range for shape ", shape_str(shape()));
  Shape ns = shape();
  ns.insert(ns.begin() + w, 1);
  return reshape(ns);
}

Tensor Tensor::squeeze(int64_t d) const {
  d = wrap_dim(d, dim(), "squeeze");
  ENGINE_CHECK(shape()[d] == 1, "squeeze", "dim ", d, " of ", shape_str(shape()), " is not 1");
  Shape ns = shape();
  ns.erase(ns.begin() + d);
  return reshape(ns);
}

// ---------------------------------------------------------------- autograd accessors
bool Tensor::requires_grad() const { return checked().requires_grad || checked().grad_fn != nullptr; }
Tensor& Tensor::set_requires_grad(bool r) {
  ENGINE_CHECK(!r || is_floating(dtype()), "requires_grad",
               "only floating-point tensors can require grad, got ", dtype_name(dtype()));
  ENGINE_CHECK(is_leaf(), "requires_grad", "can only be set on leaf tensors");
  checked().requires_grad = r;
  return *this;
}
Tensor Tensor::grad() const { return checked().grad ? Tensor(checked().grad) : Tensor(); }
void Tensor::set_grad(const Tensor& g) { checked().grad = g.defined() ? g.impl_ptr() : nullptr; }
void Tensor::zero_grad() { checked().grad.reset(); }
const std::shared_ptr<Node>& Tensor::grad_fn() const { return checked().grad_fn; }
void Tensor::set_grad_fn(std::shared_ptr<Node> fn) { checked().grad_fn = std::move(fn); }
void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  run_backward(*this, gradient, retain_graph);
}

}  // namespace engine
