// Attention on heads in place in (B, L, H, D) memory (kern::cpu::attention_{forward,backward}_blhd and
// the scaled_dot_product_attention op's use of them for the nn Attention layer's head split):
//  * the kernel on (B, L, H, D) arrays gives bitwise the o, lse, dq, dk, dv of kern::cpu::attention_forward
//    / attention_backward on the contiguous (B, H, L, D) copies, on every ISA path this CPU has, 1 and 2
//    threads, odd lengths, D in {1, 7, 8, 16}, H in {1, 3, 8};
//  * the op, given (B, H, L, D) views of contiguous (B, L, H, D) tensors, returns o as such a view (so the
//    layer's merge is a view) and dq, dk, dv likewise, with bitwise the contiguous inputs' values;
//  * out-of-domain arguments throw.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "core/ops.h"
#include "core/tensor.h"
#include "kernels/cpu/cpu_kernels.h"
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

// (B, L, H, D) -> (B, H, L, D), both contiguous.
std::vector<float> to_bhld(const std::vector<float>& x, int64_t B, int64_t L, int64_t H, int64_t D) {
  std::vector<float> r(x.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t l = 0; l < L; ++l)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t d = 0; d < D; ++d) r[((b * H + h) * L + l) * D + d] = x[((b * L + l) * H + h) * D + d];
  return r;
}

TEST(AttentionBlhd, KernelBitwiseEqualsContiguousPath) {
  engine::test::expect_layout_equals_contiguous_path(
      {1, 3, 8}, kc::attention_forward_blhd, kc::attention_backward_blhd,
      [](const std::vector<float>& x, int64_t B, int64_t H, int64_t L, int64_t D) {
        return to_bhld(x, B, L, H, D);
      });
}

TEST(AttentionBlhd, KernelRejectsOutOfDomain) {
  std::vector<float> x(64 * 17), lse(64);
  EXPECT_FALSE(kc::attention_blhd_supported(4, 4, 17));
  EXPECT_FALSE(kc::attention_blhd_supported(0, 4, 8));
  EXPECT_TRUE(kc::attention_blhd_supported(4, 4, 16));
  EXPECT_THROW(
      kc::attention_forward_blhd(1, 1, 4, 4, 17, 1.0, x.data(), x.data(), x.data(), x.data(), lse.data()),
      std::invalid_argument);
  EXPECT_THROW(kc::attention_backward_blhd(1, 0, 4, 4, 8, 1.0, x.data(), x.data(), x.data(), x.data(),
                                           lse.data(), x.data(), x.data(), x.data(), x.data()),
               std::invalid_argument);
}

// Strides of a (B, H, L, D) view of a contiguous (B, L, H, D) tensor.
engine::Shape blhd_strides(int64_t H, int64_t L, int64_t D) { return {L * H * D, D, H * D, 1}; }

TEST(AttentionBlhd, OpReadsAndWritesHeadsInPlace) {
  const int64_t B = 2, H = 3, Lq = 7, Lk = 5, D = 8;
  auto leaf = [](int64_t L, unsigned seed) {
    return Tensor::from_vector(normal_vector<float>(B * L * H * D, seed, 0.0, 1.0), {B, L, H, D})
        .set_requires_grad();
  };
  Tensor q4 = leaf(Lq, 1), k4 = leaf(Lk, 2), v4 = leaf(Lk, 3);
  const Tensor g4 = Tensor::from_vector(normal_vector<float>(B * Lq * H * D, 4, 0.0, 1.0), {B, Lq, H, D});
  // In place: BLHD views in, a BLHD view out.
  Tensor o = engine::scaled_dot_product_attention(q4.permute({0, 2, 1, 3}), k4.permute({0, 2, 1, 3}),
                                                  v4.permute({0, 2, 1, 3}));
  EXPECT_EQ(o.shape(), (engine::Shape{B, H, Lq, D}));
  EXPECT_EQ(o.strides(), blhd_strides(H, Lq, D));
  EXPECT_TRUE(o.permute({0, 2, 1, 3}).is_contiguous());
  o.backward(g4.permute({0, 2, 1, 3}));
  // Reference: contiguous copies (the kernel's contiguous path), same incoming gradient.
  Tensor qc = q4.detach().permute({0, 2, 1, 3}).contiguous().set_requires_grad();
  Tensor kc_ = k4.detach().permute({0, 2, 1, 3}).contiguous().set_requires_grad();
  Tensor vc = v4.detach().permute({0, 2, 1, 3}).contiguous().set_requires_grad();
  Tensor oc = engine::scaled_dot_product_attention(qc, kc_, vc);
  EXPECT_TRUE(oc.is_contiguous());
  oc.backward(g4.permute({0, 2, 1, 3}).contiguous());
  EXPECT_TRUE(bitwise_equal(o.to_vector<float>(), oc.to_vector<float>()));
  // q4's gradient (B, L, H, D) against qc's (B, H, L, D).
  EXPECT_TRUE(
      bitwise_equal(q4.grad().permute({0, 2, 1, 3}).to_vector<float>(), qc.grad().to_vector<float>()));
  EXPECT_TRUE(
      bitwise_equal(k4.grad().permute({0, 2, 1, 3}).to_vector<float>(), kc_.grad().to_vector<float>()));
  EXPECT_TRUE(
      bitwise_equal(v4.grad().permute({0, 2, 1, 3}).to_vector<float>(), vc.grad().to_vector<float>()));
}

TEST(AttentionBlhd, OpGradientInOtherLayoutAndFallbacks) {
  const int64_t B = 1, H = 2, L = 5, D = 4;
  Tensor x4 = Tensor::from_vector(normal_vector<float>(B * L * H * D, 7, 0.0, 1.0), {B, L, H, D});
  Tensor q = x4.permute({0, 2, 1, 3}).detach().set_requires_grad();
  ASSERT_EQ(q.strides(), blhd_strides(H, L, D));
  Tensor o = engine::scaled_dot_product_attention(q, q, q);
  // A contiguous (not BLHD) incoming gradient is taken too.
  const Tensor g = Tensor::from_vector(normal_vector<float>(B * H * L * D, 8, 0.0, 1.0), {B, H, L, D});
  o.backward(g);
  Tensor qc = q.detach().contiguous().set_requires_grad();
  Tensor oc = engine::scaled_dot_product_attention(qc, qc, qc);
  oc.backward(g);
  EXPECT_TRUE(bitwise_equal(o.to_vector<float>(), oc.to_vector<float>()));
  EXPECT_TRUE(bitwise_equal(q.grad().to_vector<float>(), qc.grad().to_vector<float>()));
  // Other layouts and dtypes keep the contiguous output.
  EXPECT_TRUE(oc.is_contiguous());
  Tensor qd = q.detach().to(engine::DType::F64);
  EXPECT_TRUE(engine::scaled_dot_product_attention(qd, qd, qd).is_contiguous());
}

}  // namespace
