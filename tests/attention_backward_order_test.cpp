// The small-head-dim float32 CPU attention backward (kernels/cpu/attention_small_impl.h) against a plain
// scalar emulation, written here, of the operation order its header documents: score and dP chains in d
// order, p = exp2(s - l2), ds = p * (dp - float(delta)), dq = (FMA chain over keys in key order) * scale,
// dk and dv = FMA chains over queries in query order. Bitwise, on every ISA path this CPU has, for 1, 2 and
// 3 threads, lengths that are and are not multiples of 16 or 8 (1, 6, 16, 17, 23, 32, 40, 49, 196, Lq != Lk),
// D in {1, 3, 8, 9, 16}, finite and non-finite inputs. Any re-vectorisation of the backward must keep these
// bits (a one-ulp change of l2's rounding fails it). The float64 error bounds are attention_small_test.cpp's.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <utility>
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
using engine::test::with_threads;
using kc::CpuIsa;

// y = 2^t for t <= 0 through the portable build's exp2 (the documented polynomial; its own accuracy and
// cross-ISA bits are attention_exp2_test.cpp's subject).
float exp2f_doc(float t) {
  float in[16] = {t}, out[16];
  kc::detail::attn_small_exp2_scalar(in, out, 16);
  return out[0];
}

// The documented backward of one contiguous (L, D) head, scalar, one operation at a time.
void emulate_backward(int64_t Lq, int64_t Lk, int64_t D, float scale, const float* q, const float* k,
                      const float* v, const float* o, const float* lse, const float* g, float* dq, float* dk,
                      float* dv) {
  const float s2 = static_cast<float>(double(scale) * 1.4426950408889634074);
  std::vector<float> P(Lq * Lk), DS(Lq * Lk);
  for (int64_t i = 0; i < Lq; ++i) {
    double delta = 0;
    for (int64_t d = 0; d < D; ++d) {
      volatile double prod = double(g[i * D + d]) * double(o[i * D + d]);  // volatile: no contraction
      delta += prod;
    }
    const float dl = static_cast<float>(delta);
    const float l2 = static_cast<float>(double(lse[i]) * 1.4426950408889634074);
    for (int64_t j = 0; j < Lk; ++j) {
      float s = (q[i * D] * s2) * k[j * D];
      for (int64_t d = 1; d < D; ++d) s = std::fma(q[i * D + d] * s2, k[j * D + d], s);
      float dp = g[i * D] * v[j * D];
      for (int64_t d = 1; d < D; ++d) dp = std::fma(g[i * D + d], v[j * D + d], dp);
      const float p = exp2f_doc(s - l2);
      P[i * Lk + j] = p;
      DS[i * Lk + j] = p * (dp - dl);
    }
    for (int64_t d = 0; d < D; ++d) {
      float acc = 0.0f;
      for (int64_t j = 0; j < Lk; ++j) acc = std::fma(DS[i * Lk + j], k[j * D + d], acc);
      dq[i * D + d] = acc * scale;
    }
  }
  for (int64_t j = 0; j < Lk; ++j)
    for (int64_t d = 0; d < D; ++d) {
      float ak = 0.0f, av = 0.0f;
      for (int64_t i = 0; i < Lq; ++i) {
        ak = std::fma(q[i * D + d] * scale, DS[i * Lk + j], ak);
        av = std::fma(g[i * D + d], P[i * Lk + j], av);
      }
      dk[j * D + d] = ak;
      dv[j * D + d] = av;
    }
}

struct Case {
  int64_t BH, Lq, Lk, D;
  double scale;
  std::vector<float> q, k, v, g, o, lse;
  Case(int64_t bh, int64_t lq, int64_t lk, int64_t d, unsigned seed, bool nonfinite)
      : BH(bh), Lq(lq), Lk(lk), D(d), scale(1.0 / std::sqrt(double(d))) {
    q = normal_vector<float>(BH * Lq * D, seed, 0.0, 1.5);
    k = normal_vector<float>(BH * Lk * D, seed + 1, 0.0, 1.5);
    v = normal_vector<float>(BH * Lk * D, seed + 2, 0.0, 1.0);
    g = normal_vector<float>(BH * Lq * D, seed + 3, 0.0, 1.0);
    if (nonfinite && BH >= 3) {  // head 1: a NaN key; head 2: a -inf key and a +inf dout element
      k[(1 * Lk + Lk / 2) * D] = std::numeric_limits<float>::quiet_NaN();
      k[(2 * Lk + Lk - 1) * D + D - 1] = -std::numeric_limits<float>::infinity();
      g[(2 * Lq + Lq / 2) * D] = std::numeric_limits<float>::infinity();
    }
    o.assign(BH * Lq * D, 0.f);
    lse.assign(BH * Lq, 0.f);
    kc::set_cpu_isa(CpuIsa::Scalar);  // one forward for every ISA's backward (its bits are tested elsewhere)
    kc::attention_forward<float>(BH, Lq, Lk, D, scale, q.data(), k.data(), v.data(), o.data(), lse.data());
  }
  std::vector<float> backward() const {
    std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
    kc::attention_backward<float>(BH, Lq, Lk, D, scale, q.data(), k.data(), v.data(), o.data(), lse.data(),
                                  g.data(), dq.data(), dk.data(), dv.data());
    dq.insert(dq.end(), dk.begin(), dk.end());
    dq.insert(dq.end(), dv.begin(), dv.end());
    return dq;
  }
  std::vector<float> emulated() const {
    const int64_t nq = Lq * D, nk = Lk * D;
    std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
    for (int64_t h = 0; h < BH; ++h)
      emulate_backward(Lq, Lk, D, static_cast<float>(scale), &q[h * nq], &k[h * nk], &v[h * nk], &o[h * nq],
                       &lse[h * Lq], &g[h * nq], &dq[h * nq], &dk[h * nk], &dv[h * nk]);
    dq.insert(dq.end(), dk.begin(), dk.end());
    dq.insert(dq.end(), dv.begin(), dv.end());
    return dq;
  }
};

// Index of the first value whose bits differ (NaN equals NaN), or -1.
int64_t first_difference(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (!same_bits_nan_equal(a[i], b[i])) return int64_t(i);
  return -1;
}

// Lk rounded up to 8 is an odd multiple of 8 (an 8-key last block) for 1, 17, 40, 49, 196 and an even one
// (16-key blocks only) for 16, 32; the last query block has 1 (1, 17, 49), 4 (196), 6 (6), 7 (23) or 8 (16,
// 32) rows (the backward's register groups of rows and their remainders).
const std::pair<int64_t, int64_t> kLengths[] = {{1, 1},   {1, 17},    {17, 1},   {17, 17},
                                                {49, 49}, {196, 196}, {49, 196}, {196, 49},
                                                {23, 40}, {6, 32},    {32, 16}};

TEST(AttentionSmallBackward, MatchesTheDocumentedOrderBitwiseOnEveryIsa) {
  IsaGuard guard;
  for (int64_t D : {1, 3, 8, 9, 16})
    for (auto [Lq, Lk] : kLengths)
      for (bool nonfinite : {false, true}) {
        const Case c(3, Lq, Lk, D, unsigned(13 * D + Lq + 3 * Lk), nonfinite);
        const std::vector<float> want = c.emulated();
        for (CpuIsa isa : supported_isas()) {
          kc::set_cpu_isa(isa);
          const std::vector<float> got = c.backward();
          const int64_t at = first_difference(got, want);
          ASSERT_EQ(at, -1) << kc::cpu_isa_name(isa) << " D " << D << " Lq " << Lq << " Lk " << Lk
                            << " nonfinite " << nonfinite << ": value " << at << " is " << got[at]
                            << ", the documented order gives " << want[at];
        }
      }
}

TEST(AttentionSmallBackward, BitwiseIndependentOfThreadCountOnEveryIsa) {
  IsaGuard guard;
  for (int64_t D : {3, 8})
    for (auto [Lq, Lk] : kLengths) {
      const Case c(5, Lq, Lk, D, unsigned(7 * D + Lq + Lk), true);
      for (CpuIsa isa : supported_isas()) {
        kc::set_cpu_isa(isa);
        std::vector<float> want;
        with_threads(1, [&] { want = c.backward(); });
        for (int th : {2, 3}) {
          std::vector<float> got;
          with_threads(th, [&] { got = c.backward(); });
          const int64_t at = first_difference(got, want);
          ASSERT_EQ(at, -1) << kc::cpu_isa_name(isa) << " " << th << " threads, D " << D << " Lq " << Lq
                            << " Lk " << Lk << ": value " << at;
        }
      }
    }
}

}  // namespace
