// group_norm op: statistics per (sample, group), affine per channel. Saves mean and rstd.
#include "core/ops.h"
#include "core/ops/dispatch.h"

namespace engine {

Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, double eps) {
  detail::check_same("group_norm", {&x, &gamma, &beta});
  ENGINE_CHECK(x.dim() >= 2, "group_norm", "input must be (N, C, *), got ", shape_str(x.shape()));
  const int64_t N = x.size(0), C = x.size(1), HW = x.numel() / std::max<int64_t>(N * C, 1);
  ENGINE_CHECK(groups > 0 && C % groups == 0, "group_norm", C, " channels are not divisible into ", groups,
               " groups (input ", shape_str(x.shape()), ")");
  ENGINE_CHECK(gamma.defined() == beta.defined(), "group_norm", "pass both gamma and beta or neither");
  if (gamma.defined())
    ENGINE_CHECK(gamma.shape() == Shape{C} && beta.shape() == Shape{C}, "group_norm", "gamma ",
                 shape_str(gamma.shape()), " / beta ", shape_str(beta.shape()), " must be (", C, ",)");
  Tensor xc = x.contiguous();
  Tensor gc = gamma.defined() ? gamma.contiguous() : Tensor(),
         bc = beta.defined() ? beta.contiguous() : Tensor();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({N, groups}, x.dtype(), x.device());
  Tensor rstd = Tensor::empty({N, groups}, x.dtype(), x.device());
  if (x.numel() > 0)
    detail::dispatch_float(x, "group_norm", [&]<typename T, bool Cuda>() {
      KERN(group_norm_forward, N, C, HW, groups, eps, xc.data<T>(), gc.defined() ? gc.data<T>() : nullptr,
           bc.defined() ? bc.data<T>() : nullptr, y.data<T>(), mean.data<T>(), rstd.data<T>());
    });
  if (any_requires_grad({&x, &gamma, &beta})) {
    Tensor sx = xc.detach(), sg = gc.defined() ? gc.detach() : Tensor();
    const bool affine = gamma.defined();
    record("group_norm", y, {x, gamma, beta}, [=](const Tensor& g) {
      Tensor gcont = g.contiguous();
      Tensor dx = Tensor::empty(sx.shape(), sx.dtype(), sx.device());
      Tensor dgamma = affine ? Tensor::empty({C}, sx.dtype(), sx.device()) : Tensor();
      Tensor dbeta = affine ? Tensor::empty({C}, sx.dtype(), sx.device()) : Tensor();
      detail::dispatch_float(sx, "group_norm_backward", [&]<typename T, bool Cuda>() {
        KERN(group_norm_backward, N, C, HW, groups, gcont.data<T>(), sx.data<T>(), mean.data<T>(),
             rstd.data<T>(), affine ? sg.data<T>() : nullptr, dx.data<T>(),
             affine ? dgamma.data<T>() : nullptr, affine ? dbeta.data<T>() : nullptr);
      });
      return std::vector<Tensor>{dx, dgamma, dbeta};
    });
  }
  return y;
}

}  // namespace engine
