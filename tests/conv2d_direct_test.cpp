// The direct stride-1 conv forward (kernels/cpu/conv2d.cpp, K <= 4 output channels: conv_out) against the
// definition it must equal bit for bit: each output is the im2col GEMM's FMA chain, written from the
// convolution's index formula in tests/conv2d_chains.h (not from the kernel): acc = the epilogue's e + r
// (the terms given; +0 with none), then acc = fma(w[k][c][r][s], x value or +0 outside the image, acc) for
// (c, r, s) in order. Every ISA path, 1 to 3 threads, odd sizes (Q > 32: two column blocks), batch 1,
// every epilogue combination. Also the im2col forward with stride 2 (its vectorised even-column copy,
// Q >= 8) against the same chain.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "tests/conv2d_chains.h"
#include "tests/test_util.h"

namespace kc = kern::cpu;

namespace {

using engine::test::bitwise_equal;
using engine::test::conv2d_forward_chain;
using engine::test::random_vector;

}  // namespace

class ConvDirect : public engine::test::CpuSettingsRestored {};

TEST_F(ConvDirect, ForwardIsTheIm2colFmaChainBitwiseOnEveryIsaAndThreadCount) {
  const kern::Conv2dShape shapes[] = {
      kern::conv2d_shape(3, 32, 28, 28, 1, 3, 3, 1, 1, 1, 1),  // conv_out
      kern::conv2d_shape(2, 3, 7, 37, 4, 3, 2, 1, 1, 1, 0),    // Q = 36 > 32, 3x2 kernel, pad (1, 0)
      kern::conv2d_shape(1, 5, 6, 5, 2, 5, 5, 1, 1, 2, 2),     // batch 1, 5x5 pad 2
      kern::conv2d_shape(4, 2, 9, 3, 3, 3, 3, 1, 1, 2, 1),     // pad wider than needed: P = 11
  };
  for (const auto& s : shapes) {
    const auto x = random_vector<float>(s.N * s.C * s.H * s.W, 31),
               w = random_vector<float>(s.K * s.C * s.R * s.S, 32), b = random_vector<float>(s.K, 33),
               t = random_vector<float>(s.N * s.K, 34), r = random_vector<float>(s.N * s.K * s.P * s.Q, 35);
    struct Terms {
      const float *b, *t, *r;
    };
    for (const Terms& e : {Terms{nullptr, nullptr, nullptr}, Terms{b.data(), nullptr, nullptr},
                           Terms{b.data(), t.data(), r.data()}, Terms{nullptr, nullptr, r.data()}}) {
      const auto ref = conv2d_forward_chain(s, x, w, e.b, e.t, e.r);
      for (kc::CpuIsa isa : engine::test::supported_isas()) {
        kc::set_cpu_isa(isa);
        for (int threads : {1, 2, 3}) {
          omp_set_num_threads(threads);
          std::vector<float> y(ref.size(), 99.f);
          kc::conv2d_forward_fused<float>(s, x.data(), w.data(), e.b, e.t, e.r, y.data());
          EXPECT_TRUE(bitwise_equal(y, ref))
              << kc::cpu_isa_name(isa) << " threads " << threads << " N=" << s.N << " C=" << s.C
              << " K=" << s.K << " W=" << s.W << " b=" << !!e.b << " t=" << !!e.t << " r=" << !!e.r;
        }
      }
    }
  }
}

namespace {

// The backward-data definition that gemm + col2im computes: col[c][r][s][p][q] = the chain acc = +0,
// acc = fma(w[k][c][r][s], dy[k][p][q], acc) over k in order; dx = +0, then each col value added in at
// its input position, rows in (c, r, s) order.
std::vector<float> bwd_input_reference(const kern::Conv2dShape& s, const std::vector<float>& dy,
                                       const std::vector<float>& w) {
  std::vector<float> dx(s.N * s.C * s.H * s.W, 0.f);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t c = 0; c < s.C; ++c)
      for (int64_t rr = 0; rr < s.R; ++rr)
        for (int64_t ss = 0; ss < s.S; ++ss)
          for (int64_t p = 0; p < s.P; ++p)
            for (int64_t q = 0; q < s.Q; ++q) {
              const int64_t h = p * s.stride_h - s.pad_h + rr, ww = q * s.stride_w - s.pad_w + ss;
              if (h < 0 || h >= s.H || ww < 0 || ww >= s.W) continue;
              float col = 0.f;
              for (int64_t k = 0; k < s.K; ++k)
                col = std::fma(w[((k * s.C + c) * s.R + rr) * s.S + ss],
                               dy[((n * s.K + k) * s.P + p) * s.Q + q], col);
              dx[((n * s.C + c) * s.H + h) * s.W + ww] += col;
            }
  return dx;
}

}  // namespace

// Backward-data with K <= 4 output channels (conv_out) computes each cols row as it adds it: the same bits
// as gemm + col2im, on every ISA path and thread count, any stride.
TEST_F(ConvDirect, BackwardInputWithFewOutputChannelsIsTheGemmCol2imDefinitionBitwise) {
  const kern::Conv2dShape shapes[] = {
      kern::conv2d_shape(3, 32, 28, 28, 1, 3, 3, 1, 1, 1, 1),  // conv_out
      kern::conv2d_shape(2, 3, 9, 11, 4, 3, 3, 2, 2, 1, 1),    // stride 2, odd sizes
      kern::conv2d_shape(1, 5, 6, 5, 2, 5, 3, 1, 2, 2, 0),     // batch 1, 5x3, stride (1, 2)
  };
  for (const auto& s : shapes) {
    const auto dy = random_vector<float>(s.N * s.K * s.P * s.Q, 41),
               w = random_vector<float>(s.K * s.C * s.R * s.S, 42);
    const auto ref = bwd_input_reference(s, dy, w);
    for (kc::CpuIsa isa : engine::test::supported_isas()) {
      kc::set_cpu_isa(isa);
      for (int threads : {1, 2, 3}) {
        omp_set_num_threads(threads);
        std::vector<float> dx(ref.size(), 99.f);
        kc::conv2d_backward_input<float>(s, dy.data(), w.data(), dx.data());
        EXPECT_TRUE(bitwise_equal(dx, ref))
            << kc::cpu_isa_name(isa) << " threads " << threads << " C=" << s.C << " K=" << s.K;
      }
    }
  }
}

// The weight gradient with K <= 4 output channels and stride 1 (conv_out), computed without im2col: the
// same bits as im2col + gemm's chains, on every ISA path and thread count; channel counts that are not a
// multiple of the 8 lanes, kernels other than 3x3 (the portable loop), padding wider than needed, a zero in
// dy's sign and an infinity in x (fma(+0 padding, dy, .) and inf * 0 must happen exactly as in the chain).
TEST_F(ConvDirect, WeightGradWithFewOutputChannelsIsTheGemmChainBitwise) {
  const kern::Conv2dShape shapes[] = {
      kern::conv2d_shape(3, 32, 28, 28, 1, 3, 3, 1, 1, 1, 1),  // conv_out
      kern::conv2d_shape(2, 13, 9, 11, 3, 3, 3, 1, 1, 1, 1),   // 13 channels: a part-filled lane block
      kern::conv2d_shape(1, 5, 6, 5, 2, 5, 3, 1, 1, 2, 0),     // batch 1, 5x3, pad (2, 0)
      kern::conv2d_shape(4, 2, 9, 3, 4, 3, 3, 1, 1, 2, 1),     // pad wider than needed: P = 11
  };
  for (const auto& s : shapes) {
    auto x = random_vector<float>(s.N * s.C * s.H * s.W, 71);
    auto dy = random_vector<float>(s.N * s.K * s.P * s.Q, 72);
    dy[1] = -0.f;
    if (s.C == 13) x[5] = std::numeric_limits<float>::infinity();
    const auto ref = engine::test::conv2d_bwd_weight_chain(s, dy, x);
    for (kc::CpuIsa isa : engine::test::supported_isas()) {
      kc::set_cpu_isa(isa);
      for (int threads : {1, 2, 3}) {
        omp_set_num_threads(threads);
        std::vector<float> dw(ref.size(), 99.f), db(s.K, 99.f);
        kc::conv2d_backward_weight<float>(s, dy.data(), x.data(), dw.data(), db.data());
        EXPECT_TRUE(bitwise_equal(dw, ref))
            << kc::cpu_isa_name(isa) << " threads " << threads << " C=" << s.C << " K=" << s.K;
        for (int64_t k = 0; k < s.K; ++k) {  // db: the sum of dy over (n, p, q), to float32 rounding
          double want = 0;
          for (int64_t n = 0; n < s.N; ++n)
            for (int64_t i = 0; i < s.P * s.Q; ++i) want += dy[(n * s.K + k) * s.P * s.Q + i];
          EXPECT_NEAR(db[k], want, 1e-4 * (1 + std::abs(want)));
        }
      }
    }
  }
}

// The im2col + GEMM forward with stride 2 along W, where im2col copies every other input column 8 at a
// time (Q >= 8: full blocks, an overlapping last block, and rows clipped by the padding): the same chain.
TEST_F(ConvDirect, Im2colStride2ForwardIsTheFmaChainBitwise) {
  const kern::Conv2dShape shapes[] = {
      kern::conv2d_shape(2, 3, 37, 35, 8, 3, 3, 2, 2, 1, 1),    // Q = 18: blocks at 0, 8, 10 (overlapping)
      kern::conv2d_shape(1, 2, 20, 16, 5, 3, 3, 1, 2, 1, 0),    // stride (1, 2), Q = 7 and 8 per column shift
      kern::conv2d_shape(3, 32, 28, 28, 32, 3, 3, 2, 2, 1, 1),  // the UNet's downsample 28 -> 14
  };
  for (const auto& s : shapes) {
    const auto x = random_vector<float>(s.N * s.C * s.H * s.W, 51),
               w = random_vector<float>(s.K * s.C * s.R * s.S, 52), b = random_vector<float>(s.K, 53);
    const auto ref = conv2d_forward_chain(s, x, w, b.data(), nullptr, nullptr);
    for (kc::CpuIsa isa : engine::test::supported_isas()) {
      kc::set_cpu_isa(isa);
      for (int threads : {1, 2}) {
        omp_set_num_threads(threads);
        std::vector<float> y(ref.size(), 99.f);
        kc::conv2d_forward<float>(s, x.data(), w.data(), b.data(), y.data());
        EXPECT_TRUE(bitwise_equal(y, ref)) << kc::cpu_isa_name(isa) << " threads " << threads << " W=" << s.W;
      }
    }
  }
}

// In bf16 mode (set_matmul_precision(Bf16), on CPUs with AVX512_BF16) the few-output-channel convs run the
// same float32 direct kernels as in fp32 mode, as docs/apps.md "Precision" says: forward (= the float32
// chain definition), backward-data and weight gradient bitwise their fp32-mode results, 1 and 2 threads.
TEST_F(ConvDirect, Bf16ModeRunsTheFloat32DirectKernels) {
  const engine::test::MatmulPrecisionScope bf16(kc::MatmulPrecision::Bf16);  // restores it at the end
  if (!bf16.active()) GTEST_SKIP() << "bf16 does not run here (no AVX512_BF16, or an ISA path below avx512)";
  const auto s = kern::conv2d_shape(3, 32, 28, 28, 1, 3, 3, 1, 1, 1, 1);  // conv_out
  const int64_t CRS = s.C * s.R * s.S, PQ = s.P * s.Q;
  const auto x = random_vector<float>(s.N * s.C * s.H * s.W, 61), w = random_vector<float>(s.K * CRS, 62),
             b = random_vector<float>(s.K, 63), dy = random_vector<float>(s.N * s.K * PQ, 64);
  struct Passes {
    std::vector<float> y, dx, dw, db;
  };
  auto run = [&](kc::MatmulPrecision p, int threads) {
    kc::set_matmul_precision(p);
    omp_set_num_threads(threads);
    Passes r{std::vector<float>(s.N * s.K * PQ), std::vector<float>(x.size()), std::vector<float>(w.size()),
             std::vector<float>(s.K)};
    kc::conv2d_forward<float>(s, x.data(), w.data(), b.data(), r.y.data());
    kc::conv2d_backward_input<float>(s, dy.data(), w.data(), r.dx.data());
    kc::conv2d_backward_weight<float>(s, dy.data(), x.data(), r.dw.data(), r.db.data());
    return r;
  };
  const Passes fp32 = run(kc::MatmulPrecision::Fp32, 1);
  EXPECT_TRUE(bitwise_equal(fp32.y, conv2d_forward_chain(s, x, w, b.data(), nullptr, nullptr)));
  for (int threads : {1, 2}) {
    const Passes bf16 = run(kc::MatmulPrecision::Bf16, threads);
    EXPECT_TRUE(bitwise_equal(bf16.y, fp32.y)) << "forward, threads " << threads;
    EXPECT_TRUE(bitwise_equal(bf16.dx, fp32.dx)) << "backward-data, threads " << threads;
    EXPECT_TRUE(bitwise_equal(bf16.dw, fp32.dw)) << "weight gradient, threads " << threads;
    EXPECT_TRUE(bitwise_equal(bf16.db, fp32.db)) << "bias gradient, threads " << threads;
  }
}
