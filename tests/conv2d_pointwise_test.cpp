// Tests of the CPU pointwise (1x1, stride 1, pad 0) conv2d paths (kernels/cpu/conv2d.cpp): the attention
// projections' and shortcuts' shapes, batch sizes that are not multiples of the thread count, odd channel
// counts, a single pixel. Forward, backward-data and weight gradient are compared bit for bit with their
// FMA-chain definitions (tests/conv2d_chains.h; docs/apps.md "Determinism"), on every ISA path the CPU has
// and 1 to 4 threads:
//   y[n][k][p]  = b[k], then acc = fma(w[k][c], x[n][c][p], acc) for c in order;
//   dx[n][c][p] = 0,    then acc = fma(w[k][c], dy[n][k][p], acc) for k in order;
//   dw[k][c]    = 0,    then acc = fma(dy[n][k][p], x[n][c][p], acc) for n, then p, in order.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "tests/conv2d_chains.h"
#include "tests/test_util.h"

namespace {

namespace kc = kern::cpu;
using engine::test::bitwise_equal;

struct Chains {
  std::vector<float> y, dx, dw;
};

Chains definitions(const kern::Conv2dShape& s, const std::vector<float>& x, const std::vector<float>& w,
                   const std::vector<float>& b, const std::vector<float>& dy) {
  return {engine::test::conv2d_forward_chain(s, x, w, b.data(), nullptr, nullptr),
          engine::test::pointwise_backward_input_chain(s, dy, w),
          engine::test::conv2d_bwd_weight_chain(s, dy, x)};
}

class ConvPointwise : public engine::test::CpuSettingsRestored {};

TEST_F(ConvPointwise, EveryPassIsItsFmaChainOnEveryIsaAndThreadCount) {
  // {N, C, K, H, W}: the attention projections at 14x14 and 7x7 (to_q/k/v/out, and the three fused:
  // 64 -> 192), a 128 -> 64 shortcut, odd channel counts and sides, one pixel, batch 1.
  const int64_t shapes[][5] = {{5, 64, 64, 14, 14}, {7, 64, 64, 7, 7},  {3, 64, 192, 7, 7},
                               {3, 128, 64, 7, 7},  {2, 17, 33, 5, 9},  {4, 40, 24, 3, 3},
                               {3, 9, 70, 1, 1},    {1, 64, 64, 14, 14}};
  unsigned seed = 4100;
  for (const auto& sh : shapes) {
    const auto s = kern::conv2d_shape(sh[0], sh[1], sh[3], sh[4], sh[2], 1, 1, 1, 1, 0, 0);
    const int64_t L = s.P * s.Q;
    const auto x = engine::test::random_vector(s.N * s.C * L, ++seed),
               w = engine::test::random_vector(s.K * s.C, ++seed),
               b = engine::test::random_vector(s.K, ++seed),
               dy = engine::test::random_vector(s.N * s.K * L, ++seed);
    const Chains want = definitions(s, x, w, b, dy);
    for (kc::CpuIsa isa : engine::test::supported_isas())
      for (int threads : {1, 2, 3, 4}) {
        kc::set_cpu_isa(isa);
        omp_set_num_threads(threads);
        std::vector<float> y(want.y.size(), 7.0f), dx(want.dx.size(), 7.0f), dw(want.dw.size(), 7.0f),
            db(s.K);
        kc::conv2d_forward<float>(s, x.data(), w.data(), b.data(), y.data());
        kc::conv2d_backward_input<float>(s, dy.data(), w.data(), dx.data());
        kc::conv2d_backward_weight<float>(s, dy.data(), x.data(), dw.data(), db.data());
        std::ostringstream where;
        where << "N" << s.N << " C" << s.C << " K" << s.K << " " << s.H << "x" << s.W << " isa "
              << kc::cpu_isa_name(isa) << " threads " << threads;
        EXPECT_TRUE(bitwise_equal(y, want.y)) << "y " << where.str();
        EXPECT_TRUE(bitwise_equal(dx, want.dx)) << "dx " << where.str();
        EXPECT_TRUE(bitwise_equal(dw, want.dw)) << "dw " << where.str();
      }
  }
}

// The fused epilogue (to_out's residual; a per-sample bias) on the grouped small-image path and the
// per-image one: acc = (b[k] + t[n][k]) + r[n][k][p] (the terms given), then the chain over c.
TEST_F(ConvPointwise, FusedEpilogueIsItsFmaChainOnEveryIsaAndThreadCount) {
  const int64_t shapes[][5] = {{7, 64, 64, 7, 7}, {3, 24, 40, 14, 14}, {5, 9, 17, 3, 5}};
  unsigned seed = 5100;
  for (const auto& sh : shapes) {
    const auto s = kern::conv2d_shape(sh[0], sh[1], sh[3], sh[4], sh[2], 1, 1, 1, 1, 0, 0);
    const int64_t L = s.P * s.Q;
    const auto x = engine::test::random_vector(s.N * s.C * L, ++seed),
               w = engine::test::random_vector(s.K * s.C, ++seed),
               b = engine::test::random_vector(s.K, ++seed),
               t = engine::test::random_vector(s.N * s.K, ++seed),
               r = engine::test::random_vector(s.N * s.K * L, ++seed);
    for (int terms = 0; terms < 4; ++terms) {  // bit 0: the per-sample bias t, bit 1: the residual r
      const float* tp = terms & 1 ? t.data() : nullptr;
      const float* rp = terms & 2 ? r.data() : nullptr;
      const std::vector<float> want = engine::test::conv2d_forward_chain(s, x, w, b.data(), tp, rp);
      for (kc::CpuIsa isa : engine::test::supported_isas())
        for (int threads : {1, 2, 3}) {
          kc::set_cpu_isa(isa);
          omp_set_num_threads(threads);
          std::vector<float> y(want.size(), 7.0f);
          kc::conv2d_forward_fused<float>(s, x.data(), w.data(), b.data(), tp, rp, y.data());
          EXPECT_TRUE(bitwise_equal(y, want))
              << "N" << s.N << " C" << s.C << " K" << s.K << " " << s.H << "x" << s.W << " terms " << terms
              << " isa " << kc::cpu_isa_name(isa) << " threads " << threads;
        }
    }
  }
}

// bf16 mode (on CPUs with AVX512_BF16): the grouped small-image forward (with each epilogue term) and input
// gradient give the bits of one call per image (N = 1, never grouped), for any thread count: each output's
// k-pairs run over the channels whatever the columns. The weight gradient is grouped only where an image has
// an even pixel count (14x14; at 7x7 or 3x5 grouping would pair pixels of neighbouring images): the bits of
// the per-image bf16 GEMMs written out, in both cases.
TEST_F(ConvPointwise, Bf16ModeGroupedPassesGiveThePerImageBits) {
  const engine::test::MatmulPrecisionScope bf16(kc::MatmulPrecision::Bf16);
  if (!bf16.active()) GTEST_SKIP() << "bf16 does not run here (no AVX512_BF16, or an ISA path below avx512)";
  const int64_t shapes[][5] = {
      {13, 64, 64, 7, 7}, {5, 128, 64, 14, 14}, {4, 32, 64, 14, 14}, {5, 9, 17, 3, 5}};
  unsigned seed = 6100;
  for (const auto& sh : shapes) {
    const auto s = kern::conv2d_shape(sh[0], sh[1], sh[3], sh[4], sh[2], 1, 1, 1, 1, 0, 0);
    auto one = s;
    one.N = 1;
    const int64_t L = s.P * s.Q, xs = s.C * L, ys = s.K * L;
    const auto x = engine::test::random_vector(s.N * xs, ++seed),
               w = engine::test::random_vector(s.K * s.C, ++seed),
               b = engine::test::random_vector(s.K, ++seed),
               t = engine::test::random_vector(s.N * s.K, ++seed),
               r = engine::test::random_vector(s.N * ys, ++seed),
               dy = engine::test::random_vector(s.N * ys, ++seed);
    std::vector<float> want_y(s.N * ys), want_dx(s.N * xs), want_dw(s.K * s.C), db(s.K);
    for (int64_t n = 0; n < s.N; ++n) {
      kc::conv2d_forward_fused<float>(one, x.data() + n * xs, w.data(), b.data(), t.data() + n * s.K,
                                      r.data() + n * ys, want_y.data() + n * ys);
      kc::conv2d_backward_input<float>(one, dy.data() + n * ys, w.data(), want_dx.data() + n * xs);
      // dw (K x C) += dy_n (K x L) @ x_n^T (L x C): the per-image chain over the pixels.
      kc::gemm<float>(false, true, s.K, s.C, L, 1.0f, dy.data() + n * ys, L, x.data() + n * xs, L,
                      n == 0 ? 0.0f : 1.0f, want_dw.data(), s.C);
    }
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      std::vector<float> y(want_y.size(), 7.0f), dx(want_dx.size(), 7.0f), dw(want_dw.size(), 7.0f);
      kc::conv2d_forward_fused<float>(s, x.data(), w.data(), b.data(), t.data(), r.data(), y.data());
      kc::conv2d_backward_input<float>(s, dy.data(), w.data(), dx.data());
      kc::conv2d_backward_weight<float>(s, dy.data(), x.data(), dw.data(), db.data());
      std::ostringstream where;
      where << "N" << s.N << " C" << s.C << " K" << s.K << " " << s.H << "x" << s.W << " threads " << threads;
      EXPECT_TRUE(bitwise_equal(y, want_y)) << "y " << where.str();
      EXPECT_TRUE(bitwise_equal(dx, want_dx)) << "dx " << where.str();
      EXPECT_TRUE(bitwise_equal(dw, want_dw)) << "dw " << where.str();
    }
  }
}

}  // namespace
