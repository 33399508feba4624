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
  IsaGuard guard;
  const int64_t B = 2;
  const int old_threads = omp_get_max_threads();
  for (CpuIsa isa : supported_isas())
    for (int threads : {1, 2})
      for (int64_t D : {1, 7, 8, 16})
        for (int64_t H : {1, 3, 8})
          for (auto [Lq, Lk] : {std::pair<int64_t, int64_t>{13, 13}, {9, 21}, {1, 5}}) {
            SCOPED_TRACE(::testing::Message() << "isa " << int(isa) << " threads " << threads << " D " << D
                                              << " H " << H << " Lq " << Lq << " Lk " << Lk);
            kc::set_cpu_isa(isa);
            omp_set_num_threads(threads);
            const unsigned seed = unsigned(D * 100 + H * 10 + Lq);
            const std::vector<float> q = normal_vector<float>(B * Lq * H * D, seed, 0.0, 1.0);
            const std::vector<float> k = normal_vector<float>(B * Lk * H * D, seed + 1, 0.0, 1.0);
            const std::vector<float> v = normal_vector<float>(B * Lk * H * D, seed + 2, 0.0, 1.0);
            const std::vector<float> g = normal_vector<float>(B * Lq * H * D, seed + 3, 0.0, 1.0);
            const double scale = 1.0 / std::sqrt(double(D));
            // In place on (B, L, H, D).
            std::vector<float> o(q.size()), lse(B * H * Lq), dq(q.size()), dk(k.size()), dv(v.size());
            kc::attention_forward_blhd(B, H, Lq, Lk, D, scale, q.data(), k.data(), v.data(), o.data(),
                                       lse.data());
            kc::attention_backward_blhd(B, H, Lq, Lk, D, scale, q.data(), k.data(), v.data(), o.data(),
                                        lse.data(), g.data(), dq.data(), dk.data(), dv.data());
            // The contiguous (B, H, L, D) path on copies.
            const std::vector<float> qc = to_bhld(q, B, Lq, H, D), kc_ = to_bhld(k, B, Lk, H, D),
                                     vc = to_bhld(v, B, Lk, H, D), gc = to_bhld(g, B, Lq, H, D);
            std::vector<float> oc(q.size()), lsec(B * H * Lq), dqc(q.size()), dkc(k.size()), dvc(v.size());
            kc::attention_forward<float>(B * H, Lq, Lk, D, scale, qc.data(), kc_.data(), vc.data(), oc.data(),
                                         lsec.data());
            kc::attention_backward<float>(B * H, Lq, Lk, D, scale, qc.data(), kc_.data(), vc.data(),
                                          oc.data(), lsec.data(), gc.data(), dqc.data(), dkc.data(),
                                          dvc.data());
            EXPECT_TRUE(bitwise_equal(to_bhld(o, B, Lq, H, D), oc)) << "o";
            EXPECT_TRUE(bitwise_equal(lse, lsec)) << "lse";
            EXPECT_TRUE(bitwise_equal(to_bhld(dq, B, Lq, H, D), dqc)) << "dq";
            EXPECT_TRUE(bitwise_equal(to_bhld(dk, B, Lk, H, D), dkc)) << "dk";
            EXPECT_TRUE(bitwise_equal(to_bhld(dv, B, Lk, H, D), dvc)) << "dv";
          }
  omp_set_num_threads(old_threads);
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
