// The bf16 path of gemm<float> (MatmulPrecision::Bf16, kernels/cpu/gemm_bf16_avx512.cpp): against a
// float64 reference computed on the bf16-rounded inputs, with the float32-accumulation error bound;
// bitwise invariance to the thread count, M/N blocking and batching; non-finite propagation; and the
// fallback to the float32 definition where the bf16 path cannot run (ISA forced below AVX-512, or a CPU
// without AVX512_BF16). The tests that need the instructions skip, saying so, on CPUs without them.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include "kernels/cpu/conv2d_winograd.h"
#include "kernels/cpu/cpu_kernels.h"

namespace kc = kern::cpu;
using kc::CpuIsa;
using kc::MatmulPrecision;

namespace {

// Restores precision, ISA and thread count at scope exit.
struct PrecisionGuard {
  int threads = omp_get_max_threads();
  MatmulPrecision p = kc::matmul_precision();
  ~PrecisionGuard() {
    kc::set_matmul_precision(p);
    kc::set_cpu_isa(CpuIsa::Auto);
    omp_set_num_threads(threads);
  }
};

#define SKIP_WITHOUT_BF16()                                                                             \
  if (!kc::cpu_has_bf16() || kc::cpu_isa() != CpuIsa::Avx512)                                           \
  GTEST_SKIP() << "this CPU lacks AVX512_BF16, or ENGINE_CPU_ISA forces a path below avx512: the bf16 " \
                  "GEMM path cannot run here (only the fp32 fallback is tested)"

// float -> bf16 -> float as the hardware conversion (vcvtne2ps2bf16) defines it, written independently:
// round to nearest even on the upper 16 bits, NaN stays NaN, denormal inputs become signed zero.
float bf16_round(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if (std::isnan(x)) return x;
  if ((u & 0x7F800000u) == 0) {
    u &= 0x80000000u;
  } else {
    u += 0x7FFFu + ((u >> 16) & 1u);
    u &= 0xFFFF0000u;
  }
  float y;
  std::memcpy(&y, &u, 4);
  return y;
}

std::vector<float> random_vec(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<double> d(-1, 1);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(d(g));
  return v;
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct Case {
  int64_t M, N, K;
  bool ta, tb;
  float alpha, beta;
};

struct Mats {
  int64_t lda, ldb, ldc;
  std::vector<float> A, B, C;
};

Mats make(const Case& c, uint32_t seed = 1) {
  Mats m;
  m.lda = (c.ta ? c.M : c.K) + 3;
  m.ldb = (c.tb ? c.K : c.N) + 1;
  m.ldc = c.N + 2;
  m.A = random_vec((c.ta ? c.K : c.M) * m.lda, seed);
  m.B = random_vec((c.tb ? c.N : c.K) * m.ldb, seed + 1);
  m.C = random_vec(c.M * m.ldc, seed + 2);
  return m;
}

void run_gemm(const Case& c, const Mats& m, std::vector<float>& C) {
  kc::gemm<float>(c.ta, c.tb, c.M, c.N, c.K, c.alpha, m.A.data(), m.lda, m.B.data(), m.ldb, c.beta, C.data(),
                  m.ldc);
}

// Checks C (from the bf16 path) against the float64 sum over the bf16-rounded inputs a' = bf16(alpha * a),
// b' = bf16(b): every step of vdpbf16ps adds exact bf16 x bf16 products to a float32 accumulator, with at
// most two roundings (unit 2^-24) per k-pair, so |C - ref| <= (K + 2) * 2^-24 * (|beta C0| + sum |a'||b'|)
// (the +2: beta * C0 and the last pair's slack). The float32 path does not meet this bound: its inputs are
// not rounded to bf16, an error of up to 2^-9 relative per factor.
void check_against_rounded_reference(const Case& c, const Mats& m, const std::vector<float>& C,
                                     const char* what) {
  auto a = [&](int64_t i, int64_t k) { return c.ta ? m.A[k * m.lda + i] : m.A[i * m.lda + k]; };
  auto b = [&](int64_t k, int64_t j) { return c.tb ? m.B[j * m.ldb + k] : m.B[k * m.ldb + j]; };
  const double u = std::ldexp(1.0, -24);
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < c.N; ++j) {
      const double c0 =
          c.beta == 0.0f ? 0.0 : double(c.beta == 1.0f ? m.C[i * m.ldc + j] : c.beta * m.C[i * m.ldc + j]);
      double ref = c0, mag = std::fabs(c0);
      for (int64_t k = 0; k < c.K; ++k) {
        const double p = double(bf16_round(c.alpha * a(i, k))) * double(bf16_round(b(k, j)));
        ref += p;
        mag += std::fabs(p);
      }
      const double bound = (c.K + 2) * u * mag;
      ASSERT_LE(std::fabs(C[i * m.ldc + j] - ref), bound)
          << what << " M=" << c.M << " N=" << c.N << " K=" << c.K << " ta=" << c.ta << " tb=" << c.tb
          << " alpha=" << c.alpha << " beta=" << c.beta << " at (" << i << "," << j << ")";
    }
  // Padding columns of C (ldc > N) are never written.
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = c.N; j < m.ldc; ++j) ASSERT_EQ(C[i * m.ldc + j], m.C[i * m.ldc + j]) << what;
}

const std::vector<Case>& cases() {
  static const std::vector<Case> v = {
      {1, 1, 1, false, false, 1, 0},       {1, 1, 2, false, false, 1, 1},
      {7, 5, 9, true, false, 1, 1},        {13, 37, 3, false, true, 0.5f, 0},
      {33, 17, 40, true, true, 2, 0.25f},  {64, 784, 288, false, false, 1, 1},
      {250, 70, 513, false, true, -1, 0},  {3, 1030, 257, true, false, 1, 0},
      {41, 33, 300, true, true, 0.75f, 1}, {17, 16, 511, false, false, 1, 0.5f},
      {96, 9, 64, false, true, 1, 0},
  };
  return v;
}

TEST(GemmBf16, MatchesTheFloat64SumOfBf16RoundedInputsWithinTheFp32AccumulationBound) {
  SKIP_WITHOUT_BF16();
  PrecisionGuard g;
  kc::set_matmul_precision(MatmulPrecision::Bf16);
  ASSERT_EQ(kc::matmul_precision_active(), MatmulPrecision::Bf16);
  for (const Case& base : cases())
    for (int t = 0; t < 4; ++t) {
      Case c = base;
      c.ta = t & 1;
      c.tb = t & 2;
      const Mats m = make(c);
      auto C = m.C;
      run_gemm(c, m, C);
      check_against_rounded_reference(c, m, C, "bf16");
    }
}

TEST(GemmBf16, IsBitwiseIndependentOfThreadsRowsColumnsAndBatching) {
  SKIP_WITHOUT_BF16();
  PrecisionGuard g;
  kc::set_matmul_precision(MatmulPrecision::Bf16);
  for (const Case& c : {Case{250, 300, 600, false, false, 1, 0}, Case{130, 1030, 257, true, true, 0.5f, 1},
                        Case{64, 784, 288, false, true, 1, 0.25f}}) {
    const Mats m = make(c, 7);
    omp_set_num_threads(1);
    auto C1 = m.C;
    run_gemm(c, m, C1);
    for (int th : {2, 3, 4}) {
      omp_set_num_threads(th);
      auto Ct = m.C;
      run_gemm(c, m, Ct);
      ASSERT_TRUE(bitwise_equal(C1, Ct)) << "threads=" << th << " M=" << c.M;
    }
    // Row i alone (M = 1: a batch of one) and a column block alone give the same bits.
    for (int64_t i : {int64_t(0), c.M / 2, c.M - 1}) {
      std::vector<float> row(m.C.begin() + i * m.ldc, m.C.begin() + (i + 1) * m.ldc);
      const float* Ai = c.ta ? m.A.data() + i : m.A.data() + i * m.lda;
      kc::gemm<float>(c.ta, c.tb, 1, c.N, c.K, c.alpha, Ai, m.lda, m.B.data(), m.ldb, c.beta, row.data(),
                      m.ldc);
      ASSERT_EQ(std::memcmp(row.data(), C1.data() + i * m.ldc, c.N * sizeof(float)), 0) << "row " << i;
    }
    const int64_t j0 = 37, nj = 5;
    auto Cj = m.C;
    const float* Bj = c.tb ? m.B.data() + j0 * m.ldb : m.B.data() + j0;
    kc::gemm<float>(c.ta, c.tb, c.M, nj, c.K, c.alpha, m.A.data(), m.lda, Bj, m.ldb, c.beta, Cj.data() + j0,
                    m.ldc);
    for (int64_t i = 0; i < c.M; ++i)
      ASSERT_EQ(std::memcmp(Cj.data() + i * m.ldc + j0, C1.data() + i * m.ldc + j0, nj * sizeof(float)), 0)
          << "column block, row " << i;
  }
  // gemm_batched (batch entries in parallel, each GEMM serial) = the GEMMs one by one.
  const int64_t batch = 5, M = 20, N = 45, K = 33;
  const auto A = random_vec(batch * M * K, 11), B = random_vec(batch * K * N, 12);
  std::vector<float> Cb(batch * M * N, 0.0f), Cs(batch * M * N, 0.0f);
  omp_set_num_threads(2);
  kc::gemm_batched<float>(batch, false, true, M, N, K, 1.0f, A.data(), K, M * K, B.data(), K, K * N, 0.0f,
                          Cb.data(), N, M * N);
  for (int64_t b = 0; b < batch; ++b)
    kc::gemm<float>(false, true, M, N, K, 1.0f, A.data() + b * M * K, K, B.data() + b * K * N, K, 0.0f,
                    Cs.data() + b * M * N, N);
  ASSERT_TRUE(bitwise_equal(Cb, Cs));
}

// The per-element sequence does not depend on how an operand is stored: the same logical op(A), op(B)
// given row-major or transposed (packed by different code: k-pairs across columns, or rows transposed in
// registers) give the same bits, at ragged row / column counts, odd K, K across blocks (> 256), alpha != 1.
TEST(GemmBf16, IsBitwiseIndependentOfOperandLayout) {
  SKIP_WITHOUT_BF16();
  PrecisionGuard g;
  kc::set_matmul_precision(MatmulPrecision::Bf16);
  for (int th : {1, 2})
    for (const Case& c :
         {Case{1, 1, 1, false, false, 1, 0}, Case{7, 5, 9, false, false, 1, 1},
          Case{13, 37, 3, false, false, 0.5f, 0}, Case{33, 17, 40, false, false, 2, 0.25f},
          Case{64, 160, 32, false, false, 1, 0}, Case{19, 71, 513, false, false, -1, 1},
          Case{250, 33, 300, false, false, 0.75f, 0}, Case{48, 64, 337, false, false, 1, 1}}) {
      omp_set_num_threads(th);
      const Mats m = make(c, 71);
      // A (M x K, lda) and its transpose At (K x M, ldat); B (K x N, ldb) and Bt (N x K, ldbt).
      const int64_t ldat = c.M + 5, ldbt = c.K + 7;
      std::vector<float> At(c.K * ldat, 0.0f), Bt(c.N * ldbt, 0.0f);
      for (int64_t i = 0; i < c.M; ++i)
        for (int64_t k = 0; k < c.K; ++k) At[k * ldat + i] = m.A[i * m.lda + k];
      for (int64_t k = 0; k < c.K; ++k)
        for (int64_t j = 0; j < c.N; ++j) Bt[j * ldbt + k] = m.B[k * m.ldb + j];
      std::vector<float> ref = m.C;
      run_gemm(c, m, ref);
      check_against_rounded_reference(c, m, ref, "layout reference");
      for (int t = 1; t < 4; ++t) {
        const bool ta = t & 1, tb = t & 2;
        auto C = m.C;
        kc::gemm<float>(ta, tb, c.M, c.N, c.K, c.alpha, ta ? At.data() : m.A.data(), ta ? ldat : m.lda,
                        tb ? Bt.data() : m.B.data(), tb ? ldbt : m.ldb, c.beta, C.data(), m.ldc);
        ASSERT_TRUE(bitwise_equal(C, ref)) << "ta=" << ta << " tb=" << tb << " M=" << c.M << " N=" << c.N
                                           << " K=" << c.K << " threads=" << th;
      }
    }
}

TEST(GemmBf16, DiffersFromFp32AndStaysWithinTheInputRoundingOfIt) {
  SKIP_WITHOUT_BF16();
  PrecisionGuard g;
  const Case c{40, 50, 300, false, false, 1, 0};
  const Mats m = make(c, 21);
  auto C32 = m.C, C16 = m.C;
  kc::set_matmul_precision(MatmulPrecision::Fp32);
  run_gemm(c, m, C32);
  kc::set_matmul_precision(MatmulPrecision::Bf16);
  run_gemm(c, m, C16);
  EXPECT_FALSE(bitwise_equal(C32, C16)) << "the bf16 path gave the float32 bits: did it run?";
  // Each factor is off by at most 2^-9 relative (bf16 has an 8-bit significand): |a'b' - ab| <= ~2^-8 |ab|.
  const auto& A = m.A;
  const auto& B = m.B;
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < c.N; ++j) {
      double mag = 0;
      for (int64_t k = 0; k < c.K; ++k) mag += std::fabs(double(A[i * m.lda + k]) * B[k * m.ldb + j]);
      ASSERT_LE(std::fabs(C16[i * m.ldc + j] - C32[i * m.ldc + j]), (std::ldexp(1.0, -8) + 2e-5) * mag);
    }
}

TEST(GemmBf16, NonFiniteInputsPropagateAndBetaZeroDoesNotReadC) {
  SKIP_WITHOUT_BF16();
  PrecisionGuard g;
  kc::set_matmul_precision(MatmulPrecision::Bf16);
  const int64_t M = 9, N = 40, K = 7;
  auto A = random_vec(M * K, 31), B = random_vec(K * N, 32);
  A[3 * K + 2] = std::numeric_limits<float>::quiet_NaN();                // row 3 of C: NaN
  B[4 * N + 5] = std::numeric_limits<float>::infinity();                 // column 5: +-Inf (or NaN in row 3)
  std::vector<float> C(M * N, std::numeric_limits<float>::quiet_NaN());  // beta = 0: never read
  kc::gemm<float>(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C.data(), N);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      const float x = C[i * N + j];
      if (i == 3)
        EXPECT_TRUE(std::isnan(x)) << i << "," << j;
      else if (j == 5)
        EXPECT_TRUE(std::isinf(x)) << i << "," << j;
      else
        EXPECT_TRUE(std::isfinite(x)) << i << "," << j;
    }
}

// Where the bf16 path cannot run (ISA forced to AVX2 or scalar, or no AVX512_BF16), Bf16 falls back to
// the float32 definition bit for bit. Runs on every CPU.
TEST(GemmBf16, FallbackIsTheFp32DefinitionBitwise) {
  PrecisionGuard g;
  kc::set_matmul_precision(MatmulPrecision::Bf16);
  EXPECT_EQ(kc::matmul_precision(), MatmulPrecision::Bf16);
  std::vector<CpuIsa> isas = {CpuIsa::Scalar};
  if (kc::cpu_isa_supported() >= CpuIsa::Avx2) isas.push_back(CpuIsa::Avx2);
  if (!kc::cpu_has_bf16() && kc::cpu_isa_supported() == CpuIsa::Avx512) isas.push_back(CpuIsa::Avx512);
  for (CpuIsa isa : isas) {
    kc::set_cpu_isa(isa);
    EXPECT_EQ(kc::matmul_precision_active(), MatmulPrecision::Fp32) << kc::cpu_isa_name(isa);
    for (const Case& c : cases()) {
      const Mats m = make(c, 41);
      auto C = m.C, ref = m.C;
      run_gemm(c, m, C);
      kc::gemm_reference<float>(c.ta, c.tb, c.M, c.N, c.K, c.alpha, m.A.data(), m.lda, m.B.data(), m.ldb,
                                c.beta, ref.data(), m.ldc);
      ASSERT_TRUE(bitwise_equal(C, ref)) << kc::cpu_isa_name(isa) << " M=" << c.M << " K=" << c.K;
    }
  }
  // float64 never takes the bf16 path.
  kc::set_cpu_isa(CpuIsa::Auto);
  const int64_t M = 5, N = 33, K = 17;
  std::vector<double> A(M * K), B(K * N), C(M * N, 0.0), ref(M * N, 0.0);
  for (size_t i = 0; i < A.size(); ++i) A[i] = std::sin(double(i)) * 1.000001;
  for (size_t i = 0; i < B.size(); ++i) B[i] = std::cos(double(i)) * 1.000001;
  kc::gemm<double>(false, false, M, N, K, 1.0, A.data(), K, B.data(), N, 0.0, C.data(), N);
  kc::gemm_reference<double>(false, false, M, N, K, 1.0, A.data(), K, B.data(), N, 0.0, ref.data(), N);
  EXPECT_EQ(std::memcmp(C.data(), ref.data(), C.size() * sizeof(double)), 0);
}

// Conv2d, a GEMM caller, inherits the bf16 path: forward, input and weight gradients against float64
// sums with each output's bound (2^-8 + (n + 2) 2^-24) * sum |x||w| over its n products (each factor
// rounded to bf16 at most 2^-9 relative, then float32 accumulation), with im2col forced (Auto takes
// Winograd for these channels, in bf16 mode too: see the next test); and the results do not depend on
// the batch or threads.
TEST(GemmBf16, Conv2dTakesTheBf16GemmWithIm2colWithinItsBound) {
  SKIP_WITHOUT_BF16();
  PrecisionGuard g;
  struct ConvGuard {
    ~ConvGuard() { kc::set_cpu_conv_algo(kc::CpuConvAlgo::Auto); }
  } cg;
  kc::set_matmul_precision(MatmulPrecision::Bf16);
  kc::set_cpu_conv_algo(kc::CpuConvAlgo::Im2col);
  const int64_t N = 3, C = 64, H = 7, K = 64;  // C * K >= kWinogradAutoMinCK: Auto would take Winograd
  const kern::Conv2dShape s{N, C, H, H, K, 3, 3, 1, 1, 1, 1, H, H};
  ASSERT_TRUE(kc::winograd_applies(s) && C * K >= kc::kWinogradAutoMinCK);
  const int64_t PQ = H * H;
  const auto x = random_vec(N * C * PQ, 51), w = random_vec(K * C * 9, 52), dy = random_vec(N * K * PQ, 53);
  const std::vector<float> b(K, 0.25f);
  std::vector<float> y(N * K * PQ), dx(N * C * PQ), dw(K * C * 9), db(K);
  kc::conv2d_forward<float>(s, x.data(), w.data(), b.data(), y.data());
  kc::conv2d_backward_input<float>(s, dy.data(), w.data(), dx.data());
  kc::conv2d_backward_weight<float>(s, dy.data(), x.data(), dw.data(), db.data());
  auto X = [&](int64_t n, int64_t c, int64_t i, int64_t j) {
    return i < 0 || j < 0 || i >= H || j >= H ? 0.0 : double(x[((n * C + c) * H + i) * H + j]);
  };
  auto DY = [&](int64_t n, int64_t k, int64_t i, int64_t j) {
    return i < 0 || j < 0 || i >= H || j >= H ? 0.0 : double(dy[((n * K + k) * H + i) * H + j]);
  };
  auto W = [&](int64_t k, int64_t c, int r, int q) { return double(w[((k * C + c) * 3 + r) * 3 + q]); };
  const double u8 = std::ldexp(1.0, -8), u24 = std::ldexp(1.0, -24);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t i = 0; i < H; ++i)
        for (int64_t j = 0; j < H; ++j) {
          double ref = b[k], mag = std::fabs(b[k]);
          for (int64_t c = 0; c < C; ++c)
            for (int r = 0; r < 3; ++r)
              for (int q = 0; q < 3; ++q) {
                const double p = X(n, c, i + r - 1, j + q - 1) * W(k, c, r, q);
                ref += p;
                mag += std::fabs(p);
              }
          ASSERT_LE(std::fabs(y[((n * K + k) * H + i) * H + j] - ref), (u8 + (9 * C + 2) * u24) * mag);
        }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < H; ++i)
        for (int64_t j = 0; j < H; ++j) {
          double ref = 0, mag = 0;
          for (int64_t k = 0; k < K; ++k)
            for (int r = 0; r < 3; ++r)
              for (int q = 0; q < 3; ++q) {
                const double p = DY(n, k, i - r + 1, j - q + 1) * W(k, c, r, q);
                ref += p;
                mag += std::fabs(p);
              }
          ASSERT_LE(std::fabs(dx[((n * C + c) * H + i) * H + j] - ref), (u8 + (9 * K + 2) * u24) * mag);
        }
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c)
      for (int r = 0; r < 3; ++r)
        for (int q = 0; q < 3; ++q) {
          double ref = 0, mag = 0;
          for (int64_t n = 0; n < N; ++n)
            for (int64_t i = 0; i < H; ++i)
              for (int64_t j = 0; j < H; ++j) {
                const double p = DY(n, k, i, j) * X(n, c, i + r - 1, j + q - 1);
                ref += p;
                mag += std::fabs(p);
              }
          ASSERT_LE(std::fabs(dw[((k * C + c) * 3 + r) * 3 + q] - ref), (u8 + (N * PQ + 2) * u24) * mag);
        }
  // Auto in bf16 mode = Winograd here, bitwise; forced im2col (above) differs.
  std::vector<float> y_auto(y.size()), y_wino(y.size());
  kc::set_cpu_conv_algo(kc::CpuConvAlgo::Auto);
  kc::conv2d_forward<float>(s, x.data(), w.data(), b.data(), y_auto.data());
  kc::set_cpu_conv_algo(kc::CpuConvAlgo::Winograd);
  kc::conv2d_forward<float>(s, x.data(), w.data(), b.data(), y_wino.data());
  kc::set_cpu_conv_algo(kc::CpuConvAlgo::Im2col);
  EXPECT_TRUE(bitwise_equal(y_auto, y_wino));
  EXPECT_FALSE(bitwise_equal(y, y_wino));
  // Batch and thread independence: image 1 alone, on one thread, gives the same bits.
  omp_set_num_threads(1);
  kern::Conv2dShape s1 = s;
  s1.N = 1;
  std::vector<float> y1(K * PQ);
  kc::conv2d_forward<float>(s1, x.data() + C * PQ, w.data(), b.data(), y1.data());
  EXPECT_EQ(std::memcmp(y1.data(), y.data() + K * PQ, y1.size() * sizeof(float)), 0);
}

// Winograd F(2x2, 3x3) under bf16 GEMMs (what Auto runs for 3x3 stride-1 convs with C * K >= 1024): each
// output against the float64 direct convolution, within the bound of its transform-domain magnitude
//   mag = sum_xi |A^T_i||A^T_j| sum_c |G| |g| |G^T| (xi) * |B^T| |d| |B| (xi)   (absolute transforms)
// times 2^-8 (U and V each rounded to bf16, at most 2^-9 relative of these absolute sums) plus the float32
// roundings (the float64 weight transform rounded once, 3 additions per input-transform value, the float32
// accumulation over c, the output transform and the bias: (C + 128) 2^-24 covers them). The matrices are
// written here from Lavin & Gray's F(2x2, 3x3), not taken from the kernel. Forward and input gradient (a
// Winograd forward of dy with the flipped, transposed weights); bf16 really ran (differs from fp32).
TEST(GemmBf16, Conv2dWinogradWithinItsTransformDomainBound) {
  SKIP_WITHOUT_BF16();
  PrecisionGuard g;
  struct ConvGuard {
    ~ConvGuard() { kc::set_cpu_conv_algo(kc::CpuConvAlgo::Auto); }
  } cg;
  static const double BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static const double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  static const double AT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
  // y (N, K, H, H) against conv(x (N, C, H, H), w (K, C, 3, 3)) + b, b may be empty.
  auto check = [&](const char* what, int64_t N, int64_t C, int64_t K, int64_t H, const std::vector<float>& x,
                   const std::vector<float>& w, const std::vector<float>& b, const std::vector<float>& y) {
    auto X = [&](int64_t n, int64_t c, int64_t i, int64_t j) {
      return i < 0 || j < 0 || i >= H || j >= H ? 0.0 : double(x[((n * C + c) * H + i) * H + j]);
    };
    // Absolute weight transforms Uabs[k][c][a][bb] = sum |G[a][r]| |G[bb][q]| |w[k][c][r][q]|.
    std::vector<double> Uabs(K * C * 16, 0.0);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < C; ++c)
        for (int a = 0; a < 4; ++a)
          for (int bb = 0; bb < 4; ++bb)
            for (int r = 0; r < 3; ++r)
              for (int q = 0; q < 3; ++q)
                Uabs[(k * C + c) * 16 + a * 4 + bb] +=
                    std::fabs(G[a][r] * G[bb][q]) * std::fabs(double(w[((k * C + c) * 3 + r) * 3 + q]));
    const double u24 = std::ldexp(1.0, -24), rel = std::ldexp(1.0, -8) + double(C + 128) * u24;
    double worst = 0;
    std::vector<double> Vabs(C * 16);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t ty = 0; 2 * ty < H; ++ty)
        for (int64_t tx = 0; 2 * tx < H; ++tx) {
          std::fill(Vabs.begin(), Vabs.end(), 0.0);
          for (int64_t c = 0; c < C; ++c)
            for (int a = 0; a < 4; ++a)
              for (int bb = 0; bb < 4; ++bb)
                for (int r = 0; r < 4; ++r)
                  for (int q = 0; q < 4; ++q)
                    Vabs[c * 16 + a * 4 + bb] +=
                        std::fabs(BT[a][r] * BT[bb][q]) * std::fabs(X(n, c, 2 * ty - 1 + r, 2 * tx - 1 + q));
          for (int64_t k = 0; k < K; ++k)
            for (int i = 0; i < 2 && 2 * ty + i < H; ++i)
              for (int j = 0; j < 2 && 2 * tx + j < H; ++j) {
                const int64_t oi = 2 * ty + i, oj = 2 * tx + j;
                double ref = b.empty() ? 0.0 : b[k], mag = b.empty() ? 0.0 : std::fabs(b[k]);
                for (int64_t c = 0; c < C; ++c)
                  for (int r = 0; r < 3; ++r)
                    for (int q = 0; q < 3; ++q)
                      ref += X(n, c, oi + r - 1, oj + q - 1) * double(w[((k * C + c) * 3 + r) * 3 + q]);
                for (int a = 0; a < 4; ++a)
                  for (int bb = 0; bb < 4; ++bb) {
                    const double coef = std::fabs(AT[i][a] * AT[j][bb]);
                    if (coef == 0) continue;
                    double sum = 0;
                    for (int64_t c = 0; c < C; ++c)
                      sum += Uabs[(k * C + c) * 16 + a * 4 + bb] * Vabs[c * 16 + a * 4 + bb];
                    mag += coef * sum;
                  }
                const double err = std::fabs(double(y[((n * K + k) * H + oi) * H + oj]) - ref);
                ASSERT_LE(err, rel * mag) << what << " n " << n << " k " << k << " at " << oi << "," << oj;
                worst = std::max(worst, err / (rel * mag));
              }
        }
    EXPECT_GT(worst, 0.01) << what << ": the bound is meant to be within two orders of the error";
  };
  for (const auto& [C, K, H] : {std::tuple<int64_t, int64_t, int64_t>{64, 64, 7}, {32, 32, 8}}) {
    const int64_t N = 2, PQ = H * H;
    const kern::Conv2dShape s{N, C, H, H, K, 3, 3, 1, 1, 1, 1, H, H};
    ASSERT_TRUE(kc::winograd_selected(s));
    const auto x = random_vec(N * C * PQ, 61), w = random_vec(K * C * 9, 62), dy = random_vec(N * K * PQ, 63);
    const std::vector<float> b(K, 0.25f);
    std::vector<float> y(N * K * PQ), dx(N * C * PQ), y32(y.size());
    kc::set_matmul_precision(MatmulPrecision::Fp32);
    kc::conv2d_forward<float>(s, x.data(), w.data(), b.data(), y32.data());
    kc::set_matmul_precision(MatmulPrecision::Bf16);
    kc::conv2d_forward<float>(s, x.data(), w.data(), b.data(), y.data());
    kc::conv2d_backward_input<float>(s, dy.data(), w.data(), dx.data());
    EXPECT_FALSE(bitwise_equal(y, y32)) << "the bf16 GEMM did not run";
    check("forward", N, C, K, H, x, w, b, y);
    std::vector<float> wt(C * K * 9);  // wt[c][k][r][q] = w[k][c][2-r][2-q]
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < C; ++c)
        for (int r = 0; r < 9; ++r) wt[(c * K + k) * 9 + (8 - r)] = w[(k * C + c) * 9 + r];
    check("input gradient", N, K, C, H, dy, wt, {}, dx);
  }
}

}  // namespace
