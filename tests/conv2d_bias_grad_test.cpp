// Tests of the conv2d bias gradient (kernels/cpu/conv2d.cpp, conv2d_backward_weight's db): its documented
// summation order (tests/conv2d_chains.h), bit for bit in float64 and float32, for any thread count.
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

using engine::test::conv2d_db_chain;
using engine::test::conv2d_dt_chain;

class ConvBiasGrad : public engine::test::CpuSettingsRestored {};

// Output sides 1x1 (fewer pixels than partials), 7x7 and 9x9 (ragged), 14x14 and 28x28 (im2col and
// Winograd weight-gradient paths, 1x1 convs), float64 and float32, 1 to 4 threads.
template <typename T>
void check_documented_order() {
  const kern::Conv2dShape shapes[] = {kern::conv2d_shape(3, 4, 1, 1, 5, 1, 1, 1, 1, 0, 0),
                                      kern::conv2d_shape(5, 8, 7, 7, 40, 3, 3, 1, 1, 1, 1),
                                      kern::conv2d_shape(2, 3, 18, 18, 6, 3, 3, 2, 2, 1, 1),
                                      kern::conv2d_shape(4, 32, 14, 14, 32, 3, 3, 1, 1, 1, 1),
                                      kern::conv2d_shape(2, 16, 28, 28, 24, 1, 1, 1, 1, 0, 0)};
  unsigned seed = 900;
  for (const auto& s : shapes) {
    // Values spread over many binades, so that a different summation order changes float64 bits.
    auto dy = engine::test::random_vector<T>(s.N * s.K * s.P * s.Q, ++seed);
    for (size_t i = 0; i < dy.size(); ++i) dy[i] *= T(std::ldexp(1.0, int(i % 23) - 11));
    const auto x = engine::test::random_vector<T>(s.N * s.C * s.H * s.W, ++seed);
    const auto want = conv2d_db_chain(s, dy);
    for (int threads : {1, 2, 4}) {
      omp_set_num_threads(threads);
      std::vector<T> dw(s.K * s.C * s.R * s.S), db(s.K, T(99));
      kc::conv2d_backward_weight<T>(s, dy.data(), x.data(), dw.data(), db.data());
      EXPECT_TRUE(bitwise_equal(db, want))
          << "N" << s.N << " K" << s.K << " P" << s.P << " threads " << threads;
    }
  }
}

TEST_F(ConvBiasGrad, Float64IsTheDocumentedSumBitForBit) { check_documented_order<double>(); }
TEST_F(ConvBiasGrad, Float32IsTheDocumentedSumBitForBit) { check_documented_order<float>(); }

// conv2d_backward_weight_fused: dw and db are conv2d_backward_weight's bits, and dt (N, K) is the
// documented per-image sum (one float64 chain over the pixels in order, rounded once: sum(dy, {2, 3})),
// for any thread count; db and dt each optional. The ragged 9x9 and 1x1 shapes exercise the tails.
template <typename T>
void check_fused_sample_bias_grad() {
  const kern::Conv2dShape shapes[] = {kern::conv2d_shape(3, 4, 1, 1, 5, 1, 1, 1, 1, 0, 0),
                                      kern::conv2d_shape(5, 8, 7, 7, 40, 3, 3, 1, 1, 1, 1),
                                      kern::conv2d_shape(2, 3, 18, 18, 6, 3, 3, 2, 2, 1, 1),
                                      kern::conv2d_shape(4, 32, 14, 14, 32, 3, 3, 1, 1, 1, 1),
                                      kern::conv2d_shape(2, 16, 28, 28, 24, 1, 1, 1, 1, 0, 0)};
  unsigned seed = 1900;
  for (const auto& s : shapes) {
    const int64_t PQ = s.P * s.Q;
    auto dy = engine::test::random_vector<T>(s.N * s.K * PQ, ++seed);
    for (size_t i = 0; i < dy.size(); ++i) dy[i] *= T(std::ldexp(1.0, int(i % 23) - 11));
    const auto x = engine::test::random_vector<T>(s.N * s.C * s.H * s.W, ++seed);
    const auto want_dt = conv2d_dt_chain(s, dy);
    const auto want_db = conv2d_db_chain(s, dy);
    std::vector<T> want_dw(s.K * s.C * s.R * s.S);
    kc::conv2d_backward_weight<T>(s, dy.data(), x.data(), want_dw.data(), nullptr);
    for (int threads : {1, 2, 4}) {
      omp_set_num_threads(threads);
      for (bool with_db : {true, false}) {
        std::vector<T> dw(want_dw.size(), T(7)), db(s.K, T(99)), dt(s.N * s.K, T(99));
        kc::conv2d_backward_weight_fused<T>(s, dy.data(), x.data(), dw.data(), with_db ? db.data() : nullptr,
                                            dt.data());
        const std::string where = "N" + std::to_string(s.N) + " K" + std::to_string(s.K) + " P" +
                                  std::to_string(s.P) + " threads " + std::to_string(threads) +
                                  (with_db ? " with db" : " without db");
        EXPECT_TRUE(bitwise_equal(dt, want_dt)) << where;
        EXPECT_TRUE(bitwise_equal(dw, want_dw)) << where;
        if (with_db) {
          EXPECT_TRUE(bitwise_equal(db, want_db)) << where;
        }
      }
    }
  }
}

TEST_F(ConvBiasGrad, FusedSampleBiasGradFloat64IsThePerImageSumBitForBit) {
  check_fused_sample_bias_grad<double>();
}
TEST_F(ConvBiasGrad, FusedSampleBiasGradFloat32IsThePerImageSumBitForBit) {
  check_fused_sample_bias_grad<float>();
}

}  // namespace
