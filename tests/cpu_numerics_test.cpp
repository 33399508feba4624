// Numerics of the CPU kernels (kern::cpu) that ordinary random tests miss:
//  * GroupNorm with constant groups, one element per group and large offsets (1e4..1e7), forward and
//    backward, against a naive double reference written here;
//  * attention rows with NaN / +inf / -inf scores (torch.softmax semantics);
//  * lane independence: an element's result is bitwise the same whether it sits in a SIMD lane or in
//    the scalar tail, and a row's / group's result does not depend on the batch size, its position
//    or the OpenMP thread count.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/group_norm_avx512.h"
#include "kernels/numeric_compare.h"
#include "tests/test_util.h"

namespace {

namespace kc = kern::cpu;
using engine::test::normal_vector;
using engine::test::with_threads;
using kern::Binary;
using kern::Strided;
using kern::Unary;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

template <typename T>
bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

// ------------------------------------------------------------------ group norm

// Naive double GroupNorm forward and backward straight from the definitions (two-pass statistics).
struct GnRef {
  std::vector<double> y, dx, dgamma, dbeta;
};
GnRef naive_gn(int64_t N, int64_t C, int64_t HW, int64_t G, double eps, const std::vector<double>& x,
               const std::vector<double>& gamma, const std::vector<double>& beta,
               const std::vector<double>& dy) {
  const int64_t Cg = C / G, M = Cg * HW;
  GnRef r{std::vector<double>(x.size()), std::vector<double>(x.size()), std::vector<double>(C, 0.0),
          std::vector<double>(C, 0.0)};
  for (int64_t ng = 0; ng < N * G; ++ng) {
    const int64_t c0 = (ng % G) * Cg;
    double mu = 0, var = 0;
    for (int64_t i = 0; i < M; ++i) mu += x[ng * M + i];
    mu /= double(M);
    for (int64_t i = 0; i < M; ++i) var += (x[ng * M + i] - mu) * (x[ng * M + i] - mu);
    var /= double(M);
    const double rs = 1.0 / std::sqrt(var + eps);
    double m1 = 0, m2 = 0;  // mean(g*dy), mean(g*dy*xhat)
    for (int64_t i = 0; i < M; ++i) {
      const int64_t c = c0 + i / HW;
      const double xhat = (x[ng * M + i] - mu) * rs;
      r.y[ng * M + i] = xhat * gamma[c] + beta[c];
      m1 += gamma[c] * dy[ng * M + i] / double(M);
      m2 += gamma[c] * dy[ng * M + i] * xhat / double(M);
      r.dgamma[c] += dy[ng * M + i] * xhat;
      r.dbeta[c] += dy[ng * M + i];
    }
    for (int64_t i = 0; i < M; ++i) {
      const int64_t c = c0 + i / HW;
      const double xhat = (x[ng * M + i] - mu) * rs;
      r.dx[ng * M + i] = rs * (gamma[c] * dy[ng * M + i] - m1 - xhat * m2);
    }
  }
  return r;
}

// max_i |got_i - ref_i| / max(1e-30, max_i |ref_i|) (+inf on NaN)
template <typename T>
double max_rel(const std::vector<T>& got, const std::vector<double>& ref) {
  return kern::max_rel_err(got, ref);
}

// The example: 16 equal values 1e7 in one group (1x1x4x4), gamma 1, beta 0 gave -105.1.
// A constant group must give exactly beta, whatever the value, the dtype and the affine parameters;
// the backward of a constant group gives dx = 0 exactly when dy is constant too.
template <typename T>
void constant_group_is_beta() {
  for (double v : {1e7, -1e7, 1e4, 123456.789, 0.1, -3.3e5, 0.0}) {
    for (double b : {0.0, 0.7}) {
      SCOPED_TRACE(::testing::Message() << "value " << v << " beta " << b);
      const int64_t N = 1, C = 1, HW = 16, G = 1;
      std::vector<T> x(HW, T(v)), gamma = {T(1.3)}, beta = {T(b)}, y(HW), mean(1), rstd(1);
      kc::group_norm_forward<T>(N, C, HW, G, 1e-5, x.data(), gamma.data(), beta.data(), y.data(), mean.data(),
                                rstd.data());
      for (T yi : y) ASSERT_EQ(yi, T(b));
      std::vector<T> dy(HW, T(0.25)), dx(HW), dg(1), db(1);
      kc::group_norm_backward<T>(N, C, HW, G, dy.data(), x.data(), mean.data(), rstd.data(), gamma.data(),
                                 dx.data(), dg.data(), db.data());
      for (T d : dx) ASSERT_EQ(d, T(0));
      EXPECT_EQ(dg[0], T(0));
      EXPECT_EQ(db[0], T(16 * 0.25));
    }
  }
}
TEST(CpuNumerics, GroupNormConstantGroupIsBetaFloat) { constant_group_is_beta<float>(); }
TEST(CpuNumerics, GroupNormConstantGroupIsBetaDouble) { constant_group_is_beta<double>(); }

// One element per group (G = C, HW = 1): x - mean = 0 exactly, so y = beta and dx = 0 exactly
// (inputs of magnitude ~100 gave up to 1.8e-3).
TEST(CpuNumerics, GroupNormOneElementPerGroup) {
  const int64_t N = 3, C = 8, HW = 1, G = 8;
  auto x = normal_vector<float>(N * C, 1, 0.0, 100.0), gamma = normal_vector<float>(C, 2, 1.0, 0.5),
       beta = normal_vector<float>(C, 3, 0.0, 1.0), dy = normal_vector<float>(N * C, 4, 0.0, 1.0);
  std::vector<float> y(N * C), mean(N * G), rstd(N * G), dx(N * C), dg(C), db(C);
  kc::group_norm_forward<float>(N, C, HW, G, 1e-5, x.data(), gamma.data(), beta.data(), y.data(), mean.data(),
                                rstd.data());
  kc::group_norm_backward<float>(N, C, HW, G, dy.data(), x.data(), mean.data(), rstd.data(), gamma.data(),
                                 dx.data(), dg.data(), db.data());
  for (int64_t i = 0; i < N * C; ++i) {
    EXPECT_EQ(y[i], beta[i % C]) << "element " << i << " x " << x[i];
    EXPECT_EQ(dx[i], 0.0f) << "element " << i;
  }
  for (int64_t c = 0; c < C; ++c) {
    EXPECT_EQ(dg[c], 0.0f);
    EXPECT_FLOAT_EQ(db[c], dy[c] + dy[C + c] + dy[2 * C + c]);
  }
}

// Mean much larger than the spread (offsets 1e4..1e7, spread 0.5..8): float32 forward and backward
// against the naive double reference evaluated on the same (float-rounded) inputs.
TEST(CpuNumerics, GroupNormLargeOffsetMatchesDouble) {
  const int64_t N = 2, C = 6, HW = 13, G = 3;  // 26 elements per group: SIMD blocks and a tail
  for (double offset : {1e4, 1e5, 1e6, 1e7, -1e7}) {
    for (double spread : {0.5, 8.0}) {
      if (std::abs(offset) >= 1e7 && spread < 2) continue;  // float ulp(1e7) = 1: the spread is lost in x
      SCOPED_TRACE(::testing::Message() << "offset " << offset << " spread " << spread);
      auto xf = normal_vector<float>(N * C * HW, 11, offset, spread),
           gf = normal_vector<float>(C, 12, 1.0, 0.3), bf = normal_vector<float>(C, 13, 0.0, 1.0),
           dyf = normal_vector<float>(N * C * HW, 14, 0.0, 1.0);
      std::vector<double> xd(xf.begin(), xf.end()), gd(gf.begin(), gf.end()), bd(bf.begin(), bf.end()),
          dyd(dyf.begin(), dyf.end());
      const GnRef ref = naive_gn(N, C, HW, G, 1e-5, xd, gd, bd, dyd);
      std::vector<float> y(xf.size()), mean(N * G), rstd(N * G), dx(xf.size()), dg(C), db(C);
      kc::group_norm_forward<float>(N, C, HW, G, 1e-5, xf.data(), gf.data(), bf.data(), y.data(), mean.data(),
                                    rstd.data());
      kc::group_norm_backward<float>(N, C, HW, G, dyf.data(), xf.data(), mean.data(), rstd.data(), gf.data(),
                                     dx.data(), dg.data(), db.data());
      EXPECT_LE(max_rel(y, ref.y), 1e-6) << "forward";
      EXPECT_LE(max_rel(dx, ref.dx), 1e-5) << "dx";
      EXPECT_LE(max_rel(dg, ref.dgamma), 1e-5) << "dgamma";
      EXPECT_LE(max_rel(db, ref.dbeta), 1e-6) << "dbeta";
    }
  }
}

// Float statistics take one pass around the group's first element K and sum again around the mean when
// K is an outlier (var < sum((x - K)^2) / (1024 M): group_norm_loops.h). Groups of 3000 whose first
// element lies 1e3 (regime checked here) or 1e6 spreads from the rest, beside an ordinary group: forward
// and backward against the naive double reference, and bitwise the same on every ISA path.
TEST(CpuNumerics, GroupNormOutlierFirstElementMatchesDouble) {
  const int64_t N = 1, C = 4, HW = 1500, G = 2, M = C / G * HW;
  for (double outlier : {1e3, 1e6}) {
    SCOPED_TRACE(::testing::Message() << "outlier " << outlier);
    auto xf = normal_vector<float>(N * C * HW, 31, 0.5, 1.0), gf = normal_vector<float>(C, 32, 1.0, 0.3),
         bf = normal_vector<float>(C, 33, 0.0, 1.0), dyf = normal_vector<float>(N * C * HW, 34, 0.0, 1.0);
    xf[0] = float(outlier);  // group 0 only
    {  // the data really is in the two-pass regime (a property of the inputs, computed in long double)
      long double s1 = 0, s2 = 0;
      for (int64_t i = 0; i < M; ++i) {
        const long double d = (long double)xf[i] - xf[0];
        s1 += d, s2 += d * d;
      }
      ASSERT_LT(s2 - s1 * s1 / M, s2 / 1024) << "not an outlier case";
    }
    std::vector<double> xd(xf.begin(), xf.end()), gd(gf.begin(), gf.end()), bd(bf.begin(), bf.end()),
        dyd(dyf.begin(), dyf.end());
    const GnRef ref = naive_gn(N, C, HW, G, 1e-5, xd, gd, bd, dyd);
    std::vector<float> first;
    for (kc::CpuIsa isa : engine::test::supported_isas()) {
      kc::set_cpu_isa(isa);
      std::vector<float> y(xf.size()), mean(N * G), rstd(N * G), dx(xf.size()), dg(C), db(C);
      kc::group_norm_forward<float>(N, C, HW, G, 1e-5, xf.data(), gf.data(), bf.data(), y.data(), mean.data(),
                                    rstd.data());
      kc::group_norm_backward<float>(N, C, HW, G, dyf.data(), xf.data(), mean.data(), rstd.data(), gf.data(),
                                     dx.data(), dg.data(), db.data());
      kc::set_cpu_isa(kc::CpuIsa::Auto);
      EXPECT_LE(max_rel(y, ref.y), 1e-6) << "forward " << kc::cpu_isa_name(isa);
      EXPECT_LE(max_rel(dx, ref.dx), 1e-5) << "dx " << kc::cpu_isa_name(isa);
      for (auto* v : {&mean, &rstd, &dx}) y.insert(y.end(), v->begin(), v->end());
      if (first.empty()) first = y;
      for (size_t i = 0; i < y.size(); ++i)
        ASSERT_TRUE(same_bits(y[i], first[i])) << kc::cpu_isa_name(isa) << " value " << i;
    }
  }
}

// A group's outputs do not depend on N, on the group's position in the batch or on the thread
// count (bitwise).
TEST(CpuNumerics, GroupNormGroupIndependentOfBatchAndThreads) {
  const int64_t C = 4, HW = 21, G = 2, M = C / G * HW;
  auto gamma = normal_vector<float>(C, 21, 1.0, 0.3), beta = normal_vector<float>(C, 22, 0.0, 1.0);
  const int64_t N = 5, n0 = 3;
  auto x = normal_vector<float>(N * C * HW, 23, 3.0, 2.0),
       dy = normal_vector<float>(N * C * HW, 24, 0.0, 1.0);
  auto run = [&](int64_t n, const float* xs, const float* dys, int threads) {
    std::vector<float> y(n * C * HW), m(n * G), r(n * G), dx(n * C * HW), dg(C), db(C);
    with_threads(threads, [&] {
      kc::group_norm_forward<float>(n, C, HW, G, 1e-5, xs, gamma.data(), beta.data(), y.data(), m.data(),
                                    r.data());
      kc::group_norm_backward<float>(n, C, HW, G, dys, xs, m.data(), r.data(), gamma.data(), dx.data(),
                                     dg.data(), db.data());
    });
    y.insert(y.end(), dx.begin(), dx.end());  // y then dx
    return y;
  };
  const auto full1 = run(N, x.data(), dy.data(), 1), full2 = run(N, x.data(), dy.data(), 2);
  const auto one = run(1, x.data() + n0 * C * HW, dy.data() + n0 * C * HW, 2);
  const int64_t S = N * C * HW;
  for (int64_t i = 0; i < S; ++i) {
    ASSERT_TRUE(same_bits(full1[i], full2[i])) << "y, 1 vs 2 threads, element " << i;
    ASSERT_TRUE(same_bits(full1[S + i], full2[S + i])) << "dx, 1 vs 2 threads, element " << i;
  }
  for (int64_t i = 0; i < C * HW; ++i) {
    ASSERT_TRUE(same_bits(one[i], full1[n0 * C * HW + i])) << "y, N=1 vs N=5 element " << i;
    ASSERT_TRUE(same_bits(one[C * HW + i], full1[S + n0 * C * HW + i])) << "dx, N=1 vs N=5 element " << i;
  }
  (void)M;
}

// ------------------------------------------------------------------ attention non-finite

// q = 1 (D = 1), Lk keys of 0, v = 1..Lk, one key replaced by `bad` at position j.
std::vector<float> attn_one_bad_key(int64_t Lk, int64_t j, double bad, float* lse_out = nullptr) {
  std::vector<float> q = {1.0f}, k(Lk, 0.0f), v(Lk), o(1), lse(1);
  for (int64_t i = 0; i < Lk; ++i) v[i] = float(i + 1);
  k[j] = float(bad);
  kc::attention_forward<float>(1, 1, Lk, 1, 1.0, q.data(), k.data(), v.data(), o.data(), lse.data());
  if (lse_out) *lse_out = lse[0];
  return o;
}

// The example (first key NaN gave 5.0, the mean of v without it): a NaN key, at any position
// (SIMD lane or scalar tail), makes the row NaN, as torch.softmax does.
TEST(CpuNumerics, AttentionNaNScoreGivesNaNRow) {
  for (int64_t Lk : {8, 11, 19}) {
    for (int64_t j = 0; j < Lk; ++j) {
      float lse = 0;
      const float o = attn_one_bad_key(Lk, j, kNaN, &lse)[0];
      EXPECT_TRUE(std::isnan(o)) << "Lk " << Lk << " NaN key at " << j << ": o = " << o;
      EXPECT_TRUE(std::isnan(lse)) << "Lk " << Lk << " NaN key at " << j << ": lse = " << lse;
    }
  }
}

// softmax([inf, 0, ...]) is NaN in PyTorch (inf - inf); a +inf key gave the plain mean of v.
TEST(CpuNumerics, AttentionPosInfScoreGivesNaNRow) {
  for (int64_t Lk : {8, 11, 19})
    for (int64_t j = 0; j < Lk; ++j) {
      const float o = attn_one_bad_key(Lk, j, kInf)[0];
      EXPECT_TRUE(std::isnan(o)) << "Lk " << Lk << " +inf key at " << j << ": o = " << o;
    }
}

// A -inf score gets probability 0: the output is the mean of the other values, exactly as a
// finite computation gives it (within float rounding).
TEST(CpuNumerics, AttentionNegInfScoreIsDropped) {
  for (int64_t Lk : {8, 11, 19})
    for (int64_t j = 0; j < Lk; ++j) {
      const float o = attn_one_bad_key(Lk, j, -kInf)[0];
      const double expect = (double(Lk) * (Lk + 1) / 2 - double(j + 1)) / double(Lk - 1);
      EXPECT_NEAR(o, expect, 1e-5 * expect) << "Lk " << Lk << " -inf key at " << j;
    }
}

// A row of only -inf scores is NaN (torch.softmax of an all -inf row), not 0.
TEST(CpuNumerics, AttentionAllNegInfRowIsNaN) {
  for (int64_t Lk : {3, 8, 11}) {
    std::vector<float> q = {1.0f}, k(Lk, -INFINITY), v(Lk, 1.0f), o(1), lse(1);
    kc::attention_forward<float>(1, 1, Lk, 1, 1.0, q.data(), k.data(), v.data(), o.data(), lse.data());
    EXPECT_TRUE(std::isnan(o[0])) << "Lk " << Lk << ": o = " << o[0];
    std::vector<double> qd = {1.0}, kd(Lk, -kInf), vd(Lk, 1.0), od(1), ld(1);
    kc::attention_forward<double>(1, 1, Lk, 1, 1.0, qd.data(), kd.data(), vd.data(), od.data(), ld.data());
    EXPECT_TRUE(std::isnan(od[0])) << "double, Lk " << Lk << ": o = " << od[0];
  }
}

// ------------------------------------------------------------------ lane independence

// Element i of an elementwise kernel is bitwise the same whether it is evaluated in a vector of
// length 8k + r at index i or at index i - off of the sub-vector starting at off (which moves it
// between SIMD lanes and the scalar tail), for r = 0..7 and off = 1..7.
template <typename T, typename K>
void expect_lane_independent(const char* what, K kernel, int64_t k8 = 3) {
  for (int64_t r = 0; r<8; r += k8> 100 ? 3 : 1) {  // large vectors: r = 0, 3, 6
    const int64_t n = 8 * k8 + r;
    auto x = normal_vector<T>(n, 100 + unsigned(r), 0.0, 3.0),
         x2 = normal_vector<T>(n, 200 + unsigned(r), 0.5, 1.0);
    // Include non-finite values and large magnitudes among the inputs.
    x[n / 3] = T(kNaN);
    x[n / 2] = T(-kInf);
    x[n - 1] = T(-90.0);
    std::vector<T> full(n);
    kernel(n, x.data(), x2.data(), full.data());
    for (int64_t off = 1; off < 8 && off < n; ++off) {
      std::vector<T> sub(n - off);
      kernel(n - off, x.data() + off, x2.data() + off, sub.data());
      for (int64_t i = off; i < n; ++i)
        ASSERT_TRUE(same_bits(sub[i - off], full[i]))
            << what << ": n " << n << " element " << i << " at offset " << off << ": " << sub[i - off]
            << " vs " << full[i] << " (x " << x[i] << ")";
    }
  }
}

template <typename T>
void elementwise_lane_independent(int64_t k8) {
  for (Unary op : {Unary::Neg, Unary::Exp, Unary::Sin, Unary::Cos, Unary::Silu, Unary::Sqrt, Unary::Square,
                   Unary::Sigmoid}) {
    SCOPED_TRACE(::testing::Message() << "unary " << int(op));
    expect_lane_independent<T>(
        "unary", [op](int64_t n, const T* x, const T*, T* y) { kc::unary<T>(op, n, x, y); }, k8);
  }
  expect_lane_independent<T>(
      "silu_backward", [](int64_t n, const T* x, const T* d, T* y) { kc::silu_backward<T>(n, x, d, y); }, k8);
  expect_lane_independent<T>(
      "affine", [](int64_t n, const T* x, const T*, T* y) { kc::affine<T>(n, x, 1.7, -0.3, y); }, k8);
  for (Binary op : {Binary::Add, Binary::Sub, Binary::Mul, Binary::Div}) {
    SCOPED_TRACE(::testing::Message() << "binary " << int(op));
    expect_lane_independent<T>(
        "binary",
        [op](int64_t n, const T* a, const T* b, T* y) {
          Strided s{};
          s.ndim = 1;
          s.shape[0] = n;
          s.stride[0] = 1;
          kc::binary<T>(op, s, a, s, b, s, y);
        },
        k8);
  }
}

TEST(CpuNumerics, ElementwiseLaneIndependentFloat) { elementwise_lane_independent<float>(3); }
TEST(CpuNumerics, ElementwiseLaneIndependentDouble) { elementwise_lane_independent<double>(3); }
// Above the parallel threshold (32768): chunked and multi-threaded.
TEST(CpuNumerics, ElementwiseLaneIndependentLarge) {
  with_threads(2, [] { elementwise_lane_independent<float>(5000); });
}

// The softmax of a row does not depend on whether its last keys sit in the scalar tail: padding the
// row with keys whose score is -inf (probability exactly 0) to a multiple of 8 leaves lse bitwise
// unchanged. Rows and heads do not depend on the number of heads or the thread count.
TEST(CpuNumerics, AttentionSoftmaxLaneIndependent) {
  const int64_t D = 2, Lq = 3;
  for (int64_t Lk = 1; Lk <= 20; ++Lk) {
    const int64_t Lp = (Lk + 7) / 8 * 8 + 8;              // padded length, at least one extra block
    auto q = normal_vector<float>(Lq * D, 31, 1.0, 0.1);  // positive: score of a -inf key is -inf
    auto k = normal_vector<float>(Lk * D, 32, 0.0, 2.0), v = normal_vector<float>(Lk * D, 33, 0.0, 1.0);
    std::vector<float> kp(Lp * D, -INFINITY), vp(Lp * D, 0.0f);
    std::copy(k.begin(), k.end(), kp.begin());
    std::copy(v.begin(), v.end(), vp.begin());
    std::vector<float> o(Lq * D), l(Lq), op(Lq * D), lp(Lq);
    kc::attention_forward<float>(1, Lq, Lk, D, 0.8, q.data(), k.data(), v.data(), o.data(), l.data());
    kc::attention_forward<float>(1, Lq, Lp, D, 0.8, q.data(), kp.data(), vp.data(), op.data(), lp.data());
    for (int64_t i = 0; i < Lq; ++i)
      ASSERT_TRUE(same_bits(l[i], lp[i]))
          << "Lk " << Lk << " row " << i << ": lse " << l[i] << " vs " << lp[i];
  }
  // Head 3 of 5 vs the same head alone, 1 and 2 threads: bitwise the same o and lse.
  const int64_t BH = 5, L = 19, h0 = 3;
  auto q = normal_vector<float>(BH * L * D, 41, 0.0, 1.0), k = normal_vector<float>(BH * L * D, 42, 0.0, 1.0),
       v = normal_vector<float>(BH * L * D, 43, 0.0, 1.0);
  auto run = [&](int64_t bh, int64_t h, int threads) {
    std::vector<float> o(bh * L * D), l(bh * L);
    with_threads(threads, [&] {
      kc::attention_forward<float>(bh, L, L, D, 0.6, q.data() + h * L * D, k.data() + h * L * D,
                                   v.data() + h * L * D, o.data(), l.data());
    });
    o.insert(o.end(), l.begin(), l.end());
    return o;
  };
  const auto all1 = run(BH, 0, 1), all2 = run(BH, 0, 2), one = run(1, h0, 1);
  ASSERT_EQ(all1.size(), all2.size());
  for (size_t i = 0; i < all1.size(); ++i)
    ASSERT_TRUE(same_bits(all1[i], all2[i])) << "1 vs 2 threads, " << i;
  for (int64_t i = 0; i < L * D; ++i) ASSERT_TRUE(same_bits(one[i], all1[h0 * L * D + i])) << "o " << i;
  for (int64_t i = 0; i < L; ++i)
    ASSERT_TRUE(same_bits(one[L * D + i], all1[BH * L * D + h0 * L + i])) << "lse " << i;
}

// sum_rows: a row's sum does not depend on the number of rows, its position or the thread count.
TEST(CpuNumerics, SumRowsRowIndependent) {
  const int64_t rows = 40, cols = 1001;
  auto x = normal_vector<float>(rows * cols, 51, 0.0, 1.0);
  std::vector<float> y1(rows), y2(rows), y3(1);
  with_threads(1, [&] { kc::sum_rows<float>(rows, cols, x.data(), y1.data()); });
  with_threads(2, [&] { kc::sum_rows<float>(rows, cols, x.data(), y2.data()); });
  for (int64_t r = 0; r < rows; ++r) {
    ASSERT_TRUE(same_bits(y1[r], y2[r])) << "row " << r;
    kc::sum_rows<float>(1, cols, x.data() + r * cols, y3.data());
    ASSERT_TRUE(same_bits(y3[0], y1[r])) << "row " << r;
  }
}

}  // namespace

// The softmax runs 16 lanes at a time on AVX-512 CPUs (softmax_avx512.cpp) and 8 on AVX2: forcing each
// ISA gives bitwise the same attention forward (o, lse) and backward (dq, dk, dv), for every row length
// (full 16- and 8-lane blocks, masked tails) and with NaN, +inf and -inf scores in the rows.
TEST(CpuNumerics, AttentionIsBitwiseTheSameOnEveryIsa) {
  if (kc::cpu_isa_supported() != kc::CpuIsa::Avx512) GTEST_SKIP() << "this CPU has no AVX-512: one path only";
  const int64_t BH = 3, Lq = 5, D = 4;
  auto run = [&](kc::CpuIsa isa, int64_t Lk) {
    kc::set_cpu_isa(isa);
    auto q = normal_vector<float>(BH * Lq * D, 61, 0.0, 1.5),
         k = normal_vector<float>(BH * Lk * D, 62, 0.0, 1.5),
         v = normal_vector<float>(BH * Lk * D, 63, 0.0, 1.0),
         dout = normal_vector<float>(BH * Lq * D, 64, 0.0, 1.0);
    if (Lk > 3) {
      k[1 * Lk * D + 2 * D] = float(kNaN);   // head 1: one NaN key
      k[2 * Lk * D + 1 * D] = float(-kInf);  // head 2: one -inf key (probability 0 for q > 0 rows)
      k[2 * Lk * D + 3 * D + 1] = 200.f;     // and one huge score (exp underflow for the others)
    }
    std::vector<float> o(BH * Lq * D), l(BH * Lq), dq(o.size()), dk(k.size()), dv(v.size());
    kc::attention_forward<float>(BH, Lq, Lk, D, 0.5, q.data(), k.data(), v.data(), o.data(), l.data());
    kc::attention_backward<float>(BH, Lq, Lk, D, 0.5, q.data(), k.data(), v.data(), o.data(), l.data(),
                                  dout.data(), dq.data(), dk.data(), dv.data());
    for (auto* x : {&l, &dq, &dk, &dv}) o.insert(o.end(), x->begin(), x->end());
    return o;
  };
  for (int64_t Lk : {1, 7, 8, 15, 16, 17, 24, 31, 32, 40, 49}) {
    const auto a = run(kc::CpuIsa::Avx512, Lk), b = run(kc::CpuIsa::Avx2, Lk);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i)
      ASSERT_TRUE(same_bits(a[i], b[i])) << "Lk " << Lk << " value " << i << ": " << a[i] << " vs " << b[i];
  }
  kc::set_cpu_isa(kc::CpuIsa::Auto);
}

// Group norm's float loops run on AVX-512 when the CPU has it (group_norm_avx512.cpp): forcing avx512
// and avx2 gives bitwise the same y, mean, rstd, dx, dgamma and dbeta, for group sizes with and without
// a ragged tail of 8, and for a large offset (mean >> spread), where the double statistics matter.
TEST(CpuNumerics, GroupNormIsBitwiseTheSameOnEveryIsa) {
  if (kc::cpu_isa_supported() != kc::CpuIsa::Avx512) GTEST_SKIP() << "this CPU has no AVX-512: one path only";
  const int64_t N = 3, C = 6, G = 3;
  auto run = [&](kc::CpuIsa isa, int64_t HW, double offset) {
    kc::set_cpu_isa(isa);
    auto x = normal_vector<float>(N * C * HW, 71, offset, 1.0),
         dy = normal_vector<float>(N * C * HW, 72, 0.0, 1.0);
    auto gamma = normal_vector<float>(C, 73, 1.0, 0.5), beta = normal_vector<float>(C, 74, 0.0, 0.5);
    std::vector<float> y(x.size()), mean(N * G), rstd(N * G), dx(x.size()), dg(C), db(C);
    kc::group_norm_forward<float>(N, C, HW, G, 1e-5, x.data(), gamma.data(), beta.data(), y.data(),
                                  mean.data(), rstd.data());
    kc::group_norm_backward<float>(N, C, HW, G, dy.data(), x.data(), mean.data(), rstd.data(), gamma.data(),
                                   dx.data(), dg.data(), db.data());
    for (auto* v : {&mean, &rstd, &dx, &dg, &db}) y.insert(y.end(), v->begin(), v->end());
    return y;
  };
  for (int64_t HW : {1, 5, 8, 13, 49, 64})
    for (double offset : {0.0, 3000.0}) {
      const auto a = run(kc::CpuIsa::Avx512, HW, offset), b = run(kc::CpuIsa::Avx2, HW, offset);
      ASSERT_EQ(a.size(), b.size());
      for (size_t i = 0; i < a.size(); ++i)
        ASSERT_TRUE(same_bits(a[i], b[i]))
            << "HW " << HW << " offset " << offset << " value " << i << ": " << a[i] << " vs " << b[i];
    }
  kc::set_cpu_isa(kc::CpuIsa::Auto);
}

// The AVX-512 group-norm loops against the documented order (group_norm_loops.h): element i in partial sum
// i % 8, partial sums combined as ((0+1)+(2+3))+((4+5)+(6+7)) (the float statistics: i % 16, c_l = p_l +
// p_(l+8), then the same); elementwise loops as scalar code (the affine in float, the rest in double).
// Compared in double, bit for bit (shifts that are not floats, so that the sums round and their order
// shows): the float outputs above can hide a last-bit difference of the sums.
#if defined(__x86_64__)  // group_norm_avx512.cpp is built on x86-64 only
TEST(CpuNumerics, GroupNormAvx512LoopsFollowTheDefinedOrder) {
  if (kc::cpu_isa_supported() != kc::CpuIsa::Avx512) GTEST_SKIP() << "this CPU has no AVX-512";
  namespace kd = kern::cpu::detail;
  auto combine = [](const double(&a)[8]) {
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
  };
  for (int64_t n = 1; n <= 40; ++n) {
    const auto x = normal_vector<float>(n, 80 + unsigned(n), 1000.0, 3.0),
               dy = normal_vector<float>(n, 90 + unsigned(n), 0.0, 1.0);
    const double K = 999.93, mu = 1000.07, a = 0.7, b = -0.2, rs = 0.33, gm = 1.1, m1 = 0.01, m2 = -0.02;
    double s[8] = {}, q[8] = {}, g0[8] = {}, g1[8] = {}, g2[8] = {}, p16[16] = {}, q16[16] = {};
    for (int64_t i = 0; i < n; ++i) {
      const double d = double(x[i]) - K, e = double(x[i]) - mu;
      p16[i % 16] += d;
      q16[i % 16] = std::fma(d, d, q16[i % 16]);
      s[i % 8] += d;
      q[i % 8] = std::fma(e, e, q[i % 8]);
      g0[i % 8] += double(dy[i]);
      g1[i % 8] = std::fma(double(dy[i]), d, g1[i % 8]);
      g2[i % 8] += d;
    }
    EXPECT_TRUE(same_bits(kd::gn_sum_shifted_avx512(x.data(), n, K), combine(s))) << n;
    EXPECT_TRUE(same_bits(kd::gn_sum_sq_dev_avx512(x.data(), n, mu), combine(q))) << n;
    double c1[8], c2[8];
    for (int l = 0; l < 8; ++l) c1[l] = p16[l] + p16[l + 8], c2[l] = q16[l] + q16[l + 8];
    const auto ss = kd::gn_shifted_sums_avx512(x.data(), n, K);
    EXPECT_TRUE(same_bits(ss[0], combine(c1)) && same_bits(ss[1], combine(c2))) << n;
    const auto bs = kd::gn_backward_sums_avx512(x.data(), dy.data(), n, K);
    EXPECT_TRUE(same_bits(bs[0], combine(g0)) && same_bits(bs[1], combine(g1)) &&
                same_bits(bs[2], combine(g2)))
        << n;
    std::vector<float> y(n + 1, 77.f), dx(n + 1, 77.f);  // one guard element: must stay untouched
    const float mh = float(mu), ml = float(mu - double(mh)), af = float(a), bf = float(b);
    kd::gn_affine_avx512(x.data(), n, mh, ml, af, bf, y.data());
    kd::gn_dx_avx512(x.data(), dy.data(), n, mu, rs, gm, m1, m2, dx.data());
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_TRUE(same_bits(y[i], std::fma((x[i] - mh) - ml, af, bf))) << n << " " << i;
      const double xhat = (double(x[i]) - mu) * rs;
      ASSERT_TRUE(same_bits(dx[i], float(rs * std::fma(-xhat, m2, std::fma(gm, double(dy[i]), -m1)))))
          << n << " " << i;
    }
    EXPECT_EQ(y[n], 77.f);
    EXPECT_EQ(dx[n], 77.f);
  }
}
#endif
