// The op-case table and the generic runners (finite differences, device parity helpers).
#include "tests/op_table.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "bench/unet_shapes.h"
#include "core/autograd.h"
#include "kernels/numeric_compare.h"

namespace engine::test {

namespace {
using K = InputSpec::Kind;
InputSpec F(Shape s) { return {std::move(s), K::Normal, true, 0}; }
InputSpec Fc(Shape s) { return {std::move(s), K::Normal, false, 0}; }  // float, no grad
InputSpec Pos(Shape s) { return {std::move(s), K::Positive, true, 0}; }
InputSpec Idx(Shape s, int64_t n) { return {std::move(s), K::Index, false, n}; }

Conv2dOptions conv_opt(int64_t sh, int64_t sw, int64_t ph, int64_t pw) { return {sh, sw, ph, pw}; }

std::vector<OpCase> build_cases() {
  std::vector<OpCase> c;
  auto def = [&](std::string op, std::string variant, std::vector<InputSpec> in,
                 std::function<Tensor(const std::vector<Tensor>&)> fn, bool gradcheck = true) {
    c.push_back({std::move(op), std::move(variant), std::move(in), std::move(fn), gradcheck});
  };
  // ---- conv2d
  def("Conv2d", "3x3_s1_p1_bias", {F({2, 3, 6, 5}), F({4, 3, 3, 3}), F({4})},
      [](auto& t) { return conv2d(t[0], t[1], t[2], conv_opt(1, 1, 1, 1)); });
  def("Conv2d", "3x3_s2_p1_bias", {F({2, 3, 7, 6}), F({4, 3, 3, 3}), F({4})},
      [](auto& t) { return conv2d(t[0], t[1], t[2], conv_opt(2, 2, 1, 1)); });
  def("Conv2d", "1x1_bias", {F({2, 5, 4, 3}), F({3, 5, 1, 1}), F({3})},
      [](auto& t) { return conv2d(t[0], t[1], t[2], conv_opt(1, 1, 0, 0)); });
  def("Conv2d", "5x3_s21_p20_nobias", {F({1, 2, 9, 7}), F({3, 2, 5, 3})},
      [](auto& t) { return conv2d(t[0], t[1], Tensor(), conv_opt(2, 1, 2, 0)); });
  def("Conv2d", "bias_only_grad", {Fc({2, 3, 5, 5}), Fc({4, 3, 3, 3}), F({4})},
      [](auto& t) { return conv2d(t[0], t[1], t[2], conv_opt(1, 1, 1, 1)); });
  // The additive epilogue (conv2d's sample_bias (N, K) and residual (N, K, P, Q); ResnetBlock2D's time
  // embedding and shortcut): every combination with and without the conv bias, strided, 1x1, and with
  // gradients for the epilogue's tensors only.
  def("Conv2d", "3x3_s1_p1_bias_sample_bias_residual",
      {F({2, 3, 6, 5}), F({4, 3, 3, 3}), F({4}), F({2, 4}), F({2, 4, 6, 5})},
      [](auto& t) { return conv2d(t[0], t[1], t[2], conv_opt(1, 1, 1, 1), t[3], t[4]); });
  def("Conv2d", "3x3_s2_p1_sample_bias_nobias", {F({2, 3, 7, 6}), F({4, 3, 3, 3}), F({2, 4})},
      [](auto& t) { return conv2d(t[0], t[1], Tensor(), conv_opt(2, 2, 1, 1), t[2]); });
  def("Conv2d", "1x1_residual_nobias", {F({2, 5, 4, 3}), F({3, 5, 1, 1}), F({2, 3, 4, 3})},
      [](auto& t) { return conv2d(t[0], t[1], Tensor(), conv_opt(1, 1, 0, 0), Tensor(), t[2]); });
  def("Conv2d", "epilogue_only_grads",
      {Fc({2, 3, 5, 5}), Fc({4, 3, 3, 3}), Fc({4}), F({2, 4}), F({2, 4, 5, 5})},
      [](auto& t) { return conv2d(t[0], t[1], t[2], conv_opt(1, 1, 1, 1), t[3], t[4]); });
  // 32 -> 32 channels: the float32 Winograd path with its epilogue (parity, not finite differences).
  def(
      "Conv2d", "winograd_32ch_bias_sample_bias_residual",
      {F({3, 32, 9, 7}), F({32, 32, 3, 3}), F({32}), F({3, 32}), F({3, 32, 9, 7})},
      [](auto& t) { return conv2d(t[0], t[1], t[2], conv_opt(1, 1, 1, 1), t[3], t[4]); }, false);
  // The seed UNet's conv shapes (bench/unet_shapes.h, batch 4): parity and benchmarks, not finite
  // differences.
  for (const bench::ConvCase& k : bench::kConvs) {
    const Conv2dOptions o = conv_opt(k.stride, k.stride, k.pad, k.pad);
    def(
        "Conv2d", "unet_" + bench::conv_id(k), {F({4, k.C, k.H, k.H}), F({k.K, k.C, k.R, k.R}), F({k.K})},
        [o](auto& t) { return conv2d(t[0], t[1], t[2], o); }, false);
  }
  // ---- group_norm
  def("GroupNorm", "g2_affine", {F({2, 4, 3, 3}), F({4}), F({4})},
      [](auto& t) { return group_norm(t[0], 2, t[1], t[2], 1e-5); });
  def("GroupNorm", "g1_affine", {F({2, 3, 4, 2}), F({3}), F({3})},
      [](auto& t) { return group_norm(t[0], 1, t[1], t[2], 1e-5); });
  def("GroupNorm", "per_channel_no_affine", {F({3, 4, 5})},
      [](auto& t) { return group_norm(t[0], 4, Tensor(), Tensor(), 1e-5); });
  // 300 elements per group: more than one pass of a 256-thread CUDA block, SIMD blocks and a tail.
  def("GroupNorm", "g4_m300", {F({2, 8, 10, 15}), F({8}), F({8})},
      [](auto& t) { return group_norm(t[0], 4, t[1], t[2], 1e-5); });
  // The seed UNet's activation shapes (bench/unet_shapes.h, batch 4), 32 groups.
  for (const bench::Act& a : bench::kActs)
    def(
        "GroupNorm",
        "unet_32groups_" + std::to_string(a.C) + "ch_" + std::to_string(a.H) + "x" + std::to_string(a.H),
        {F({4, a.C, a.H, a.H}), F({a.C}), F({a.C})},
        [](auto& t) { return group_norm(t[0], 32, t[1], t[2], 1e-5); }, false);
  // ---- group_norm_silu (fused on the CPU; the unfused pair on CUDA)
  def("GroupNormSilu", "g2_affine", {F({2, 4, 3, 3}), F({4}), F({4})},
      [](auto& t) { return group_norm_silu(t[0], 2, t[1], t[2], 1e-5); });
  def("GroupNormSilu", "per_channel_no_affine", {F({3, 4, 5})},
      [](auto& t) { return group_norm_silu(t[0], 4, Tensor(), Tensor(), 1e-5); });
  // 300 elements per group, 150 per channel: SIMD blocks and a tail in every channel.
  def("GroupNormSilu", "g4_m300", {F({2, 8, 10, 15}), F({8}), F({8})},
      [](auto& t) { return group_norm_silu(t[0], 4, t[1], t[2], 1e-5); });
  for (const bench::Act& a : bench::kActs)
    def(
        "GroupNormSilu",
        "unet_32groups_" + std::to_string(a.C) + "ch_" + std::to_string(a.H) + "x" + std::to_string(a.H),
        {F({4, a.C, a.H, a.H}), F({a.C}), F({a.C})},
        [](auto& t) { return group_norm_silu(t[0], 32, t[1], t[2], 1e-5); }, false);
  // ---- group_norm_silu_cat (the concatenation read in place on the CPU; concat + the pair on CUDA). Each
  // case has a group that straddles the two parts, and one a part that ends on a group boundary too.
  def("GroupNormSiluCat", "g4_straddle", {F({2, 5, 3, 4}), F({2, 3, 3, 4}), F({8}), F({8})},
      [](auto& t) { return group_norm_silu_cat(t[0], t[1], 4, t[2], t[3], 1e-5); });
  def("GroupNormSiluCat", "g3_no_affine", {F({2, 3, 5}), F({2, 3, 5})},
      [](auto& t) { return group_norm_silu_cat(t[0], t[1], 3, Tensor(), Tensor(), 1e-5); });
  def("GroupNormSiluCat", "g2_on_boundary_m300", {F({2, 4, 10, 15}), F({2, 4, 10, 15}), F({8}), F({8})},
      [](auto& t) { return group_norm_silu_cat(t[0], t[1], 2, t[2], t[3], 1e-5); });
  // The UNet's first up-block resnet at 28x28: 64 + 32 channels in 32 groups of 3.
  def(
      "GroupNormSiluCat", "unet_64_32ch_28x28", {F({2, 64, 28, 28}), F({2, 32, 28, 28}), F({96}), F({96})},
      [](auto& t) { return group_norm_silu_cat(t[0], t[1], 32, t[2], t[3], 1e-5); }, false);
  // ---- linear / matmul
  def("Linear", "bias", {F({5, 4}), F({3, 4}), F({3})}, [](auto& t) { return linear(t[0], t[1], t[2]); });
  def("Linear", "nobias_3d", {F({2, 3, 4}), F({6, 4})}, [](auto& t) { return linear(t[0], t[1]); });
  def("Linear", "bias_3d", {F({2, 3, 4}), F({6, 4}), F({6})},
      [](auto& t) { return linear(t[0], t[1], t[2]); });
  def("Linear", "bias_only_grad", {Fc({5, 4}), Fc({3, 4}), F({3})},
      [](auto& t) { return linear(t[0], t[1], t[2]); });
  def("Linear", "transposed_input_bias", {F({4, 5}), F({3, 4}), F({3})},
      [](auto& t) { return linear(t[0].transpose(0, 1), t[1], t[2]); });
  // An attention projection of the seed UNet at 14x14 (B*L rows of 64 channels, batch 2).
  def(
      "Linear", "attn_proj_2x196x64", {F({2, 196, 64}), F({64, 64}), F({64})},
      [](auto& t) { return linear(t[0], t[1], t[2]); }, false);
  def("Matmul", "2d", {F({3, 4}), F({4, 5})}, [](auto& t) { return matmul(t[0], t[1]); });
  def("Matmul", "batched", {F({2, 3, 3, 4}), F({2, 3, 4, 2})}, [](auto& t) { return matmul(t[0], t[1]); });
  def("Matmul", "transposed_views", {F({2, 4, 3}), F({2, 5, 4})},
      [](auto& t) { return matmul(t[0].transpose(-1, -2), t[1].transpose(-1, -2)); });
  def("Matmul", "shared_rhs", {F({2, 3, 4}), F({4, 2})}, [](auto& t) { return matmul(t[0], t[1]); });
  // ---- attention
  def("Attention", "1head", {F({1, 1, 5, 4}), F({1, 1, 5, 4}), F({1, 1, 5, 4})},
      [](auto& t) { return scaled_dot_product_attention(t[0], t[1], t[2]); });
  def("Attention", "3heads_lq_ne_lk", {F({2, 3, 4, 3}), F({2, 3, 6, 3}), F({2, 3, 6, 3})},
      [](auto& t) { return scaled_dot_product_attention(t[0], t[1], t[2]); });
  def("Attention", "custom_scale", {F({1, 2, 3, 2}), F({1, 2, 3, 2}), F({1, 2, 3, 2})},
      [](auto& t) { return scaled_dot_product_attention(t[0], t[1], t[2], 0.7); });
  // (B, H, L, D) views of contiguous (B, H, D, L) tensors (the channel-major nn Attention layer's q, k, v):
  // read and written in place by the CPU float kernel.
  def("Attention", "bhdl_views", {F({2, 3, 4, 5}), F({2, 3, 4, 7}), F({2, 3, 4, 7})}, [](auto& t) {
    return scaled_dot_product_attention(t[0].transpose(2, 3), t[1].transpose(2, 3), t[2].transpose(2, 3));
  });
  def(
      "Attention", "unet_bhdl_8heads_49", {F({2, 8, 8, 49}), F({2, 8, 8, 49}), F({2, 8, 8, 49})},
      [](auto& t) {
        return scaled_dot_product_attention(t[0].transpose(2, 3), t[1].transpose(2, 3), t[2].transpose(2, 3));
      },
      false);
  // Lk = 19: two 8-lane SIMD blocks and a 3-element tail per softmax row on the CPU.
  def("Attention", "lk19_simd_tail", {F({1, 2, 3, 4}), F({1, 2, 19, 4}), F({1, 2, 19, 4})},
      [](auto& t) { return scaled_dot_product_attention(t[0], t[1], t[2]); });
  // Lk = 70: two 64-key tiles and a partial 8-key group in the CUDA online softmax.
  def("Attention", "lk70_two_key_tiles", {F({1, 1, 3, 4}), F({1, 1, 70, 4}), F({1, 1, 70, 4})},
      [](auto& t) { return scaled_dot_product_attention(t[0], t[1], t[2]); });
  def(
      "Attention", "unet_8heads_196", {F({2, 8, 196, 8}), F({2, 8, 196, 8}), F({2, 8, 196, 8})},
      [](auto& t) { return scaled_dot_product_attention(t[0], t[1], t[2]); }, false);
  def(
      "Attention", "long_784_d64", {F({1, 2, 784, 64}), F({1, 2, 784, 64}), F({1, 2, 784, 64})},
      [](auto& t) { return scaled_dot_product_attention(t[0], t[1], t[2]); }, false);
  // ---- elementwise
  def("Silu", "plain", {F({3, 7})}, [](auto& t) { return silu(t[0]); });
  // 19 elements: two 8-lane SIMD blocks and a scalar tail; large |x| saturates to 0 and 1.
  def("Sigmoid", "plain", {F({19})}, [](auto& t) { return sigmoid(t[0]); });
  def("Sigmoid", "saturating", {F({2, 5})}, [](auto& t) { return sigmoid(mul(t[0], 40.0)); });
  def("Exp", "plain", {F({4, 3})}, [](auto& t) { return exp(t[0]); });
  def("Sin", "plain", {F({4, 3})}, [](auto& t) { return sin(t[0]); });
  def("Cos", "plain", {F({4, 3})}, [](auto& t) { return cos(t[0]); });
  def("Sqrt", "positive", {Pos({4, 3})}, [](auto& t) { return sqrt(t[0]); });
  def("Square", "plain", {F({4, 3})}, [](auto& t) { return square(t[0]); });
  def("Neg", "plain", {F({5})}, [](auto& t) { return neg(t[0]); });
  def("Affine", "scalar_ops", {F({2, 3})}, [](auto& t) { return (t[0] * 1.5 + 2.0) / 3.0 - 0.25; });
  def("Add", "broadcast", {F({2, 3, 4}), F({3, 1})}, [](auto& t) { return add(t[0], t[1]); });
  def("Sub", "broadcast_lhs", {F({1, 4}), F({3, 4})}, [](auto& t) { return sub(t[0], t[1]); });
  def("Mul", "broadcast_both", {F({2, 1, 4}), F({3, 1})}, [](auto& t) { return mul(t[0], t[1]); });
  def("Mul", "same_tensor", {F({3, 3})}, [](auto& t) { return mul(t[0], t[0]); });
  def("Div", "broadcast", {F({2, 3}), Pos({3})}, [](auto& t) { return div(t[0], t[1]); });
  // ---- indexing / shape
  def("Embedding", "repeated_indices", {Idx({6}, 4), F({4, 3})},
      [](auto& t) { return embedding(t[0], t[1]); });
  def("Embedding", "2d_indices", {Idx({2, 3}, 5), F({5, 2})}, [](auto& t) { return embedding(t[0], t[1]); });
  def("Concat", "dim1", {F({2, 3, 2}), F({2, 1, 2})}, [](auto& t) { return concat({t[0], t[1]}, 1); });
  def("Concat", "dim0_three", {F({1, 3}), F({2, 3}), F({1, 3})}, [](auto& t) {
    return concat({t[0], t[1], t[2]}, 0);
  });
  def("Concat", "last_dim_of_view", {F({3, 2}), F({2, 3})}, [](auto& t) {
    return concat({t[0], t[1].transpose(0, 1)}, -1);
  });
  def("Upsample", "nearest2x", {F({2, 3, 3, 4})}, [](auto& t) { return upsample_nearest2x(t[0]); });
  // ---- reductions and losses
  def("Sum", "all", {F({3, 4})}, [](auto& t) { return sum(t[0]); });
  def("Sum", "dims_keepdim", {F({2, 3, 4})}, [](auto& t) { return sum(t[0], {0, 2}, true); });
  def("Sum", "middle_dim", {F({2, 3, 4})}, [](auto& t) { return sum(t[0], {1}); });
  def("Mean", "all", {F({3, 4})}, [](auto& t) { return mean(t[0]); });
  def("Mean", "dims", {F({2, 3, 4})}, [](auto& t) { return mean(t[0], {-1}); });
  def("MseLoss", "both_grads", {F({2, 3, 4}), F({2, 3, 4})}, [](auto& t) { return mse_loss(t[0], t[1]); });
  // ---- views
  def("Views", "reshape_permute_narrow", {F({2, 3, 4})}, [](auto& t) {
    return t[0].permute({2, 0, 1}).narrow(0, 1, 2).reshape({2, 6});
  });
  def("Views", "expand_transpose", {F({3, 1})}, [](auto& t) {
    return t[0].expand({2, 3, 4}).transpose(0, 2).contiguous();
  });
  def("Views", "unsqueeze_flatten", {F({2, 3})}, [](auto& t) { return t[0].unsqueeze(1).flatten(); });
  return c;
}
}  // namespace

const std::vector<OpCase>& op_cases() {
  static const std::vector<OpCase> cases = build_cases();
  return cases;
}

std::vector<OpCase> cases_for(const std::string& op) {
  std::vector<OpCase> out;
  for (const auto& c : op_cases())
    if (c.op == op) out.push_back(c);
  return out;
}

OpCost op_cost(const OpCase& c) {
  NoGradGuard no_grad;
  std::vector<Tensor> in = make_inputs(c, DType::F32, Device::cpu(), 1);
  const double out = static_cast<double>(c.fn(in).numel());
  double in_elems = 0;
  for (const Tensor& t : in) in_elems += static_cast<double>(t.numel());
  OpCost k;
  k.bytes = 4.0 * (in_elems + out);  // float32 (index inputs are counted as 4 bytes too)
  auto sz = [&](size_t i, int64_t d) {
    return static_cast<double>(in[i].shape().at(d < 0 ? in[i].dim() + d : d));
  };
  if (c.op == "Conv2d")  // 2 * (output elements) * C * R * S
    k.flops = 2.0 * out * sz(1, 1) * sz(1, 2) * sz(1, 3);
  else if (c.op == "Linear" || c.op == "Matmul")  // 2 * (output elements) * K
    k.flops = 2.0 * out * sz(0, -1);
  else if (c.op == "Attention")  // QK^T and PV: 4 * BH * Lq * Lk * D
    k.flops = 4.0 * out * sz(1, -2);
  else if (c.op == "GroupNorm")  // two statistics passes and the affine normalisation
    k.flops = 8.0 * out;
  else if (c.op == "GroupNormSilu" || c.op == "GroupNormSiluCat")  // group_norm's 8 per element + SiLU (1)
    k.flops = 9.0 * out;
  else if (c.op == "Views" || c.op == "Concat" || c.op == "Embedding" || c.op == "Upsample")
    k.flops = 0;
  else if (c.op == "Sum" || c.op == "Mean" || c.op == "MseLoss")
    k.flops = in_elems;
  else  // elementwise
    k.flops = out;
  return k;
}

std::vector<std::string> op_names() {
  std::vector<std::string> names;
  for (const auto& c : op_cases())
    if (std::find(names.begin(), names.end(), c.op) == names.end()) names.push_back(c.op);
  return names;
}

std::vector<Tensor> make_inputs(const OpCase& c, DType dtype, Device device, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<Tensor> out;
  for (const InputSpec& s : c.inputs) {
    const int64_t n = numel_of(s.shape);
    Tensor t;
    if (s.kind == K::Index) {
      std::uniform_int_distribution<int64_t> d(0, s.index_max - 1);
      std::vector<int64_t> v(n);
      for (auto& x : v) x = d(rng);
      t = Tensor::from_vector(v, s.shape, device);
    } else {
      std::vector<double> v(n);
      std::normal_distribution<double> nd(0.0, 1.0);
      std::uniform_real_distribution<double> ud(0.5, 2.0);
      for (auto& x : v) x = s.kind == K::Positive ? ud(rng) : nd(rng);
      t = Tensor::from_vector(v, s.shape).to(dtype).to(device);
      if (s.requires_grad) t.set_requires_grad(true);
    }
    out.push_back(t);
  }
  return out;
}

std::vector<int64_t> nonfinite_positions(int64_t n) {
  std::vector<int64_t> p;
  for (int64_t i : {int64_t(0), std::min<int64_t>(3, n - 1), n / 2, n - 1})
    if (i >= 0 && (p.empty() || p.back() != i) && std::find(p.begin(), p.end(), i) == p.end()) p.push_back(i);
  return p;
}

double rel_err(const Tensor& a, const Tensor& b) {
  auto va = a.detach().to(DType::F64).to_vector<double>();
  auto vb = b.detach().to(DType::F64).to_vector<double>();
  return kern::rel_err_l2(va, vb);
}

GradCheckResult gradcheck_fn(const OpCase& c, const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                             double eps, uint64_t seed) {
  std::vector<Tensor> in = make_inputs(c, DType::F64, Device::cpu(), seed);
  Tensor out = fn(in);
  // Random projection so that every output element contributes with a distinct weight.
  std::mt19937_64 rng(seed + 1000);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<double> r(out.numel());
  for (auto& x : r) x = nd(rng);
  Tensor R = Tensor::from_vector(r, out.shape());
  auto loss_of = [&](const std::vector<Tensor>& xs) {
    NoGradGuard ng;
    return sum(mul(fn(xs), R)).item();
  };
  Tensor L = sum(mul(out, R));
  L.backward();

  GradCheckResult res;
  for (size_t i = 0; i < in.size(); ++i) {
    if (!in[i].requires_grad()) continue;
    Tensor g = in[i].grad();
    std::vector<double> analytic =
        g.defined() ? g.to_vector<double>() : std::vector<double>(in[i].numel(), 0.0);
    double* p = in[i].data<double>();
    std::vector<double> numeric(in[i].numel());
    for (int64_t j = 0; j < in[i].numel(); ++j) {
      const double orig = p[j];
      p[j] = orig + eps;
      const double lp = loss_of(in);
      p[j] = orig - eps;
      const double lm = loss_of(in);
      p[j] = orig;
      numeric[j] = (lp - lm) / (2 * eps);
    }
    double scale = 1.0;
    for (double v : numeric) scale = std::max(scale, std::abs(v));
    for (int64_t j = 0; j < in[i].numel(); ++j) {
      const double e = std::abs(numeric[j] - analytic[j]) / scale;
      if (!(e <= res.max_err)) {  // also catches NaN
        res.max_err = std::isnan(e) ? std::numeric_limits<double>::infinity() : e;
        res.worst = c.op + "/" + c.variant + " input " + std::to_string(i) + " element " + std::to_string(j) +
                    ": numeric " + std::to_string(numeric[j]) + " analytic " + std::to_string(analytic[j]);
      }
    }
  }
  return res;
}

GradCheckResult gradcheck(const OpCase& c, double eps, uint64_t seed) {
  return gradcheck_fn(c, c.fn, eps, seed);
}

}  // namespace engine::test
