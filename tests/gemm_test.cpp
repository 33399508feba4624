// The CPU GEMM is deterministic by construction: every ISA path (AVX-512, AVX2, scalar std::fma) and
// every thread count must equal gemm_reference (the plain FMA-chain definition) bit for bit, for any
// shape, transposition, alpha and beta. Hence a matrix row gives the same bits whatever M is (the
// batch-size independence that fm_sample's "same seed, same samples" rests on).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/gemm_a_rows.h"
#include "kernels/cpu/gemm_detail.h"
#include "tests/test_util.h"

namespace kc = kern::cpu;
using kern::cpu::CpuIsa;

namespace {

// Restores the default ISA and thread count at scope exit.
struct IsaGuard {
  int threads = omp_get_max_threads();
  ~IsaGuard() {
    kc::set_cpu_isa(CpuIsa::Auto);
    omp_set_num_threads(threads);
  }
};

using engine::test::bitwise_equal;
using engine::test::random_vector;
using engine::test::supported_isas;

struct Case {
  int64_t M, N, K;
  bool ta, tb;
  double alpha, beta;
};

// Runs gemm on the active ISA against gemm_reference, with padded leading dimensions.
template <typename T>
void check_case(const Case& c, const char* what) {
  const int64_t lda = (c.ta ? c.M : c.K) + 3, ldb = (c.tb ? c.K : c.N) + 1, ldc = c.N + 2;
  const auto A = random_vector<T>((c.ta ? c.K : c.M) * lda, 1);
  const auto B = random_vector<T>((c.tb ? c.N : c.K) * ldb, 2);
  auto C = random_vector<T>(c.M * ldc, 3);
  auto ref = C;
  kc::gemm_reference<T>(c.ta, c.tb, c.M, c.N, c.K, T(c.alpha), A.data(), lda, B.data(), ldb, T(c.beta),
                        ref.data(), ldc);
  kc::gemm<T>(c.ta, c.tb, c.M, c.N, c.K, T(c.alpha), A.data(), lda, B.data(), ldb, T(c.beta), C.data(), ldc);
  ASSERT_TRUE(bitwise_equal(C, ref)) << what << " isa=" << kc::cpu_isa_name(kc::cpu_isa()) << " M=" << c.M
                                     << " N=" << c.N << " K=" << c.K << " ta=" << c.ta << " tb=" << c.tb
                                     << " alpha=" << c.alpha << " beta=" << c.beta
                                     << " threads=" << omp_get_max_threads();
}

const std::vector<Case>& cases() {
  static const std::vector<Case> v = {
      {1, 1, 1, false, false, 1, 0},
      {7, 5, 9, true, false, 1, 1},
      {13, 37, 3, false, true, 0.5, 0},
      {33, 17, 40, true, true, 2, 0.25},
      {64, 784, 288, false, false, 1, 1},
      {32, 196, 576, false, false, 1, 0},  // conv shapes, K > KC
      {577, 49, 64, true, false, 1, 0},
      {64, 577, 300, false, true, 1, 0},  // bwd-data / bwd-weight
      {128, 256, 64, false, true, 1, 1},
      {3, 1000, 513, false, false, -1, 0.5},
      {100, 3, 257, true, true, 0.125, 0},
      {12, 32, 1, false, false, 1, 0},
      // narrow N (<= 16: the in-place narrow kernel): attention P V (head dim 8), dV = P^T dO, conv_in's
      // weight gradient (N = 9, transposed B), masked tails and beta scaling
      {200, 8, 300, false, false, 1, 0},
      {131, 16, 77, true, false, 0.5, 2},
      {50, 9, 784, false, true, 1, 1},
      {97, 13, 40, false, false, -1, 0.5},
      {5, 1, 33, true, true, 1, 0},
      // the narrow kernel's 12-row (N <= 8) and 6-row (N <= 16) blocks, then 3-row and single-row
      // leftovers, with alpha == 1 (A broadcast from memory) and not
      {29, 8, 50, false, false, 1, 0},
      {41, 5, 19, true, false, 1, 2},
      {17, 14, 23, true, false, 1, 1},
      {26, 11, 31, false, false, 0.5, 0},
      // a ragged right edge (N % tile width <= 16) computed by the narrow kernel, the rest by tiles
      {70, 100, 300, true, true, 1, 0.5},
      {9, 41, 20, false, false, 2, 0},
      {33, 196, 64, false, false, 1, 1},
      {31, 52, 17, true, false, 1, 0},
      // a remainder of 17 .. 31 columns: the AVX-512 half-width (8 x 16) tile + the narrow kernel
      {20, 49, 100, false, false, 1, 0},
      {9, 60, 33, true, true, 2, 0.5},
      {45, 81, 70, false, true, 1, 1},
      // A read in place (transposed, alpha == 1) with a partial last row panel; the Winograd GEMMs
      // (K_out x tiles x C_in, A^T); more tiles than threads in both directions (M > 240 rows, N > 512)
      {64, 128, 64, true, false, 1, 0},
      {61, 160, 32, true, false, 1, 1},
      {29, 70, 45, true, false, 1, 0.5},
      {64, 49, 1152, false, false, 1, 0},
      {490, 1030, 20, true, false, 1, 0},
      {300, 700, 9, false, true, 1, 0},
  };
  return v;
}

}  // namespace

TEST(Gemm, EveryIsaAndThreadCountEqualsTheFmaChainDefinitionBitwise) {
  IsaGuard guard;
  for (CpuIsa isa : supported_isas()) {
    kc::set_cpu_isa(isa);
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      for (const Case& c : cases()) {
        check_case<float>(c, "float");
        check_case<double>(c, "double");
      }
    }
  }
}

// gemm_a_rows (an untransposed A read in place, alpha = 1: the conv weight gradient's GEMMs) against
// the definition: full panels read in place, a partial last row panel packed, N = 1 and other narrow
// widths, the half-width AVX-512 tile, K over one K block (784 = 3 x 256 + 16), beta 0, 1 and other.
TEST(Gemm, ARowsInPlaceEqualsTheFmaChainDefinitionBitwise) {
  IsaGuard guard;
  const Case a_rows_cases[] = {
      {48, 32, 784, false, true, 1, 0},  {48, 32, 784, false, true, 1, 1},     // 1x1 96->32 dw^T block
      {16, 18, 784, false, true, 1, 1},  {13, 1, 784, false, true, 1, 0},      // conv_in; conv_out (N = 1)
      {144, 64, 196, false, true, 1, 1}, {50, 49, 300, false, false, 1, 0.5},  // odd M, untransposed B
      {8, 45, 33, false, true, 1, 0},    {1, 40, 7, false, false, 1, 1},       // M = 1: packed only
      {37, 96, 257, false, true, 1, 2},
  };
  for (CpuIsa isa : supported_isas()) {
    kc::set_cpu_isa(isa);
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      for (const Case& c : a_rows_cases) {
        auto run = [&](auto zero) {
          using T = decltype(zero);
          const int64_t lda = c.K + 3, ldb = (c.tb ? c.K : c.N) + 1, ldc = c.N + 2;
          const auto A = random_vector<T>(c.M * lda, 1);
          const auto B = random_vector<T>((c.tb ? c.N : c.K) * ldb, 2);
          auto C = random_vector<T>(c.M * ldc, 3);
          auto ref = C;
          kc::gemm_reference<T>(false, c.tb, c.M, c.N, c.K, T(1), A.data(), lda, B.data(), ldb, T(c.beta),
                                ref.data(), ldc);
          kc::gemm_a_rows<T>(c.tb, c.M, c.N, c.K, A.data(), lda, B.data(), ldb, T(c.beta), C.data(), ldc);
          EXPECT_TRUE(bitwise_equal(C, ref))
              << (sizeof(T) == 4 ? "float" : "double") << " isa=" << kc::cpu_isa_name(isa)
              << " threads=" << threads << " M=" << c.M << " N=" << c.N << " K=" << c.K << " tb=" << c.tb
              << " beta=" << c.beta;
        };
        run(0.f);
        run(0.0);
      }
    }
  }
}

TEST(Gemm, ARowIsTheSameWhateverTheBatchSize) {
  // linear: y (M, N) = x (M, K) @ W^T (N, K)^T. Row 0 computed alone must equal row 0 of a batch of 128.
  IsaGuard guard;
  omp_set_num_threads(2);
  const int64_t M = 128, N = 256, K = 320;
  const auto x = random_vector<float>(M * K, 4), w = random_vector<float>(N * K, 5);
  std::vector<float> batch(M * N), one(N);
  kc::gemm<float>(false, true, M, N, K, 1.f, x.data(), K, w.data(), K, 0.f, batch.data(), N);
  for (int64_t r : {int64_t(0), int64_t(77), M - 1}) {
    kc::gemm<float>(false, true, 1, N, K, 1.f, x.data() + r * K, K, w.data(), K, 0.f, one.data(), N);
    EXPECT_EQ(std::memcmp(one.data(), batch.data() + r * N, N * sizeof(float)), 0) << "row " << r;
  }
}

TEST(Gemm, BetaZeroDoesNotReadCAndNonFiniteInputsPropagate) {
  IsaGuard guard;
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (CpuIsa isa : supported_isas()) {
    kc::set_cpu_isa(isa);
    const int64_t M = 20, N = 40, K = 9;
    auto A = random_vector<float>(M * K, 6), B = random_vector<float>(K * N, 7);
    std::vector<float> C(M * N, nan);
    kc::gemm<float>(false, false, M, N, K, 1.f, A.data(), K, B.data(), N, 0.f, C.data(), N);
    for (float v : C) ASSERT_TRUE(std::isfinite(v)) << kc::cpu_isa_name(isa);
    A[3 * K + 4] = nan;   // row 3 becomes NaN everywhere
    B[2 * N + 35] = inf;  // column 35 becomes +-inf (or NaN in row 3)
    kc::gemm<float>(false, false, M, N, K, 1.f, A.data(), K, B.data(), N, 0.f, C.data(), N);
    for (int64_t j = 0; j < N; ++j) EXPECT_TRUE(std::isnan(C[3 * N + j])) << j;
    for (int64_t i = 0; i < M; ++i)
      if (i != 3) {
        EXPECT_TRUE(std::isinf(C[i * N + 35])) << i;
      }
    EXPECT_TRUE(std::isfinite(C[0]));
  }
}

TEST(Gemm, UnsupportedIsaIsAClearError) {
  IsaGuard guard;
  if (kc::cpu_isa_supported() == CpuIsa::Avx512) {
    kc::set_cpu_isa(CpuIsa::Avx512);  // supported: accepted
    EXPECT_EQ(kc::cpu_isa(), CpuIsa::Avx512);
  } else {
    EXPECT_THROW(kc::set_cpu_isa(CpuIsa::Avx512), std::exception);
  }
  kc::set_cpu_isa(CpuIsa::Scalar);  // always supported
  EXPECT_EQ(kc::cpu_isa(), CpuIsa::Scalar);
  EXPECT_STREQ(kc::cpu_isa_name(CpuIsa::Avx2), "avx2");
}

TEST(Gemm, TilePlanGivesEveryThreadTheSameWork) {
  // The macro tiles must cover C exactly, differ by at most one register tile per side, and come in a
  // multiple of the thread count, so that a static schedule gives both threads of a 2-core run the same
  // work (the old split gave one thread twice the other's columns on conv fwd 14x14, 64 x 192, and
  // 2.4 times the other's work at 512^3).
  struct S {
    int64_t M, N;
  };
  const S shapes[] = {{32, 768},  {64, 192}, {64, 49},     {576, 192}, {64, 576}, {512, 512},
                      {128, 256}, {64, 128}, {1000, 3000}, {8, 32},    {5, 7}};
  for (const S& s : shapes)
    for (int MR : {4, 6, 8})
      for (int NR : {4, 16, 32})
        for (int threads : {1, 2, 3}) {
          const auto p = kern::cpu::gemm_detail::plan_tiles(s.M, s.N, MR, NR, threads);
          const std::string what = "M=" + std::to_string(s.M) + " N=" + std::to_string(s.N) +
                                   " MR=" + std::to_string(MR) + " NR=" + std::to_string(NR) +
                                   " threads=" + std::to_string(threads);
          ASSERT_EQ(p.row_start(0), 0) << what;
          ASSERT_EQ(p.col_start(0), 0) << what;
          ASSERT_GE(p.row_start(p.mtiles), s.M) << what;
          ASSERT_GE(p.col_start(p.ntiles), s.N) << what;
          int64_t lo = INT64_MAX, hi = 0;
          for (int64_t i = 0; i < p.mtiles; ++i) {
            const int64_t rows = p.row_start(i + 1) - p.row_start(i);
            EXPECT_LE(p.row_start(i), s.M - 1) << what << ": an empty row tile";
            lo = std::min(lo, rows), hi = std::max(hi, rows);
            EXPECT_LE(rows, p.mc_max) << what;
          }
          EXPECT_LE(hi - lo, MR) << what;
          lo = INT64_MAX, hi = 0;
          for (int64_t j = 0; j < p.ntiles; ++j) {
            const int64_t cols = p.col_start(j + 1) - p.col_start(j);
            lo = std::min(lo, cols), hi = std::max(hi, cols);
            EXPECT_LE(cols, p.nc_max) << what;
          }
          EXPECT_LE(hi - lo, NR) << what;
          const int64_t panels = ((s.M + MR - 1) / MR) * ((s.N + NR - 1) / NR);
          EXPECT_EQ(p.threads, std::min<int64_t>(threads, panels)) << what;
          if (panels % threads == 0 || panels >= 4 * threads) {
            EXPECT_EQ(p.tiles() % p.threads, 0) << what << ": tiles " << p.tiles();
          }
        }
}
