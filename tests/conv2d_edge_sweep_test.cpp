// An edge-shape sweep of the CPU conv2d kernels (forward, backward-data, weight and bias gradient), meant
// above all for the ASan/UBSan build: tiny and odd images (1x1, one row, one column, 17x17; 29 and 33 wide:
// the Winograd output transform's channel-outer rows of >= 12 tiles), batch 1,
// channel counts 1..9 and 17 (8 the only multiple of 8), every algorithm the dispatch can pick (the
// direct conv for K <= 4, im2col + GEMM with A read in place, the stride-2 vector copy, pointwise, the
// Winograd forward and weight gradient with its tile-major transforms, row ring and prefetch) on every ISA
// path and 1 and 3 threads. The inputs are exactly sized vectors, so a read or write past any of them is
// an ASan error. Each result is checked against a float64 definition written from the index formula
// (|got - ref| <= 1e-4 * sum |terms|: loose enough for Winograd's rounding, far below what a wrong index
// gives), and bitwise against the scalar path with one thread (docs/apps.md "Determinism").
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/conv2d_winograd.h"
#include "kernels/cpu/cpu_kernels.h"
#include "tests/test_util.h"

namespace kc = kern::cpu;

namespace {

using engine::test::bitwise_equal;
using engine::test::random_vector;

struct Conv {
  std::vector<float> y, dx, dw, db;
};

// The float64 definition: ref = the value, mag = the sum of the absolute values of its terms.
struct Ref {
  std::vector<double> y, ymag, dx, dxmag, dw, dwmag, db, dbmag;
};

Ref reference(const kern::Conv2dShape& s, const std::vector<float>& x, const std::vector<float>& w,
              const std::vector<float>& b, const std::vector<float>& dy) {
  Ref r;
  const int64_t CHW = s.C * s.H * s.W, KPQ = s.K * s.P * s.Q, CRS = s.C * s.R * s.S;
  r.y.assign(s.N * KPQ, 0);
  r.ymag.assign(s.N * KPQ, 0);
  r.dx.assign(s.N * CHW, 0);
  r.dxmag.assign(s.N * CHW, 0);
  r.dw.assign(s.K * CRS, 0);
  r.dwmag.assign(s.K * CRS, 0);
  r.db.assign(s.K, 0);
  r.dbmag.assign(s.K, 0);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t k = 0; k < s.K; ++k)
      for (int64_t p = 0; p < s.P; ++p)
        for (int64_t q = 0; q < s.Q; ++q) {
          const int64_t yi = n * KPQ + (k * s.P + p) * s.Q + q;
          r.y[yi] = b[k];
          r.ymag[yi] = std::abs(double(b[k]));
          const double g = dy[yi];
          r.db[k] += g;
          r.dbmag[k] += std::abs(g);
          for (int64_t c = 0; c < s.C; ++c)
            for (int64_t rr = 0; rr < s.R; ++rr)
              for (int64_t ss = 0; ss < s.S; ++ss) {
                const int64_t h = p * s.stride_h - s.pad_h + rr, ww = q * s.stride_w - s.pad_w + ss;
                if (h < 0 || h >= s.H || ww < 0 || ww >= s.W) continue;
                const int64_t xi = n * CHW + (c * s.H + h) * s.W + ww,
                              wi = k * CRS + (c * s.R + rr) * s.S + ss;
                const double xv = x[xi], wv = w[wi];
                r.y[yi] += wv * xv;
                r.ymag[yi] += std::abs(wv * xv);
                r.dx[xi] += wv * g;
                r.dxmag[xi] += std::abs(wv * g);
                r.dw[wi] += g * xv;
                r.dwmag[wi] += std::abs(g * xv);
              }
        }
  return r;
}

Conv run(const kern::Conv2dShape& s, const std::vector<float>& x, const std::vector<float>& w,
         const std::vector<float>& b, const std::vector<float>& dy) {
  Conv o;
  o.y.assign(s.N * s.K * s.P * s.Q, 7.0f);
  o.dx.assign(s.N * s.C * s.H * s.W, 7.0f);
  o.dw.assign(s.K * s.C * s.R * s.S, 7.0f);
  o.db.assign(s.K, 7.0f);
  kc::conv2d_forward<float>(s, x.data(), w.data(), b.data(), o.y.data());
  kc::conv2d_backward_input<float>(s, dy.data(), w.data(), o.dx.data());
  kc::conv2d_backward_weight<float>(s, dy.data(), x.data(), o.dw.data(), o.db.data());
  return o;
}

void expect_close(const char* what, const std::vector<float>& got, const std::vector<double>& ref,
                  const std::vector<double>& mag) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_LE(std::abs(double(got[i]) - ref[i]), 1e-4 * mag[i] + 1e-30)
        << what << "[" << i << "] = " << got[i] << ", definition " << ref[i];
}

class ConvEdgeSweep : public engine::test::CpuSettingsRestored {};

TEST_F(ConvEdgeSweep, OddShapesEveryAlgorithmIsaAndThreadCount) {
  // {R, S, stride_h, stride_w, pad_h, pad_w}: the Winograd domain, stride 2 (downsample), pointwise, a
  // non-square kernel with uneven padding.
  const int64_t kernels[][6] = {
      {3, 3, 1, 1, 1, 1}, {3, 3, 2, 2, 1, 1}, {1, 1, 1, 1, 0, 0}, {3, 2, 1, 2, 2, 0}};
  const int64_t sides[][2] = {{1, 1}, {1, 17}, {17, 1}, {2, 3}, {5, 5}, {9, 16}, {17, 17}, {3, 29}, {6, 33}};
  const int64_t chans[][2] = {{1, 1}, {3, 4}, {9, 1}, {1, 9}, {17, 5}, {8, 3}};
  int checked = 0;
  for (const auto& kr : kernels)
    for (const auto& hw : sides)
      for (const auto& ck : chans)
        for (int64_t N : {1, 3}) {
          const auto s =
              kern::conv2d_shape(N, ck[0], hw[0], hw[1], ck[1], kr[0], kr[1], kr[2], kr[3], kr[4], kr[5]);
          if (s.H + 2 * s.pad_h < s.R || s.W + 2 * s.pad_w < s.S) continue;  // the op refuses these
          SCOPED_TRACE(::testing::Message() << "N" << s.N << " C" << s.C << " H" << s.H << " W" << s.W << " K"
                                            << s.K << " " << s.R << "x" << s.S << " stride " << s.stride_h
                                            << "," << s.stride_w << " pad " << s.pad_h << "," << s.pad_w);
          const unsigned seed = unsigned(s.C * 131 + s.K * 17 + s.H * 7 + s.W + N);
          const auto x = random_vector(s.N * s.C * s.H * s.W, seed),
                     w = random_vector(s.K * s.C * s.R * s.S, seed + 1), b = random_vector(s.K, seed + 2),
                     dy = random_vector(s.N * s.K * s.P * s.Q, seed + 3);
          const Ref ref = reference(s, x, w, b, dy);
          const bool wino = kc::winograd_applies(s);
          for (kc::CpuConvAlgo algo : {kc::CpuConvAlgo::Im2col, kc::CpuConvAlgo::Winograd}) {
            if (algo == kc::CpuConvAlgo::Winograd && !wino) continue;
            kc::set_cpu_conv_algo(algo);
            kc::set_cpu_isa(kc::CpuIsa::Scalar);
            omp_set_num_threads(1);
            const Conv base = run(s, x, w, b, dy);
            expect_close("y", base.y, ref.y, ref.ymag);
            expect_close("dx", base.dx, ref.dx, ref.dxmag);
            expect_close("dw", base.dw, ref.dw, ref.dwmag);
            expect_close("db", base.db, ref.db, ref.dbmag);
            for (kc::CpuIsa isa : engine::test::supported_isas())
              for (int threads : {1, 3}) {
                kc::set_cpu_isa(isa);
                omp_set_num_threads(threads);
                const Conv o = run(s, x, w, b, dy);
                const auto where = ::testing::Message()
                                   << kc::cpu_isa_name(isa) << " threads " << threads << " algo "
                                   << (algo == kc::CpuConvAlgo::Winograd ? "winograd" : "im2col");
                EXPECT_TRUE(bitwise_equal(o.y, base.y)) << "y " << where;
                EXPECT_TRUE(bitwise_equal(o.dx, base.dx)) << "dx " << where;
                EXPECT_TRUE(bitwise_equal(o.dw, base.dw)) << "dw " << where;
                EXPECT_TRUE(bitwise_equal(o.db, base.db)) << "db " << where;
              }
            ++checked;
          }
          if (HasFatalFailure()) return;
        }
  EXPECT_GT(checked, 300);
}

}  // namespace
