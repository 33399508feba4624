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
        const std::string where = "N" + std::to_string(s.N) + " C" + std::to_string(s.C) + " K" +
                                  std::to_string(s.K) + " " + std::to_string(s.H) + "x" +
                                  std::to_string(s.W) + " isa " + kc::cpu_isa_name(isa) + " threads " +
                                  std::to_string(threads);
        EXPECT_TRUE(bitwise_equal(y, want.y)) << "y " << where;
        EXPECT_TRUE(bitwise_equal(dx, want.dx)) << "dx " << where;
        EXPECT_TRUE(bitwise_equal(dw, want.dw)) << "dw " << where;
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

}  // namespace
