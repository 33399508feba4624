// The bf16 GEMM with A packed once (kernels/cpu/gemm_bf16.h: bf16_pack_a + gemm_bf16_packed_a), which the
// Winograd forward uses in bf16 mode for its transformed weights: bitwise gemm<float> in bf16 mode over
// ragged shapes, both B layouts, beta, alpha and several K blocks; and the Winograd forward's outputs
// bitwise the same whether a chunk's GEMMs ran on the packed weights or through gemm<float>. These need
// AVX512_BF16 and skip, saying so, on CPUs without it (the fp32 fallback: GemmBf16.Fallback*).
#include <gtest/gtest.h>
#include <omp.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/conv2d_winograd.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/gemm_bf16.h"

namespace kc = kern::cpu;
namespace gd = kern::cpu::gemm_detail;
using kc::CpuIsa;
using kc::MatmulPrecision;

namespace {

struct PrecisionGuard {  // restores precision and thread count at scope exit
  int threads = omp_get_max_threads();
  MatmulPrecision p = kc::matmul_precision();
  ~PrecisionGuard() {
    kc::set_matmul_precision(p);
    omp_set_num_threads(threads);
  }
};

#define SKIP_WITHOUT_BF16()                                                                             \
  if (!kc::cpu_has_bf16() || kc::cpu_isa() != CpuIsa::Avx512)                                           \
  GTEST_SKIP() << "this CPU lacks AVX512_BF16, or ENGINE_CPU_ISA forces a path below avx512: the bf16 " \
                  "GEMM path cannot run here"

std::vector<float> random_vec(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST(GemmBf16Packed, EqualsGemmBf16Bitwise) {
  SKIP_WITHOUT_BF16();
#if !defined(__x86_64__)
  GTEST_SKIP() << "gemm_bf16.h is built on x86-64 only";  // (unreachable: no AVX512_BF16 elsewhere)
#else
  PrecisionGuard g;
  kc::set_matmul_precision(MatmulPrecision::Bf16);
  const int64_t Ms[] = {1, 7, 8, 33, 64}, Ns[] = {1, 16, 17, 49, 70}, Ks[] = {1, 2, 3, 64, 257, 600};
  int cases = 0;
  for (int64_t M : Ms)
    for (int64_t N : Ns)
      for (int64_t K : Ks)
        for (int t = 0; t < 4; ++t) {
          const bool ta = t & 1, tb = t & 2;
          const float alpha = (cases % 3 == 0) ? 0.75f : 1.0f;
          const float beta = (cases % 3 == 0) ? 0.0f : (cases % 3 == 1) ? 1.0f : -0.5f;
          ++cases;
          const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
          const auto A = random_vec((ta ? K : M) * lda, 11 + cases),
                     B = random_vec((tb ? N : K) * ldb, 7 + cases);
          const auto C0 = random_vec(M * ldc, 3 + cases);
          std::vector<float> want = C0, got = C0;
          omp_set_num_threads(2);
          kc::gemm<float>(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, want.data(), ldc);
          std::vector<uint32_t> Ap(gd::bf16_packed_a_words(M, K));
          gd::bf16_pack_a(ta, M, K, alpha, A.data(), lda, Ap.data());
          ASSERT_TRUE(gd::gemm_bf16_packed_a(M, N, K, Ap.data(), tb, B.data(), ldb, beta, got.data(), ldc));
          ASSERT_TRUE(same_bits(want, got)) << "M " << M << " N " << N << " K " << K << " transA " << ta
                                            << " transB " << tb << " alpha " << alpha << " beta " << beta;
        }
#endif
}

// The Winograd forward in bf16 mode on 2 threads: one 8x8 image is a single chunk, whose GEMMs gemm<float>
// splits over the threads (weights packed per call); three images are several chunks, one per thread, on
// the weights packed once. Image 0's outputs must be the same bits, and differ from the fp32 ones (bf16
// really ran). Also with 1 thread (the packed path for both batches).
TEST(GemmBf16Packed, WinogradForwardIsBitwiseTheSameOnPackedAndPerCallWeights) {
  SKIP_WITHOUT_BF16();
  PrecisionGuard g;
  const int64_t C = 32, K = 48, H = 8, W = 8;
  const auto x = random_vec(3 * C * H * W, 1), w = random_vec(K * C * 9, 2), b = random_vec(K, 3);
  auto run = [&](int64_t n, int threads, MatmulPrecision p) {
    kern::Conv2dShape s{};
    s.N = n, s.C = C, s.H = H, s.W = W, s.K = K, s.R = 3, s.S = 3, s.stride_h = s.stride_w = 1;
    s.pad_h = s.pad_w = 1, s.P = H, s.Q = W;
    kc::set_matmul_precision(p);
    omp_set_num_threads(threads);
    std::vector<float> y(n * K * H * W);
    kc::conv2d_forward_winograd(s, x.data(), w.data(), b.data(), y.data());
    y.resize(K * H * W);  // image 0
    return y;
  };
  const auto one = run(1, 2, MatmulPrecision::Bf16);
  EXPECT_TRUE(same_bits(one, run(3, 2, MatmulPrecision::Bf16)));
  EXPECT_TRUE(same_bits(one, run(3, 1, MatmulPrecision::Bf16)));
  EXPECT_TRUE(same_bits(one, run(1, 1, MatmulPrecision::Bf16)));
  EXPECT_FALSE(same_bits(one, run(1, 2, MatmulPrecision::Fp32)));
}
