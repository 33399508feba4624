// The UNet's concat-free skip connections on the CPU against the concatenation they replace:
//  * group_norm_silu_cat(x0, x1) against group_norm_silu(concat({x0, x1}, 1)): y and the gradients of x0,
//    x1, gamma and beta bitwise, float32 and float64, every ISA path this CPU has, 1-3 threads, groups that
//    straddle the two parts, parts that end on a group boundary, an empty part;
//  * nn::Conv2d::forward_cat (1x1) and ResnetBlock2D::forward(x0, x1, temb) against the same layers on the
//    concatenation: outputs and every gradient bitwise, with the skip x1 also used by an earlier op (as the
//    down path uses it), so that the order in which its gradients are accumulated is covered; in bf16
//    matmul precision (odd splits); with x0 and x1 one tensor (a UNet without a mid block);
//  * argument errors name the op.
// Gradient checks and NaN/inf semantics come from the op table (GradCheck.GroupNormSiluCat,
// NonFinite.GroupNormSiluCat).
#include <gtest/gtest.h>
#include <omp.h>

#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "kernels/cpu/cpu_kernels.h"
#include "nn/layers.h"
#include "tests/test_util.h"

namespace {

using namespace engine;
using engine::test::bitwise_equal;
using engine::test::leaf;
using engine::test::supported_isas;
namespace kc = kern::cpu;
using kc::CpuIsa;

template <typename T>
std::vector<T> host(const Tensor& t) {
  return t.detach().contiguous().to_vector<T>();
}

struct GnCase {
  int64_t N, C0, C1, H, W, G;
  bool affine;
};
// Channels per group 3 with the 64 | 32 split inside group 21 (the UNet's 28x28 up block), 2 per group
// with a straddle, a split on a group boundary, one group across both parts, empty first and second parts,
// SIMD blocks and tails per channel (150, 37, 1 elements).
const GnCase kGnCases[] = {{2, 64, 32, 5, 6, 32, true}, {2, 5, 3, 10, 15, 4, true},
                           {3, 4, 4, 1, 37, 2, false},  {2, 1, 2, 3, 3, 1, true},
                           {2, 0, 6, 2, 3, 3, true},    {2, 6, 0, 2, 3, 3, true},
                           {5, 3, 3, 1, 1, 2, true}};

// {y, dx0, dx1, dgamma, dbeta} of y = f(x0, x1, gamma, beta) with the upstream gradient w.
template <typename T, typename F>
std::vector<std::vector<T>> run_gn(const GnCase& c, F f, unsigned seed) {
  const int64_t C = c.C0 + c.C1, HW = c.H * c.W;
  Tensor x0 = leaf(test::normal_vector<T>(c.N * c.C0 * HW, seed, 3.0, 2.0), {c.N, c.C0, c.H, c.W});
  Tensor x1 = leaf(test::normal_vector<T>(c.N * c.C1 * HW, seed + 1, -1.0, 0.5), {c.N, c.C1, c.H, c.W});
  Tensor g = c.affine ? leaf(test::normal_vector<T>(C, seed + 2, 1.0, 0.5), {C}) : Tensor();
  Tensor b = c.affine ? leaf(test::normal_vector<T>(C, seed + 3, 0.0, 1.0), {C}) : Tensor();
  Tensor w =
      Tensor::from_vector(test::normal_vector<T>(c.N * C * HW, seed + 4, 0.0, 1.0), {c.N, C, c.H, c.W});
  Tensor y = f(x0, x1, g, b);
  sum(mul(y, w)).backward();
  auto grad = [](const Tensor& t) { return t.grad().defined() ? host<T>(t.grad()) : std::vector<T>(); };
  std::vector<std::vector<T>> out{host<T>(y), grad(x0), grad(x1)};
  if (c.affine) out.insert(out.end(), {grad(g), grad(b)});
  return out;
}

template <typename T>
void gn_matches_concat_bitwise() {
  const char* names[] = {"y", "dx0", "dx1", "dgamma", "dbeta"};
  test::IsaGuard isa_guard;
  const int old = omp_get_max_threads();
  for (CpuIsa isa : supported_isas()) {
    kc::set_cpu_isa(isa);
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      unsigned seed = 10;
      for (const GnCase& c : kGnCases) {
        SCOPED_TRACE(::testing::Message()
                     << kc::cpu_isa_name(isa) << " threads " << threads << " N" << c.N << " C " << c.C0 << "+"
                     << c.C1 << " HW " << c.H * c.W << " G" << c.G << (c.affine ? " affine" : ""));
        const auto split = run_gn<T>(
            c,
            [&](auto& x0, auto& x1, auto& g, auto& b) {
              return group_norm_silu_cat(x0, x1, c.G, g, b, 1e-5);
            },
            seed);
        const auto cat = run_gn<T>(
            c,
            [&](auto& x0, auto& x1, auto& g, auto& b) {
              return group_norm_silu(concat({x0, x1}, 1), c.G, g, b, 1e-5);
            },
            seed);
        ASSERT_EQ(split.size(), cat.size());
        for (size_t k = 0; k < split.size(); ++k) {
          EXPECT_EQ(split[k].size(), cat[k].size()) << names[k];
          EXPECT_TRUE(bitwise_equal(split[k], cat[k])) << names[k] << " differs from the concatenation's";
        }
        seed += 10;
      }
    }
  }
  omp_set_num_threads(old);
}

TEST(GroupNormSiluCat, MatchesConcatBitwiseFloat) { gn_matches_concat_bitwise<float>(); }
TEST(GroupNormSiluCat, MatchesConcatBitwiseDouble) { gn_matches_concat_bitwise<double>(); }

// Sanity of the comparison above: a different split point gives a different result (the parts are really
// read from where the op says they are).
TEST(GroupNormSiluCat, PartsAreReadInPlace) {
  Tensor x0 = Tensor::from_vector(test::normal_vector<float>(2 * 4 * 9, 1, 0.0, 1.0), {2, 4, 3, 3});
  Tensor x1 = Tensor::from_vector(test::normal_vector<float>(2 * 2 * 9, 2, 5.0, 1.0), {2, 2, 3, 3});
  Tensor ref = group_norm_silu(concat({x0, x1}, 1), 3, Tensor(), Tensor(), 1e-5);
  Tensor swapped = group_norm_silu(concat({x1, x0}, 1), 3, Tensor(), Tensor(), 1e-5);
  EXPECT_TRUE(
      bitwise_equal(host<float>(group_norm_silu_cat(x0, x1, 3, Tensor(), Tensor(), 1e-5)), host<float>(ref)));
  EXPECT_FALSE(bitwise_equal(host<float>(group_norm_silu_cat(x0, x1, 3, Tensor(), Tensor(), 1e-5)),
                             host<float>(swapped)));
}

TEST(GroupNormSiluCat, BadArgumentsNameTheOp) {
  Tensor a = Tensor::zeros({2, 4, 3, 3}), g6 = Tensor::ones({6}), b6 = Tensor::zeros({6});
  const std::string op = "group_norm_silu_cat";
  // Another batch, other spatial dims, another rank, another dtype.
  for (const Tensor& b : {Tensor::zeros({3, 2, 3, 3}), Tensor::zeros({2, 2, 3, 4}), Tensor::zeros({2, 2, 9}),
                          Tensor::zeros({2, 2, 3, 3}, DType::F64)}) {
    const std::string m = test::error_message([&] { group_norm_silu_cat(a, b, 3, g6, b6, 1e-5); });
    EXPECT_NE(m.find(op), std::string::npos) << m;
  }
  std::string u = test::error_message([&] { group_norm_silu_cat(Tensor(), a, 2, Tensor(), Tensor(), 1e-5); });
  EXPECT_NE(u.find(op + ": undefined input"), std::string::npos) << u;
  // Channels of the concatenation (6) not divisible into 4 groups; gamma of the wrong size.
  std::string m = test::error_message([&] {
    group_norm_silu_cat(a, Tensor::zeros({2, 2, 3, 3}), 4, g6, b6, 1e-5);
  });
  EXPECT_NE(m.find("6 channels are not divisible into 4 groups"), std::string::npos) << m;
  m = test::error_message([&] {
    group_norm_silu_cat(a, Tensor::zeros({2, 2, 3, 3}), 3, Tensor::ones({4}), Tensor::zeros({4}), 1e-5);
  });
  EXPECT_NE(m.find(op), std::string::npos) << m;
  EXPECT_NE(m.find("must be (6,)"), std::string::npos) << m;
}

// A layer's input as two parts: (N, C0, H, H) and (N, C1, H, H); K output channels, G norm groups.
struct SplitShape {
  int64_t N, C0, C1, K, H, G = 32;
};
std::ostream& operator<<(std::ostream& o, const SplitShape& s) {
  return o << "N" << s.N << " C " << s.C0 << "+" << s.C1 << " K" << s.K << " " << s.H << "x" << s.H << " G"
           << s.G;
}

// Gradients of every leaf, in a fixed order; empty where a leaf got none.
std::vector<std::vector<float>> grads(const std::vector<Tensor>& leaves) {
  std::vector<std::vector<float>> g;
  for (const Tensor& t : leaves)
    g.push_back(t.grad().defined() ? host<float>(t.grad()) : std::vector<float>());
  return g;
}

void expect_same(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b,
                 const std::vector<std::string>& names) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_FALSE(a[i].empty()) << names[i] << " has no gradient";
    EXPECT_TRUE(bitwise_equal(a[i], b[i])) << names[i] << " differs from the concatenation's";
  }
}

// The 1x1 shortcut on its parts against the conv of the concatenation (values, dx0, dx1, dweight, dbias),
// in float32 and (where the CPU has AVX512_BF16) in bf16 matmul precision, whose GEMM sums channels in
// pairs: even splits run as two convs, odd ones (5 + 3, 33 + 33) concatenate.
void pointwise_matches_concat(kc::MatmulPrecision precision) {
  test::IsaGuard isa_guard;
  const test::MatmulPrecisionScope precision_scope(precision);
  const int old = omp_get_max_threads();
  for (CpuIsa isa : supported_isas()) {
    kc::set_cpu_isa(isa);
    for (int threads : {1, 2})
      for (const SplitShape& s :
           {SplitShape{4, 64, 32, 32, 14}, SplitShape{3, 64, 64, 64, 7}, SplitShape{2, 5, 3, 4, 6},
            SplitShape{9, 32, 32, 32, 28}, SplitShape{2, 33, 33, 33, 9}, SplitShape{2, 300, 100, 20, 5}}) {
        omp_set_num_threads(threads);
        SCOPED_TRACE(::testing::Message() << kc::cpu_isa_name(isa) << " threads " << threads << " " << s);
        auto run = [&](bool split) {
          nn::Init init(5);
          nn::Conv2d conv(init, s.C0 + s.C1, s.K, 1);
          Tensor x0 =
              leaf(test::normal_vector<float>(s.N * s.C0 * s.H * s.H, 1, 0.0, 1.0), {s.N, s.C0, s.H, s.H});
          Tensor x1 =
              leaf(test::normal_vector<float>(s.N * s.C1 * s.H * s.H, 2, 0.5, 2.0), {s.N, s.C1, s.H, s.H});
          Tensor y = split ? conv.forward_cat(x0, x1) : conv.forward(concat({x0, x1}, 1));
          Tensor w = Tensor::from_vector(test::normal_vector<float>(y.numel(), 3, 0.0, 1.0), y.shape());
          sum(mul(y, w)).backward();
          std::vector<std::vector<float>> out{host<float>(y)};
          for (auto& g : grads({x0, x1, conv.weight, conv.bias})) out.push_back(g);
          return out;
        };
        expect_same(run(true), run(false), {"y", "dx0", "dx1", "dweight", "dbias"});
      }
  }
  omp_set_num_threads(old);
}

TEST(Conv2dForwardCat, PointwiseMatchesConcatBitwise) { pointwise_matches_concat(kc::MatmulPrecision::Fp32); }

TEST(Conv2dForwardCat, PointwiseMatchesConcatBitwiseBf16) {
  if (!kc::cpu_has_bf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16: bf16 matmul precision runs float32";
  pointwise_matches_concat(kc::MatmulPrecision::Bf16);
}

TEST(Conv2dForwardCat, BadPartsAreRefusedWithTheReason) {
  nn::Init init(1);
  nn::Conv2d conv(init, 6, 4, 1);
  const std::pair<std::vector<Tensor>, std::string> cases[] = {
      {{Tensor::zeros({1, 4, 3, 3}), Tensor::zeros({1, 3, 3, 3})}, "do not have 6 input channels"},
      {{Tensor::zeros({1, 4, 3, 3}), Tensor::zeros({2, 2, 3, 3})}, "must be (B, C0, H, W) and (B, C1, H, W)"},
      {{Tensor::zeros({1, 4, 3, 3}), Tensor::zeros({1, 2, 3, 4})}, "must be (B, C0, H, W) and (B, C1, H, W)"},
      {{Tensor::zeros({1, 4, 3, 3}), Tensor::zeros({1, 2, 9})}, "must be (B, C0, H, W) and (B, C1, H, W)"},
      {{Tensor(), Tensor::zeros({1, 2, 3, 3})}, "forward_cat: undefined input"}};
  for (const auto& [parts, reason] : cases) {
    const std::string m = test::error_message([&] { conv.forward_cat(parts[0], parts[1]); });
    EXPECT_NE(m.find(reason), std::string::npos) << m;
  }
}

// A whole up-block resnet on (h, skip) against the same block on cat([h, skip], 1): output and the
// gradients of h, skip, temb and every parameter, bitwise. As in the UNet, skip also feeds the down path's
// next layer, from which the block's h is computed: that layer's gradient reaches skip after the block's
// (the backward runs in topological order), so skip's three gradients are summed in the concatenation's
// order, (norm1's + the shortcut's) + the down path's. (Were the down path's gradient to arrive between the
// block's two, the sum would round differently.)
// Also in bf16 matmul precision (odd C0: the shortcut concatenates), and with h and skip one tensor (a UNet
// without a mid block): then the block concatenates, as the concatenation sums that tensor's four gradient
// pieces two and two.
void resnet_block_matches_concat(kc::MatmulPrecision precision, bool aliased) {
  test::IsaGuard isa_guard;
  const test::MatmulPrecisionScope precision_scope(precision);
  const int old = omp_get_max_threads();
  std::vector<SplitShape> shapes{SplitShape{3, 64, 32, 32, 14}, SplitShape{2, 64, 64, 64, 7},
                                 SplitShape{2, 32, 32, 32, 12}};
  if (aliased) shapes = {SplitShape{2, 32, 32, 32, 7}, SplitShape{2, 64, 64, 32, 5}};
  if (precision == kc::MatmulPrecision::Bf16) shapes.push_back(SplitShape{2, 33, 33, 33, 9, 3});
  for (CpuIsa isa : supported_isas()) {
    kc::set_cpu_isa(isa);
    for (int threads : {1, 2})
      for (const SplitShape& s : shapes) {
        omp_set_num_threads(threads);
        SCOPED_TRACE(::testing::Message() << kc::cpu_isa_name(isa) << " threads " << threads << " " << s);
        auto run = [&](bool split) {
          nn::Init init(7);
          nn::ResnetBlock2D block(init, s.C0 + s.C1, s.K, 16, s.G, 1e-5);
          Tensor h0 =
              leaf(test::normal_vector<float>(s.N * s.C0 * s.H * s.H, 1, 0.0, 1.0), {s.N, s.C0, s.H, s.H});
          Tensor skip =
              leaf(test::normal_vector<float>(s.N * s.C1 * s.H * s.H, 2, 0.5, 2.0), {s.N, s.C1, s.H, s.H});
          Tensor temb = leaf(test::normal_vector<float>(s.N * 16, 3, 0.0, 1.0), {s.N, 16});
          Tensor down = silu(skip);                  // the down path's next layer
          Tensor h = add(h0, down.narrow(1, 0, 1));  // the up path's state, computed from it
          const Tensor x1 = aliased ? h : skip;  // aliased: dh0 is h's whole gradient, its four pieces summed
          Tensor y = split ? block.forward(h, x1, temb) : block.forward(concat({h, x1}, 1), temb);
          Tensor w = Tensor::from_vector(test::normal_vector<float>(y.numel(), 4, 0.0, 1.0), y.shape());
          sum(mul(y, w)).backward();
          std::vector<Tensor> leaves{h0, skip, temb};
          for (const auto& [name, p] : block.named_parameters()) leaves.push_back(p);
          std::vector<std::vector<float>> out{host<float>(y)};
          for (auto& g : grads(leaves)) out.push_back(g);
          return out;
        };
        std::vector<std::string> names{"y", "dh", "dskip", "dtemb"};
        {
          nn::Init init(7);
          nn::ResnetBlock2D block(init, s.C0 + s.C1, s.K, 16, s.G, 1e-5);
          for (const auto& [name, p] : block.named_parameters()) names.push_back("d " + name);
          ASSERT_TRUE(block.conv_shortcut) << "the test needs a block with a shortcut";
        }
        expect_same(run(true), run(false), names);
      }
  }
  omp_set_num_threads(old);
}

TEST(ResnetBlock2DCat, MatchesConcatBitwise) {
  resnet_block_matches_concat(kc::MatmulPrecision::Fp32, false);
}

TEST(ResnetBlock2DCat, MatchesConcatBitwiseBf16) {
  if (!kc::cpu_has_bf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16: bf16 matmul precision runs float32";
  resnet_block_matches_concat(kc::MatmulPrecision::Bf16, false);
}

TEST(ResnetBlock2DCat, SameTensorAsHiddenAndSkipMatchesConcatBitwise) {
  resnet_block_matches_concat(kc::MatmulPrecision::Fp32, true);
}

}  // namespace
