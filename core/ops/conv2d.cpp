// conv2d op: NCHW convolution with any kernel size, stride and padding, optional bias.
// Forward and both backward passes are dedicated kernels (im2col+GEMM on CPU,
// implicit GEMM on CUDA).
#include "core/ops.h"
#include "core/ops/dispatch.h"

namespace engine {

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dOptions& opt) {
  detail::check_same("conv2d", {&x, &weight, &bias});
  ENGINE_CHECK(x.dim() == 4, "conv2d", "input must be (N, C, H, W), got ", shape_str(x.shape()));
  ENGINE_CHECK(weight.dim() == 4, "conv2d", "weight must be (K, C, R, S), got ", shape_str(weight.shape()));
  ENGINE_CHECK(weight.size(1) == x.size(1), "conv2d", "weight ", shape_str(weight.shape()), " expects ",
               weight.size(1), " input channels, got x ", shape_str(x.shape()));
  if (bias.defined())
    ENGINE_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), "conv2d", "bias ",
                 shape_str(bias.shape()), " does not match weight ", shape_str(weight.shape()));
  ENGINE_CHECK(opt.stride_h > 0 && opt.stride_w > 0 && opt.pad_h >= 0 && opt.pad_w >= 0, "conv2d",
               "invalid stride/padding");
  kern::Conv2dShape s{};
  s.N = x.size(0), s.C = x.size(1), s.H = x.size(2), s.W = x.size(3);
  s.K = weight.size(0), s.R = weight.size(2), s.S = weight.size(3);
  s.stride_h = opt.stride_h, s.stride_w = opt.stride_w, s.pad_h = opt.pad_h, s.pad_w = opt.pad_w;
  s.P = kern::conv_out_size(s.H, s.R, s.stride_h, s.pad_h);
  s.Q = kern::conv_out_size(s.W, s.S, s.stride_w, s.pad_w);
  ENGINE_CHECK(s.H + 2 * s.pad_h >= s.R && s.W + 2 * s.pad_w >= s.S, "conv2d", "kernel ",
               shape_str(weight.shape()), " larger than padded input ", shape_str(x.shape()));

  Tensor xc = x.contiguous(), wc = weight.contiguous(), bc = bias.defined() ? bias.contiguous() : Tensor();
  Tensor y = Tensor::empty({s.N, s.K, s.P, s.Q}, x.dtype(), x.device());
  if (y.numel() > 0) {
    auto cost = [&] { return detail::work(s.flops(), {&xc, &wc, &bc, &y}); };
    detail::dispatch_float(x, "conv2d", cost, [&]<typename T, bool Cuda>() {
      KERN(conv2d_forward, s, xc.data<T>(), wc.data<T>(), bc.defined() ? bc.data<T>() : nullptr, y.data<T>());
    });
  }
  if (any_requires_grad({&x, &weight, &bias})) {
    const bool gx = x.requires_grad(), gw = weight.requires_grad(),
               gb = bias.defined() && bias.requires_grad();
    Tensor sx = gw ? xc.detach() : Tensor(), sw = gx ? wc.detach() : Tensor();
    DType dt = x.dtype();
    Device dev = x.device();
    record("conv2d", y, {x, weight, bias}, [=](const Tensor& g) {
      Tensor gc = g.contiguous();
      Tensor dx, dw, db;
      if (gx) dx = Tensor::empty({s.N, s.C, s.H, s.W}, dt, dev);
      if (gw) dw = Tensor::empty({s.K, s.C, s.R, s.S}, dt, dev);
      if (gb) db = Tensor::empty({s.K}, dt, dev);
      auto cost = [&] {  // each requested gradient: one conv's FLOPs, g + the saved operand + the result
        prof::Cost c = detail::work((gx + gw) * s.flops(), {&sw, &dx, &sx, &dw, &db});
        c.bytes += (gx + gw) * static_cast<double>(gc.numel()) * static_cast<double>(dtype_size(gc.dtype()));
        return c;
      };
      detail::dispatch_float(gc, "conv2d_backward", cost, [&]<typename T, bool Cuda>() {
        if (gx) KERN(conv2d_backward_input, s, gc.data<T>(), sw.data<T>(), dx.data<T>());
        if (gw)
          KERN(conv2d_backward_weight, s, gc.data<T>(), sx.data<T>(), dw.data<T>(),
               gb ? db.data<T>() : nullptr);
      });
      if (gb && !gw) db = sum(gc, {0, 2, 3});  // bias only: sum over (N, P, Q)
      return std::vector<Tensor>{dx, gw ? dw : Tensor(), gb ? db : Tensor()};
    });
  }
  return y;
}

}  // namespace engine
