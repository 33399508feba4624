// Tests of the Winograd F(2x2, 3x3) weight gradient (kernels/cpu/conv2d_winograd_wgrad.cpp) against the
// float64 definition dw[k][c][r][q] = sum_{n,p,o} dy[n][k][p][o] x[n][c][p + r - 1][o + q - 1], with a
// rounding-error bound derived here; its bitwise invariance (thread count, ISA path); the SIMD tile-major
// transforms against the portable ones; non-finite propagation; the dispatch in conv2d_backward_weight.
//
// The bound: the algorithm is a straight-line program of additions and multiplications, so its float32
// result is the exact one with each product path perturbed by at most n roundings (Higham, ch. 3):
//   |dw - dw_exact| <= gamma_n * DW_abs,  gamma_n = n u / (1 - n u), u = 2^-24,
// where DW_abs is the algorithm run on absolute values, |G^T| (sum_t |A||dy_t||A^T| (.) |B^T||d_t||B|) |G|.
// n along a path: input transform 1 per axis (2), dy transform 1 per axis (2), the transform-domain sum
// over the T tiles (one fma chain) T, the float64 output transform rounded once to float 1: n = T + 5.
// The matrices are written out here from Lavin & Gray 2016, independently of the kernel's factored code.
#include "kernels/cpu/conv2d_winograd_wgrad.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "kernels/cpu/conv2d_winograd.h"
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

const double kBT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
const double kG[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
const double kAT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};

// The definition, in float64.
std::vector<double> wgrad_f64(const Conv2dShape& s, const float* dy, const float* x) {
  std::vector<double> dw(s.K * s.C * 9, 0.0);
  for (int64_t k = 0; k < s.K; ++k)
    for (int64_t c = 0; c < s.C; ++c)
      for (int r = 0; r < 3; ++r)
        for (int q = 0; q < 3; ++q) {
          double acc = 0;
          for (int64_t n = 0; n < s.N; ++n)
            for (int64_t p = 0; p < s.H; ++p)
              for (int64_t o = 0; o < s.W; ++o) {
                const int64_t h = p + r - 1, w = o + q - 1;
                if (h < 0 || h >= s.H || w < 0 || w >= s.W) continue;
                acc += double(dy[((n * s.K + k) * s.H + p) * s.W + o]) *
                       double(x[((n * s.C + c) * s.H + h) * s.W + w]);
              }
          dw[(k * s.C + c) * 9 + r * 3 + q] = acc;
        }
  return dw;
}

// DW_abs (see the file comment), in float64.
std::vector<double> wgrad_abs(const Conv2dShape& s, const float* dy, const float* x) {
  const int64_t K = s.K, C = s.C, H = s.H, W = s.W;
  std::vector<double> dU(K * C * 16, 0.0), Vabs(C * 16), Mabs(K * 16);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t ty = 0; 2 * ty < H; ++ty)
      for (int64_t tx = 0; 2 * tx < W; ++tx) {
        for (int64_t c = 0; c < C; ++c)
          for (int a = 0; a < 4; ++a)
            for (int b = 0; b < 4; ++b) {
              double v = 0;
              for (int r = 0; r < 4; ++r)
                for (int q = 0; q < 4; ++q) {
                  const int64_t h = 2 * ty - 1 + r, w = 2 * tx - 1 + q;
                  if (h >= 0 && h < H && w >= 0 && w < W)
                    v += std::fabs(kBT[a][r] * kBT[b][q]) * std::fabs(x[((n * C + c) * H + h) * W + w]);
                }
              Vabs[c * 16 + a * 4 + b] = v;
            }
        for (int64_t k = 0; k < K; ++k)
          for (int a = 0; a < 4; ++a)
            for (int b = 0; b < 4; ++b) {
              double m = 0;
              for (int i = 0; i < 2; ++i)
                for (int j = 0; j < 2; ++j) {
                  const int64_t p = 2 * ty + i, o = 2 * tx + j;
                  if (p < H && o < W)
                    m += std::fabs(kAT[i][a] * kAT[j][b]) * std::fabs(dy[((n * K + k) * H + p) * W + o]);
                }
              Mabs[k * 16 + a * 4 + b] = m;
            }
        for (int64_t k = 0; k < K; ++k)
          for (int64_t c = 0; c < C; ++c)
            for (int e = 0; e < 16; ++e) dU[(k * C + c) * 16 + e] += Mabs[k * 16 + e] * Vabs[c * 16 + e];
      }
  std::vector<double> out(K * C * 9, 0.0);
  for (int64_t kc = 0; kc < K * C; ++kc)
    for (int r = 0; r < 3; ++r)
      for (int q = 0; q < 3; ++q)
        for (int a = 0; a < 4; ++a)
          for (int b = 0; b < 4; ++b)
            out[kc * 9 + r * 3 + q] += std::fabs(kG[a][r] * kG[b][q]) * dU[kc * 16 + a * 4 + b];
  return out;
}

int64_t tiles(const Conv2dShape& s) { return s.N * ((s.H + 1) / 2) * ((s.W + 1) / 2); }

class WinogradWgrad : public engine::test::CpuSettingsRestored {};

// Runs the Winograd weight gradient on s and checks every element against the definition within
// gamma_(T+5) * DW_abs. Returns the largest |err| / bound.
double check_against_definition(const Conv2dShape& s, unsigned seed) {
  const auto x = random_vector(s.N * s.C * s.H * s.W, seed),
             dy = random_vector(s.N * s.K * s.H * s.W, seed + 1);
  std::vector<float> dw(s.K * s.C * 9, 99.0f);
  kc::conv2d_backward_weight_winograd(s, dy.data(), x.data(), dw.data());
  const auto ref = wgrad_f64(s, dy.data(), x.data());
  const auto mag = wgrad_abs(s, dy.data(), x.data());
  const double u = std::ldexp(1.0, -24), n = double(tiles(s)) + 5, gamma = n * u / (1 - n * u);
  double worst = 0;
  for (size_t i = 0; i < dw.size(); ++i) {
    const double err = std::fabs(double(dw[i]) - ref[i]);
    const double bound = gamma * mag[i] + 1e-12 * (1 + mag[i]);  // + the float64 reference's own error
    if (!(err <= bound)) {
      ADD_FAILURE() << "N" << s.N << " C" << s.C << " H" << s.H << " W" << s.W << " K" << s.K << " element "
                    << i << ": got " << dw[i] << ", definition " << ref[i] << ", |err| " << err << " > bound "
                    << bound;
      return worst;
    }
    worst = std::max(worst, err / bound);
  }
  return worst;
}

TEST_F(WinogradWgrad, OddShapesWithinTheRoundingBoundOnEveryIsa) {
  // {N, C, H, W, K}: odd and even sides, 1x1, 1-row and 7x7 images, C / K not multiples of 8 or 16, N 1..3.
  const int64_t shapes[][5] = {{1, 3, 7, 7, 5},  {2, 5, 1, 1, 3},   {3, 13, 9, 11, 5}, {1, 1, 2, 3, 1},
                               {2, 9, 6, 10, 7}, {3, 17, 11, 4, 2}, {1, 33, 5, 37, 9}, {2, 7, 1, 40, 3}};
  for (CpuIsa isa : supported_isas())
    for (int threads : {1, 2}) {
      kc::set_cpu_isa(isa);
      omp_set_num_threads(threads);
      for (const auto& sh : shapes) {
        SCOPED_TRACE(::testing::Message() << kc::cpu_isa_name(isa) << " threads " << threads);
        check_against_definition(shape3x3(sh[0], sh[1], sh[2], sh[3], sh[4]), 300 + unsigned(sh[1]));
      }
    }
}

TEST_F(WinogradWgrad, UNetShapesWithinTheRoundingBound) {
  // The UNet's 3x3 stride-1 shapes (bench/unet_shapes.h kConvs, {C, K, H}), batch 2 (3 at 7x7).
  const int64_t shapes[][3] = {{32, 32, 28}, {64, 32, 28}, {96, 32, 28}, {64, 64, 28}, {128, 64, 14},
                               {96, 64, 14}, {64, 64, 14}, {32, 64, 14}, {128, 64, 7}, {64, 64, 7}};
  double worst = 0;
  for (const auto& sh : shapes)
    worst = std::max(worst,
                     check_against_definition(shape3x3(sh[2] == 7 ? 3 : 2, sh[0], sh[2], sh[2], sh[1]), 7));
  std::printf("Winograd weight gradient, UNet shapes: max |err| / bound %.3g\n", worst);
}

// The same bits whatever the thread count and the ISA path, through conv2d_backward_weight's dispatch.
TEST_F(WinogradWgrad, BitwiseInvariantToThreadsAndIsa) {
  // 5 images of 28x28 (two chunks, chunk boundary inside an image), odd sizes, many 7x7 images, K and C
  // not multiples of 8 (Mdy's padding columns, a partial channel block per thread).
  const int64_t shapes[][5] = {
      {5, 32, 28, 28, 32}, {3, 33, 15, 13, 40}, {40, 64, 7, 7, 64}, {2, 48, 1, 1, 24}, {6, 20, 9, 9, 13}};
  kc::set_cpu_conv_algo(CpuConvAlgo::Winograd);
  for (const auto& sh : shapes) {
    const auto s = shape3x3(sh[0], sh[1], sh[2], sh[3], sh[4]);
    SCOPED_TRACE(::testing::Message()
                 << "N" << s.N << " C" << s.C << " H" << s.H << " W" << s.W << " K" << s.K);
    const auto x = random_vector(s.N * s.C * s.H * s.W, 31), dy = random_vector(s.N * s.K * s.H * s.W, 32);
    kc::set_cpu_isa(CpuIsa::Scalar);
    omp_set_num_threads(1);
    std::vector<float> ref(s.K * s.C * 9), db_ref(s.K);
    kc::conv2d_backward_weight<float>(s, dy.data(), x.data(), ref.data(), db_ref.data());
    for (CpuIsa isa : supported_isas())
      for (int threads : {1, 2, 3, 5, 16}) {
        kc::set_cpu_isa(isa);
        omp_set_num_threads(threads);
        std::vector<float> dw(ref.size(), 99.0f), db(s.K);
        kc::conv2d_backward_weight<float>(s, dy.data(), x.data(), dw.data(), db.data());
        EXPECT_TRUE(bitwise_equal(dw, ref)) << kc::cpu_isa_name(isa) << " threads " << threads;
        EXPECT_TRUE(bitwise_equal(db, db_ref)) << kc::cpu_isa_name(isa) << " threads " << threads;
      }
  }
}

// Teams other than the one asked for: OpenMP dynamic teams (possibly fewer threads than
// omp_get_max_threads), calls from inside an active parallel region (each caller runs alone, concurrently
// with the others, on its own thread_local buffers) and from an inactive nested one. Four chunks and one;
// every result equals the 1-thread one bit for bit.
TEST_F(WinogradWgrad, DynamicAndNestedTeamsGiveTheSameBits) {
  const int dyn = omp_get_dynamic(), levels = omp_get_max_active_levels();
  for (const auto& sh : {std::vector<int64_t>{40, 64, 7, 7, 64}, std::vector<int64_t>{3, 13, 9, 11, 5}}) {
    const auto s = shape3x3(sh[0], sh[1], sh[2], sh[3], sh[4]);
    SCOPED_TRACE(::testing::Message()
                 << "N" << s.N << " C" << s.C << " H" << s.H << " W" << s.W << " K" << s.K);
    const auto x = random_vector(s.N * s.C * s.H * s.W, 41), dy = random_vector(s.N * s.K * s.H * s.W, 42);
    const size_t n = static_cast<size_t>(s.K * s.C * 9);
    std::vector<float> ref(n);
    omp_set_num_threads(1);
    kc::conv2d_backward_weight_winograd(s, dy.data(), x.data(), ref.data());
    // Dynamic teams: the runtime may give fewer threads than asked.
    omp_set_dynamic(1);
    for (int threads : {2, 4, 16}) {
      omp_set_num_threads(threads);
      std::vector<float> dw(n, 99.0f);
      kc::conv2d_backward_weight_winograd(s, dy.data(), x.data(), dw.data());
      EXPECT_TRUE(bitwise_equal(dw, ref)) << "dynamic, threads " << threads;
    }
    omp_set_dynamic(0);
    // Concurrent calls from an active parallel region (nested parallelism allowed or not).
    for (int lv : {1, 2}) {
      omp_set_max_active_levels(lv);
      omp_set_num_threads(3);
      std::vector<std::vector<float>> out(3, std::vector<float>(n, 99.0f));
#pragma omp parallel num_threads(3)
      kc::conv2d_backward_weight_winograd(s, dy.data(), x.data(), out[omp_get_thread_num()].data());
      for (int t = 0; t < 3; ++t)
        EXPECT_TRUE(bitwise_equal(out[t], ref)) << "levels " << lv << " caller " << t;
    }
    // From an inactive (one-thread) region: omp_in_parallel() is false there.
    omp_set_max_active_levels(1);
    std::vector<float> dw(n, 99.0f);
#pragma omp parallel num_threads(1)
    {
      omp_set_num_threads(4);
      kc::conv2d_backward_weight_winograd(s, dy.data(), x.data(), dw.data());
    }
    EXPECT_TRUE(bitwise_equal(dw, ref)) << "inside a one-thread region";
  }
  omp_set_dynamic(dyn);
  omp_set_max_active_levels(levels);
}

// The forward's SIMD input transforms (conv2d_winograd_simd.h, tile 2) equal winograd_input_portable bit
// for bit on every tile range (the nt columns; the SIMD ones may write up to 15 more): so the portable
// transform, the reference of the wgrad's tile-major ones below, computes the forward's V.
TEST_F(WinogradWgrad, SimdInputTransformsBitwiseThePortableOne) {
  const int64_t shapes[][5] = {{1, 1, 1, 1, 1},  {2, 3, 1, 1, 5},   {3, 5, 5, 17, 9}, {1, 3, 3, 33, 4},
                               {2, 1, 7, 31, 3}, {1, 5, 4, 150, 2}, {2, 4, 9, 35, 6}, {3, 3, 28, 28, 2}};
  bool ran = false;
  for (CpuIsa isa : supported_isas()) {
    if (isa == CpuIsa::Scalar) continue;
#if defined(__x86_64__)
    ran = true;
    for (const auto& sh : shapes) {
      const auto s = shape3x3(sh[0], sh[1], sh[2], sh[3], sh[4]);
      const int64_t T = tiles(s);
      const auto x = random_vector(s.N * s.C * s.H * s.W, 81);
      // Ranges: everything, a range starting mid-row, single tiles, 64-tile pieces.
      for (int64_t t0 : {int64_t(0), T / 3, T - 1})
        for (int64_t nt : {T - t0, std::min<int64_t>(1, T - t0), std::min<int64_t>(64, T - t0)}) {
          SCOPED_TRACE(::testing::Message()
                       << kc::cpu_isa_name(isa) << " N" << s.N << " C" << s.C << " H" << s.H << " W" << s.W
                       << " K" << s.K << " t0 " << t0 << " nt " << nt);
          const int64_t ld = nt + 16;
          std::vector<float> v_ref(16 * s.C * ld, -7.0f), v(v_ref.size(), -7.0f);
          kc::detail::winograd_input_portable(s, x.data(), t0, nt, v_ref.data(), ld);
          if (isa == CpuIsa::Avx512)
            kc::detail::winograd_input_avx512(2, s, x.data(), t0, nt, v.data(), ld);
          else
            kc::detail::winograd_input_avx2(2, s, x.data(), t0, nt, v.data(), ld);
          for (int64_t row = 0; row < 16 * s.C; ++row)
            for (int64_t j = 0; j < nt; ++j)
              ASSERT_EQ(std::memcmp(&v[row * ld + j], &v_ref[row * ld + j], sizeof(float)), 0)
                  << "input transform row " << row << " column " << j;
        }
    }
#endif
  }
  if (!ran) GTEST_SKIP() << "no AVX2 / AVX-512 path on this CPU: only the portable transforms exist here";
}

// The tile-major SIMD transforms (winograd_input_tm_*, winograd_dy_tm_*: what the SIMD paths' GEMMs read)
// equal the portable channel-major ones bit for bit, on channel sub-ranges (C, K not multiples of 8 or 16,
// c0 not 0) and tile ranges that start mid-row, end mid-image and span images; and they write nothing
// outside their channel columns (AVX-512) or past round8(c1 - c0) (AVX2), nor outside the nt tile rows.
TEST_F(WinogradWgrad, TileMajorTransformsBitwiseThePortableOnes) {
  const int64_t shapes[][5] = {{1, 1, 1, 1, 1},    {2, 3, 1, 1, 5},     {3, 5, 5, 17, 9},
                               {1, 21, 3, 33, 19}, {2, 1, 7, 31, 3},    {1, 5, 4, 150, 2},
                               {2, 24, 9, 8, 40},  {3, 19, 14, 14, 33}, {2, 17, 7, 7, 16}};
  bool ran = false;
  for (CpuIsa isa : supported_isas()) {
    if (isa == CpuIsa::Scalar) continue;
#if defined(__x86_64__)
    ran = true;
    for (const auto& sh : shapes) {
      const auto s = shape3x3(sh[0], sh[1], sh[2], sh[3], sh[4]);
      const int64_t T = tiles(s);
      const auto x = random_vector(s.N * s.C * s.H * s.W, 91), dy = random_vector(s.N * s.K * s.H * s.W, 92);
      std::vector<float> buf(kc::detail::winograd_tm_buf_floats(s));
      for (int is_dy = 0; is_dy < 2; ++is_dy) {
        const int64_t CH = is_dy ? s.K : s.C;
        for (int64_t t0 : {int64_t(0), T / 3, T - 1})
          for (int64_t nt : {T - t0, std::min<int64_t>(1, T - t0), std::min<int64_t>(37, T - t0)})
            for (int64_t c0 : {int64_t(0), CH / 3})
              for (int64_t c1 : {CH, std::min<int64_t>(CH, c0 + 9)}) {
                SCOPED_TRACE(::testing::Message()
                             << kc::cpu_isa_name(isa) << (is_dy ? " dy" : " x") << " N" << s.N << " C" << s.C
                             << " H" << s.H << " W" << s.W << " K" << s.K << " t0 " << t0 << " nt " << nt
                             << " c " << c0 << ".." << c1);
                const int64_t ld = nt, ldo = (c1 - c0 + 7) / 8 * 8 + 3, xs = (nt + 1) * ldo + 5;
                std::vector<float> ref(16 * CH * ld), out(16 * xs, -7.0f);
                if (is_dy) {
                  kc::detail::winograd_dy_portable(s, dy.data(), t0, nt, ref.data(), ld);
                  (isa == CpuIsa::Avx512 ? kc::detail::winograd_dy_tm_avx512
                                         : kc::detail::winograd_dy_tm_avx2)(s, dy.data(), c0, c1, t0, nt,
                                                                            out.data(), xs, ldo, buf.data());
                } else {
                  kc::detail::winograd_input_portable(s, x.data(), t0, nt, ref.data(), ld);
                  (isa == CpuIsa::Avx512 ? kc::detail::winograd_input_tm_avx512
                                         : kc::detail::winograd_input_tm_avx2)(
                      s, x.data(), c0, c1, t0, nt, out.data(), xs, ldo, buf.data());
                }
                // Columns the version may write: its channels, and on AVX2 up to round8(c1 - c0).
                const int64_t writable = isa == CpuIsa::Avx512 ? c1 - c0 : (c1 - c0 + 7) / 8 * 8;
                for (int xi = 0; xi < 16; ++xi)
                  for (int64_t j = 0; j < xs; ++j) {
                    const int64_t t = j / ldo, c = j % ldo;
                    const float got = out[xi * xs + j];
                    if (t < nt && c < c1 - c0) {
                      ASSERT_EQ(std::memcmp(&got, &ref[(xi * CH + c0 + c) * ld + t], sizeof(float)), 0)
                          << "point " << xi << " tile " << t0 + t << " channel " << c0 + c;
                    } else if (t >= nt || c >= writable) {
                      ASSERT_EQ(got, -7.0f) << "written outside: point " << xi << " offset " << j;
                    }
                  }
              }
      }
    }
#endif
  }
  if (!ran) GTEST_SKIP() << "no AVX2 / AVX-512 path on this CPU: only the portable transforms exist here";
}

// The portable 8-row block transpose (the scalar path's tile-major staging of V and Mdy) against the
// definition, every width 1 .. 19; nothing is written outside the n rows of 8.
TEST_F(WinogradWgrad, Transpose8IsATranspose) {
  const int64_t lds = 24 + 3, ldd = 11;
  const auto src = random_vector(8 * lds, 61);
  for (int64_t n = 1; n <= 19; ++n) {
    std::vector<float> dst((n + 1) * ldd, -7.0f);
    kc::detail::transpose8_portable(src.data(), lds, n, dst.data(), ldd);
    for (int64_t j = 0; j <= n; ++j)
      for (int64_t r = 0; r < ldd; ++r) {
        const float want = j < n && r < 8 ? src[r * lds + j] : -7.0f;
        ASSERT_EQ(std::memcmp(&dst[j * ldd + r], &want, sizeof(float)), 0)
            << "n " << n << " row " << j << " column " << r;
      }
  }
}

// The portable dy transform against A dy_t A^T written from the matrices.
TEST_F(WinogradWgrad, PortableDyTransformIsADyAT) {
  const auto s = shape3x3(2, 3, 5, 7, 4);
  const int64_t T = tiles(s), TY = 3, TX = 4;
  const auto dy = random_vector(s.N * s.K * s.H * s.W, 91);
  std::vector<float> D(16 * s.K * T);
  kc::detail::winograd_dy_portable(s, dy.data(), 0, T, D.data(), T);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < s.K; ++k)
      for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b) {
          const int64_t n = t / (TY * TX), ty = t % (TY * TX) / TX, tx = t % TX;
          double m = 0;
          for (int i = 0; i < 2; ++i)
            for (int j = 0; j < 2; ++j) {
              const int64_t p = 2 * ty + i, o = 2 * tx + j;
              if (p < s.H && o < s.W) m += kAT[i][a] * kAT[j][b] * dy[((n * s.K + k) * s.H + p) * s.W + o];
            }
          // |dy| <= 1, so every intermediate is at most 4 in size, and there is at most one rounding per
          // axis: |err| <= 2 * 4 * 2^-24.
          EXPECT_NEAR(D[((a * 4 + b) * s.K + k) * T + t], m, 8 * std::ldexp(1.0, -24)) << t << " " << k;
        }
}

TEST_F(WinogradWgrad, NonFiniteInputsPropagate) {
  const auto s = shape3x3(2, 6, 9, 8, 5);
  for (CpuIsa isa : supported_isas()) {
    kc::set_cpu_isa(isa);
    for (int which = 0; which < 3; ++which) {
      auto x = random_vector(s.N * s.C * s.H * s.W, 11), dy = random_vector(s.N * s.K * s.H * s.W, 12);
      // A NaN in x channel 2 (image 1, interior pixel), or +Inf / -Inf in dy channel 3 (image 0).
      if (which == 0) x[((1 * s.C + 2) * s.H + 4) * s.W + 3] = NAN;
      if (which == 1) dy[((0 * s.K + 3) * s.H + 5) * s.W + 2] = INFINITY;
      if (which == 2) dy[((0 * s.K + 3) * s.H + 0) * s.W + 7] = -INFINITY;
      std::vector<float> dw(s.K * s.C * 9);
      kc::conv2d_backward_weight_winograd(s, dy.data(), x.data(), dw.data());
      const auto ref = wgrad_f64(s, dy.data(), x.data());
      for (int64_t k = 0; k < s.K; ++k)
        for (int64_t c = 0; c < s.C; ++c) {
          const bool hit = which == 0 ? c == 2 : k == 3;
          for (int e = 0; e < 9; ++e) {
            const int64_t i = (k * s.C + c) * 9 + e;
            const bool finite = std::isfinite(dw[i]);
            EXPECT_TRUE(std::isfinite(ref[i]) || !finite) << kc::cpu_isa_name(isa) << " " << i;
            EXPECT_TRUE(hit || finite) << kc::cpu_isa_name(isa) << " " << i;
            // docs/apps.md: a non-finite input makes all 9 taps of the affected dw[k][c] non-finite (every
            // pixel reaches the transform points u1 / u2 of some tile, and G^T spreads them to every tap).
            EXPECT_TRUE(!hit || !finite) << kc::cpu_isa_name(isa) << " " << i;
          }
        }
    }
  }
}

TEST_F(WinogradWgrad, DispatchFollowsTheSettingAndFloat64StaysExact) {
  const auto s = shape3x3(2, 8, 9, 9, 6);
  const auto x = random_vector(s.N * s.C * s.H * s.W, 41), dy = random_vector(s.N * s.K * s.H * s.W, 42);
  std::vector<float> wino(s.K * s.C * 9), viaconv(wino.size()), im2col(wino.size()), db(s.K);
  kc::conv2d_backward_weight_winograd(s, dy.data(), x.data(), wino.data());
  kc::set_cpu_conv_algo(CpuConvAlgo::Winograd);
  kc::conv2d_backward_weight<float>(s, dy.data(), x.data(), viaconv.data(), db.data());
  EXPECT_TRUE(bitwise_equal(wino, viaconv));
  kc::set_cpu_conv_algo(CpuConvAlgo::Im2col);
  kc::conv2d_backward_weight<float>(s, dy.data(), x.data(), im2col.data(), nullptr);
  EXPECT_FALSE(bitwise_equal(wino, im2col)) << "im2col and Winograd round differently: equal bits mean the "
                                               "setting was ignored";
  // The bias gradient: sum of dy per channel.
  for (int64_t k = 0; k < s.K; ++k) {
    double acc = 0;
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t i = 0; i < s.H * s.W; ++i) acc += dy[(n * s.K + k) * s.H * s.W + i];
    EXPECT_NEAR(db[k], acc, 1e-5 * (1 + std::fabs(acc))) << k;
  }
  Conv2dShape s2 = s;
  s2.stride_h = s2.stride_w = 2, s2.P = s2.Q = 5;
  EXPECT_THROW(kc::conv2d_backward_weight_winograd(s2, dy.data(), x.data(), wino.data()), std::exception);
  // float64 never takes Winograd: it matches the definition to float64 rounding.
  kc::set_cpu_conv_algo(CpuConvAlgo::Winograd);
  std::vector<double> xd(x.begin(), x.end()), dyd(dy.begin(), dy.end()), dwd(wino.size());
  kc::conv2d_backward_weight<double>(s, dyd.data(), xd.data(), dwd.data(), nullptr);
  const auto ref = wgrad_f64(s, dy.data(), x.data());
  for (size_t i = 0; i < dwd.size(); ++i) EXPECT_NEAR(dwd[i], ref[i], 1e-12) << i;
}

// Both weight-gradient algorithms (ENGINE_CPU_CONV im2col, winograd) on the UNet's 3x3 shapes (batch 4, 2 at
// 28x28), inputs and dy N(0, 1), against the float64 definition. Asserts every Winograd element within
// rel(gamma_(T+5)) DW_abs of it; prints both algorithms' RMS(err) / RMS(dw) and max|err| / RMS(dw), the
// lines prefixed by `label` (docs/apps.md's error table), and sets *winograd_rms to Winograd's
// RMS(err) / RMS(dw). Callers check HasFatalFailure() before using it.
template <class Rel>
void unet_shapes_error_table(const char* label, Rel rel, double* winograd_rms) {
  const int64_t shapes[][3] = {{32, 32, 28}, {64, 32, 28}, {96, 32, 28}, {64, 64, 28}, {128, 64, 14},
                               {96, 64, 14}, {64, 64, 14}, {32, 64, 14}, {128, 64, 7}, {64, 64, 7}};
  double se[2] = {0, 0}, mx[2] = {0, 0}, sy = 0;
  size_t count = 0;
  unsigned seed = 700;
  for (const auto& sh : shapes) {
    const auto s = shape3x3(sh[2] == 28 ? 2 : 4, sh[0], sh[2], sh[2], sh[1]);
    const auto x = engine::test::normal_vector<float>(s.N * s.C * s.H * s.W, ++seed, 0.0, 1.0);
    const auto dy = engine::test::normal_vector<float>(s.N * s.K * s.H * s.W, ++seed, 0.0, 1.0);
    const auto ref = wgrad_f64(s, dy.data(), x.data());
    const auto mag = wgrad_abs(s, dy.data(), x.data());
    const double u = std::ldexp(1.0, -24), n = double(tiles(s)) + 5, gamma = n * u / (1 - n * u);
    const double bound = rel(gamma);
    for (int alg = 0; alg < 2; ++alg) {
      kc::set_cpu_conv_algo(alg == 0 ? CpuConvAlgo::Im2col : CpuConvAlgo::Winograd);
      std::vector<float> dw(ref.size(), 99.0f);
      kc::conv2d_backward_weight<float>(s, dy.data(), x.data(), dw.data(), nullptr);
      for (size_t i = 0; i < dw.size(); ++i) {
        const double e = std::fabs(double(dw[i]) - ref[i]);
        se[alg] += e * e;
        mx[alg] = std::max(mx[alg], e);
        if (alg == 1) {
          ASSERT_LE(e, bound * mag[i] + 1e-12 * (1 + mag[i])) << label << i;
        }
      }
    }
    for (double v : ref) sy += v * v;
    count += ref.size();
  }
  const double rms_y = std::sqrt(sy / double(count));
  const char* names[2] = {"im2col", "F(2x2,3x3)"};
  for (int alg = 0; alg < 2; ++alg)
    std::printf("%sweight gradient %-11s RMS err / RMS dw %.3g, max |err| / RMS dw %.3g\n", label, names[alg],
                std::sqrt(se[alg] / double(count)) / rms_y, mx[alg] / rms_y);
  *winograd_rms = std::sqrt(se[1] / double(count)) / rms_y;
}

}  // namespace

// The float32 error of the weight gradient against the float64 definition on the UNet's 3x3 shapes (batch
// 4, 2 at 28x28), inputs and dy N(0, 1): RMS(err) / RMS(dw) and max|err| / RMS(dw), for im2col and
// Winograd (docs/apps.md's error table). Each Winograd element is also checked against its bound.
TEST_F(WinogradWgrad, ErrorOnUNetShapesAgainstIm2col) {
  double rms = 0;
  unet_shapes_error_table(
      "", [](double gamma) { return gamma; }, &rms);
  if (HasFatalFailure()) return;
  EXPECT_GT(rms, 0.0) << "float32 Winograd cannot be exact on random data";
}

// bf16 mode (kern::cpu::set_matmul_precision(Bf16)): the transform-domain GEMMs round V and A dy A^T to
// bf16 (relative error <= 2^-8 each) and accumulate in float32, so each element is within
// (2^-7 + 2^-16 + 1.01 gamma_(T+5)) DW_abs of the definition. Prints the error next to im2col's (whose
// GEMM goes bf16 too) on the UNet shapes (docs/apps.md).
TEST_F(WinogradWgrad, Bf16ModeWithinItsBoundAndErrorAgainstIm2col) {
  const engine::test::MatmulPrecisionScope bf16(kc::MatmulPrecision::Bf16);
  if (!bf16.active())
    GTEST_SKIP() << "this CPU lacks AVX512_BF16, or ENGINE_CPU_ISA forces a path below avx512: no bf16 GEMM";
  double rms = 0;
  unet_shapes_error_table(
      "bf16 ", [](double gamma) { return std::ldexp(1.0, -7) + std::ldexp(1.0, -16) + 1.01 * gamma; }, &rms);
  if (HasFatalFailure()) return;
  // The bf16 GEMM really ran: its error is far above float32's (~1e-7 of RMS dw).
  EXPECT_GT(rms, 1e-5);
  // bf16 results are bitwise independent of the thread count too (the threads split channels; the chunks
  // depend on C and K only).
  const auto s = shape3x3(3, 40, 13, 11, 24);
  const auto x = random_vector(s.N * s.C * s.H * s.W, 51), dy = random_vector(s.N * s.K * s.H * s.W, 52);
  std::vector<float> ref(s.K * s.C * 9);
  omp_set_num_threads(1);
  kc::conv2d_backward_weight_winograd(s, dy.data(), x.data(), ref.data());
  for (int threads : {2, 3}) {
    omp_set_num_threads(threads);
    std::vector<float> dw(ref.size(), 99.0f);
    kc::conv2d_backward_weight_winograd(s, dy.data(), x.data(), dw.data());
    EXPECT_TRUE(bitwise_equal(dw, ref)) << "bf16, threads " << threads;
  }
}
