// Attention on heads in place in channel-major (B, H, D, L) memory (kern::cpu::attention_{forward,backward}
// _bhdl, the scaled_dot_product_attention op's use of them, and the nn Attention layer built on them):
//  * the kernel on (B, H, D, L) arrays gives bitwise the o, lse, dq, dk, dv of the contiguous (B, H, L, D)
//    path, on every ISA path this CPU has, 1 and 2 threads, D in {1, 7, 8, 16}, H in {1, 3}, Lq != Lk;
//  * the op, given (B, H, L, D) views of contiguous (B, H, D, L) tensors, returns o as such a view and the
//    gradients in that layout, bitwise the contiguous inputs' values;
//  * the CPU layer (1x1 convs + this layout) matches a token-major composition of the same parameters
//    (linear, head split, attention, merge) in value and in every gradient;
//  * without autograd (no_grad: the op skips the log-sum-exp) the op gives the same o bits in every layout;
//  * out-of-domain arguments throw.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <stdexcept>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "kernels/cpu/cpu_kernels.h"
#include "nn/layers.h"
#include "tests/attention_layout_check.h"
#include "tests/test_util.h"

namespace {

namespace kc = kern::cpu;
using engine::Tensor;
using engine::test::bitwise_equal;
using engine::test::IsaGuard;
using engine::test::normal_vector;
using engine::test::supported_isas;
using kc::CpuIsa;

// (B, H, D, L) -> (B, H, L, D), both contiguous.
std::vector<float> bhdl_to_bhld(const std::vector<float>& x, int64_t B, int64_t H, int64_t D, int64_t L) {
  std::vector<float> r(x.size());
  for (int64_t bh = 0; bh < B * H; ++bh)
    for (int64_t d = 0; d < D; ++d)
      for (int64_t l = 0; l < L; ++l) r[(bh * L + l) * D + d] = x[(bh * D + d) * L + l];
  return r;
}

TEST(AttentionBhdl, KernelBitwiseEqualsContiguousPath) {
  engine::test::expect_layout_equals_contiguous_path(
      {1, 3}, kc::attention_forward_bhdl, kc::attention_backward_bhdl,
      [](const std::vector<float>& x, int64_t B, int64_t H, int64_t L, int64_t D) {
        return bhdl_to_bhld(x, B, H, D, L);
      });
}

TEST(AttentionBhdl, KernelRejectsOutOfDomain) {
  std::vector<float> x(64 * 17), lse(64);
  EXPECT_THROW(
      kc::attention_forward_bhdl(1, 1, 4, 4, 17, 1.0, x.data(), x.data(), x.data(), x.data(), lse.data()),
      std::invalid_argument);
  EXPECT_THROW(kc::attention_backward_bhdl(1, 0, 4, 4, 8, 1.0, x.data(), x.data(), x.data(), x.data(),
                                           lse.data(), x.data(), x.data(), x.data(), x.data()),
               std::invalid_argument);
}

TEST(AttentionBhdl, OpReadsAndWritesHeadsInPlace) {
  const int64_t B = 2, H = 3, Lq = 7, Lk = 5, D = 8;
  auto leaf = [](int64_t L, unsigned seed) {
    return Tensor::from_vector(normal_vector<float>(B * H * D * L, seed, 0.0, 1.0), {B, H, D, L})
        .set_requires_grad();
  };
  Tensor q4 = leaf(Lq, 1), k4 = leaf(Lk, 2), v4 = leaf(Lk, 3);
  const Tensor g4 = Tensor::from_vector(normal_vector<float>(B * H * D * Lq, 4, 0.0, 1.0), {B, H, D, Lq});
  Tensor o = engine::scaled_dot_product_attention(q4.transpose(2, 3), k4.transpose(2, 3), v4.transpose(2, 3));
  EXPECT_EQ(o.shape(), (engine::Shape{B, H, Lq, D}));
  EXPECT_EQ(o.strides(), (engine::Shape{H * D * Lq, D * Lq, 1, Lq}));
  EXPECT_TRUE(o.transpose(2, 3).is_contiguous());
  o.backward(g4.transpose(2, 3));
  // The gradients reach the (B, H, D, L) leaves through views only: they come out contiguous there.
  EXPECT_TRUE(q4.grad().is_contiguous());
  // Reference: contiguous (B, H, L, D) copies, same incoming gradient.
  Tensor qc = q4.detach().transpose(2, 3).contiguous().set_requires_grad();
  Tensor kc_ = k4.detach().transpose(2, 3).contiguous().set_requires_grad();
  Tensor vc = v4.detach().transpose(2, 3).contiguous().set_requires_grad();
  Tensor oc = engine::scaled_dot_product_attention(qc, kc_, vc);
  oc.backward(g4.transpose(2, 3).contiguous());
  EXPECT_TRUE(bitwise_equal(o.to_vector<float>(), oc.to_vector<float>()));
  EXPECT_TRUE(bitwise_equal(q4.grad().transpose(2, 3).to_vector<float>(), qc.grad().to_vector<float>()));
  EXPECT_TRUE(bitwise_equal(k4.grad().transpose(2, 3).to_vector<float>(), kc_.grad().to_vector<float>()));
  EXPECT_TRUE(bitwise_equal(v4.grad().transpose(2, 3).to_vector<float>(), vc.grad().to_vector<float>()));
  // Mixed layouts (q channel-major, k and v contiguous) take the copying path: the same values.
  Tensor om = engine::scaled_dot_product_attention(q4.detach().transpose(2, 3), kc_.detach(), vc.detach());
  EXPECT_TRUE(om.is_contiguous());
  EXPECT_TRUE(bitwise_equal(om.to_vector<float>(), oc.to_vector<float>()));
}

// Under no_grad the op records nothing and skips the log-sum-exp (the kernels get lse = nullptr): o has the
// same bits as the recording call's, for (B, H, D, L), (B, L, H, D) and contiguous (B, H, L, D) inputs.
TEST(AttentionBhdl, OpWithoutGradGivesTheSameOutput) {
  const int64_t B = 2, H = 3, Lq = 21, Lk = 13, D = 8;
  auto data = [](int64_t L, unsigned seed) { return normal_vector<float>(B * H * D * L, seed, 0.0, 1.0); };
  const std::vector<float> qd = data(Lq, 5), kd = data(Lk, 6), vd = data(Lk, 7);
  // The three layouts' (B, H, L, D) views of the same values.
  auto views = [&](const std::vector<float>& x, int64_t L, int layout) {
    if (layout == 0) return Tensor::from_vector(x, {B, H, D, L}).transpose(2, 3);
    if (layout == 1) return Tensor::from_vector(x, {B, L, H, D}).permute({0, 2, 1, 3});
    return Tensor::from_vector(x, {B, H, L, D});
  };
  for (int layout : {0, 1, 2}) {
    SCOPED_TRACE(::testing::Message() << "layout " << layout);
    Tensor q = views(qd, Lq, layout), k = views(kd, Lk, layout), v = views(vd, Lk, layout);
    Tensor qg = q.detach().set_requires_grad();
    const Tensor with_grad = engine::scaled_dot_product_attention(qg, k, v);
    EXPECT_TRUE(with_grad.requires_grad());
    Tensor without;
    {
      engine::NoGradGuard no_grad;
      without = engine::scaled_dot_product_attention(qg, k, v);
    }
    EXPECT_FALSE(without.requires_grad());
    EXPECT_TRUE(bitwise_equal(without.to_vector<float>(), with_grad.to_vector<float>()));
  }
}

// The CPU layer against the token-major composition of the same parameters, value and gradients.
TEST(AttentionBhdl, LayerMatchesTokenMajorComposition) {
  using namespace engine;
  nn::Init init(5);
  const int64_t B = 2, C = 16, heads = 2, dh = 8, Hh = 3, Ww = 5, L = Hh * Ww;
  nn::Attention attn(init, C, heads, dh, 4, 1e-5, 1.5);
  Tensor x =
      Tensor::from_vector(normal_vector<float>(B * C * L, 11, 0.0, 1.0), {B, C, Hh, Ww}).set_requires_grad();
  const Tensor g = Tensor::from_vector(normal_vector<float>(B * C * L, 12, 0.0, 1.0), {B, C, Hh, Ww});
  Tensor y = attn.forward(x);
  sum(mul(y, g)).backward();
  std::vector<Tensor> params = {attn.to_q->weight,        attn.to_q->bias,        attn.to_k->weight,
                                attn.to_k->bias,          attn.to_v->weight,      attn.to_v->bias,
                                (*attn.to_out)[0].weight, (*attn.to_out)[0].bias, attn.group_norm->weight,
                                attn.group_norm->bias};
  std::vector<std::vector<float>> grads;
  for (const Tensor& p : params) grads.push_back(p.grad().to_vector<float>());
  const std::vector<float> gx = x.grad().to_vector<float>();
  // Reference: (B, L, C) tokens, linear projections, (B, heads, L, D) heads, merge, to_out, residual.
  for (Tensor& p : params) p.zero_grad();
  Tensor x2 = x.detach().set_requires_grad();
  Tensor h = group_norm(x2.reshape({B, C, L}), 4, attn.group_norm->weight, attn.group_norm->bias, 1e-5);
  h = h.transpose(1, 2).contiguous();
  auto split = [&](const nn::Linear& lin) {
    return linear(h, lin.weight, lin.bias).reshape({B, L, heads, dh}).permute({0, 2, 1, 3}).contiguous();
  };
  Tensor o = scaled_dot_product_attention(split(*attn.to_q), split(*attn.to_k), split(*attn.to_v),
                                          1.0 / std::sqrt(double(dh)));
  o = o.permute({0, 2, 1, 3}).reshape({B, L, heads * dh});
  o = linear(o, (*attn.to_out)[0].weight, (*attn.to_out)[0].bias);
  Tensor y2 =
      div(o.transpose(1, 2).reshape({B, C, Hh, Ww}) + x2, Tensor::scalar(1.5, DType::F32, x.device()));
  sum(mul(y2, g)).backward();
  auto close = [](const std::vector<float>& a, const std::vector<float>& b, const char* what) {
    ASSERT_EQ(a.size(), b.size()) << what;
    double mx = 0;
    for (float v : b) mx = std::max(mx, double(std::abs(v)));
    for (size_t i = 0; i < a.size(); ++i)
      ASSERT_NEAR(a[i], b[i], 2e-5 * (mx + 1.0)) << what << " [" << i << "]";
  };
  close(y.to_vector<float>(), y2.to_vector<float>(), "y");
  close(gx, x2.grad().to_vector<float>(), "dx");
  const char* names[] = {"to_q.w", "to_q.b",   "to_k.w",   "to_k.b", "to_v.w",
                         "to_v.b", "to_out.w", "to_out.b", "gn.w",   "gn.b"};
  for (size_t i = 0; i < params.size(); ++i) close(grads[i], params[i].grad().to_vector<float>(), names[i]);
}

}  // namespace
