// scaled_dot_product_attention op: softmax(q k^T * scale) v per (batch, head), computed by
// a fused kernel that saves only the per-row log-sum-exp for backward.
// On the CPU, float32 with a small head dim (kern::cpu::attention_blhd_supported), q, k and v given as
// (B, H, L, D) views of contiguous (B, L, H, D) tensors (the nn Attention layer's head split) are read in
// place, and o, dq, dk, dv are written as contiguous (B, L, H, D) tensors returned as (B, H, L, D) views:
// no head split/merge copies, bitwise the same values as the contiguous path. Likewise views of contiguous
// (B, H, D, L) tensors (the channel-major nn Attention layer's q, k, v: strides (H*D*L, D*L, 1, L)) are read
// in place and o, dq, dk, dv returned as such views.
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

// Whether t (B, H, L, D) is a view of a contiguous (B, H, D, L) tensor: strides (H*D*L, D*L, 1, L).
bool is_bhdl(const Tensor& t) {
  const Shape& s = t.strides();
  const int64_t H = t.size(1), L = t.size(2), D = t.size(3);
  return s[2] == 1 && s[3] == L && s[1] == D * L && s[0] == H * D * L;
}

// Which memory layout the CPU kernel reads in place; Copy: contiguous (B, H, L, D) copies.
enum class Layout { Copy, Blhd, Bhdl };

bool has_layout(const Tensor& t, Layout l) {
  return l == Layout::Blhd ? is_blhd(t) : l == Layout::Bhdl ? is_bhdl(t) : t.is_contiguous();
}

// An uninitialised (B, H, L, D) tensor with layout l's memory (Copy: contiguous).
Tensor empty_in(Layout l, int64_t B, int64_t H, int64_t L, int64_t D, const Tensor& like) {
  if (l == Layout::Blhd)
    return Tensor::empty({B, L, H, D}, like.dtype(), like.device()).permute({0, 2, 1, 3});
  if (l == Layout::Bhdl) return Tensor::empty({B, H, D, L}, like.dtype(), like.device()).transpose(2, 3);
  return Tensor::empty({B, H, L, D}, like.dtype(), like.device());
}

// t (B, H, L, D) with layout l's memory: t itself when it has it, else one copy.
Tensor in_layout(const Tensor& t, Layout l) {
  if (has_layout(t, l)) return t;
  Tensor r = empty_in(l, t.size(0), t.size(1), t.size(2), t.size(3), t);
  r.copy_(t);
  return r;
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
  // In place on (B, L, H, D) or (B, H, D, L) memory (all three inputs alike): CPU float32 small-D heads only;
  // everything else copies to (BH, L, D).
  const bool small = !q.device().is_cuda() && q.dtype() == DType::F32 && H >= 1 &&
                     kern::cpu::attention_blhd_supported(Lq, Lk, D);
  const Layout layout = !small                                   ? Layout::Copy
                        : is_blhd(q) && is_blhd(k) && is_blhd(v) ? Layout::Blhd
                        : is_bhdl(q) && is_bhdl(k) && is_bhdl(v) ? Layout::Bhdl
                                                                 : Layout::Copy;
  Tensor qc = in_layout(q, layout), kc = in_layout(k, layout), vc = in_layout(v, layout);
  Tensor o = empty_in(layout, B, H, Lq, D, q);
  // The log-sum-exp is only for the backward: a CPU forward that records no graph (no_grad, e.g.
  // sampling) skips it (the CPU kernels take lse = nullptr); CUDA always writes it.
  const bool needs_grad = any_requires_grad({&q, &k, &v});
  Tensor lse;
  if (needs_grad || q.device().is_cuda()) lse = Tensor::empty({B, H, Lq}, q.dtype(), q.device());
  if (o.numel() > 0)
    detail::dispatch_float(
        q, "attention",
        // QK^T and PV: 4 * BH * Lq * Lk * D (the op table's count)
        [&] {
          return detail::work(4.0 * double(BH) * double(Lq) * double(Lk) * double(D), {&q, &k, &v, &o, &lse});
        },
        [&]<typename T, bool Cuda>() {
          T* lp = detail::data_or_null<T>(lse);
          if constexpr (!Cuda && std::is_same_v<T, float>) {
            if (layout == Layout::Blhd)
              return kern::cpu::attention_forward_blhd(B, H, Lq, Lk, D, scale, qc.data<T>(), kc.data<T>(),
                                                       vc.data<T>(), o.data<T>(), lp);
            if (layout == Layout::Bhdl)
              return kern::cpu::attention_forward_bhdl(B, H, Lq, Lk, D, scale, qc.data<T>(), kc.data<T>(),
                                                       vc.data<T>(), o.data<T>(), lp);
          }
          KERN(attention_forward, BH, Lq, Lk, D, scale, qc.data<T>(), kc.data<T>(), vc.data<T>(), o.data<T>(),
               lp);
        });
  if (needs_grad) {
    Tensor sq = qc.detach(), sk = kc.detach(), sv = vc.detach(), so = o.detach();
    record("attention", o, {q, k, v}, [=](const Tensor& g) {
      // The in-place paths take dout in their layout too (one copy when it comes in another one).
      Tensor gc = in_layout(g, layout);
      Tensor dq = empty_in(layout, B, H, Lq, D, sq);
      Tensor dk = empty_in(layout, B, H, Lk, D, sk);
      Tensor dv = empty_in(layout, B, H, Lk, D, sv);
      detail::dispatch_float(
          sq, "attention_backward",
          // five GEMM-sized products: QK^T (recomputed), P^T dO, dO V^T, dS K, dS^T Q
          [&] {
            return detail::work(10.0 * double(BH) * double(Lq) * double(Lk) * double(D),
                                {&sq, &sk, &sv, &so, &lse, &gc, &dq, &dk, &dv});
          },
          [&]<typename T, bool Cuda>() {
            if constexpr (!Cuda && std::is_same_v<T, float>) {
              if (layout == Layout::Blhd)
                return kern::cpu::attention_backward_blhd(
                    B, H, Lq, Lk, D, scale, sq.data<T>(), sk.data<T>(), sv.data<T>(), so.data<T>(),
                    lse.data<T>(), gc.data<T>(), dq.data<T>(), dk.data<T>(), dv.data<T>());
              if (layout == Layout::Bhdl)
                return kern::cpu::attention_backward_bhdl(
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
