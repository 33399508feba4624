// group_norm op: statistics per (sample, group), affine per channel. Saves mean and rstd.
// group_norm_silu: silu(group_norm(x)) fused on the CPU (saves x and double statistics only), the unfused
// pair on CUDA.
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

// Checks group_norm's arguments (errors name `op`); returns {N, C, HW}.
std::array<int64_t, 3> check_args(const char* op, const Tensor& x, int64_t groups, const Tensor& gamma,
                                  const Tensor& beta) {
  detail::check_same(op, {&x, &gamma, &beta});
  ENGINE_CHECK(x.dim() >= 2, op, "input must be (N, C, *), got ", shape_str(x.shape()));
  const int64_t N = x.size(0), C = x.size(1), HW = x.numel() / std::max<int64_t>(N * C, 1);
  ENGINE_CHECK(groups > 0 && C % groups == 0, op, C, " channels are not divisible into ", groups,
               " groups (input ", shape_str(x.shape()), ")");
  ENGINE_CHECK(gamma.defined() == beta.defined(), op, "pass both gamma and beta or neither");
  if (gamma.defined())
    ENGINE_CHECK(gamma.shape() == Shape{C} && beta.shape() == Shape{C}, op, "gamma ",
                 shape_str(gamma.shape()), " / beta ", shape_str(beta.shape()), " must be (", C, ",)");
  return {N, C, HW};
}
}  // namespace

Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, double eps) {
  const std::array<int64_t, 3> dims = check_args("group_norm", x, groups, gamma, beta);
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

Tensor group_norm_silu(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, double eps) {
  const std::array<int64_t, 3> dims = check_args("group_norm_silu", x, groups, gamma, beta);
  const int64_t N = dims[0], C = dims[1], HW = dims[2];
  if (x.device().is_cuda()) return silu(group_norm(x, groups, gamma, beta, eps));  // no fused CUDA kernel
  Tensor xc = x.contiguous();
  Tensor gc = gamma.defined() ? gamma.contiguous() : Tensor(),
         bc = beta.defined() ? beta.contiguous() : Tensor();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor stats = Tensor::empty({N, groups, 2}, DType::F64, x.device());  // mean, rstd in double
  if (x.numel() > 0)
    detail::dispatch_float(
        x, "group_norm_silu",
        [&] {
          return detail::work(9.0 * double(x.numel()), {&xc, &gc, &bc, &y, &stats});
        },  // op table
        [&]<typename T, bool Cuda>() {
          if constexpr (!Cuda)
            kern::cpu::group_norm_silu_forward<T>(N, C, HW, groups, eps, xc.data<T>(),
                                                  detail::data_or_null<T>(gc), detail::data_or_null<T>(bc),
                                                  y.data<T>(), stats.data<double>());
        });
  if (any_requires_grad({&x, &gamma, &beta})) {
    Tensor sx = xc.detach(), sg = gc.defined() ? gc.detach() : Tensor(),
           sb = bc.defined() ? bc.detach() : Tensor();
    const bool affine = gamma.defined();
    const int64_t G = groups;
    record("group_norm_silu", y, {x, gamma, beta}, [=](const Tensor& g) {
      Tensor gcont = g.contiguous();
      Tensor dx = Tensor::empty(sx.shape(), sx.dtype(), sx.device());
      Tensor dgamma = affine ? Tensor::empty({C}, sx.dtype(), sx.device()) : Tensor();
      Tensor dbeta = affine ? Tensor::empty({C}, sx.dtype(), sx.device()) : Tensor();
      detail::dispatch_float(
          sx, "group_norm_silu_backward",
          [&] {
            return backward_traffic({&gcont, &sx, &stats, &sg, &sb, &dx, &dgamma, &dbeta});
          },
          [&]<typename T, bool Cuda>() {
            if constexpr (!Cuda)
              kern::cpu::group_norm_silu_backward<T>(
                  N, C, HW, G, gcont.data<T>(), sx.data<T>(), stats.data<double>(),
                  affine ? sg.data<T>() : nullptr, affine ? sb.data<T>() : nullptr, dx.data<T>(),
                  affine ? dgamma.data<T>() : nullptr, affine ? dbeta.data<T>() : nullptr);
          });
      return std::vector<Tensor>{dx, dgamma, dbeta};
    });
  }
  return y;
}

}  // namespace engine
