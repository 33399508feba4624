// scaled_dot_product_attention op: softmax(q k^T * scale) v per (batch, head), computed by
// a fused kernel that saves only the per-row log-sum-exp for backward.
// On the CPU, float32 with a small head dim (kern::cpu::attention_blhd_supported), q, k and v given as
// (B, H, L, D) views of contiguous (B, L, H, D) tensors (the nn Attention layer's head split) are read in
// place, and o, dq, dk, dv are written as contiguous (B, L, H, D) tensors returned as (B, H, L, D) views:
// no head split/merge copies, bitwise the same values as the contiguous path.
#include <cmath>
#include <type_traits>

#include "core/ops.h"
#include "core/ops/dispatch.h"

namespace engine {
namespace {

// Whether t (B, H, L, D) is a view of a contiguous (B, L, H, D) tensor: strides (L*H*D, D, H*D, 1).
bool is_blhd(const Tensor& t) {
  const Shape& s = t.strides();
  const int64_t H = t.size(1), L = t.size(2), D = t.size(3);
  return s[3] == 1 && s[2] == H * D && s[1] == D && s[0] == L * H * D;
}

// (B, L, H, D) contiguous storage seen as (B, H, L, D).
Tensor empty_blhd(int64_t B, int64_t H, int64_t L, int64_t D, const Tensor& like) {
  return Tensor::empty({B, L, H, D}, like.dtype(), like.device()).permute({0, 2, 1, 3});
}

}  // namespace

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
  // In place on (B, L, H, D) memory: CPU float32 small-D heads only; everything else copies to (BH, L, D).
  const bool blhd = !q.device().is_cuda() && q.dtype() == DType::F32 && H >= 1 &&
                    kern::cpu::attention_blhd_supported(Lq, Lk, D) && is_blhd(q) && is_blhd(k) && is_blhd(v);
  Tensor qc = blhd ? q : q.contiguous(), kc = blhd ? k : k.contiguous(), vc = blhd ? v : v.contiguous();
  Tensor o = blhd ? empty_blhd(B, H, Lq, D, q) : Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor lse = Tensor::empty({B, H, Lq}, q.dtype(), q.device());
  if (o.numel() > 0)
    detail::dispatch_float(
        q, "attention",
        // QK^T and PV: 4 * BH * Lq * Lk * D (the op table's count)
        [&] {
          return detail::work(4.0 * double(BH) * double(Lq) * double(Lk) * double(D), {&q, &k, &v, &o, &lse});
        },
        [&]<typename T, bool Cuda>() {
          if constexpr (!Cuda && std::is_same_v<T, float>) {
            if (blhd)
              return kern::cpu::attention_forward_blhd(B, H, Lq, Lk, D, scale, qc.data<T>(), kc.data<T>(),
                                                       vc.data<T>(), o.data<T>(), lse.data<T>());
          }
          KERN(attention_forward, BH, Lq, Lk, D, scale, qc.data<T>(), kc.data<T>(), vc.data<T>(), o.data<T>(),
               lse.data<T>());
        });
  if (any_requires_grad({&q, &k, &v})) {
    Tensor sq = qc.detach(), sk = kc.detach(), sv = vc.detach(), so = o.detach();
    record("attention", o, {q, k, v}, [=](const Tensor& g) {
      // The blhd path takes dout in (B, L, H, D) memory too (one copy when it comes in another layout).
      Tensor gc = !blhd        ? g.contiguous()
                  : is_blhd(g) ? g
                               : g.permute({0, 2, 1, 3}).contiguous().permute({0, 2, 1, 3});
      Tensor dq = blhd ? empty_blhd(B, H, Lq, D, sq) : Tensor::empty(sq.shape(), sq.dtype(), sq.device());
      Tensor dk = blhd ? empty_blhd(B, H, Lk, D, sk) : Tensor::empty(sk.shape(), sk.dtype(), sk.device());
      Tensor dv = blhd ? empty_blhd(B, H, Lk, D, sv) : Tensor::empty(sv.shape(), sv.dtype(), sv.device());
      detail::dispatch_float(
          sq, "attention_backward",
          // five GEMM-sized products: QK^T (recomputed), P^T dO, dO V^T, dS K, dS^T Q
          [&] {
            return detail::work(10.0 * double(BH) * double(Lq) * double(Lk) * double(D),
                                {&sq, &sk, &sv, &so, &lse, &gc, &dq, &dk, &dv});
          },
          [&]<typename T, bool Cuda>() {
            if constexpr (!Cuda && std::is_same_v<T, float>) {
              if (blhd)
                return kern::cpu::attention_backward_blhd(
                    B, H, Lq, Lk, D, scale, sq.data<T>(), sk.data<T>(), sv.data<T>(), so.data<T>(),
                    lse.data<T>(), gc.data<T>(), dq.data<T>(), dk.data<T>(), dv.data<T>());
            }
            KERN(attention_backward, BH, Lq, Lk, D, scale, sq.data<T>(), sk.data<T>(), sv.data<T>(),
                 so.data<T>(), lse.data<T>(), gc.data<T>(), dq.data<T>(), dk.data<T>(), dv.data<T>());
          });
      return std::vector<Tensor>{dq, dk, dv};
    });
  }
  return o;
}

}  // namespace engine
