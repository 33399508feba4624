// The small-D attention softmax's 2^t (simd_math.h exp2_nonpos and its AVX-512 and portable twins, through
// kern::cpu::detail::attn_small_exp2_*) and the softmax rows it produces:
//  * relative error <= 1.75e-7 against exp2 in double over -126 <= t <= 0 (every 257th float of the whole
//    range, every 16th of [-1, -1/4]; the exhaustive sweep measured 1.72e-7, bench/RESULTS.md);
//  * 2^0 = 1 exactly, 0 below -126 and for -inf, NaN for NaN; bitwise equal on every ISA path (also on
//    every float of [-126, -125] and on 0 < t < 127);
//  * softmax rows (read off o with v = the identity) within an a-priori bound of the float64 softmax of the
//    same inputs, and summing to 1 within (Lk + 8) u, on every ISA path.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/attention_small.h"
#include "kernels/cpu/cpu_kernels.h"
#include "tests/test_util.h"

namespace {

namespace kc = kern::cpu;
using engine::test::IsaGuard;
using engine::test::normal_vector;
using engine::test::same_bits_nan_equal;
using engine::test::supported_isas;
using kc::CpuIsa;

constexpr double kU = 5.9604644775390625e-8;  // float unit roundoff 2^-24

using Exp2Fn = void (*)(const float*, float*, int64_t);

// The exp2 of every ISA build this CPU can run, scalar first.
std::vector<Exp2Fn> exp2_builds() {
  std::vector<Exp2Fn> v;
  for (CpuIsa isa : supported_isas()) {
    if (isa == CpuIsa::Scalar) v.push_back(kc::detail::attn_small_exp2_scalar);
#if defined(__x86_64__)
    if (isa == CpuIsa::Avx2) v.push_back(kc::detail::attn_small_exp2_avx2);
    if (isa == CpuIsa::Avx512) v.push_back(kc::detail::attn_small_exp2_avx512);
#endif
  }
  return v;
}

float from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

// Inputs: the negative floats from -0 down to -126 with bit-pattern step `step`, then every `fine`-th
// float of [-1, -1/4] (fractions near +-1/2, where the error peaks), padded to a multiple of 16 with 0.
std::vector<float> sweep(uint32_t step, uint32_t fine) {
  std::vector<float> t;
  const uint32_t neg0 = 0x80000000u, m126 = 0xC2FC0000u;  // -0.0f, -126.0f
  for (uint64_t b = neg0; b <= m126; b += step) t.push_back(from_bits(uint32_t(b)));
  t.push_back(-126.0f);
  for (uint64_t b = 0xBE800000u; b <= 0xBF800000u; b += fine) t.push_back(from_bits(uint32_t(b)));
  while (t.size() % 16) t.push_back(0.0f);
  return t;
}

TEST(AttentionSmall, Exp2RelativeErrorBoundOverWholeRange) {
  const std::vector<float> t = sweep(257, 16);
  ASSERT_GT(t.size(), 5000000u);
  for (Exp2Fn f : exp2_builds()) {
    std::vector<float> y(t.size());
    f(t.data(), y.data(), int64_t(t.size()));
    double worst = 0, worst_t = 0;
    for (size_t i = 0; i < t.size(); ++i) {
      const double want = std::exp2(double(t[i]));
      const double rel = std::abs(double(y[i]) - want) / want;
      if (rel > worst) worst = rel, worst_t = t[i];
    }
    EXPECT_LE(worst, 1.75e-7) << "at t = " << worst_t;
  }
}

TEST(AttentionSmall, Exp2SpecialValuesAndIsaPathsBitwiseEqual) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> t = {0.0f,   -0.0f, -inf,  nan,    -126.0f, -126.5f,  -127.0f, -200.0f,
                          -1e30f, -1.0f, -0.5f, -0.25f, -3.0f,   -125.75f, -1e-30f, -60.0f};
  const std::vector<Exp2Fn> builds = exp2_builds();
  std::vector<float> y0(t.size());
  builds[0](t.data(), y0.data(), int64_t(t.size()));
  EXPECT_EQ(y0[0], 1.0f);
  EXPECT_EQ(y0[1], 1.0f);
  EXPECT_EQ(y0[2], 0.0f);
  EXPECT_TRUE(std::isnan(y0[3]));
  EXPECT_EQ(y0[4], std::ldexp(1.0f, -126));
  for (int i : {5, 6, 7, 8}) EXPECT_EQ(y0[i], 0.0f) << "t = " << t[i];
  EXPECT_EQ(y0[9], 0.5f);
  EXPECT_EQ(y0[12], 0.125f);
  EXPECT_EQ(y0[14], 1.0f);
  // Bitwise across builds, on the specials and on a sweep.
  const std::vector<float> s = sweep(997, 101);
  std::vector<float> all = t;
  all.insert(all.end(), s.begin(), s.end());
  std::vector<float> ref(all.size());
  builds[0](all.data(), ref.data(), int64_t(all.size()));
  for (size_t b = 1; b < builds.size(); ++b) {
    std::vector<float> y(all.size());
    builds[b](all.data(), y.data(), int64_t(all.size()));
    for (size_t i = 0; i < all.size(); ++i)
      ASSERT_TRUE(same_bits_nan_equal(y[i], ref[i])) << "build " << b << " t = " << all[i];
  }
}

// The AVX-512 exp2 applies 2^n by vscalefps instead of multiplying by a constructed 2^n (simd_math_avx512.h):
// bitwise equal builds on every float of [-126, -125] (results at the smallest normals, n = -126 and -125),
// on the whole-range sweep, and on slightly positive t (the backward's s - l2 can round above 0) up to 127.
TEST(AttentionSmall, Exp2IsaPathsBitwiseEqualNearUnderflowAndSlightlyAboveZero) {
  std::vector<float> t = sweep(257, 16);
  for (uint32_t b = 0xC2FA0000u; b <= 0xC2FC0000u; ++b) t.push_back(from_bits(b));  // [-125, -126]
  for (float x = 1e-9f; x < 127.0f; x *= 1.001f) t.push_back(x);
  while (t.size() % 16) t.push_back(0.0f);
  const std::vector<Exp2Fn> builds = exp2_builds();
  std::vector<float> ref(t.size());
  builds[0](t.data(), ref.data(), int64_t(t.size()));
  EXPECT_EQ(ref[t.size() - 1], 1.0f);
  for (size_t b = 1; b < builds.size(); ++b) {
    std::vector<float> y(t.size());
    builds[b](t.data(), y.data(), int64_t(t.size()));
    for (size_t i = 0; i < t.size(); ++i)
      ASSERT_TRUE(same_bits_nan_equal(y[i], ref[i])) << "build " << b << " t = " << t[i];
  }
}

// Softmax rows: with Lk = D and v the identity, o row i is row i of softmax(scale q k^T) (times 1/sum).
TEST(AttentionSmall, SoftmaxRowsWithinBoundOfFloat64) {
  IsaGuard guard;
  for (CpuIsa isa : supported_isas())
    for (int64_t D : {8, 16})
      for (double sd : {0.5, 2.0}) {
        SCOPED_TRACE(::testing::Message() << "isa " << int(isa) << " D " << D << " sd " << sd);
        kc::set_cpu_isa(isa);
        const int64_t BH = 3, Lq = 37, Lk = D;
        const double scale = 1.0 / std::sqrt(double(D));
        const std::vector<float> q = normal_vector<float>(BH * Lq * D, unsigned(D * 7 + sd * 10), 0.0, sd);
        const std::vector<float> k =
            normal_vector<float>(BH * Lk * D, unsigned(D * 7 + sd * 10 + 1), 0.0, sd);
        std::vector<float> v(BH * Lk * D, 0.0f);
        for (int64_t h = 0; h < BH; ++h)
          for (int64_t j = 0; j < Lk; ++j) v[(h * Lk + j) * D + j] = 1.0f;
        std::vector<float> o(BH * Lq * D), lse(BH * Lq);
        kc::attention_forward<float>(BH, Lq, Lk, D, scale, q.data(), k.data(), v.data(), o.data(),
                                     lse.data());
        for (int64_t h = 0; h < BH; ++h)
          for (int64_t i = 0; i < Lq; ++i) {
            std::vector<double> s(Lk);
            double smax = -1e300, sabs = 0;
            for (int64_t j = 0; j < Lk; ++j) {
              double acc = 0, mag = 0;
              for (int64_t d = 0; d < D; ++d) {
                const double a = q[(h * Lq + i) * D + d], b = k[(h * Lk + j) * D + d];
                acc += a * b;
                mag += std::abs(a * b);
              }
              s[j] = acc * scale;
              smax = std::max(smax, s[j]);
              sabs = std::max(sabs, mag * scale);
            }
            double sum = 0;
            for (double x : s) sum += std::exp(x - smax);
            // A score is off by <= (D + 2) u sabs (the chain and the two scale roundings), s - max by
            // twice that; the exp2 adds 1.72e-7 relative (< 3 u), the row sum Lk u, 1 / sum and the
            // product 2 u.
            const double rel = (2.0 * (D + 2) * sabs + 3 + Lk + 4) * kU;
            double got_sum = 0;
            for (int64_t j = 0; j < Lk; ++j) {
              const double want = std::exp(s[j] - smax) / sum, got = o[(h * Lq + i) * D + j];
              got_sum += got;
              ASSERT_LE(std::abs(got - want), rel * want + 1e-300) << "row " << i << " key " << j;
            }
            EXPECT_NEAR(got_sum, 1.0, (Lk + 8) * kU) << "row " << i;
            const double want_lse = smax + std::log(sum);
            EXPECT_NEAR(lse[h * Lq + i], want_lse, rel * (std::abs(want_lse) + 1.0)) << "row " << i;
          }
      }
}

}  // namespace
