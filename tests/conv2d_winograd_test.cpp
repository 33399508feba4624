// Tests of the Winograd 3x3 convolution (kernels/cpu/conv2d_winograd.cpp) against the float64 definition
// of the convolution, with a rounding-error bound derived here; its bitwise invariance (thread count,
// batch size, GEMM ISA path, chunking); and the ENGINE_CPU_CONV dispatch in conv2d_forward.
//
// The bound: Winograd is a straight-line program of additions and multiplications, so its float32
// result is the exact one with each product path perturbed by at most n roundings (Higham, ch. 3):
//   |y - y_exact| <= gamma_n * Y_abs,  gamma_n = n u / (1 - n u), u = 2^-24,
// where Y_abs is the same algorithm run on absolute values (|A^T| (sum_c |G||g||G^T| (.) |B^T||d||B|) |A|,
// plus |b|). n counts the roundings along a path: weight transform (float64, rounded once) 1, input
// transform <= 3 per axis (6), transform-domain dot product over C channels (one fma chain) C, output
// transform <= 4 per axis (8), bias 1: n = C + 16. The matrices below are written out here independently
// of the kernel's factored code (F(2,3): Lavin & Gray 2016; F(4,3): scripts/winograd_matrices.py).
#include "kernels/cpu/conv2d_winograd.h"

#include <gtest/gtest.h>
#include <malloc.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "kernels/cpu/conv2d_winograd_simd.h"
#include "kernels/cpu/cpu_kernels.h"
#include "tests/test_util.h"

namespace {

using kern::Conv2dShape;
namespace kc = kern::cpu;
using engine::test::bitwise_equal;
using engine::test::random_vector;
using engine::test::shape3x3;
using engine::test::supported_isas;
using kc::CpuConvAlgo;
using kc::CpuIsa;

// The definition, in float64.
std::vector<double> conv_f64(const Conv2dShape& s, const float* x, const float* w, const float* b) {
  std::vector<double> y(s.N * s.K * s.H * s.W);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t k = 0; k < s.K; ++k)
      for (int64_t p = 0; p < s.H; ++p)
        for (int64_t q = 0; q < s.W; ++q) {
          double acc = b ? b[k] : 0.0;
          for (int64_t c = 0; c < s.C; ++c)
            for (int r = 0; r < 3; ++r)
              for (int t = 0; t < 3; ++t) {
                const int64_t h = p - 1 + r, ww = q - 1 + t;
                if (h < 0 || h >= s.H || ww < 0 || ww >= s.W) continue;
                acc += double(x[((n * s.C + c) * s.H + h) * s.W + ww]) *
                       double(w[(k * s.C + c) * 9 + r * 3 + t]);
              }
          y[((n * s.K + k) * s.H + p) * s.W + q] = acc;
        }
  return y;
}

// The F(2,3) matrices (Lavin & Gray 2016) and the F(4,3) ones for the points {0, 2/3, -2/3, 3/2, -3/2,
// inf} as scripts/winograd_matrices.py derives them (B^T: a x a, G: a x 3, A^T: m x a; the kernel applies
// power-of-two rescalings of these, which change neither the bits nor the bound).
struct Mats {
  int m, a;
  std::vector<double> BT, G, AT;
};
Mats mats(int m) {
  if (m == 2)
    return {2,
            4,
            {1, 0, -1, 0, 0, 1, 1, 0, 0, -1, 1, 0, 0, 1, 0, -1},
            {1, 0, 0, .5, .5, .5, .5, -.5, .5, 0, 0, 1},
            {1, 1, 1, 0, 0, 1, -1, -1}};
  return {4,
          6,
          {36, 0,   -97, 0,  36, 0, 0, -18, -27, 8,   12, 0, 0, 18, -27, -8,  12, 0,
           0,  -12, -8,  27, 18, 0, 0, 12,  -8,  -27, 18, 0, 0, 36, 0,   -97, 0,  36},
          {1. / 36, 0, 0, -1. / 520, -1. / 780, -1. / 1170, -1. / 520, 1. / 780, -1. / 1170, 1. / 1170,
           1. / 780, 1. / 520, 1. / 1170, -1. / 780, 1. / 520, 0, 0, 1. / 36},
          {1, 27, 27, 8, 8, 0, 0, 18, -18, 12, -12, 0, 0, 12, 12, 18, 18, 0, 0, 8, -8, 27, -27, 1}};
}

// The matrices above compute the 1-D correlation y_i = sum_k g_k d_(i+k): A^T[(G g) * (B^T d)] on the
// unit vectors g = e_k, d = e_l is [l == i + k] (to float64 rounding of the 1/520-like entries), so the
// bound below is the bound of a correct algorithm.
TEST(WinogradMatrices, ComputeTheCorrelation) {
  for (int m : {2, 4}) {
    const Mats M = mats(m);
    for (int i = 0; i < m; ++i)
      for (int k = 0; k < 3; ++k)
        for (int l = 0; l < M.a; ++l) {
          double y = 0;
          for (int j = 0; j < M.a; ++j) y += M.AT[i * M.a + j] * M.G[j * 3 + k] * M.BT[j * M.a + l];
          EXPECT_NEAR(y, l == i + k ? 1.0 : 0.0, 1e-13)
              << "m " << m << " i " << i << " k " << k << " l " << l;
        }
  }
}

// out (r x c2) = L (r x k) * X (k x c) * R^T (c2 x c), all |.| when absolute.
std::vector<double> sandwich(const std::vector<double>& L, int r, int k, const std::vector<double>& X, int c,
                             const std::vector<double>& R, int c2) {
  std::vector<double> t(r * c, 0.0), out(r * c2, 0.0);
  for (int i = 0; i < r; ++i)
    for (int j = 0; j < c; ++j)
      for (int l = 0; l < k; ++l) t[i * c + j] += std::fabs(L[i * k + l]) * X[l * c + j];
  for (int i = 0; i < r; ++i)
    for (int j = 0; j < c2; ++j)
      for (int l = 0; l < c; ++l) out[i * c2 + j] += t[i * c + l] * std::fabs(R[j * c + l]);
  return out;
}

// Y_abs: Winograd on absolute values, in float64 (see the file comment).
std::vector<double> winograd_abs(const Conv2dShape& s, const float* x, const float* w, const float* b,
                                 int m) {
  const Mats M = mats(m);
  const int a = M.a;
  const int64_t TY = (s.H + m - 1) / m, TX = (s.W + m - 1) / m;
  std::vector<double> U(s.K * s.C * a * a);
  for (int64_t kc = 0; kc < s.K * s.C; ++kc) {
    std::vector<double> g(9);
    for (int i = 0; i < 9; ++i) g[i] = std::fabs(w[kc * 9 + i]);
    auto u = sandwich(M.G, a, 3, g, 3, M.G, a);
    std::copy(u.begin(), u.end(), U.begin() + kc * a * a);
  }
  std::vector<double> y(s.N * s.K * s.H * s.W);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t ty = 0; ty < TY; ++ty)
      for (int64_t tx = 0; tx < TX; ++tx) {
        std::vector<std::vector<double>> V(s.C);
        for (int64_t c = 0; c < s.C; ++c) {
          std::vector<double> d(a * a, 0.0);
          for (int i = 0; i < a; ++i)
            for (int j = 0; j < a; ++j) {
              const int64_t h = ty * m - 1 + i, ww = tx * m - 1 + j;
              if (h >= 0 && h < s.H && ww >= 0 && ww < s.W)
                d[i * a + j] = std::fabs(x[((n * s.C + c) * s.H + h) * s.W + ww]);
            }
          V[c] = sandwich(M.BT, a, a, d, a, M.BT, a);
        }
        for (int64_t k = 0; k < s.K; ++k) {
          std::vector<double> mm(a * a, 0.0);
          for (int64_t c = 0; c < s.C; ++c)
            for (int i = 0; i < a * a; ++i) mm[i] += U[(k * s.C + c) * a * a + i] * V[c][i];
          auto yt = sandwich(M.AT, m, a, mm, a, M.AT, m);
          for (int i = 0; i < m; ++i)
            for (int j = 0; j < m; ++j) {
              const int64_t p = ty * m + i, q = tx * m + j;
              if (p < s.H && q < s.W)
                y[((n * s.K + k) * s.H + p) * s.W + q] = yt[i * m + j] + (b ? std::fabs(b[k]) : 0);
            }
        }
      }
  return y;
}

class WinogradConv : public engine::test::CpuSettingsRestored {};

struct Err {
  double max_abs = 0, max_rel = 0, worst_vs_bound = 0;  // rel: |err| / Y_abs (the bound's scale)
};

// Runs Winograd (tile m) on s and checks every output against the definition within gamma_n * Y_abs.
Err check_against_definition(const Conv2dShape& s, int m, bool bias, unsigned seed) {
  auto x = random_vector(s.N * s.C * s.H * s.W, seed), w = random_vector(s.K * s.C * 9, seed + 1),
       b = random_vector(s.K, seed + 2);
  const float* bp = bias ? b.data() : nullptr;
  std::vector<float> y(s.N * s.K * s.H * s.W, 99.0f);
  kc::conv2d_forward_winograd(s, x.data(), w.data(), bp, y.data(), m);
  const auto ref = conv_f64(s, x.data(), w.data(), bp);
  const auto mag = winograd_abs(s, x.data(), w.data(), bp, m);
  const double u = std::ldexp(1.0, -24), n = double(s.C) + 16, gamma = n * u / (1 - n * u);
  Err e;
  for (size_t i = 0; i < y.size(); ++i) {
    const double err = std::fabs(double(y[i]) - ref[i]);
    const double bound = gamma * mag[i] + 1e-12 * (1 + mag[i]);  // + the float64 reference's own error
    if (!(err <= bound)) {
      ADD_FAILURE() << "tile " << m << " N" << s.N << " C" << s.C << " H" << s.H << " W" << s.W << " K" << s.K
                    << " output " << i << ": got " << y[i] << ", definition " << ref[i] << ", |err| " << err
                    << " > bound " << bound;
      return e;
    }
    e.max_abs = std::max(e.max_abs, err);
    e.max_rel = std::max(e.max_rel, err / std::max(mag[i], 1e-30));
    e.worst_vs_bound = std::max(e.worst_vs_bound, err / bound);
  }
  return e;
}

TEST_F(WinogradConv, UNetShapesWithinTheRoundingBoundOfTheDefinition) {
  // The UNet's 3x3 stride-1 shapes (bench/unet_shapes.h), batch 2.
  const int64_t shapes[][3] = {{32, 32, 28}, {64, 32, 28}, {96, 32, 28}, {64, 64, 28}, {128, 64, 14},
                               {96, 64, 14}, {64, 64, 14}, {32, 64, 14}, {128, 64, 7}, {64, 64, 7}};
  // For comparison: the im2col path's max |err| on the same shapes and data.
  double im2col_err = 0;
  kc::set_cpu_conv_algo(CpuConvAlgo::Im2col);
  for (const auto& sh : shapes) {
    const auto s = shape3x3(2, sh[0], sh[2], sh[2], sh[1]);
    auto x = random_vector(s.N * s.C * s.H * s.W, 7), w = random_vector(s.K * s.C * 9, 8),
         b = random_vector(s.K, 9);
    std::vector<float> y(s.N * s.K * s.H * s.W);
    kc::conv2d_forward<float>(s, x.data(), w.data(), b.data(), y.data());
    const auto ref = conv_f64(s, x.data(), w.data(), b.data());
    for (size_t i = 0; i < y.size(); ++i) im2col_err = std::max(im2col_err, std::fabs(double(y[i]) - ref[i]));
  }
  std::printf("im2col on the UNet shapes: max |err| %.3g\n", im2col_err);
  for (int m : {2, 4}) {
    Err worst;
    for (const auto& sh : shapes) {
      const auto s = shape3x3(2, sh[0], sh[2], sh[2], sh[1]);
      const Err e = check_against_definition(s, m, true, 7);
      worst.max_abs = std::max(worst.max_abs, e.max_abs);
      worst.max_rel = std::max(worst.max_rel, e.max_rel);
      worst.worst_vs_bound = std::max(worst.worst_vs_bound, e.worst_vs_bound);
    }
    std::printf(
        "F(%dx%d,3x3) on the UNet shapes (inputs, weights U(-1,1)): max |err| %.3g, max |err|/Y_abs %.3g, "
        "max |err|/bound %.3g\n",
        m, m, worst.max_abs, worst.max_rel, worst.worst_vs_bound);
  }
}

TEST_F(WinogradConv, OddShapesBatchesAndIsas) {
  // Sizes not a multiple of the tile, 1x1 and 2x3 images, C and K not multiples of 8, batch 1..3.
  const int64_t shapes[][4] = {{3, 7, 7, 5},  {5, 1, 1, 3},   {13, 5, 9, 11}, {1, 2, 3, 1},
                               {9, 6, 10, 7}, {17, 11, 4, 2}, {8, 13, 13, 8}};
  for (CpuIsa isa : supported_isas()) {
    kc::set_cpu_isa(isa);
    for (int m : {2, 4})
      for (int64_t N = 1; N <= 3; ++N)
        for (const auto& sh : shapes) {
          SCOPED_TRACE(::testing::Message() << kc::cpu_isa_name(isa) << " tile " << m << " N" << N);
          check_against_definition(shape3x3(N, sh[0], sh[1], sh[2], sh[3]), m, N != 2, 100 + N);
        }
  }
}

// The same bits whatever the thread count, the batch around an image, the chunking and the GEMM ISA.
TEST_F(WinogradConv, BitwiseInvariantToThreadsBatchAndIsa) {
  // 5 images of 28x28: several chunks, with chunk boundaries inside images.
  for (int m : {2, 4}) {
    const auto s = shape3x3(5, 32, 28, 28, 32);
    auto x = random_vector(s.N * s.C * s.H * s.W, 31), w = random_vector(s.K * s.C * 9, 32),
         b = random_vector(s.K, 33);
    const size_t img = s.K * s.H * s.W;
    kc::set_cpu_isa(CpuIsa::Scalar);
    omp_set_num_threads(1);
    std::vector<float> ref(s.N * img);
    kc::conv2d_forward_winograd(s, x.data(), w.data(), b.data(), ref.data(), m);
    for (CpuIsa isa : supported_isas())
      for (int threads : {1, 2, 3}) {
        kc::set_cpu_isa(isa);
        omp_set_num_threads(threads);
        std::vector<float> y(ref.size());
        kc::conv2d_forward_winograd(s, x.data(), w.data(), b.data(), y.data(), m);
        EXPECT_EQ(0, std::memcmp(y.data(), ref.data(), sizeof(float) * y.size()))
            << "tile " << m << " " << kc::cpu_isa_name(isa) << " threads " << threads;
        // Each image alone (batch 1) and images 1..3 as a batch of 3.
        for (int64_t n = 0; n < s.N; ++n) {
          Conv2dShape one = s;
          one.N = 1;
          std::vector<float> y1(img);
          kc::conv2d_forward_winograd(one, x.data() + n * s.C * s.H * s.W, w.data(), b.data(), y1.data(), m);
          EXPECT_EQ(0, std::memcmp(y1.data(), ref.data() + n * img, sizeof(float) * img)) << "image " << n;
        }
        Conv2dShape three = s;
        three.N = 3;
        std::vector<float> y3(3 * img);
        kc::conv2d_forward_winograd(three, x.data() + s.C * s.H * s.W, w.data(), b.data(), y3.data(), m);
        EXPECT_EQ(0, std::memcmp(y3.data(), ref.data() + img, sizeof(float) * y3.size()));
      }
  }
}

// Forward (with and without bias) and backward-data Winograd with tile m on s, under every ISA path this
// CPU has and 1..3 threads (so the chunks split tile rows in different places), each bitwise equal to the
// portable per-tile transforms (the scalar path) on 1 thread: the AVX2 / AVX-512 transforms
// (conv2d_winograd_simd.h) must be the same float operations.
void expect_every_isa_bitwise_the_scalar_path(const Conv2dShape& s, int m, unsigned seed) {
  SCOPED_TRACE(::testing::Message() << "tile " << m << " N" << s.N << " C" << s.C << " H" << s.H << " W"
                                    << s.W << " K" << s.K);
  const auto x = random_vector(s.N * s.C * s.H * s.W, seed), w = random_vector(s.K * s.C * 9, seed + 1),
             b = random_vector(s.K, seed + 2), dy = random_vector(s.N * s.K * s.H * s.W, seed + 3);
  struct Out {
    std::vector<float> y, yb, dx;
  };
  auto run = [&] {
    Out o{std::vector<float>(s.N * s.K * s.H * s.W, 99.0f), std::vector<float>(s.N * s.K * s.H * s.W, 99.0f),
          std::vector<float>(s.N * s.C * s.H * s.W, 99.0f)};
    kc::conv2d_forward_winograd(s, x.data(), w.data(), nullptr, o.y.data(), m);
    kc::conv2d_forward_winograd(s, x.data(), w.data(), b.data(), o.yb.data(), m);
    kc::conv2d_backward_input_winograd(s, dy.data(), w.data(), o.dx.data(), m);
    return o;
  };
  kc::set_cpu_isa(CpuIsa::Scalar);
  omp_set_num_threads(1);
  const Out ref = run();
  for (CpuIsa isa : supported_isas())
    for (int threads : {1, 2, 3}) {
      kc::set_cpu_isa(isa);
      omp_set_num_threads(threads);
      const Out o = run();
      EXPECT_TRUE(bitwise_equal(o.y, ref.y)) << kc::cpu_isa_name(isa) << " threads " << threads << ": y";
      EXPECT_TRUE(bitwise_equal(o.yb, ref.yb)) << kc::cpu_isa_name(isa) << " threads " << threads << ": y+b";
      EXPECT_TRUE(bitwise_equal(o.dx, ref.dx)) << kc::cpu_isa_name(isa) << " threads " << threads << ": dx";
    }
}

TEST_F(WinogradConv, SimdTransformsBitwiseTheScalarPathOnUNetShapes) {
  const int64_t shapes[][3] = {{32, 32, 28}, {64, 32, 28}, {96, 32, 28}, {64, 64, 28}, {128, 64, 14},
                               {96, 64, 14}, {64, 64, 14}, {32, 64, 14}, {128, 64, 7}, {64, 64, 7}};
  for (int m : {2, 4})
    for (const auto& sh : shapes)
      expect_every_isa_bitwise_the_scalar_path(shape3x3(2, sh[0], sh[2], sh[2], sh[1]), m, 61);
}

TEST_F(WinogradConv, SimdTransformsBitwiseTheScalarPathOnOddShapes) {
  // {N, C, H, W, K}: 1x1 and 1-row images, C = 1, 3, 33, widths giving 1..75 tiles per row (not multiples
  // of 8 or 16; 75 > the 64-tile row pieces), batch 1..3.
  const int64_t shapes[][5] = {{1, 1, 1, 1, 1},  {2, 3, 1, 1, 5},   {3, 33, 5, 17, 9}, {1, 3, 3, 33, 4},
                               {2, 1, 7, 31, 3}, {3, 33, 2, 3, 33}, {1, 5, 4, 150, 2}, {2, 4, 9, 35, 6},
                               {1, 2, 6, 9, 1},  {3, 3, 1, 16, 7},  {2, 33, 15, 15, 3}};
  for (int m : {2, 4})
    for (const auto& sh : shapes)
      expect_every_isa_bitwise_the_scalar_path(shape3x3(sh[0], sh[1], sh[2], sh[3], sh[4]), m, 71);
}

// Rows of 1..8 tiles (W = 1..16: the AVX-512 F(2x2) path packs 2..4 whole tile rows into one vector up to
// 7 tiles per row), H = 1..9 (odd: a last tile row half outside), batch 1 and 3 (1..3 threads: chunks
// ending inside an image and inside a tile row).
TEST_F(WinogradConv, SimdTransformsBitwiseTheScalarPathOnNarrowRows) {
  for (int64_t W = 1; W <= 16; ++W)
    for (int64_t H : {2, 3, 9})
      for (int64_t N : {1, 3}) expect_every_isa_bitwise_the_scalar_path(shape3x3(N, 3, H, W, 2), 2, 91);
}

// The SIMD transforms called on a chunk split at arbitrary tiles (inside tile rows and images, pieces of
// 1..23 tiles, as the weight gradient and the thread split do) give the bits of one call over all tiles.
TEST_F(WinogradConv, SimdTransformsChunkSplitAnywhereEqualsOneCall) {
  bool ran = false;
  for (CpuIsa isa : supported_isas()) {
    if (isa == CpuIsa::Scalar) continue;
    ran = true;
    auto in = isa == CpuIsa::Avx512 ? kc::detail::winograd_input_avx512 : kc::detail::winograd_input_avx2;
    auto out = isa == CpuIsa::Avx512 ? kc::detail::winograd_output_avx512 : kc::detail::winograd_output_avx2;
    for (int m : {2, 4})
      for (int64_t W : {1, 2, 5, 7, 8, 13, 14, 15, 29})
        for (int64_t H : {3, 7}) {
          const Conv2dShape s = shape3x3(3, 2, H, W, 3);
          SCOPED_TRACE(::testing::Message()
                       << kc::cpu_isa_name(isa) << " tile " << m << " H" << H << " W" << W);
          const int a = m + 2;
          const int64_t T = s.N * ((H + m - 1) / m) * ((W + m - 1) / m), ld = T + 16;
          const auto x = random_vector(s.N * s.C * H * W, 101), M = random_vector(a * a * s.K * ld, 102),
                     b = random_vector(s.K, 103), t = random_vector(s.N * s.K, 104),
                     r = random_vector(s.N * s.K * H * W, 105);
          const kc::WinogradAdd add{t.data(), r.data()};
          std::vector<float> v1(a * a * s.C * ld, 7.0f), v2 = v1, y1(s.N * s.K * H * W, 7.0f), y2 = y1;
          in(m, s, x.data(), 0, T, v1.data(), ld);
          out(m, s, M.data(), ld, 0, T, b.data(), add, y1.data());
          int64_t step = 1;
          for (int64_t t0 = 0; t0 < T; t0 += step, step = step % 23 + 4) {
            const int64_t nt = std::min(step, T - t0);
            in(m, s, x.data(), t0, nt, v2.data() + t0, ld);  // increasing t0: spare columns overwritten
            out(m, s, M.data() + t0, ld, t0, nt, b.data(), add, y2.data());
          }
          for (int64_t row = 0; row < a * a * s.C; ++row)
            ASSERT_EQ(0, std::memcmp(v1.data() + row * ld, v2.data() + row * ld, sizeof(float) * T))
                << "V row " << row;
          EXPECT_TRUE(bitwise_equal(y1, y2));
        }
  }
  if (!ran) GTEST_SKIP() << "no AVX2 / AVX-512 path on this CPU: only the portable transforms exist here";
}

// The SIMD output transform's per-thread piece buffer (rows of >= 12 tiles) is freed when its thread ends:
// 16 short-lived threads (as OpenMP pools shrink and grow) each run it on 3,072 tiles (~120 KB of pieces);
// glibc's bytes in use (mallinfo2, all arenas) must not grow by more than a quarter of that. (Under
// AddressSanitizer mallinfo2 does not see ASan's heap; LeakSanitizer reports the leak there instead.)
TEST_F(WinogradConv, SimdOutputPieceBufferFreedAtThreadExit) {
  {  // mallinfo2 sees only glibc's malloc: under a sanitizer's allocator it reads no growth at all
    const size_t base = mallinfo2().uordblks;
    std::vector<char> probe(size_t(1) << 16, 1);  // below the mmap threshold
    const size_t grown = mallinfo2().uordblks - base;
    if (grown < probe.size() / 2 || probe[12345] != 1)
      GTEST_SKIP()
          << "mallinfo2 does not count this allocator's blocks (sanitizer build?): LeakSanitizer checks "
             "this there";
  }
  bool ran = false;
  for (CpuIsa isa : supported_isas()) {
    if (isa == CpuIsa::Scalar) continue;
    ran = true;
    auto out = isa == CpuIsa::Avx512 ? kc::detail::winograd_output_avx512 : kc::detail::winograd_output_avx2;
    const Conv2dShape s = shape3x3(1, 1, 512, 24, 1);  // TX = 12: the channel-outer order with pieces
    const int64_t T = 256 * 12, ld = T + 16;
    const auto M = random_vector(16 * s.K * ld, 111);
    std::vector<float> y(s.H * s.W);
    const kc::WinogradAdd add{nullptr, nullptr};
    auto run = [&] { out(2, s, M.data(), ld, 0, T, nullptr, add, y.data()); };
    std::thread(run).join();  // warm-up: arenas and thread bookkeeping
    const size_t before = mallinfo2().uordblks;
    for (int i = 0; i < 16; ++i) std::thread(run).join();
    const size_t after = mallinfo2().uordblks, leak_if_kept = 16 * size_t(T) * 40;
    EXPECT_LT(after, before + leak_if_kept / 4)
        << kc::cpu_isa_name(isa) << ": " << (after - before) << " bytes still in use after 16 threads ended";
  }
  if (!ran) GTEST_SKIP() << "no AVX2 / AVX-512 path on this CPU: only the portable transforms exist here";
}

// The epilogue terms (b, the per-sample bias add.t, the residual add.r, each alone and all together) under
// every ISA path and 1..3 threads, bitwise the scalar path on 1 thread, on rows of 1..18 tiles (both loop
// orders of the SIMD output transform: piece-outer below kKOuterMinTx tiles per row, channel-outer from
// it), odd H / W, N = 1..3 (chunks that end inside an image).
TEST_F(WinogradConv, SimdOutputEpilogueBitwiseTheScalarPath) {
  // {N, C, H, W, K}
  const int64_t shapes[][5] = {{1, 3, 2, 2, 5},  {2, 4, 5, 13, 6},  {3, 5, 7, 23, 4},  {2, 3, 9, 24, 7},
                               {3, 2, 3, 36, 9}, {1, 4, 11, 29, 3}, {2, 6, 28, 28, 5}, {3, 3, 14, 14, 6}};
  for (int m : {2, 4})
    for (const auto& sh : shapes) {
      const Conv2dShape s = shape3x3(sh[0], sh[1], sh[2], sh[3], sh[4]);
      SCOPED_TRACE(::testing::Message() << "tile " << m << " N" << s.N << " C" << s.C << " H" << s.H << " W"
                                        << s.W << " K" << s.K);
      const int64_t ny = s.N * s.K * s.H * s.W;
      const auto x = random_vector(s.N * s.C * s.H * s.W, 81), w = random_vector(s.K * s.C * 9, 82),
                 b = random_vector(s.K, 83), t = random_vector(s.N * s.K, 84), r = random_vector(ny, 85);
      for (int terms = 1; terms < 8; ++terms) {  // bit 0: b, bit 1: t, bit 2: r
        const float* bp = terms & 1 ? b.data() : nullptr;
        const kc::WinogradAdd add{terms & 2 ? t.data() : nullptr, terms & 4 ? r.data() : nullptr};
        kc::set_cpu_isa(CpuIsa::Scalar);
        omp_set_num_threads(1);
        std::vector<float> ref(ny, 99.0f);
        kc::conv2d_forward_winograd(s, x.data(), w.data(), bp, ref.data(), m, add);
        for (CpuIsa isa : supported_isas())
          for (int threads : {1, 2, 3}) {
            kc::set_cpu_isa(isa);
            omp_set_num_threads(threads);
            std::vector<float> y(ny, 99.0f);
            kc::conv2d_forward_winograd(s, x.data(), w.data(), bp, y.data(), m, add);
            EXPECT_TRUE(bitwise_equal(y, ref))
                << kc::cpu_isa_name(isa) << " threads " << threads << " terms " << terms;
          }
      }
    }
}

// dx[n,c,h,w] = sum_{k,r,q} dy[n,k,h+1-r,w+1-q] w[k,c,r,q] (stride 1, pad 1), in float64.
std::vector<double> bwd_input_f64(const Conv2dShape& s, const float* dy, const float* w) {
  std::vector<double> dx(s.N * s.C * s.H * s.W, 0.0);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t c = 0; c < s.C; ++c)
      for (int64_t h = 0; h < s.H; ++h)
        for (int64_t ww = 0; ww < s.W; ++ww) {
          double acc = 0;
          for (int64_t k = 0; k < s.K; ++k)
            for (int r = 0; r < 3; ++r)
              for (int q = 0; q < 3; ++q) {
                const int64_t p = h + 1 - r, o = ww + 1 - q;
                if (p < 0 || p >= s.H || o < 0 || o >= s.W) continue;
                acc += double(dy[((n * s.K + k) * s.H + p) * s.W + o]) *
                       double(w[(k * s.C + c) * 9 + r * 3 + q]);
              }
          dx[((n * s.C + c) * s.H + h) * s.W + ww] = acc;
        }
  return dx;
}

TEST_F(WinogradConv, BackwardInputWithinTheRoundingBoundAndInvariant) {
  const int64_t shapes[][5] = {{2, 32, 28, 28, 64}, {2, 64, 14, 14, 64}, {3, 128, 7, 7, 64},
                               {1, 5, 9, 7, 3},     {3, 3, 1, 1, 11},    {2, 13, 5, 6, 9}};
  for (int m : {2, 4})
    for (const auto& sh : shapes) {
      const auto s = shape3x3(sh[0], sh[1], sh[2], sh[3], sh[4]);
      SCOPED_TRACE(::testing::Message() << "tile " << m << " N" << s.N << " C" << s.C << " H" << s.H << " W"
                                        << s.W << " K" << s.K);
      auto dy = random_vector(s.N * s.K * s.H * s.W, 51), w = random_vector(s.K * s.C * 9, 52);
      std::vector<float> dx(s.N * s.C * s.H * s.W, 99.0f);
      kc::conv2d_backward_input_winograd(s, dy.data(), w.data(), dx.data(), m);
      const auto ref = bwd_input_f64(s, dy.data(), w.data());
      // The bound of the equivalent forward problem: K -> C channels, weights flipped and transposed.
      Conv2dShape t = s;
      t.C = s.K, t.K = s.C;
      std::vector<float> wt(w.size());
      for (int64_t k = 0; k < s.K; ++k)
        for (int64_t c = 0; c < s.C; ++c)
          for (int r = 0; r < 3; ++r)
            for (int q = 0; q < 3; ++q)
              wt[((c * s.K + k) * 3 + 2 - r) * 3 + 2 - q] = w[((k * s.C + c) * 3 + r) * 3 + q];
      const auto mag = winograd_abs(t, dy.data(), wt.data(), nullptr, m);
      const double u = std::ldexp(1.0, -24), n = double(s.K) + 16, gamma = n * u / (1 - n * u);
      for (size_t i = 0; i < dx.size(); ++i)
        ASSERT_LE(std::fabs(double(dx[i]) - ref[i]), gamma * mag[i] + 1e-12 * (1 + mag[i])) << i;
      // Threads and ISA do not change the bits.
      for (CpuIsa isa : supported_isas())
        for (int threads : {1, 3}) {
          kc::set_cpu_isa(isa);
          omp_set_num_threads(threads);
          std::vector<float> dx2(dx.size());
          kc::conv2d_backward_input_winograd(s, dy.data(), w.data(), dx2.data(), m);
          EXPECT_EQ(0, std::memcmp(dx.data(), dx2.data(), sizeof(float) * dx.size()));
        }
      kc::set_cpu_isa(CpuIsa::Auto);
      omp_set_num_threads(threads_);
    }
}

TEST_F(WinogradConv, DispatchFollowsTheSettingAndFloat64StaysExact) {
  const auto s = shape3x3(2, 8, 9, 9, 6);
  auto x = random_vector(s.N * s.C * s.H * s.W, 41), w = random_vector(s.K * s.C * 9, 42),
       b = random_vector(s.K, 43);
  std::vector<float> wino(s.N * s.K * s.H * s.W), viaconv(wino.size()), im2col(wino.size());
  kc::conv2d_forward_winograd(s, x.data(), w.data(), b.data(), wino.data());
  kc::set_cpu_conv_algo(CpuConvAlgo::Winograd);
  EXPECT_TRUE(kc::winograd_selected(s));
  kc::conv2d_forward<float>(s, x.data(), w.data(), b.data(), viaconv.data());
  EXPECT_EQ(0, std::memcmp(wino.data(), viaconv.data(), sizeof(float) * wino.size()));
  kc::set_cpu_conv_algo(CpuConvAlgo::Im2col);
  EXPECT_FALSE(kc::winograd_selected(s));
  kc::conv2d_forward<float>(s, x.data(), w.data(), b.data(), im2col.data());
  EXPECT_NE(0, std::memcmp(wino.data(), im2col.data(), sizeof(float) * wino.size()))
      << "im2col and Winograd round differently: equal bits mean the setting was ignored";
  // Not applicable: stride 2, 1x1, pad 0.
  Conv2dShape s2 = s;
  s2.stride_h = s2.stride_w = 2, s2.P = s2.Q = 5;
  Conv2dShape pw{2, 8, 9, 9, 6, 1, 1, 1, 1, 0, 0, 9, 9};
  Conv2dShape p0{2, 8, 9, 9, 6, 3, 3, 1, 1, 0, 0, 7, 7};
  kc::set_cpu_conv_algo(CpuConvAlgo::Winograd);
  for (const auto& t : {s2, pw, p0}) {
    EXPECT_FALSE(kc::winograd_applies(t));
    EXPECT_THROW(kc::conv2d_forward_winograd(t, x.data(), w.data(), b.data(), wino.data()), std::exception);
  }
  EXPECT_THROW(kc::conv2d_forward_winograd(s, x.data(), w.data(), b.data(), wino.data(), 3), std::exception);
  // float64 never takes Winograd: it matches the definition to float64 rounding.
  std::vector<double> xd(x.begin(), x.end()), wd(w.begin(), w.end()), bd(b.begin(), b.end()), yd(wino.size());
  kc::conv2d_forward<double>(s, xd.data(), wd.data(), bd.data(), yd.data());
  const auto ref = conv_f64(s, x.data(), w.data(), b.data());
  for (size_t i = 0; i < yd.size(); ++i) EXPECT_NEAR(yd[i], ref[i], 1e-13) << i;
  EXPECT_STREQ(kc::cpu_conv_algo_name(CpuConvAlgo::Winograd), "winograd");
  // Auto: by channel counts alone (C * K >= 1024: the UNet's 32 -> 32 and up take Winograd, conv_in
  // 1 -> 32 stays on im2col).
  kc::set_cpu_conv_algo(CpuConvAlgo::Auto);
  if (kc::cpu_conv_algo() == CpuConvAlgo::Auto) {  // ENGINE_CPU_CONV unset or auto
    EXPECT_FALSE(kc::winograd_selected(shape3x3(1, 1, 28, 28, 32)));
    EXPECT_FALSE(kc::winograd_selected(shape3x3(1, 31, 28, 28, 33)));  // 1023
    EXPECT_TRUE(kc::winograd_selected(shape3x3(1, 32, 28, 28, 32)));
    EXPECT_TRUE(kc::winograd_selected(shape3x3(1, 32, 14, 14, 64)));
    EXPECT_TRUE(kc::winograd_selected(shape3x3(200, 64, 7, 7, 64)));
  }
}

}  // namespace

// The float32 error of each 3x3 conv algorithm against the float64 definition on the UNet shapes that
// matter for accuracy (C, K in {32, 64}, 28x28, 14x14, 7x7, batch 2), with inputs N(0, 1) and kaiming
// weights N(0, 2 / (9 C)): RMS(err) / RMS(y) and max|err| / RMS(y), over all shapes together. F(4x4, 3x3)
// with the points {0, +-2/3, +-3/2, inf} must keep its RMS error within 4x F(2x2, 3x3)'s and 2.5x
// im2col's, and its max error within 3x im2col's (measured 3.0x, 1.9x, 2.2x). Lavin & Gray's points
// {0, +-1, +-2, inf} fail all three (6.4x, 4.0x, 9.3x) and broke Model.ReferenceFixtureF64Tiny.
TEST_F(WinogradConv, Tile4ErrorOnUNetShapesCloseToTile2AndIm2col) {
  struct Acc {
    double se = 0, max = 0;
  };
  Acc acc[3];  // im2col, F(2x2), F(4x4)
  double sy = 0;
  size_t count = 0;
  unsigned seed = 500;
  for (int64_t C : {32, 64})
    for (int64_t K : {32, 64})
      for (int64_t H : {28, 14, 7}) {
        const auto s = shape3x3(2, C, H, H, K);
        const auto x = engine::test::normal_vector<float>(s.N * C * H * H, ++seed, 0.0, 1.0);
        const auto w = engine::test::normal_vector<float>(K * C * 9, ++seed, 0.0, std::sqrt(2.0 / (9.0 * C)));
        const auto ref = conv_f64(s, x.data(), w.data(), nullptr);
        for (int alg = 0; alg < 3; ++alg) {
          std::vector<float> y(ref.size(), 99.0f);
          if (alg == 0) {
            kc::set_cpu_conv_algo(CpuConvAlgo::Im2col);
            kc::conv2d_forward<float>(s, x.data(), w.data(), nullptr, y.data());
          } else {
            kc::conv2d_forward_winograd(s, x.data(), w.data(), nullptr, y.data(), alg == 1 ? 2 : 4);
          }
          for (size_t i = 0; i < y.size(); ++i) {
            const double e = std::fabs(double(y[i]) - ref[i]);
            acc[alg].se += e * e;
            acc[alg].max = std::max(acc[alg].max, e);
          }
        }
        for (double v : ref) sy += v * v;
        count += ref.size();
      }
  const double rms_y = std::sqrt(sy / double(count));
  double rms[3];
  const char* names[3] = {"im2col", "F(2x2,3x3)", "F(4x4,3x3)"};
  for (int alg = 0; alg < 3; ++alg) {
    rms[alg] = std::sqrt(acc[alg].se / double(count)) / rms_y;
    std::printf("%-11s RMS err / RMS y %.3g, max |err| / RMS y %.3g\n", names[alg], rms[alg],
                acc[alg].max / rms_y);
  }
  EXPECT_GT(rms[1], 0.0) << "float32 Winograd cannot be exact on random data";
  EXPECT_LE(rms[2], 4.0 * rms[1]);
  EXPECT_LE(rms[2], 2.5 * rms[0]);
  EXPECT_LE(acc[2].max, 3.0 * acc[0].max);
}
