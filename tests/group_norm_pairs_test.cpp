// The CPU group_norm / group_norm_silu forward processes groups in pairs (their statistics in one
// interleaved loop on AVX-512, kernels/cpu/group_norm.cpp): every group's output and statistics must be
// bitwise those of the same group normalised alone (N = 1, one group: the unpaired path), on every ISA
// path this CPU has (forced), for any thread count, at odd sizes: an odd number of groups (a pair and a
// single group), one channel per group, HW not a multiple of 16 (and HW = 1), N = 1, and a pair in which
// one group takes the two-pass variance fallback (first element an outlier) and the other does not.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "tests/test_util.h"

namespace {

namespace kc = kern::cpu;
using engine::test::supported_isas;

struct Dims {
  int64_t N, C, HW, G;
};
// {N, C, HW, G}: odd N*G with Cg = 1 and HW % 16 = 5; Cg = 2 with HW = 13; HW = 16 exactly; HW = 1;
// the model's 32 groups at 28x28; G = 1 with an odd N; N = 1 with one group (nothing to pair); M = 2202
// elements per group (>= 1024: the outlier below takes the two-pass fallback, see there).
const Dims kDims[] = {{1, 3, 37, 3},    {1, 6, 13, 3}, {3, 4, 16, 2}, {2, 6, 1, 3},
                      {1, 32, 784, 32}, {5, 3, 49, 1}, {1, 2, 21, 1}, {1, 4, 1101, 2}};

bool same_bits(const void* a, const void* b, size_t bytes) { return std::memcmp(a, b, bytes) == 0; }

// Runs group_norm_silu_forward and group_norm_forward on (N, C, HW) with G groups and `threads` threads:
// {silu y, group_norm y, stats (double), mean, rstd}.
struct Out {
  std::vector<float> ys, y, mean, rstd;
  std::vector<double> stats;
};
Out run(int64_t N, int64_t C, int64_t HW, int64_t G, const float* x, const float* gamma, const float* beta,
        int threads) {
  Out o;
  o.ys.resize(N * C * HW), o.y.resize(N * C * HW), o.mean.resize(N * G), o.rstd.resize(N * G);
  o.stats.resize(2 * N * G);
  const int old = omp_get_max_threads();
  omp_set_num_threads(threads);
  kc::group_norm_silu_forward<float>(N, C, HW, G, 1e-5, x, gamma, beta, o.ys.data(), o.stats.data());
  kc::group_norm_forward<float>(N, C, HW, G, 1e-5, x, gamma, beta, o.y.data(), o.mean.data(), o.rstd.data());
  omp_set_num_threads(old);
  return o;
}

TEST(GroupNormPairs, EachGroupBitwiseAsNormalisedAlone) {
  engine::test::IsaGuard guard;
  unsigned seed = 500;
  for (const Dims& d : kDims) {
    const int64_t Cg = d.C / d.G, M = Cg * d.HW, NG = d.N * d.G;
    auto x = engine::test::normal_vector<float>(d.N * d.C * d.HW, seed, 3.0, 2.0);
    const auto gamma = engine::test::normal_vector<float>(d.C, seed + 1, 1.0, 0.5),
               beta = engine::test::normal_vector<float>(d.C, seed + 2, 0.0, 1.0);
    seed += 10;
    // Group 1 (the second of the first pair): an outlier first element K. The one-pass sums around K give
    // ss / s2 ~ 1 / M, so where M > 1024 (the last case) its variance takes the two-pass fallback
    // (ss < s2 / 1024, group_norm_loops.h) while group 0's does not.
    if (NG >= 2 && M >= 2) x[M] = 1.0e4f;
    for (kc::CpuIsa isa : supported_isas()) {
      kc::set_cpu_isa(isa);
      const Out ref = run(d.N, d.C, d.HW, d.G, x.data(), gamma.data(), beta.data(), 1);
      for (int threads : {2, 3, 16}) {
        SCOPED_TRACE(::testing::Message() << kc::cpu_isa_name(isa) << " N" << d.N << " C" << d.C << " HW"
                                          << d.HW << " G" << d.G << " threads " << threads);
        const Out o = run(d.N, d.C, d.HW, d.G, x.data(), gamma.data(), beta.data(), threads);
        EXPECT_TRUE(same_bits(o.ys.data(), ref.ys.data(), 4 * o.ys.size())) << "silu y vs 1 thread";
        EXPECT_TRUE(same_bits(o.y.data(), ref.y.data(), 4 * o.y.size())) << "y vs 1 thread";
        EXPECT_TRUE(same_bits(o.stats.data(), ref.stats.data(), 8 * o.stats.size())) << "stats vs 1 thread";
      }
      for (int64_t ng = 0; ng < NG; ++ng) {
        SCOPED_TRACE(::testing::Message() << kc::cpu_isa_name(isa) << " N" << d.N << " C" << d.C << " HW"
                                          << d.HW << " G" << d.G << " group " << ng << " of " << NG);
        const int64_t c0 = (ng % d.G) * Cg;
        const Out one = run(1, Cg, d.HW, 1, x.data() + ng * M, gamma.data() + c0, beta.data() + c0, 2);
        EXPECT_TRUE(same_bits(one.ys.data(), ref.ys.data() + ng * M, 4 * M)) << "silu y";
        EXPECT_TRUE(same_bits(one.y.data(), ref.y.data() + ng * M, 4 * M)) << "group_norm y";
        EXPECT_TRUE(same_bits(one.stats.data(), ref.stats.data() + 2 * ng, 16)) << "stats (mean, rstd)";
        EXPECT_TRUE(same_bits(one.mean.data(), ref.mean.data() + ng, 4)) << "mean";
        EXPECT_TRUE(same_bits(one.rstd.data(), ref.rstd.data() + ng, 4)) << "rstd";
      }
    }
  }
}

// The paired statistics against a float64 two-pass reference (long double sums), for a pair whose second
// group takes the two-pass fallback (outlier first element, M = 1200 > 1024) and whose first does not.
TEST(GroupNormPairs, PairedStatisticsMatchFloat64Reference) {
  engine::test::IsaGuard guard;
  const int64_t N = 1, C = 4, HW = 600, G = 2, M = C / G * HW;
  auto x = engine::test::normal_vector<float>(N * C * HW, 7, 3.0, 0.01);
  x[M] = 1.0e4f;  // group 1's first element
  for (kc::CpuIsa isa : supported_isas()) {
    kc::set_cpu_isa(isa);
    SCOPED_TRACE(kc::cpu_isa_name(isa));
    const Out o = run(N, C, HW, G, x.data(), nullptr, nullptr, 2);
    for (int64_t g = 0; g < G; ++g) {
      long double mean = 0, ss = 0;
      for (int64_t i = 0; i < M; ++i) mean += x[g * M + i];
      mean /= M;
      for (int64_t i = 0; i < M; ++i) ss += (x[g * M + i] - mean) * (x[g * M + i] - mean);
      const double rstd = double(1.0L / std::sqrt(ss / M + 1e-5L));
      EXPECT_NEAR(o.stats[2 * g + 1], rstd, 1e-12 * rstd) << "group " << g;
      // The shifted mean K + sum(x - K) / M: exact differences, M double roundings of terms up to |K|.
      double amax = 0;
      for (int64_t i = 0; i < M; ++i) amax = std::max(amax, std::abs(double(x[g * M + i])));
      EXPECT_NEAR(o.stats[2 * g], double(mean), 1e-12 * amax) << "group " << g;
    }
  }
}

}  // namespace
