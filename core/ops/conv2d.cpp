// conv2d op: NCHW convolution with any kernel size, stride and padding, optional bias, and an optional
// additive epilogue (a per-sample bias (N, K) and a residual (N, K, P, Q)) fused into the CPU forward.
// Forward and both backward passes are dedicated kernels (im2col+GEMM or Winograd on CPU, implicit GEMM on
// CUDA).
#include "core/autograd.h"
#include "core/ops.h"
#include "core/ops/dispatch.h"

namespace engine {

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dOptions& opt,
              const Tensor& sample_bias, const Tensor& residual) {
  detail::check_same("conv2d", {&x, &weight, &bias, &sample_bias, &residual});
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

  if (sample_bias.defined())
    ENGINE_CHECK(sample_bias.shape() == Shape({s.N, s.K}), "conv2d", "sample_bias ",
                 shape_str(sample_bias.shape()), " must be (N, K) = ", shape_str({s.N, s.K}));
  if (residual.defined())
    ENGINE_CHECK(residual.shape() == Shape({s.N, s.K, s.P, s.Q}), "conv2d", "residual ",
                 shape_str(residual.shape()), " must be the output's shape ",
                 shape_str({s.N, s.K, s.P, s.Q}));

  Tensor xc = x.contiguous(), wc = weight.contiguous(), bc = bias.defined() ? bias.contiguous() : Tensor();
  Tensor tc = sample_bias.defined() ? sample_bias.contiguous() : Tensor();
  Tensor rc = residual.defined() ? residual.contiguous() : Tensor();
  Tensor y = Tensor::empty({s.N, s.K, s.P, s.Q}, x.dtype(), x.device());
  if (y.numel() > 0) {
    auto cost = [&] { return detail::work(s.flops(), {&xc, &wc, &bc, &tc, &rc, &y}); };
    detail::dispatch_float(x, "conv2d", cost, [&]<typename T, bool Cuda>() {
      if constexpr (Cuda)
        kern::cuda::conv2d_forward(s, xc.data<T>(), wc.data<T>(), detail::data_or_null<T>(bc), y.data<T>());
      else
        kern::cpu::conv2d_forward_fused<T>(s, xc.data<T>(), wc.data<T>(), detail::data_or_null<T>(bc),
                                           detail::data_or_null<T>(tc), detail::data_or_null<T>(rc),
                                           y.data<T>());
    });
    if (x.device().is_cuda() && (tc.defined() || rc.defined())) {  // CUDA: the epilogue as broadcast adds
      NoGradGuard no_grad;
      if (tc.defined()) y = add(y, tc.reshape({s.N, s.K, 1, 1}));
      if (rc.defined()) y = add(y, rc);
    }
  }
  if (any_requires_grad({&x, &weight, &bias, &sample_bias, &residual})) {
    const bool gx = x.requires_grad(), gw = weight.requires_grad(),
               gb = bias.defined() && bias.requires_grad(),
               gt = sample_bias.defined() && sample_bias.requires_grad(),
               gr = residual.defined() && residual.requires_grad();
    Tensor sx = gw ? xc.detach() : Tensor(), sw = gx ? wc.detach() : Tensor();
    DType dt = x.dtype();
    Device dev = x.device();
    // The epilogue's tensors are inputs only when given (a plain conv's node keeps its three inputs).
    const bool epi = sample_bias.defined() || residual.defined();
    std::vector<Tensor> inputs{x, weight, bias};
    if (epi) inputs.insert(inputs.end(), {sample_bias, residual});
    record("conv2d", y, inputs, [=](const Tensor& g) {
      Tensor gc = g.contiguous();
      Tensor dx, dw, db, dsb;
      if (gx) dx = Tensor::empty({s.N, s.C, s.H, s.W}, dt, dev);
      if (gw) dw = Tensor::empty({s.K, s.C, s.R, s.S}, dt, dev);
      if (gb) db = Tensor::empty({s.K}, dt, dev);
      // CPU: d sample_bias (dy summed over (P, Q)) in the weight gradient's bias pass over dy (the bits
      // of sum(gc, {2, 3}), which runs otherwise: a second pass over dy).
      const bool fused_dt = gt && gw && !dev.is_cuda();
      if (fused_dt) dsb = Tensor::empty({s.N, s.K}, dt, dev);
      auto cost = [&] {  // each requested gradient: one conv's FLOPs, g + the saved operand + the result
        prof::Cost c = detail::work((gx + gw) * s.flops(), {&sw, &dx, &sx, &dw, &db, &dsb});
        c.bytes += (gx + gw) * static_cast<double>(gc.numel()) * static_cast<double>(dtype_size(gc.dtype()));
        return c;
      };
      detail::dispatch_float(gc, "conv2d_backward", cost, [&]<typename T, bool Cuda>() {
        if (gx) KERN(conv2d_backward_input, s, gc.data<T>(), sw.data<T>(), dx.data<T>());
        if constexpr (!Cuda) {
          if (fused_dt) {
            kern::cpu::conv2d_backward_weight_fused<T>(s, gc.data<T>(), sx.data<T>(), dw.data<T>(),
                                                       gb ? db.data<T>() : nullptr, dsb.data<T>());
            return;
          }
        }
        if (gw)
          KERN(conv2d_backward_weight, s, gc.data<T>(), sx.data<T>(), dw.data<T>(),
               gb ? db.data<T>() : nullptr);
      });
      if (gb && !gw) db = sum(gc, {0, 2, 3});  // bias only: sum over (N, P, Q)
      std::vector<Tensor> grads{dx, gw ? dw : Tensor(), gb ? db : Tensor()};
      if (epi)
        grads.insert(grads.end(), {fused_dt ? dsb : gt ? sum(gc, {2, 3}) : Tensor(), gr ? gc : Tensor()});
      return grads;
    });
  }
  return y;
}

}  // namespace engine
