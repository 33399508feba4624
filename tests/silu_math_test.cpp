// silu_math.h (the float SiLU of silu_span.h and the fused group_norm_silu): accuracy against the
// definition evaluated in double (x / (1 + exp(-x)), std::exp), the documented edge values, and the
// one-lane (portable) code bitwise equal to the 8-lane AVX2 code. The 16-lane AVX-512 code is compared
// with the others through the kernels (GroupNormSilu.KernelsBitwiseIndependentOfIsaPath).
#include "kernels/cpu/silu_math.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/silu_span.h"
#include "tests/test_util.h"

namespace {

namespace sm = kern::cpu::silu_math;

// Test inputs: a dense sweep of [-100, 100] plus the exp range ends and the non-finite values.
std::vector<float> inputs() {
  std::vector<float> v;
  for (int i = -200000; i <= 200000; ++i) v.push_back(float(i) * 5e-4f);
  for (float x :
       {-89.0f, -88.72f, -88.38f, -88.0f, -87.4f, -87.3f, -87.2f, -20.0f, -1.2784645f, -1e-30f, 0.0f,
        -0.0f,  1e-30f,  87.2f,   87.3f,  87.4f,  88.5f,  89.0f,  1e6f,   -1e6f,       3.4e38f, -3.4e38f})
    v.push_back(x);
  return v;
}

double silu_ref(double x) { return x / (1.0 + std::exp(-x)); }
double silu_grad_ref(double x) {
  const double s = 1.0 / (1.0 + std::exp(-x));
  return s * (1.0 + x * (1.0 - s));
}

// Bound: 4 float ulp of the true value. Over every 7th float in [-88, 88] the worst error measured 3.1 ulp
// (x = -16.68); the v * sigmoid(v) of simd_math.h that this replaced measured 3.7 ulp there.
TEST(SiluMath, ForwardWithinFourUlpOfTheDefinition) {
  const std::vector<float> x = inputs();
  std::vector<float> y(x.size());
  kern::cpu::detail::silu_span(x.data(), y.data(), int64_t(x.size()));
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double ref = silu_ref(double(x[i]));
    if (std::abs(ref) < 1e-30) {  // v below about -74: the result is below 1e-26, exact or -0 (documented)
      ASSERT_LE(std::abs(double(y[i])), 1e-26) << "silu(" << x[i] << ")";
      continue;
    }
    const double ulp = std::ldexp(1.0, std::ilogb(float(ref)) - 23);  // one float ulp at ref
    worst = std::max(worst, std::abs(double(y[i]) - ref) / ulp);
    ASSERT_LE(std::abs(double(y[i]) - ref), 4 * ulp) << "silu(" << x[i] << ") = " << y[i] << ", want " << ref;
  }
  RecordProperty("worst_ulp", std::to_string(worst));
}

TEST(SiluMath, BackwardWithinFloatRoundingOfTheDefinition) {
  const std::vector<float> x = inputs();
  std::vector<float> dy(x.size(), 1.0f), dx(x.size());
  kern::cpu::detail::silu_grad_span(x.data(), dy.data(), dx.data(), int64_t(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i]) || std::abs(x[i]) > 1e5f) continue;
    // |silu'| <= 1.1; s * (1 + x * (1 - s)) cancels near x = -1.28, so the bound is absolute.
    ASSERT_NEAR(dx[i], silu_grad_ref(double(x[i])), 1e-6 + 4e-7 * std::abs(double(x[i])))
        << "silu'(" << x[i] << ")";
  }
}

TEST(SiluMath, EdgeValues) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(sm::silu1(-inf)));  // -inf / inf, as PyTorch
  EXPECT_EQ(sm::silu1(inf), inf);
  EXPECT_TRUE(std::isnan(sm::silu1(nan)));
  EXPECT_EQ(sm::silu1(100.0f), 100.0f);  // 1 + e^-100 rounds to 1
  EXPECT_EQ(sm::silu1(87.5f), 87.5f);
  EXPECT_EQ(sm::silu1(-100.0f), 0.0f);  // -100 / inf = -0 (true value -3.7e-42)
  EXPECT_EQ(sm::silu1(0.0f), 0.0f);
  EXPECT_EQ(sm::exp_wide1(0.0f), 1.0f);
  EXPECT_EQ(sm::exp_wide1(89.0f), inf);
  EXPECT_EQ(sm::exp_wide1(inf), inf);
  EXPECT_GT(sm::exp_wide1(-inf), 0.0f);  // clamped at exp(-87.3): 1 + e = 1 in every use
  EXPECT_LT(sm::exp_wide1(-inf), 2e-38f);
  EXPECT_TRUE(std::isnan(sm::exp_wide1(nan)));
  EXPECT_EQ(sm::silu_grad1(100.0f, 2.0f), 2.0f);
  EXPECT_EQ(sm::silu_grad1(-100.0f, 2.0f), 0.0f);
}

#ifdef KERN_CPU_AVX2
// The portable one-lane code gives the AVX2 code's bits (NaN: any NaN).
TEST(SiluMath, OneLaneCodeIsBitwiseTheAvx2Code) {
  std::vector<float> x = inputs();
  x.push_back(std::numeric_limits<float>::infinity());
  x.push_back(-std::numeric_limits<float>::infinity());
  x.push_back(std::numeric_limits<float>::quiet_NaN());
  while (x.size() % 8) x.push_back(1.5f);
  const std::vector<float> dy = engine::test::normal_vector<float>(x.size(), 7, 0.0, 1.0);
  for (size_t i = 0; i < x.size(); i += 8) {
    alignas(32) float f[8], g[8], e[8];
    _mm256_store_ps(f, sm::silu8(_mm256_loadu_ps(&x[i])));
    _mm256_store_ps(g, sm::silu_grad8(_mm256_loadu_ps(&x[i]), _mm256_loadu_ps(&dy[i])));
    _mm256_store_ps(e, sm::exp_wide8(_mm256_loadu_ps(&x[i])));
    for (int l = 0; l < 8; ++l) {
      ASSERT_TRUE(engine::test::same_bits_nan_equal(f[l], sm::silu1(x[i + l]))) << "silu(" << x[i + l] << ")";
      ASSERT_TRUE(engine::test::same_bits_nan_equal(g[l], sm::silu_grad1(x[i + l], dy[i + l])))
          << "silu'(" << x[i + l] << ")";
      ASSERT_TRUE(engine::test::same_bits_nan_equal(e[l], sm::exp_wide1(x[i + l])))
          << "exp(" << x[i + l] << ")";
    }
  }
}
#endif

}  // namespace
