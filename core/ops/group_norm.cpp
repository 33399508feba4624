// group_norm op: statistics per (sample, group), affine per channel. Saves mean and rstd.
// group_norm_silu: silu(group_norm(x)) fused on the CPU (saves x and double statistics only), the unfused
// pair on CUDA. group_norm_silu_cat: the same of cat([x0, x1], 1) without the concatenation on the CPU.
#include <algorithm>
#include <array>

#include "core/ops.h"
#include "core/ops/dispatch.h"

namespace engine {

namespace {
// The profiler's work for a backward kernel: the bytes of its tensors read or written once; its FLOPs are
// left unknown ("-" in the profile), as the op table counts only the forward.
prof::Cost backward_traffic(std::initializer_list<const Tensor*> ts) {
  prof::Cost c = detail::work(0.0, ts);
  c.flops = -1.0;
  return c;
}

// Checks group_norm's arguments (errors name `op`) for an input x of shape xs (x itself, or the first of
// group_norm_silu_cat's two parts: its dtype and device); returns {N, C, HW}.
std::array<int64_t, 3> check_args(const char* op, const Tensor& x, const Shape& xs, int64_t groups,
                                  const Tensor& gamma, const Tensor& beta) {
  detail::check_same(op, {&x, &gamma, &beta});
  ENGINE_CHECK(xs.size() >= 2, op, "input must be (N, C, *), got ", shape_str(xs));
  const int64_t N = xs[0], C = xs[1], HW = numel_of(xs) / std::max<int64_t>(N * C, 1);
  ENGINE_CHECK(groups > 0 && C % groups == 0, op, C, " channels are not divisible into ", groups,
               " groups (input ", shape_str(xs), ")");
  ENGINE_CHECK(gamma.defined() == beta.defined(), op, "pass both gamma and beta or neither");
  if (gamma.defined())
    ENGINE_CHECK(gamma.shape() == Shape{C} && beta.shape() == Shape{C}, op, "gamma ",
                 shape_str(gamma.shape()), " / beta ", shape_str(beta.shape()), " must be (", C, ",)");
  return {N, C, HW};
}
}  // namespace

Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, double eps) {
  const std::array<int64_t, 3> dims = check_args("group_norm", x, x.shape(), groups, gamma, beta);
  const int64_t N = dims[0], C = dims[1], HW = dims[2];
  Tensor xc = x.contiguous();
  Tensor gc = gamma.defined() ? gamma.contiguous() : Tensor(),
         bc = beta.defined() ? beta.contiguous() : Tensor();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({N, groups}, x.dtype(), x.device());
  Tensor rstd = Tensor::empty({N, groups}, x.dtype(), x.device());
  if (x.numel() > 0)
    detail::dispatch_float(
        x, "group_norm",
        [&] {
          return detail::work(8.0 * double(x.numel()), {&xc, &gc, &bc, &y, &mean, &rstd});
        },  // op table
        [&]<typename T, bool Cuda>() {
          KERN(group_norm_forward, N, C, HW, groups, eps, xc.data<T>(), detail::data_or_null<T>(gc),
               detail::data_or_null<T>(bc), y.data<T>(), mean.data<T>(), rstd.data<T>());
        });
  if (any_requires_grad({&x, &gamma, &beta})) {
    Tensor sx = xc.detach(), sg = gc.defined() ? gc.detach() : Tensor();
    const bool affine = gamma.defined();
    record("group_norm", y, {x, gamma, beta}, [=](const Tensor& g) {
      Tensor gcont = g.contiguous();
      Tensor dx = Tensor::empty(sx.shape(), sx.dtype(), sx.device());
      Tensor dgamma = affine ? Tensor::empty({C}, sx.dtype(), sx.device()) : Tensor();
      Tensor dbeta = affine ? Tensor::empty({C}, sx.dtype(), sx.device()) : Tensor();
      detail::dispatch_float(
          sx, "group_norm_backward",
          [&] {
            return backward_traffic({&gcont, &sx, &mean, &rstd, &sg, &dx, &dgamma, &dbeta});
          },
          [&]<typename T, bool Cuda>() {
            KERN(group_norm_backward, N, C, HW, groups, gcont.data<T>(), sx.data<T>(), mean.data<T>(),
                 rstd.data<T>(), affine ? sg.data<T>() : nullptr, dx.data<T>(),
                 affine ? dgamma.data<T>() : nullptr, affine ? dbeta.data<T>() : nullptr);
          });
      return std::vector<Tensor>{dx, dgamma, dbeta};
    });
  }
  return y;
}

namespace {
// group_norm_silu of x0, or of cat([x0, x1], 1) when x1 is defined, on the CPU: the fused kernel reads the
// two blocks in place and the backward writes their two gradients. The callers checked the arguments:
// shape is the (concatenated) input's, dims check_args' {N, C, HW} of it; op is their name, a literal.
Tensor group_norm_silu_cpu(const char* op, const Tensor& x0, const Tensor& x1, int64_t groups,
                           const Tensor& gamma, const Tensor& beta, double eps, const Shape& shape,
                           const std::array<int64_t, 3>& dims) {
  const int64_t N = dims[0], C = dims[1], HW = dims[2];
  const bool cat = x1.defined();
  const int64_t C0 = x0.size(1);
  Tensor xc0 = x0.contiguous(), xc1 = cat ? x1.contiguous() : Tensor();
  Tensor gc = gamma.defined() ? gamma.contiguous() : Tensor(),
         bc = beta.defined() ? beta.contiguous() : Tensor();
  Tensor y = Tensor::empty(shape, x0.dtype(), x0.device());
  Tensor stats = Tensor::empty({N, groups, 2}, DType::F64, x0.device());  // mean, rstd in double
  if (y.numel() > 0)
    detail::dispatch_float(
        x0, op,
        [&] {
          return detail::work(9.0 * double(y.numel()), {&xc0, &xc1, &gc, &bc, &y, &stats});
        },  // op table
        [&]<typename T, bool Cuda>() {
          if constexpr (!Cuda)
            kern::cpu::group_norm_silu_forward_cat<T>(
                N, C0, C, HW, groups, eps, xc0.data<T>(), detail::data_or_null<T>(xc1),
                detail::data_or_null<T>(gc), detail::data_or_null<T>(bc), y.data<T>(), stats.data<double>());
        });
  std::vector<Tensor> inputs{x0};
  if (cat) inputs.push_back(x1);
  inputs.insert(inputs.end(), {gamma, beta});
  if (any_requires_grad(inputs)) {
    Tensor sx0 = xc0.detach(), sx1 = cat ? xc1.detach() : Tensor(),
           sg = gc.defined() ? gc.detach() : Tensor(), sb = bc.defined() ? bc.detach() : Tensor();
    const bool affine = gamma.defined();
    const int64_t G = groups;
    const char* bop = cat ? "group_norm_silu_cat_backward" : "group_norm_silu_backward";
    record(op, y, inputs, [=](const Tensor& g) {
      Tensor gcont = g.contiguous();
      Tensor dx0 = Tensor::empty(sx0.shape(), sx0.dtype(), sx0.device());
      Tensor dx1 = cat ? Tensor::empty(sx1.shape(), sx1.dtype(), sx1.device()) : Tensor();
      Tensor dgamma = affine ? Tensor::empty({C}, sx0.dtype(), sx0.device()) : Tensor();
      Tensor dbeta = affine ? Tensor::empty({C}, sx0.dtype(), sx0.device()) : Tensor();
      detail::dispatch_float(
          sx0, bop,
          [&] {
            return backward_traffic({&gcont, &sx0, &sx1, &stats, &sg, &sb, &dx0, &dx1, &dgamma, &dbeta});
          },
          [&]<typename T, bool Cuda>() {
            if constexpr (!Cuda)
              kern::cpu::group_norm_silu_backward_cat<T>(
                  N, C0, C, HW, G, gcont.data<T>(), sx0.data<T>(), detail::data_or_null<T>(sx1),
                  stats.data<double>(), affine ? sg.data<T>() : nullptr, affine ? sb.data<T>() : nullptr,
                  dx0.data<T>(), detail::data_or_null<T>(dx1), affine ? dgamma.data<T>() : nullptr,
                  affine ? dbeta.data<T>() : nullptr);
          });
      std::vector<Tensor> grads{dx0};
      if (cat) grads.push_back(dx1);
      grads.insert(grads.end(), {dgamma, dbeta});
      return grads;
    });
  }
  return y;
}
}  // namespace

Tensor group_norm_silu(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, double eps) {
  const std::array<int64_t, 3> dims = check_args("group_norm_silu", x, x.shape(), groups, gamma, beta);
  if (x.device().is_cuda()) return silu(group_norm(x, groups, gamma, beta, eps));  // no fused CUDA kernel
  return group_norm_silu_cpu("group_norm_silu", x, Tensor(), groups, gamma, beta, eps, x.shape(), dims);
}

Tensor group_norm_silu_cat(const Tensor& x0, const Tensor& x1, int64_t groups, const Tensor& gamma,
                           const Tensor& beta, double eps) {
  const char* op = "group_norm_silu_cat";
  ENGINE_CHECK(x0.defined() && x1.defined(), op, "undefined input");
  detail::check_same(op, {&x0, &x1});
  ENGINE_CHECK(x0.dim() >= 2 && x1.dim() == x0.dim(), op, "inputs must be (N, C0, *) and (N, C1, *), got ",
               shape_str(x0.shape()), " and ", shape_str(x1.shape()));
  for (int64_t d = 0; d < x0.dim(); ++d)
    ENGINE_CHECK(d == 1 || x0.size(d) == x1.size(d), op, "inputs ", shape_str(x0.shape()), " and ",
                 shape_str(x1.shape()), " differ outside dim 1");
  Shape shape = x0.shape();
  shape[1] += x1.size(1);
  const std::array<int64_t, 3> dims = check_args(op, x0, shape, groups, gamma, beta);  // the concatenation's
  if (x0.device().is_cuda())  // no fused CUDA kernel: the concatenation, then the unfused pair
    return silu(group_norm(concat({x0, x1}, 1), groups, gamma, beta, eps));
  return group_norm_silu_cpu(op, x0, x1, groups, gamma, beta, eps, shape, dims);
}

}  // namespace engine
