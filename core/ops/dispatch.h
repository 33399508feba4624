// Internal helpers for op implementations: backend dispatch and kernel-layout builders.
//
//   dispatch_float(x, "conv2d", [&]<typename T, bool Cuda>() {
//     KERN(conv2d_forward, shape, x.data<T>(), ...);
//   });
// runs the lambda as <float, false>, <double, false> or <float, true> by x's dtype and device,
// and throws a clear error for anything else (e.g. float64 on CUDA). CUDA kernels run with x's device
// made current (cuda::DeviceScope), so they launch on the tensors' GPU and its stream; check_same()
// rejects ops whose tensors live on different devices.
//
// Every dispatch is one profiler scope named by `op` (runtime/profiler.h; free when the profiler is off);
// the overload with a cost function (returning prof::Cost, called only while the profiler is on) gives the
// call's work for the profile's GFLOP/s and GB/s columns:
//   dispatch_float(x, "conv2d", [&] { return work(s.flops(), {&x, &w, &y}); }, [&]<typename T, bool Cuda>()
//   {...});
#pragma once
#include "core/error.h"
#include "core/tensor.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"
#include "runtime/cuda_device.h"
#include "runtime/profiler.h"

namespace engine::detail {

#define KERN(fn, ...)                  \
  do {                                 \
    if constexpr (Cuda)                \
      ::kern::cuda::fn(__VA_ARGS__);   \
    else                               \
      ::kern::cpu::fn<T>(__VA_ARGS__); \
  } while (0)

template <typename CostFn, typename F>
void dispatch_float(const Tensor& x, const char* op, CostFn&& cost, F&& f) {
  prof::Scope scope(op, nullptr, x.device().is_cuda() ? x.device().index : -1, std::forward<CostFn>(cost));
  if (scope.traced()) scope.add_shape(x.shape().data(), static_cast<int>(x.dim()));
  if (x.device().is_cuda()) {
    ENGINE_CHECK(x.dtype() == DType::F32, op, "CUDA kernels support float32 only, got ",
                 dtype_name(x.dtype()));
    cuda::DeviceScope on_device(x.device().index);
    f.template operator()<float, true>();
    return;
  }
  ::kern::cpu::check_cpu_settings();  // a bad ENGINE_CPU_* value throws here, not inside a kernel's threads
  switch (x.dtype()) {
    case DType::F32:
      f.template operator()<float, false>();
      return;
    case DType::F64:
      f.template operator()<double, false>();
      return;
    default:
      throw Error(concat(op, ": expected a floating-point tensor, got ", dtype_name(x.dtype())));
  }
}
// The same without a cost (the profile prints "-" for the op's rates).
template <typename F>
void dispatch_float(const Tensor& x, const char* op, F&& f) {
  dispatch_float(
      x, op, [] { return prof::Cost{}; }, std::forward<F>(f));
}

// t's elements as T*, or nullptr when t is undefined (an optional kernel argument: bias, gamma, lse, ...).
template <typename T>
T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// A call's work for the profiler: `flops`, and each defined tensor's bytes read or written once.
inline prof::Cost work(double flops, std::initializer_list<const Tensor*> ts) {
  double bytes = 0;
  for (const Tensor* t : ts)
    if (t->defined()) bytes += static_cast<double>(t->numel()) * static_cast<double>(dtype_size(t->dtype()));
  return {flops, bytes};
}

// All tensors on the same device, same floating dtype.
inline void check_same(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t->defined()) continue;
    if (!first) {
      first = t;
      continue;
    }
    ENGINE_CHECK(t->device() == first->device(), op, "tensors on different devices: ", first->device().str(),
                 " and ", t->device().str(),
                 " (all tensors of one op must be on one device; move them with .to())");
    ENGINE_CHECK(t->dtype() == first->dtype(), op, "dtype mismatch: ", dtype_name(first->dtype()), " and ",
                 dtype_name(t->dtype()));
  }
}

inline kern::Strided layout_of(const Shape& shape, const Shape& strides, const char* op) {
  ENGINE_CHECK(shape.size() <= kern::kMaxDims, op, "at most ", kern::kMaxDims, " dims supported, got ",
               shape.size());
  kern::Strided s{};
  s.ndim = static_cast<int>(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) s.shape[i] = shape[i], s.stride[i] = strides[i];
  return s;
}
inline kern::Strided layout_of(const Tensor& t, const char* op) {
  return layout_of(t.shape(), t.strides(), op);
}

// Strides to read `t` as if broadcast to `out` (0 on broadcast dims).
inline Shape broadcast_strides(const Tensor& t, const Shape& out) {
  Shape st(out.size(), 0);
  const int64_t off = static_cast<int64_t>(out.size()) - t.dim();
  for (int64_t i = 0; i < t.dim(); ++i) st[off + i] = t.shape()[i] == 1 ? 0 : t.strides()[i];
  return st;
}

// Copies src (any layout) into dst (any layout, same shape, same dtype and device).
void copy_into(const Tensor& src, const Tensor& dst);

// y = a + b elementwise, written into the existing tensor y, which must be a CPU tensor, contiguous, of
// a's and b's shape and dtype, and may be a itself or b itself (the same storage, offset and layout: the
// in-place gradient sums of core/autograd.cpp); a and b may have any layout. Each element is the same
// a[i] + b[i] that add(a, b) computes, so the result is bitwise add's. No autograd recording; the
// profiler names the call "add". Throws engine::Error on a shape, dtype or device mismatch, a
// non-contiguous or non-CPU y.
void add_into(const Tensor& a, const Tensor& b, const Tensor& y);

}  // namespace engine::detail
