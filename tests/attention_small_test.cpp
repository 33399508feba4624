// The small-head-dim float32 CPU attention (kernels/cpu/attention_small.h, D <= 16) through the public
// kern::cpu::attention_forward / attention_backward:
//  * forward and backward against a float64 naive reference written here, with an error bound derived
//    from D, Lq, Lk and the score magnitudes (not from the kernel's output), for D = 1..16 and odd
//    lengths (1, 7, 17, 49, 196, 197, Lq != Lk), on every ISA path this CPU has;
//  * the ISA paths (scalar, AVX2, AVX-512) bitwise equal, finite and non-finite inputs alike;
//  * bitwise independent of the OpenMP thread count and of how many heads share a call (BH);
//  * non-finite rows with torch.softmax semantics (NaN score, +inf score, all -inf -> NaN row; one -inf
//    key -> probability 0), forward and backward; a NaN key in any position;
//  * a forward without lse (lse = nullptr, the no-grad op's call) gives the same o bits.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "tests/test_util.h"

namespace {

namespace kc = kern::cpu;
using engine::test::IsaGuard;
using engine::test::normal_vector;
using engine::test::same_bits_nan_equal;
using engine::test::supported_isas;
using engine::test::with_threads;
using kc::CpuIsa;
constexpr float kNaNf = std::numeric_limits<float>::quiet_NaN();
constexpr float kInff = std::numeric_limits<float>::infinity();
constexpr double kU = 5.9604644775390625e-8;  // float unit roundoff 2^-24

// One problem: inputs and (after run) every output of forward and backward.
struct Problem {
  int64_t BH, Lq, Lk, D;
  double scale;
  std::vector<float> q, k, v, dout, o, lse, dq, dk, dv;
  Problem(int64_t bh, int64_t lq, int64_t lk, int64_t d, unsigned seed)
      : BH(bh), Lq(lq), Lk(lk), D(d), scale(1.0 / std::sqrt(double(d))) {
    q = normal_vector<float>(BH * Lq * D, seed, 0.0, 1.0);
    k = normal_vector<float>(BH * Lk * D, seed + 1, 0.0, 1.0);
    v = normal_vector<float>(BH * Lk * D, seed + 2, 0.0, 1.0);
    dout = normal_vector<float>(BH * Lq * D, seed + 3, 0.0, 1.0);
  }
  void run() {
    o.assign(BH * Lq * D, 0.f);
    lse.assign(BH * Lq, 0.f);
    dq.assign(q.size(), 0.f);
    dk.assign(k.size(), 0.f);
    dv.assign(v.size(), 0.f);
    kc::attention_forward<float>(BH, Lq, Lk, D, scale, q.data(), k.data(), v.data(), o.data(), lse.data());
    kc::attention_backward<float>(BH, Lq, Lk, D, scale, q.data(), k.data(), v.data(), o.data(), lse.data(),
                                  dout.data(), dq.data(), dk.data(), dv.data());
  }
  std::vector<float> outputs() const {
    std::vector<float> r = o;
    for (const auto* x : {&lse, &dq, &dk, &dv}) r.insert(r.end(), x->begin(), x->end());
    return r;
  }
};

// Float64 reference of one head straight from the definitions, plus a "magnitude" run of the same
// formulas on absolute values: |error| <= K u * magnitude bounds each output (a standard a-priori bound).
struct Ref {
  std::vector<double> o, lse, dq, dk, dv;       // values
  std::vector<double> mo, mlse, mdq, mdk, mdv;  // magnitudes
  double smax = 0;                              // max over rows and keys of scale * sum_d |q k|
};
Ref reference(const Problem& p) {
  const int64_t Lq = p.Lq, Lk = p.Lk, D = p.D;
  Ref r;
  for (auto* x : {&r.o, &r.mo, &r.dq, &r.mdq}) x->assign(p.BH * Lq * D, 0.0);
  for (auto* x : {&r.dk, &r.mdk, &r.dv, &r.mdv}) x->assign(p.BH * Lk * D, 0.0);
  r.lse.assign(p.BH * Lq, 0.0);
  r.mlse.assign(p.BH * Lq, 0.0);
  std::vector<double> P(Lq * Lk), dP(Lq * Lk), delta(Lq), mdelta(Lq);
  for (int64_t h = 0; h < p.BH; ++h) {
    auto q = [&](int64_t i, int64_t d) { return double(p.q[(h * Lq + i) * D + d]); };
    auto k = [&](int64_t j, int64_t d) { return double(p.k[(h * Lk + j) * D + d]); };
    auto v = [&](int64_t j, int64_t d) { return double(p.v[(h * Lk + j) * D + d]); };
    auto g = [&](int64_t i, int64_t d) { return double(p.dout[(h * Lq + i) * D + d]); };
    for (int64_t i = 0; i < Lq; ++i) {
      std::vector<double> s(Lk);
      double mx = -1e300;
      for (int64_t j = 0; j < Lk; ++j) {
        double dot = 0, adot = 0;
        for (int64_t d = 0; d < D; ++d) dot += q(i, d) * k(j, d), adot += std::abs(q(i, d) * k(j, d));
        s[j] = p.scale * dot;
        r.smax = std::max(r.smax, p.scale * adot);
        mx = std::max(mx, s[j]);
      }
      double z = 0;
      for (int64_t j = 0; j < Lk; ++j) z += std::exp(s[j] - mx);
      r.lse[h * Lq + i] = mx + std::log(z);
      r.mlse[h * Lq + i] = std::abs(mx) + std::log(z);
      for (int64_t j = 0; j < Lk; ++j) P[i * Lk + j] = std::exp(s[j] - mx) / z;
      for (int64_t d = 0; d < D; ++d) {
        double acc = 0, macc = 0;
        for (int64_t j = 0; j < Lk; ++j)
          acc += P[i * Lk + j] * v(j, d), macc += P[i * Lk + j] * std::abs(v(j, d));
        r.o[(h * Lq + i) * D + d] = acc;
        r.mo[(h * Lq + i) * D + d] = macc;
      }
      // Backward: delta = sum_d dO O (with the reference O), dP = dO V^T.
      delta[i] = 0, mdelta[i] = 0;
      for (int64_t d = 0; d < D; ++d) {
        delta[i] += g(i, d) * r.o[(h * Lq + i) * D + d];
        mdelta[i] += std::abs(g(i, d)) * r.mo[(h * Lq + i) * D + d];
      }
      for (int64_t j = 0; j < Lk; ++j) {
        double acc = 0;
        for (int64_t d = 0; d < D; ++d) acc += g(i, d) * v(j, d);
        dP[i * Lk + j] = acc;
      }
    }
    for (int64_t i = 0; i < Lq; ++i)
      for (int64_t j = 0; j < Lk; ++j) {
        const double pij = P[i * Lk + j], ds = pij * (dP[i * Lk + j] - delta[i]);
        double mdp = 0;
        for (int64_t d = 0; d < D; ++d) mdp += std::abs(g(i, d) * v(j, d));
        const double mds = pij * (mdp + mdelta[i]);
        for (int64_t d = 0; d < D; ++d) {
          r.dq[(h * Lq + i) * D + d] += p.scale * ds * k(j, d);
          r.mdq[(h * Lq + i) * D + d] += p.scale * mds * std::abs(k(j, d));
          r.dk[(h * Lk + j) * D + d] += p.scale * ds * q(i, d);
          r.mdk[(h * Lk + j) * D + d] += p.scale * mds * std::abs(q(i, d));
          r.dv[(h * Lk + j) * D + d] += pij * g(i, d);
          r.mdv[(h * Lk + j) * D + d] += pij * std::abs(g(i, d));
        }
      }
  }
  return r;
}

// |got - want| <= K u (mag + tiny) elementwise, with K from the problem's sizes: every sum is a chain of
// at most D (scores), Lk (softmax sum, P V, dS K) or Lq (P^T dO, dS^T Q) terms, a score error of
// ~D u smax is amplified by exp into a relative error of the probabilities, and each step adds a few u.
void expect_bounded(const std::vector<float>& got, const std::vector<double>& want,
                    const std::vector<double>& mag, double K, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = K * kU * (mag[i] + 1e-30);
    if (!(std::abs(double(got[i]) - want[i]) <= tol) && ++bad <= 3)
      ADD_FAILURE() << what << "[" << i << "] = " << got[i] << ", reference " << want[i] << ", bound " << tol;
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size() << " outside the bound";
}

TEST(AttentionSmall, MatchesFloat64ReferenceOnEveryIsa) {
  IsaGuard guard;
  struct Shape {
    int64_t Lq, Lk;
  };
  const Shape shapes[] = {{1, 1},     {7, 7},  {17, 17}, {49, 49},  {196, 196},
                          {197, 197}, {5, 49}, {49, 7},  {17, 196}, {1, 197}};
  for (int64_t D = 1; D <= 16; ++D)
    for (const Shape sh : shapes) {
      if (sh.Lq * sh.Lk > 2000 && D != 1 && D != 8 && D != 9 && D != 16) continue;  // long rows: 4 D's
      Problem p(2, sh.Lq, sh.Lk, D, unsigned(100 + D * 7 + sh.Lk));
      const Ref ref = reference(p);
      const double L = double(std::max(sh.Lq, sh.Lk));
      const double K = 4.0 * (double(D) * (1.0 + ref.smax) + 2.0 * L + 8.0);
      for (CpuIsa isa : supported_isas()) {
        SCOPED_TRACE(::testing::Message()
                     << "isa " << kc::cpu_isa_name(isa) << " D " << D << " Lq " << sh.Lq << " Lk " << sh.Lk);
        kc::set_cpu_isa(isa);
        p.run();
        expect_bounded(p.o, ref.o, ref.mo, K, "o");
        expect_bounded(p.lse, ref.lse, ref.mlse, K, "lse");
        expect_bounded(p.dq, ref.dq, ref.mdq, K, "dq");
        expect_bounded(p.dk, ref.dk, ref.mdk, K, "dk");
        expect_bounded(p.dv, ref.dv, ref.mdv, K, "dv");
        if (HasFailure()) return;
      }
    }
}

// Puts non-finite values into some heads of p (head index h must exist): head 1 a NaN key, head 2 a -inf
// key with score -inf in every row and a huge score (others underflow), head 3 a +inf query element, head 4 a
// row of only -inf scores.
void poison(Problem& p) {
  const int64_t Lq = p.Lq, Lk = p.Lk, D = p.D;
  if (p.BH > 1) p.k[(1 * Lk + Lk / 2) * D] = kNaNf;
  if (p.BH > 2) {  // every query of head 2 has q[0] > 0, so key Lk-1's score is -inf in every row
    p.k[(2 * Lk + Lk - 1) * D] = -kInff;
    for (int64_t i = 0; i < Lq; ++i) p.q[(2 * Lq + i) * D] = std::abs(p.q[(2 * Lq + i) * D]) + 0.1f;
    p.q[(2 * Lq + 0) * D] = 300.f;
  }
  if (p.BH > 3) p.q[(3 * Lq + Lq - 1) * D + D - 1] = kInff;
  if (p.BH > 4)  // q row 0 of head 4 = +1 in d 0, keys all -inf in d 0, 0 elsewhere: all scores -inf
    for (int64_t d = 0; d < D; ++d) {
      p.q[(4 * Lq) * D + d] = d == 0 ? 1.f : 0.f;
      for (int64_t j = 0; j < Lk; ++j) p.k[(4 * Lk + j) * D + d] = d == 0 ? -kInff : 0.f;
    }
}

TEST(AttentionSmall, IsaPathsAreBitwiseEqual) {
  if (supported_isas().size() < 2) GTEST_SKIP() << "this CPU has only the scalar path";
  IsaGuard guard;
  for (int64_t D = 1; D <= 16; ++D)
    for (int64_t L : {1, 7, 16, 17, 49, 196, 197})
      for (bool nonfinite : {false, true}) {
        Problem p(5, L, L == 1 ? 3 : L, D, unsigned(7 * D + L));
        if (nonfinite) poison(p);
        kc::set_cpu_isa(CpuIsa::Scalar);
        p.run();
        const std::vector<float> want = p.outputs();
        for (CpuIsa isa : supported_isas()) {
          kc::set_cpu_isa(isa);
          p.run();
          const std::vector<float> got = p.outputs();
          ASSERT_EQ(got.size(), want.size());
          for (size_t i = 0; i < got.size(); ++i)
            ASSERT_TRUE(same_bits_nan_equal(got[i], want[i]))
                << kc::cpu_isa_name(isa) << " vs scalar, D " << D << " L " << L << " nonfinite " << nonfinite
                << " value " << i << ": " << got[i] << " vs " << want[i];
        }
      }
}

TEST(AttentionSmall, BitwiseIndependentOfThreadsAndBatch) {
  for (int64_t D : {3, 8, 16})
    for (int64_t L : {49, 197}) {
      Problem all(7, L, L, D, unsigned(31 + D + L));
      poison(all);
      with_threads(1, [&] { all.run(); });
      const std::vector<float> want = all.outputs();
      for (int th : {2, 3}) {
        with_threads(th, [&] { all.run(); });
        const std::vector<float> got = all.outputs();
        for (size_t i = 0; i < got.size(); ++i)
          ASSERT_TRUE(same_bits_nan_equal(got[i], want[i]))
              << th << " threads, D " << D << " L " << L << " value " << i;
      }
      // Head by head (BH = 1 calls) with 2 threads: the same bits as the batched call.
      const int64_t qs = L * D, ks = L * D;
      for (int64_t h = 0; h < all.BH; ++h) {
        Problem one(1, L, L, D, 0);
        one.q.assign(all.q.begin() + h * qs, all.q.begin() + (h + 1) * qs);
        one.k.assign(all.k.begin() + h * ks, all.k.begin() + (h + 1) * ks);
        one.v.assign(all.v.begin() + h * ks, all.v.begin() + (h + 1) * ks);
        one.dout.assign(all.dout.begin() + h * qs, all.dout.begin() + (h + 1) * qs);
        with_threads(2, [&] { one.run(); });
        for (int64_t i = 0; i < qs; ++i) {
          ASSERT_TRUE(same_bits_nan_equal(one.o[i], all.o[h * qs + i]))
              << "o head " << h << " D " << D << " L " << L;
          ASSERT_TRUE(same_bits_nan_equal(one.dq[i], all.dq[h * qs + i])) << "dq head " << h << " D " << D;
        }
        for (int64_t i = 0; i < ks; ++i) {
          ASSERT_TRUE(same_bits_nan_equal(one.dk[i], all.dk[h * ks + i])) << "dk head " << h << " D " << D;
          ASSERT_TRUE(same_bits_nan_equal(one.dv[i], all.dv[h * ks + i])) << "dv head " << h << " D " << D;
        }
        for (int64_t i = 0; i < L; ++i) ASSERT_TRUE(same_bits_nan_equal(one.lse[i], all.lse[h * L + i]));
      }
    }
}

// torch.softmax semantics, checked against the float64 GEMM path (which computes the definition): the
// same NaN pattern in every output, and the finite values close.
TEST(AttentionSmall, NonFiniteRowsFollowTorchSemantics) {
  IsaGuard guard;
  for (int64_t D : {1, 8, 13})
    for (int64_t L : {7, 49}) {
      Problem p(5, L, L, D, unsigned(77 + D + L));
      poison(p);
      // The double run of the same inputs (the reference path: kern::cpu's GEMM attention in float64).
      auto dbl = [](const std::vector<float>& x) { return std::vector<double>(x.begin(), x.end()); };
      const auto q = dbl(p.q), k = dbl(p.k), v = dbl(p.v), g = dbl(p.dout);
      std::vector<double> o(p.BH * L * D), lse(p.BH * L), dq(q.size()), dk(k.size()), dv(v.size());
      kc::attention_forward<double>(p.BH, L, L, D, p.scale, q.data(), k.data(), v.data(), o.data(),
                                    lse.data());
      kc::attention_backward<double>(p.BH, L, L, D, p.scale, q.data(), k.data(), v.data(), o.data(),
                                     lse.data(), g.data(), dq.data(), dk.data(), dv.data());
      // The poisoned rows are NaN in o and lse; head 2 row 0 (a huge score) is finite.
      EXPECT_TRUE(std::isnan(lse[1 * L])) << "reference: NaN key";
      EXPECT_TRUE(std::isnan(lse[3 * L + L - 1])) << "reference: +inf query";
      EXPECT_TRUE(std::isnan(lse[4 * L])) << "reference: all -inf";
      EXPECT_TRUE(std::isfinite(lse[2 * L])) << "reference: huge score row";
      for (CpuIsa isa : supported_isas()) {
        SCOPED_TRACE(::testing::Message() << "isa " << kc::cpu_isa_name(isa) << " D " << D << " L " << L);
        kc::set_cpu_isa(isa);
        p.run();
        auto check = [](const std::vector<float>& got, const std::vector<double>& want, const char* what) {
          for (size_t i = 0; i < got.size(); ++i) {
            ASSERT_EQ(std::isnan(got[i]), std::isnan(want[i]))
                << what << "[" << i << "] " << got[i] << " vs " << want[i];
            if (!std::isnan(want[i])) {
              ASSERT_NEAR(got[i], want[i], 1e-4 * (1 + std::abs(want[i]))) << what << "[" << i << "]";
            }
          }
        };
        check(p.o, o, "o");
        check(p.lse, lse, "lse");
        check(p.dq, dq, "dq");
        check(p.dk, dk, "dk");
        check(p.dv, dv, "dv");
        // Head 2: the -inf key gets probability 0, so dv of that key is exactly 0.
        for (int64_t d = 0; d < D; ++d) EXPECT_EQ(p.dv[(2 * L + L - 1) * D + d], 0.0f);
      }
    }
}

// A NaN key in any position makes every query row NaN in o and lse: first or middle (the running max
// skips it, the row sum catches it) or last (the max itself ends NaN); on every ISA path.
TEST(AttentionSmall, NaNKeyAnywhereMakesEveryRowNaN) {
  IsaGuard guard;
  for (int64_t D : {1, 8, 13})
    for (int64_t L : {7, 49})
      for (int64_t pos : {int64_t{0}, L / 2, L - 1}) {
        Problem p(1, L, L, D, unsigned(5 * D + L + pos));
        p.k[pos * D + (D - 1)] = kNaNf;
        for (CpuIsa isa : supported_isas()) {
          SCOPED_TRACE(::testing::Message()
                       << "isa " << kc::cpu_isa_name(isa) << " D " << D << " L " << L << " NaN key " << pos);
          kc::set_cpu_isa(isa);
          p.run();
          for (float x : p.o) ASSERT_TRUE(std::isnan(x));
          for (float x : p.lse) ASSERT_TRUE(std::isnan(x));
        }
      }
}

// A forward with lse = nullptr computes no log-sum-exp and gives the same o bits as with it: the small-D
// kernel on every ISA path (non-finite rows included) and the float64 GEMM path.
TEST(AttentionSmall, ForwardWithoutLseGivesTheSameOutput) {
  IsaGuard guard;
  for (int64_t D : {1, 8, 13})
    for (auto [Lq, Lk] : {std::pair<int64_t, int64_t>{1, 3}, {7, 7}, {20, 9}, {49, 49}, {197, 196}}) {
      Problem p(5, Lq, Lk, D, unsigned(11 * D + Lq));
      poison(p);
      const size_t no = p.q.size();
      for (CpuIsa isa : supported_isas()) {
        SCOPED_TRACE(::testing::Message()
                     << "isa " << kc::cpu_isa_name(isa) << " D " << D << " Lq " << Lq << " Lk " << Lk);
        kc::set_cpu_isa(isa);
        std::vector<float> o1(no, -1.f), o2(no, -2.f), lse(p.BH * Lq);
        kc::attention_forward<float>(p.BH, Lq, Lk, D, p.scale, p.q.data(), p.k.data(), p.v.data(), o1.data(),
                                     lse.data());
        kc::attention_forward<float>(p.BH, Lq, Lk, D, p.scale, p.q.data(), p.k.data(), p.v.data(), o2.data(),
                                     nullptr);
        for (size_t i = 0; i < no; ++i) ASSERT_TRUE(same_bits_nan_equal(o1[i], o2[i])) << "o[" << i << "]";
      }
      const std::vector<double> q(p.q.begin(), p.q.end()), k(p.k.begin(), p.k.end()),
          v(p.v.begin(), p.v.end());
      std::vector<double> o1(no, -1.0), o2(no, -2.0), lse(p.BH * Lq);
      kc::attention_forward<double>(p.BH, Lq, Lk, D, p.scale, q.data(), k.data(), v.data(), o1.data(),
                                    lse.data());
      kc::attention_forward<double>(p.BH, Lq, Lk, D, p.scale, q.data(), k.data(), v.data(), o2.data(),
                                    nullptr);
      for (size_t i = 0; i < no; ++i)
        ASSERT_TRUE(same_bits_nan_equal(o1[i], o2[i])) << "double o[" << i << "]";
    }
}

}  // namespace
