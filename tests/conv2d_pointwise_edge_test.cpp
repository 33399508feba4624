// Edge cases of the CPU pointwise (1x1) conv2d paths that group several small images into one GEMM
// (kernels/cpu/conv2d.cpp, P*Q <= 196): the group-size boundary (P*Q = 195, 196, 197), one pixel, one
// channel, K <= 4 output channels, batch 1 and batches that are not multiples of the group size or the
// thread count, more threads than images (16), every combination of the epilogue terms (b, t, r, none),
// and the bias gradients db and dt of the fused weight gradient (its threads split the smaller operand's
// rows, or the larger one's when the smaller side has at most 16 channels).
// Every output is compared bit for bit with its documented chain (tests/conv2d_chains.h):
//   y[n][k][p]  = e (+ r[n][k][p]), e = b[k] + t[n][k] (the terms given), then fma over c in order;
//   dx[n][c][p] = 0, then fma over k in order;   dw[k][c] = 0, then fma over n, then p, in order;
//   db[k]: float64 partials p[i % 8] over pixels i, images in order, ((p0+p1)+(p2+p3))+((p4+p5)+(p6+p7));
//   dt[n][k]: one float64 chain over the pixels in order; both rounded once.
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

class ConvPointwiseEdges : public engine::test::CpuSettingsRestored {};

TEST_F(ConvPointwiseEdges, EveryPassAndBiasGradientIsItsChainAtGroupBoundaries) {
  // {N, C, K, H, W}
  // The last three: a weight gradient whose smaller side has <= 16 channels and enough work for threads
  // (the threads then split the larger side: x's rows, grouped and not, or dy's).
  const int64_t shapes[][5] = {{9, 1, 1, 14, 14},   {3, 5, 3, 13, 15},  {4, 6, 2, 197, 1},
                               {17, 17, 4, 1, 1},   {2, 3, 17, 14, 14}, {5, 64, 192, 7, 7},
                               {1, 7, 9, 14, 14},   {6, 16, 48, 2, 3},  {3, 40, 8, 14, 14},
                               {3, 256, 4, 14, 14}, {2, 96, 8, 20, 20}, {3, 8, 64, 14, 14}};
  unsigned seed = 7300;
  for (const auto& sh : shapes) {
    const auto s = kern::conv2d_shape(sh[0], sh[1], sh[3], sh[4], sh[2], 1, 1, 1, 1, 0, 0);
    const int64_t L = s.P * s.Q;
    const auto x = engine::test::random_vector(s.N * s.C * L, ++seed),
               w = engine::test::random_vector(s.K * s.C, ++seed),
               b = engine::test::random_vector(s.K, ++seed),
               t = engine::test::random_vector(s.N * s.K, ++seed),
               r = engine::test::random_vector(s.N * s.K * L, ++seed);
    auto dy = engine::test::random_vector(s.N * s.K * L, ++seed);
    for (size_t i = 0; i < dy.size(); ++i) dy[i] *= std::ldexp(1.0f, int(i % 23) - 11);
    // The definitions.
    std::vector<std::vector<float>> want_y;
    for (int terms = 0; terms < 8; ++terms)  // bit 0: b, bit 1: t, bit 2: r
      want_y.push_back(engine::test::conv2d_forward_chain(s, x, w, terms & 1 ? b.data() : nullptr,
                                                          terms & 2 ? t.data() : nullptr,
                                                          terms & 4 ? r.data() : nullptr));
    const auto want_dx = engine::test::pointwise_backward_input_chain(s, dy, w),
               want_dw = engine::test::conv2d_bwd_weight_chain(s, dy, x),
               want_db = engine::test::conv2d_db_chain(s, dy), want_dt = engine::test::conv2d_dt_chain(s, dy);
    for (kc::CpuIsa isa : engine::test::supported_isas())
      for (int threads : {1, 2, 3, 16}) {
        kc::set_cpu_isa(isa);
        omp_set_num_threads(threads);
        const std::string where = "N" + std::to_string(s.N) + " C" + std::to_string(s.C) + " K" +
                                  std::to_string(s.K) + " " + std::to_string(s.H) + "x" +
                                  std::to_string(s.W) + " isa " + kc::cpu_isa_name(isa) + " threads " +
                                  std::to_string(threads);
        for (int terms = 0; terms < 8; ++terms) {
          std::vector<float> y(want_y[terms].size(), 7.0f);
          kc::conv2d_forward_fused<float>(s, x.data(), w.data(), terms & 1 ? b.data() : nullptr,
                                          terms & 2 ? t.data() : nullptr, terms & 4 ? r.data() : nullptr,
                                          y.data());
          EXPECT_TRUE(bitwise_equal(y, want_y[terms])) << "y terms " << terms << " " << where;
        }
        std::vector<float> dx(want_dx.size(), 7.0f);
        kc::conv2d_backward_input<float>(s, dy.data(), w.data(), dx.data());
        EXPECT_TRUE(bitwise_equal(dx, want_dx)) << "dx " << where;
        for (int grads = 0; grads < 4; ++grads) {  // bit 0: db, bit 1: dt
          std::vector<float> dw(want_dw.size(), 7.0f), db(s.K, 99.0f), dt(s.N * s.K, 99.0f);
          kc::conv2d_backward_weight_fused<float>(s, dy.data(), x.data(), dw.data(),
                                                  grads & 1 ? db.data() : nullptr,
                                                  grads & 2 ? dt.data() : nullptr);
          EXPECT_TRUE(bitwise_equal(dw, want_dw)) << "dw grads " << grads << " " << where;
          if (grads & 1) {
            EXPECT_TRUE(bitwise_equal(db, want_db)) << "db grads " << grads << " " << where;
          }
          if (grads & 2) {
            EXPECT_TRUE(bitwise_equal(dt, want_dt)) << "dt grads " << grads << " " << where;
          }
        }
      }
  }
}

// The bias gradients of the im2col weight gradient's image loop when the threads' blocks outnumber the
// output channels (K = 3 and 1: some blocks own no bias channel) and for a pointwise conv too large to be
// grouped (P*Q = 400, dw's columns split): db, dt and dw their documented chains.
TEST_F(ConvPointwiseEdges, BiasGradientsWhenThreadBlocksOutnumberChannels) {
  const kern::Conv2dShape shapes[] = {kern::conv2d_shape(4, 64, 17, 17, 3, 3, 3, 2, 2, 1, 1),
                                      kern::conv2d_shape(3, 96, 20, 20, 1, 3, 3, 2, 2, 1, 1),
                                      kern::conv2d_shape(3, 48, 20, 20, 40, 1, 1, 1, 1, 0, 0)};
  unsigned seed = 8300;
  for (const auto& s : shapes) {
    const int64_t PQ = s.P * s.Q;
    auto dy = engine::test::random_vector(s.N * s.K * PQ, ++seed);
    for (size_t i = 0; i < dy.size(); ++i) dy[i] *= std::ldexp(1.0f, int(i % 23) - 11);
    const auto x = engine::test::random_vector(s.N * s.C * s.H * s.W, ++seed);
    const auto want_db = engine::test::conv2d_db_chain(s, dy), want_dt = engine::test::conv2d_dt_chain(s, dy);
    const auto want_dw = engine::test::conv2d_bwd_weight_chain(s, dy, x);
    for (int threads : {1, 2, 3, 16}) {
      omp_set_num_threads(threads);
      std::vector<float> dw(want_dw.size(), 7.0f), db(s.K, 99.0f), dt(s.N * s.K, 99.0f);
      kc::conv2d_backward_weight_fused<float>(s, dy.data(), x.data(), dw.data(), db.data(), dt.data());
      const std::string where = "C" + std::to_string(s.C) + " K" + std::to_string(s.K) + " R" +
                                std::to_string(s.R) + " threads " + std::to_string(threads);
      EXPECT_TRUE(bitwise_equal(dw, want_dw)) << "dw " << where;
      EXPECT_TRUE(bitwise_equal(db, want_db)) << "db " << where;
      EXPECT_TRUE(bitwise_equal(dt, want_dt)) << "dt " << where;
    }
  }
}

}  // namespace
