// Naive float64 references for every case of the op table (tests/op_table.cpp), written from the
// definitions with plain loops and PyTorch's non-finite semantics (NaN in, NaN out; softmax of a
// row with NaN, +inf or only -inf is NaN; silu(-inf) = NaN). Used by NonFinite.* (CPU and CUDA).
#include <cmath>
#include <limits>
#include <map>
#include <stdexcept>

#include "bench/unet_shapes.h"
#include "kernels/kernel_shapes.h"
#include "tests/op_table.h"

namespace engine::test {
namespace {

using Vec = std::vector<double>;
using Ins = std::vector<Vec>;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Vec map1(const Vec& x, double (*f)(double)) {
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = f(x[i]);
  return y;
}

// Row-major strides of a shape.
std::vector<int64_t> strides_of(const Shape& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (int d = int(s.size()) - 2; d >= 0; --d) st[d] = st[d + 1] * s[d + 1];
  return st;
}

// Broadcast binary op (NumPy rules) of a (shape as) and b (shape bs).
template <typename F>
Vec broadcast(const Vec& a, Shape as, const Vec& b, Shape bs, F f) {
  const size_t nd = std::max(as.size(), bs.size());
  as.insert(as.begin(), nd - as.size(), 1);
  bs.insert(bs.begin(), nd - bs.size(), 1);
  Shape os(nd);
  for (size_t d = 0; d < nd; ++d) os[d] = std::max(as[d], bs[d]);
  const auto sa = strides_of(as), sb = strides_of(bs), so = strides_of(os);
  Vec y(numel_of(os));
  for (int64_t i = 0; i < int64_t(y.size()); ++i) {
    int64_t ia = 0, ib = 0;
    for (size_t d = 0; d < nd; ++d) {
      const int64_t idx = (i / so[d]) % os[d];
      if (as[d] > 1) ia += idx * sa[d];
      if (bs[d] > 1) ib += idx * sb[d];
    }
    y[i] = f(a[ia], b[ib]);
  }
  return y;
}

// y[b] = op(A[b]) @ op(B[b]) with op = transpose when tA/tB; A (batch or 1, M, K) stored as
// (M, K) or (K, M) when transposed; a batch of 1 broadcasts.
Vec bmm(const Vec& A, int64_t bA, const Vec& B, int64_t bB, int64_t M, int64_t K, int64_t N, bool tA = false,
        bool tB = false) {
  const int64_t batch = std::max(bA, bB);
  Vec y(batch * M * N, 0.0);
  for (int64_t b = 0; b < batch; ++b) {
    const double* a = A.data() + (bA > 1 ? b : 0) * M * K;
    const double* bb = B.data() + (bB > 1 ? b : 0) * K * N;
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k)
          s += (tA ? a[k * M + i] : a[i * K + k]) * (tB ? bb[j * K + k] : bb[k * N + j]);
        y[(b * M + i) * N + j] = s;
      }
  }
  return y;
}

// linear with bias: x (M, K) (stored (K, M) when trans_x) @ W (N, K)^T + b (N): t = {x, W, b}.
Vec linear_bias(const Ins& t, int64_t M, int64_t K, int64_t N, bool trans_x = false) {
  const Vec y = bmm(t[0], 1, t[1], 1, M, K, N, trans_x, true);
  return broadcast(y, {M, N}, t[2], {N}, [](double a, double b) { return a + b; });
}

Vec conv2d(const Ins& t, const Shape& xs, const Shape& ws, bool bias, int64_t sh, int64_t sw, int64_t ph,
           int64_t pw) {
  const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3], O = ws[0], R = ws[2], S = ws[3];
  const int64_t P = kern::conv_out_size(H, R, sh, ph), Q = kern::conv_out_size(W, S, sw, pw);
  Vec y(N * O * P * Q);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q) {
          double s = bias ? t[2][o] : 0.0;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t r = 0; r < R; ++r)
              for (int64_t u = 0; u < S; ++u) {
                // Convolution of the zero-padded input: a padding tap multiplies 0 by the weight,
                // so an infinite weight gives NaN there (0 * inf), as im2col + GEMM does in PyTorch.
                const int64_t h = p * sh - ph + r, w = q * sw - pw + u;
                const bool in = h >= 0 && h < H && w >= 0 && w < W;
                s += (in ? t[0][((n * C + c) * H + h) * W + w] : 0.0) * t[1][((o * C + c) * R + r) * S + u];
              }
          y[((n * O + o) * P + p) * Q + q] = s;
        }
  return y;
}

// conv2d's epilogue on a conv output y (N, K, P, Q): + t[n, k] (t (N, K)) + r[n, k, p, q], each if given.
Vec conv_epilogue(Vec y, const Shape& ys, const Vec* t, const Vec* r) {
  const int64_t PQ = ys[2] * ys[3];
  for (int64_t i = 0; i < int64_t(y.size()); ++i) {
    if (t) y[i] += (*t)[i / PQ];
    if (r) y[i] += (*r)[i];
  }
  return y;
}

// The definition y = (x - mean) / sqrt(var + eps) * gamma + beta: an infinite gamma gives an
// infinite y (sign of x - mean), not the NaN of the x * scale + bias form.
Vec group_norm(const Ins& t, const Shape& xs, int64_t G, bool affine) {
  const int64_t N = xs[0], C = xs[1], HW = numel_of(xs) / (N * C), M = C / G * HW;
  Vec y(t[0].size());
  for (int64_t ng = 0; ng < N * G; ++ng) {
    const double* x = t[0].data() + ng * M;
    double s = 0, ss = 0;
    for (int64_t i = 0; i < M; ++i) s += x[i];
    const double mu = s / double(M);
    for (int64_t i = 0; i < M; ++i) ss += (x[i] - mu) * (x[i] - mu);
    const double rs = 1.0 / std::sqrt(ss / double(M) + 1e-5);
    for (int64_t i = 0; i < M; ++i) {
      const int64_t c = (ng % G) * (C / G) + i / HW;
      y[ng * M + i] = (x[i] - mu) * rs * (affine ? t[1][c] : 1.0) + (affine ? t[2][c] : 0.0);
    }
  }
  return y;
}

// silu(group_norm(...)) with silu(x) = x / (1 + exp(-x)) as PyTorch evaluates it (silu(-inf) = NaN).
Vec group_norm_silu(const Ins& t, const Shape& xs, int64_t G, bool affine) {
  Vec y = group_norm(t, xs, G, affine);
  for (double& v : y) v = v / (1.0 + std::exp(-v));
  return y;
}

// softmax(scale q k^T) v per head with torch.softmax semantics (max propagates NaN; inf - inf = NaN).
Vec attention(const Ins& t, const Shape& qs, const Shape& ks, double scale) {
  const int64_t D = qs.back(), Lq = qs[qs.size() - 2], Lk = ks[ks.size() - 2], BH = numel_of(qs) / (Lq * D);
  Vec o(BH * Lq * D, 0.0), s(Lk);
  for (int64_t h = 0; h < BH; ++h)
    for (int64_t i = 0; i < Lq; ++i) {
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < Lk; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += t[0][(h * Lq + i) * D + d] * t[1][(h * Lk + j) * D + d];
        s[j] = scale * dot;
        if (std::isnan(s[j]) || std::isnan(mx))
          mx = kNaN;
        else if (s[j] > mx)
          mx = s[j];
      }
      double z = 0;
      for (int64_t j = 0; j < Lk; ++j) z += std::exp(s[j] - mx);
      for (int64_t j = 0; j < Lk; ++j)
        for (int64_t d = 0; d < D; ++d)
          o[(h * Lq + i) * D + d] += std::exp(s[j] - mx) / z * t[2][(h * Lk + j) * D + d];
    }
  return o;
}

// attention() on inputs given as contiguous (B, H, D, L) tensors (the op sees their (B, H, L, D) views):
// each transposed to (B, H, L, D) first; the output is (B, H, L, D).
Vec attention_bhdl(const Ins& t, const Shape& qs, const Shape& ks, double scale) {
  auto tr = [](const Vec& x, const Shape& s) {  // (BH.., D, L) -> (BH.., L, D)
    const int64_t D = s[s.size() - 2], L = s.back(), BH = numel_of(s) / (D * L);
    Vec r(x.size());
    for (int64_t h = 0; h < BH; ++h)
      for (int64_t d = 0; d < D; ++d)
        for (int64_t l = 0; l < L; ++l) r[(h * L + l) * D + d] = x[(h * D + d) * L + l];
    return r;
  };
  auto swap_last = [](Shape s) {
    std::swap(s[s.size() - 1], s[s.size() - 2]);
    return s;
  };
  return attention({tr(t[0], qs), tr(t[1], ks), tr(t[2], ks)}, swap_last(qs), swap_last(ks), scale);
}

// Sum of x (shape xs) over the dims in `dims` (output in row-major order of the kept dims).
Vec reduce_sum(const Vec& x, const Shape& xs, const std::vector<int>& dims, bool mean = false) {
  std::vector<bool> red(xs.size(), false);
  for (int d : dims) red[d < 0 ? d + int(xs.size()) : d] = true;
  Shape os;
  for (size_t d = 0; d < xs.size(); ++d)
    if (!red[d]) os.push_back(xs[d]);
  const auto sx = strides_of(xs), so = strides_of(os);
  Vec y(numel_of(os), 0.0);
  int64_t cnt = 1;
  for (size_t d = 0; d < xs.size(); ++d)
    if (red[d]) cnt *= xs[d];
  for (int64_t i = 0; i < int64_t(x.size()); ++i) {
    int64_t o = 0, k = 0;
    for (size_t d = 0; d < xs.size(); ++d)
      if (!red[d]) o += ((i / sx[d]) % xs[d]) * so[k++];
    y[o] += x[i];
  }
  if (mean)
    for (auto& v : y) v /= double(cnt);
  return y;
}

// Concatenation along `dim` of inputs with shapes ss (all contiguous).
Vec concat(const Ins& t, const std::vector<Shape>& ss, int dim) {
  int64_t outer = 1;
  for (int d = 0; d < dim; ++d) outer *= ss[0][d];
  Vec y;
  for (int64_t o = 0; o < outer; ++o)
    for (size_t j = 0; j < t.size(); ++j) {
      const int64_t blk = int64_t(t[j].size()) / outer;
      y.insert(y.end(), t[j].begin() + o * blk, t[j].begin() + (o + 1) * blk);
    }
  return y;
}

// group_norm_silu of the concatenation along dim 1 of t[0] (shape s0) and t[1] (s1); t[2], t[3] gamma, beta.
Vec group_norm_silu_cat(const Ins& t, const Shape& s0, const Shape& s1, int64_t G, bool affine) {
  Shape xs = s0;
  xs[1] += s1[1];
  Ins u{concat({t[0], t[1]}, {s0, s1}, 1)};
  if (affine) u.insert(u.end(), {t[2], t[3]});
  return group_norm_silu(u, xs, G, affine);
}

Vec transpose2(const Vec& x, int64_t R, int64_t C) {  // (R, C) -> (C, R)
  Vec y(x.size());
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) y[c * R + r] = x[r * C + c];
  return y;
}

using Ref = std::function<Vec(const Ins&, const OpCase&)>;

const std::map<std::string, Ref>& refs() {
  auto sh = [](const OpCase& c, int i) { return c.inputs[i].shape; };
  static const std::map<std::string, Ref> m = [&] {
    std::map<std::string, Ref> table = {
        {"Conv2d/3x3_s1_p1_bias",
         [=](auto& t, auto& c) { return conv2d(t, sh(c, 0), sh(c, 1), true, 1, 1, 1, 1); }},
        {"Conv2d/3x3_s2_p1_bias",
         [=](auto& t, auto& c) { return conv2d(t, sh(c, 0), sh(c, 1), true, 2, 2, 1, 1); }},
        {"Conv2d/1x1_bias",
         [=](auto& t, auto& c) { return conv2d(t, sh(c, 0), sh(c, 1), true, 1, 1, 0, 0); }},
        {"Conv2d/5x3_s21_p20_nobias",
         [=](auto& t, auto& c) { return conv2d(t, sh(c, 0), sh(c, 1), false, 2, 1, 2, 0); }},
        {"Conv2d/bias_only_grad",
         [=](auto& t, auto& c) { return conv2d(t, sh(c, 0), sh(c, 1), true, 1, 1, 1, 1); }},
        {"Conv2d/3x3_s1_p1_bias_sample_bias_residual",
         [=](auto& t, auto& c) {
           return conv_epilogue(conv2d(t, sh(c, 0), sh(c, 1), true, 1, 1, 1, 1), {2, 4, 6, 5}, &t[3], &t[4]);
         }},
        {"Conv2d/3x3_s2_p1_sample_bias_nobias",
         [=](auto& t, auto& c) {
           return conv_epilogue(conv2d(t, sh(c, 0), sh(c, 1), false, 2, 2, 1, 1), {2, 4, 4, 3}, &t[2],
                                nullptr);
         }},
        {"Conv2d/1x1_residual_nobias",
         [=](auto& t, auto& c) {
           return conv_epilogue(conv2d(t, sh(c, 0), sh(c, 1), false, 1, 1, 0, 0), {2, 3, 4, 3}, nullptr,
                                &t[2]);
         }},
        {"Conv2d/epilogue_only_grads",
         [=](auto& t, auto& c) {
           return conv_epilogue(conv2d(t, sh(c, 0), sh(c, 1), true, 1, 1, 1, 1), {2, 4, 5, 5}, &t[3], &t[4]);
         }},
        {"Conv2d/winograd_32ch_bias_sample_bias_residual",
         [=](auto& t, auto& c) {
           return conv_epilogue(conv2d(t, sh(c, 0), sh(c, 1), true, 1, 1, 1, 1), {3, 32, 9, 7}, &t[3], &t[4]);
         }},
        {"GroupNorm/g2_affine", [=](auto& t, auto& c) { return group_norm(t, sh(c, 0), 2, true); }},
        {"GroupNorm/g1_affine", [=](auto& t, auto& c) { return group_norm(t, sh(c, 0), 1, true); }},
        {"GroupNorm/per_channel_no_affine",
         [=](auto& t, auto& c) { return group_norm(t, sh(c, 0), 4, false); }},
        {"GroupNorm/g4_m300", [=](auto& t, auto& c) { return group_norm(t, sh(c, 0), 4, true); }},
        {"GroupNormSilu/g2_affine", [=](auto& t, auto& c) { return group_norm_silu(t, sh(c, 0), 2, true); }},
        {"GroupNormSilu/per_channel_no_affine",
         [=](auto& t, auto& c) { return group_norm_silu(t, sh(c, 0), 4, false); }},
        {"GroupNormSilu/g4_m300", [=](auto& t, auto& c) { return group_norm_silu(t, sh(c, 0), 4, true); }},
        {"GroupNormSiluCat/g4_straddle",
         [=](auto& t, auto& c) { return group_norm_silu_cat(t, sh(c, 0), sh(c, 1), 4, true); }},
        {"GroupNormSiluCat/g3_no_affine",
         [=](auto& t, auto& c) { return group_norm_silu_cat(t, sh(c, 0), sh(c, 1), 3, false); }},
        {"GroupNormSiluCat/g2_on_boundary_m300",
         [=](auto& t, auto& c) { return group_norm_silu_cat(t, sh(c, 0), sh(c, 1), 2, true); }},
        {"GroupNormSiluCat/unet_64_32ch_28x28",
         [=](auto& t, auto& c) { return group_norm_silu_cat(t, sh(c, 0), sh(c, 1), 32, true); }},
        {"Linear/bias", [=](auto& t, auto&) { return linear_bias(t, 5, 4, 3); }},
        {"Linear/nobias_3d", [=](auto& t, auto&) { return bmm(t[0], 1, t[1], 1, 6, 4, 6, false, true); }},
        {"Linear/bias_3d", [=](auto& t, auto&) { return linear_bias(t, 6, 4, 6); }},
        {"Linear/bias_only_grad", [=](auto& t, auto&) { return linear_bias(t, 5, 4, 3); }},
        {"Linear/transposed_input_bias",  // x stored (4, 5), used as its transpose (5, 4)
         [=](auto& t, auto&) { return linear_bias(t, 5, 4, 3, true); }},
        {"Linear/attn_proj_2x196x64", [=](auto& t, auto&) { return linear_bias(t, 392, 64, 64); }},
        {"Matmul/2d", [=](auto& t, auto&) { return bmm(t[0], 1, t[1], 1, 3, 4, 5); }},
        {"Matmul/batched", [=](auto& t, auto&) { return bmm(t[0], 6, t[1], 6, 3, 4, 2); }},
        {"Matmul/transposed_views",
         [=](auto& t, auto&) { return bmm(t[0], 2, t[1], 2, 3, 4, 5, true, true); }},
        {"Matmul/shared_rhs", [=](auto& t, auto&) { return bmm(t[0], 2, t[1], 1, 3, 4, 2); }},
        {"Attention/1head", [=](auto& t, auto& c) { return attention(t, sh(c, 0), sh(c, 1), 0.5); }},
        {"Attention/3heads_lq_ne_lk",
         [=](auto& t, auto& c) { return attention(t, sh(c, 0), sh(c, 1), 1.0 / std::sqrt(3.0)); }},
        {"Attention/custom_scale", [=](auto& t, auto& c) { return attention(t, sh(c, 0), sh(c, 1), 0.7); }},
        {"Attention/bhdl_views",
         [=](auto& t, auto& c) { return attention_bhdl(t, sh(c, 0), sh(c, 1), 0.5); }},
        {"Attention/unet_bhdl_8heads_49",
         [=](auto& t, auto& c) { return attention_bhdl(t, sh(c, 0), sh(c, 1), 1.0 / std::sqrt(8.0)); }},
        {"Attention/lk19_simd_tail", [=](auto& t, auto& c) { return attention(t, sh(c, 0), sh(c, 1), 0.5); }},
        {"Attention/lk70_two_key_tiles",
         [=](auto& t, auto& c) { return attention(t, sh(c, 0), sh(c, 1), 0.5); }},
        {"Attention/unet_8heads_196",
         [=](auto& t, auto& c) { return attention(t, sh(c, 0), sh(c, 1), 1.0 / std::sqrt(8.0)); }},
        {"Attention/long_784_d64", [=](auto& t, auto& c) { return attention(t, sh(c, 0), sh(c, 1), 0.125); }},
        // silu(x) = x / (1 + exp(-x)) as PyTorch evaluates it: silu(-inf) = -inf / inf = NaN.
        {"Silu/plain",
         [](auto& t, auto&) { return map1(t[0], [](double x) { return x / (1.0 + std::exp(-x)); }); }},
        // sigmoid(x) = 1 / (1 + exp(-x)) as PyTorch defines it: sigmoid(-inf) = 0, sigmoid(inf) = 1.
        {"Sigmoid/plain",
         [](auto& t, auto&) { return map1(t[0], [](double x) { return 1.0 / (1.0 + std::exp(-x)); }); }},
        {"Sigmoid/saturating",
         [](auto& t, auto&) {
           return map1(t[0], [](double x) { return 1.0 / (1.0 + std::exp(-40.0 * x)); });
         }},
        {"Exp/plain", [](auto& t, auto&) { return map1(t[0], [](double x) { return std::exp(x); }); }},
        {"Sin/plain", [](auto& t, auto&) { return map1(t[0], [](double x) { return std::sin(x); }); }},
        {"Cos/plain", [](auto& t, auto&) { return map1(t[0], [](double x) { return std::cos(x); }); }},
        {"Sqrt/positive", [](auto& t, auto&) { return map1(t[0], [](double x) { return std::sqrt(x); }); }},
        {"Square/plain", [](auto& t, auto&) { return map1(t[0], [](double x) { return x * x; }); }},
        {"Neg/plain", [](auto& t, auto&) { return map1(t[0], [](double x) { return -x; }); }},
        {"Affine/scalar_ops",
         [](auto& t, auto&) { return map1(t[0], [](double x) { return (x * 1.5 + 2.0) / 3.0 - 0.25; }); }},
        {"Add/broadcast",
         [=](auto& t, auto& c) {
           return broadcast(t[0], sh(c, 0), t[1], sh(c, 1), [](double a, double b) { return a + b; });
         }},
        {"Sub/broadcast_lhs",
         [=](auto& t, auto& c) {
           return broadcast(t[0], sh(c, 0), t[1], sh(c, 1), [](double a, double b) { return a - b; });
         }},
        {"Mul/broadcast_both",
         [=](auto& t, auto& c) {
           return broadcast(t[0], sh(c, 0), t[1], sh(c, 1), [](double a, double b) { return a * b; });
         }},
        {"Mul/same_tensor", [](auto& t, auto&) { return map1(t[0], [](double x) { return x * x; }); }},
        {"Div/broadcast",
         [=](auto& t, auto& c) {
           return broadcast(t[0], sh(c, 0), t[1], sh(c, 1), [](double a, double b) { return a / b; });
         }},
        {"Embedding/repeated_indices",
         [](auto& t, auto&) {
           Vec y;
           for (double i : t[0])
             y.insert(y.end(), t[1].begin() + int64_t(i) * 3, t[1].begin() + int64_t(i) * 3 + 3);
           return y;
         }},
        {"Embedding/2d_indices",
         [](auto& t, auto&) {
           Vec y;
           for (double i : t[0])
             y.insert(y.end(), t[1].begin() + int64_t(i) * 2, t[1].begin() + int64_t(i) * 2 + 2);
           return y;
         }},
        {"Concat/dim1",
         [=](auto& t, auto& c) {
           return concat(t, {sh(c, 0), sh(c, 1)}, 1);
         }},
        {"Concat/dim0_three",
         [=](auto& t, auto& c) {
           return concat(t, {sh(c, 0), sh(c, 1), sh(c, 2)}, 0);
         }},
        {"Concat/last_dim_of_view",
         [=](auto& t, auto&) {
           Ins u = {t[0], transpose2(t[1], 2, 3)};
           return concat(u, {{3, 2}, {3, 2}}, 1);
         }},
        {"Upsample/nearest2x",
         [=](auto& t, auto& c) {
           const Shape s = sh(c, 0);
           const int64_t NC = s[0] * s[1], H = s[2], W = s[3];
           Vec y(NC * 4 * H * W);
           for (int64_t r = 0; r < NC; ++r)
             for (int64_t h = 0; h < 2 * H; ++h)
               for (int64_t w = 0; w < 2 * W; ++w)
                 y[(r * 2 * H + h) * 2 * W + w] = t[0][(r * H + h / 2) * W + w / 2];
           return y;
         }},
        {"Sum/all",
         [=](auto& t, auto& c) {
           return reduce_sum(t[0], sh(c, 0), {0, 1});
         }},
        {"Sum/dims_keepdim",
         [=](auto& t, auto& c) {
           return reduce_sum(t[0], sh(c, 0), {0, 2});
         }},
        {"Sum/middle_dim", [=](auto& t, auto& c) { return reduce_sum(t[0], sh(c, 0), {1}); }},
        {"Mean/all",
         [=](auto& t, auto& c) {
           return reduce_sum(t[0], sh(c, 0), {0, 1}, true);
         }},
        {"Mean/dims", [=](auto& t, auto& c) { return reduce_sum(t[0], sh(c, 0), {-1}, true); }},
        {"MseLoss/both_grads",
         [](auto& t, auto&) {
           double s = 0;
           for (size_t i = 0; i < t[0].size(); ++i) s += (t[0][i] - t[1][i]) * (t[0][i] - t[1][i]);
           return Vec{s / double(t[0].size())};
         }},
        {"Views/reshape_permute_narrow",
         [](auto& t, auto&) {  // x (2,3,4) -> permute (4,2,3) -> narrow rows 1..2 -> (2, 6)
           Vec y(12);
           for (int a = 0; a < 2; ++a)
             for (int b = 0; b < 2; ++b)
               for (int c = 0; c < 3; ++c) y[a * 6 + b * 3 + c] = t[0][(b * 3 + c) * 4 + a + 1];
           return y;
         }},
        {"Views/expand_transpose",
         [](auto& t, auto&) {  // x (3,1) -> expand (2,3,4) -> transpose(0,2) -> (4,3,2): y[i][j][k] = x[j]
           Vec y(24);
           for (int i = 0; i < 4; ++i)
             for (int j = 0; j < 3; ++j)
               for (int k = 0; k < 2; ++k) y[(i * 3 + j) * 2 + k] = t[0][j];
           return y;
         }},
        {"Views/unsqueeze_flatten", [](auto& t, auto&) { return t[0]; }},
    };
    // The seed UNet's shapes (bench/unet_shapes.h), as tests/op_table.cpp generates them.
    for (const bench::ConvCase& k : bench::kConvs)
      table["Conv2d/unet_" + bench::conv_id(k)] = [=](auto& t, auto& c) {
        return conv2d(t, sh(c, 0), sh(c, 1), true, k.stride, k.stride, k.pad, k.pad);
      };
    for (const bench::Act& a : bench::kActs)
      table["GroupNorm/unet_32groups_" + std::to_string(a.C) + "ch_" + std::to_string(a.H) + "x" +
            std::to_string(a.H)] = [=](auto& t, auto& c) { return group_norm(t, sh(c, 0), 32, true); };
    for (const bench::Act& a : bench::kActs)
      table["GroupNormSilu/unet_32groups_" + std::to_string(a.C) + "ch_" + std::to_string(a.H) + "x" +
            std::to_string(a.H)] = [=](auto& t, auto& c) { return group_norm_silu(t, sh(c, 0), 32, true); };
    return table;
  }();
  return m;
}

}  // namespace

bool has_naive_ref(const OpCase& c) { return refs().count(c.op + "/" + c.variant) > 0; }

std::vector<double> naive_ref(const OpCase& c, const std::vector<std::vector<double>>& inputs) {
  auto it = refs().find(c.op + "/" + c.variant);
  if (it == refs().end()) throw std::invalid_argument("no naive reference for " + c.op + "/" + c.variant);
  return it->second(inputs, c);
}

}  // namespace engine::test
