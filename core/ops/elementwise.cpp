// Elementwise ops: broadcasting binary ops, unary functions, affine, and strided copies.
#include <cmath>

#include "core/ops.h"
#include "core/ops/dispatch.h"

namespace engine {

namespace detail {
void copy_into(const Tensor& src, const Tensor& dst) {
  ENGINE_CHECK(src.shape() == dst.shape(), "copy", "shape mismatch ", shape_str(src.shape()), " vs ",
               shape_str(dst.shape()));
  ENGINE_CHECK(src.dtype() == dst.dtype() && src.device() == dst.device(), "copy",
               "source and destination must share dtype and device");
  if (src.numel() == 0) return;
  prof::Scope scope("copy", nullptr, src.is_cuda() ? src.device().index : -1, [&] {
    return work(0, {&src, &dst});
  });
  if (scope.traced()) scope.add_shape(src.shape().data(), static_cast<int>(src.dim()));
  kern::Strided sl = layout_of(src, "copy"), dl = layout_of(dst, "copy");
  if (src.is_cuda()) {
    cuda::DeviceScope on_device(src.device().index);
    kern::cuda::copy_strided(static_cast<int>(dtype_size(src.dtype())), sl, src.raw_data(), dl,
                             dst.raw_data());
    return;
  }
  visit_dtype(src.dtype(),
              [&]<typename T>() { kern::cpu::copy_strided<T>(sl, src.data<T>(), dl, dst.data<T>()); });
}

void add_into(const Tensor& a, const Tensor& b, const Tensor& y) {
  check_same("add", {&a, &b, &y});
  ENGINE_CHECK(a.shape() == y.shape() && b.shape() == y.shape(), "add",
               "in-place sum needs equal shapes, got ", shape_str(a.shape()), ", ", shape_str(b.shape()),
               " into ", shape_str(y.shape()));
  ENGINE_CHECK(y.device().is_cpu() && y.is_contiguous(), "add",
               "in-place sum needs a contiguous CPU destination");
  if (y.numel() == 0) return;
  const Shape& shape = y.shape();
  kern::Strided ol = layout_of(shape, contiguous_strides(shape), "add");
  kern::Strided al = layout_of(a, "add"), bl = layout_of(b, "add");
  auto cost = [&] { return work(static_cast<double>(y.numel()), {&a, &b, &y}); };
  dispatch_float(y, "add", cost, [&]<typename T, bool Cuda>() {
    if constexpr (!Cuda)
      kern::cpu::binary<T>(kern::Binary::Add, ol, a.data<T>(), al, b.data<T>(), bl, y.data<T>());
  });
}
}  // namespace detail

namespace {
using detail::broadcast_strides;
using detail::layout_of;

const char* binary_name(kern::Binary op) {
  switch (op) {
    case kern::Binary::Add:
      return "add";
    case kern::Binary::Sub:
      return "sub";
    case kern::Binary::Mul:
      return "mul";
    case kern::Binary::Div:
      return "div";
  }
  return "binary";
}

Tensor binary_raw(kern::Binary op, const Tensor& a, const Tensor& b) {
  const char* name = binary_name(op);
  detail::check_same(name, {&a, &b});
  Shape out_shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor y = Tensor::empty(out_shape, a.dtype(), a.device());
  if (y.numel() == 0) return y;
  kern::Strided ol = layout_of(out_shape, contiguous_strides(out_shape), name);
  kern::Strided al = layout_of(out_shape, broadcast_strides(a, out_shape), name);
  kern::Strided bl = layout_of(out_shape, broadcast_strides(b, out_shape), name);
  auto cost = [&] { return detail::work(static_cast<double>(y.numel()), {&a, &b, &y}); };
  detail::dispatch_float(a, name, cost, [&]<typename T, bool Cuda>() {
    KERN(binary, op, ol, a.data<T>(), al, b.data<T>(), bl, y.data<T>());
  });
  return y;
}

Tensor unary_raw(kern::Unary op, const Tensor& x, const char* name) {
  Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (y.numel() == 0) return y;
  auto cost = [&] { return detail::work(static_cast<double>(y.numel()), {&xc, &y}); };
  detail::dispatch_float(x, name, cost, [&]<typename T, bool Cuda>() {
    KERN(unary, op, xc.numel(), xc.data<T>(), y.data<T>());
  });
  return y;
}
}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor y = binary_raw(kern::Binary::Add, a, b);
  if (any_requires_grad({&a, &b})) {
    Shape as = a.shape(), bs = b.shape();
    record("add", y, {a, b}, [as, bs](const Tensor& g) {
      return std::vector<Tensor>{sum_to(g, as), sum_to(g, bs)};
    });
  }
  return y;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor y = binary_raw(kern::Binary::Sub, a, b);
  if (any_requires_grad({&a, &b})) {
    Shape as = a.shape(), bs = b.shape();
    record("sub", y, {a, b}, [as, bs](const Tensor& g) {
      return std::vector<Tensor>{sum_to(g, as), sum_to(neg(g), bs)};
    });
  }
  return y;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor y = binary_raw(kern::Binary::Mul, a, b);
  if (any_requires_grad({&a, &b})) {
    const bool ga = a.requires_grad(), gb = b.requires_grad();
    Tensor sa = gb ? a.detach() : Tensor(), sb = ga ? b.detach() : Tensor();
    Shape as = a.shape(), bs = b.shape();
    record("mul", y, {a, b}, [=](const Tensor& g) {
      return std::vector<Tensor>{ga ? sum_to(mul(g, sb), as) : Tensor(),
                                 gb ? sum_to(mul(g, sa), bs) : Tensor()};
    });
  }
  return y;
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor y = binary_raw(kern::Binary::Div, a, b);
  if (any_requires_grad({&a, &b})) {
    const bool ga = a.requires_grad(), gb = b.requires_grad();
    Tensor sb = b.detach(), sy = gb ? y.detach() : Tensor();
    Shape as = a.shape(), bs = b.shape();
    record("div", y, {a, b}, [=](const Tensor& g) {
      Tensor gdb = div(g, sb);  // d/da = 1/b ; d/db = -a/b^2 = -y/b
      return std::vector<Tensor>{ga ? sum_to(gdb, as) : Tensor(),
                                 gb ? sum_to(neg(mul(gdb, sy)), bs) : Tensor()};
    });
  }
  return y;
}

Tensor affine(const Tensor& x, double alpha, double beta) {
  Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (y.numel() > 0) {
    auto cost = [&] { return detail::work(static_cast<double>(y.numel()), {&xc, &y}); };
    detail::dispatch_float(x, "affine", cost, [&]<typename T, bool Cuda>() {
      KERN(affine, xc.numel(), xc.data<T>(), alpha, beta, y.data<T>());
    });
  }
  if (any_requires_grad({&x})) {
    record("affine", y, {x}, [alpha](const Tensor& g) { return std::vector<Tensor>{affine(g, alpha, 0.0)}; });
  }
  return y;
}
Tensor add(const Tensor& a, double s) { return affine(a, 1.0, s); }
Tensor mul(const Tensor& a, double s) { return affine(a, s, 0.0); }

Tensor neg(const Tensor& x) {
  Tensor y = unary_raw(kern::Unary::Neg, x, "neg");
  if (any_requires_grad({&x}))
    record("neg", y, {x}, [](const Tensor& g) { return std::vector<Tensor>{neg(g)}; });
  return y;
}

Tensor exp(const Tensor& x) {
  Tensor y = unary_raw(kern::Unary::Exp, x, "exp");
  if (any_requires_grad({&x})) {
    Tensor sy = y.detach();
    record("exp", y, {x}, [sy](const Tensor& g) { return std::vector<Tensor>{mul(g, sy)}; });
  }
  return y;
}

Tensor sin(const Tensor& x) {
  Tensor y = unary_raw(kern::Unary::Sin, x, "sin");
  if (any_requires_grad({&x})) {
    Tensor sx = x.detach();
    record("sin", y, {x}, [sx](const Tensor& g) { return std::vector<Tensor>{mul(g, cos(sx))}; });
  }
  return y;
}

Tensor cos(const Tensor& x) {
  Tensor y = unary_raw(kern::Unary::Cos, x, "cos");
  if (any_requires_grad({&x})) {
    Tensor sx = x.detach();
    record("cos", y, {x}, [sx](const Tensor& g) { return std::vector<Tensor>{neg(mul(g, sin(sx)))}; });
  }
  return y;
}

Tensor sqrt(const Tensor& x) {
  Tensor y = unary_raw(kern::Unary::Sqrt, x, "sqrt");
  if (any_requires_grad({&x})) {
    Tensor sy = y.detach();
    record("sqrt", y, {x}, [sy](const Tensor& g) { return std::vector<Tensor>{mul(div(g, sy), 0.5)}; });
  }
  return y;
}

Tensor square(const Tensor& x) {
  Tensor y = unary_raw(kern::Unary::Square, x, "square");
  if (any_requires_grad({&x})) {
    Tensor sx = x.detach();
    record("square", y, {x}, [sx](const Tensor& g) { return std::vector<Tensor>{mul(mul(g, sx), 2.0)}; });
  }
  return y;
}

Tensor sigmoid(const Tensor& x) {
  Tensor y = unary_raw(kern::Unary::Sigmoid, x, "sigmoid");
  if (any_requires_grad({&x})) {
    Tensor sy = y.detach();
    record("sigmoid", y, {x},
           [sy](const Tensor& g) { return std::vector<Tensor>{mul(g, mul(sy, add(neg(sy), 1.0)))}; });
  }
  return y;
}

Tensor silu(const Tensor& x) {
  Tensor y = unary_raw(kern::Unary::Silu, x, "silu");
  if (any_requires_grad({&x})) {
    Tensor sx = x.detach().contiguous();
    record("silu", y, {x}, [sx](const Tensor& g) {
      Tensor gc = g.contiguous();
      Tensor dx = Tensor::empty(sx.shape(), sx.dtype(), sx.device());
      auto cost = [&] { return detail::work(static_cast<double>(sx.numel()), {&sx, &gc, &dx}); };
      detail::dispatch_float(sx, "silu_backward", cost, [&]<typename T, bool Cuda>() {
        KERN(silu_backward, sx.numel(), sx.data<T>(), gc.data<T>(), dx.data<T>());
      });
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}

}  // namespace engine
