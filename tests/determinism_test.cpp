// CPU kernels whose results must not depend on the thread count or on the batch a sample sits in
// (docs/apps.md, Determinism). Bitwise comparisons: a tolerance would hide exactly what is tested.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "tests/conv2d_chains.h"
#include "tests/test_util.h"

namespace kc = kern::cpu;

namespace {

std::vector<float> randv(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

kern::Conv2dShape conv(int64_t N, int64_t C, int64_t H, int64_t K, int64_t R, int64_t stride, int64_t pad) {
  return kern::conv2d_shape(N, C, H, H, K, R, R, stride, stride, pad, pad);
}

struct ConvOut {
  std::vector<float> y, dx, dw, db;
};

ConvOut run_conv(const kern::Conv2dShape& s, int threads) {
  const int prev = omp_get_max_threads();
  omp_set_num_threads(threads);
  const auto x = randv(s.N * s.C * s.H * s.W, 1), w = randv(s.K * s.C * s.R * s.S, 2), b = randv(s.K, 3),
             dy = randv(s.N * s.K * s.P * s.Q, 4);
  ConvOut o{std::vector<float>(dy.size()), std::vector<float>(x.size()), std::vector<float>(w.size()),
            std::vector<float>(s.K)};
  kc::conv2d_forward<float>(s, x.data(), w.data(), b.data(), o.y.data());
  kc::conv2d_backward_input<float>(s, dy.data(), w.data(), o.dx.data());
  kc::conv2d_backward_weight<float>(s, dy.data(), x.data(), o.dw.data(), o.db.data());
  omp_set_num_threads(prev);
  return o;
}

bool same(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST(Determinism, Conv2dIsBitwiseIndependentOfTheThreadCount) {
  for (const auto& s : {conv(5, 8, 12, 16, 3, 1, 1), conv(3, 16, 14, 8, 3, 2, 1), conv(4, 24, 7, 32, 1, 1, 0),
                        conv(1, 32, 28, 32, 3, 1, 1)}) {
    const ConvOut one = run_conv(s, 1);
    for (int threads : {2, 3}) {
      const ConvOut o = run_conv(s, threads);
      EXPECT_TRUE(same(one.y, o.y)) << "forward, threads " << threads << ", C=" << s.C;
      EXPECT_TRUE(same(one.dx, o.dx)) << "backward-data, threads " << threads << ", C=" << s.C;
      EXPECT_TRUE(same(one.dw, o.dw)) << "backward-weight, threads " << threads << ", C=" << s.C;
      EXPECT_TRUE(same(one.db, o.db)) << "bias grad, threads " << threads << ", C=" << s.C;
    }
  }
}

TEST(Determinism, Conv2dForwardOfAnImageDoesNotDependOnTheBatch) {
  const auto s = conv(6, 16, 14, 32, 3, 1, 1);
  const auto x = randv(s.N * s.C * s.H * s.W, 5), w = randv(s.K * s.C * 9, 6), b = randv(s.K, 7);
  std::vector<float> y(s.N * s.K * s.P * s.Q), y1(s.K * s.P * s.Q);
  kc::conv2d_forward<float>(s, x.data(), w.data(), b.data(), y.data());
  auto s1 = s;
  s1.N = 1;
  for (int64_t n : {0, 3, 5}) {
    kc::conv2d_forward<float>(s1, x.data() + n * s.C * s.H * s.W, w.data(), b.data(), y1.data());
    EXPECT_EQ(std::memcmp(y1.data(), y.data() + n * y1.size(), y1.size() * sizeof(float)), 0)
        << "image " << n;
  }
}

TEST(Determinism, Conv2dWeightGradIsTheImageOrderedFmaChainForEveryIsaAndThreadCount) {
  const int prev = omp_get_max_threads();
  for (const auto& s : {conv(3, 16, 10, 8, 3, 1, 1), conv(2, 96, 12, 8, 1, 1, 0), conv(2, 40, 9, 12, 3, 2, 1),
                        conv(4, 1, 12, 16, 3, 1, 1)}) {
    const auto x = randv(s.N * s.C * s.H * s.W, 8), dy = randv(s.N * s.K * s.P * s.Q, 9);
    const auto ref = engine::test::conv2d_bwd_weight_chain(s, dy, x);
    for (kc::CpuIsa isa : {kc::CpuIsa::Scalar, kc::CpuIsa::Avx2, kc::CpuIsa::Avx512}) {
      if (static_cast<int>(isa) > static_cast<int>(kc::cpu_isa_supported())) continue;
      kc::set_cpu_isa(isa);
      for (int threads : {1, 2, 3}) {
        omp_set_num_threads(threads);
        std::vector<float> dw(ref.size(), 99.f);
        kc::conv2d_backward_weight<float>(s, dy.data(), x.data(), dw.data(), nullptr);
        EXPECT_TRUE(same(dw, ref)) << kc::cpu_isa_name(isa) << ", threads " << threads << ", C=" << s.C
                                   << ", K=" << s.K << ", R=" << s.R;
      }
    }
  }
  kc::set_cpu_isa(kc::CpuIsa::Auto);
  omp_set_num_threads(prev);
}
