// scaled_dot_product_attention op: softmax(q k^T * scale) v per (batch, head), computed by
// a fused kernel that saves only the per-row log-sum-exp for backward.
#include <cmath>

#include "core/ops.h"
#include "core/ops/dispatch.h"

namespace engine {

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    std::optional<double> scale_opt) {
  detail::check_same("attention", {&q, &k, &v});
  ENGINE_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention",
               "expects (B, H, L, D) tensors, got q ", shape_str(q.shape()), " k ", shape_str(k.shape()),
               " v ", shape_str(v.shape()));
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), D = q.size(3), Lk = k.size(2);
  ENGINE_CHECK(k.size(0) == B && k.size(1) == H && k.size(3) == D && v.shape() == k.shape(), "attention",
               "shapes do not agree: q ", shape_str(q.shape()), " k ", shape_str(k.shape()), " v ",
               shape_str(v.shape()));
  ENGINE_CHECK(Lk > 0 && D > 0, "attention", "empty keys or head dim: k ", shape_str(k.shape()));
  ENGINE_CHECK(D <= kern::kMaxAttentionHeadDim, "attention", "head dim D = ", D, " is unsupported (1..",
               kern::kMaxAttentionHeadDim, " on every device), q ", shape_str(q.shape()));
  const double scale = scale_opt ? *scale_opt : 1.0 / std::sqrt(static_cast<double>(D));
  const int64_t BH = B * H;
  Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  Tensor o = Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor lse = Tensor::empty({B, H, Lq}, q.dtype(), q.device());
  if (o.numel() > 0)
    detail::dispatch_float(
        q, "attention",
        // QK^T and PV: 4 * BH * Lq * Lk * D (the op table's count)
        [&] {
          return detail::work(4.0 * double(BH) * double(Lq) * double(Lk) * double(D), {&q, &k, &v, &o, &lse});
        },
        [&]<typename T, bool Cuda>() {
          KERN(attention_forward, BH, Lq, Lk, D, scale, qc.data<T>(), kc.data<T>(), vc.data<T>(), o.data<T>(),
               lse.data<T>());
        });
  if (any_requires_grad({&q, &k, &v})) {
    Tensor sq = qc.detach(), sk = kc.detach(), sv = vc.detach(), so = o.detach();
    record("attention", o, {q, k, v}, [=](const Tensor& g) {
      Tensor gc = g.contiguous();
      Tensor dq = Tensor::empty(sq.shape(), sq.dtype(), sq.device());
      Tensor dk = Tensor::empty(sk.shape(), sk.dtype(), sk.device());
      Tensor dv = Tensor::empty(sv.shape(), sv.dtype(), sv.device());
      detail::dispatch_float(
          sq, "attention_backward",
          // five GEMM-sized products: QK^T (recomputed), P^T dO, dO V^T, dS K, dS^T Q
          [&] {
            return detail::work(10.0 * double(BH) * double(Lq) * double(Lk) * double(D),
                                {&sq, &sk, &sv, &so, &lse, &gc, &dq, &dk, &dv});
          },
          [&]<typename T, bool Cuda>() {
            KERN(attention_backward, BH, Lq, Lk, D, scale, sq.data<T>(), sk.data<T>(), sv.data<T>(),
                 so.data<T>(), lse.data<T>(), gc.data<T>(), dq.data<T>(), dk.data<T>(), dv.data<T>());
          });
      return std::vector<Tensor>{dq, dk, dv};
    });
  }
  return o;
}

}  // namespace engine
