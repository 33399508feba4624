// The bf16 path of the float32 GEMM (kern::cpu::gemm<float> under MatmulPrecision::Bf16): the same BLIS
// loop structure as gemm.cpp (macro tiles of C, K blocks, packed A and B panels, one register
// microkernel), but the packing rounds alpha * A and B to bf16 and lays them out in k-pairs for
// vdpbf16ps, which accumulates in float32. This file alone is compiled with -mavx512f -mavx512bf16
// -mavx512bw -mavx512vl and may only be called on a CPU with AVX512_BF16 (gemm.cpp checks cpuid).
//
// Everything except the one entry point has internal linkage and no standard-library template is
// instantiated here, so the linker can never pick an AVX-512 copy of a shared (COMDAT) function for a
// CPU without it (`nm -C` on the object lists the entry point as its only defined global symbol).
//
// Per C element, with a'[i][k] = bf16(float(alpha * A[i][k])) and b'[k][j] = bf16(B[k][j]) (round to
// nearest even, NaN stays NaN, denormals flush to signed zero), and acc = the beta-initialised C:
//   for each K block of kKC (fixed, from k = 0), for p over the block's k-pairs (an odd K gets a zero
//   pair partner): acc = vdpbf16ps(acc, a'[i][2p..2p+1], b'[2p..2p+1][j])
// one fixed instruction sequence per element, so the result is bitwise independent of M, N, the tile
// position, the thread count and the batch size (on a fixed machine). It differs from the float32 path.
#include <immintrin.h>
#include <omp.h>

#include <cstdint>
#include <cstdlib>

#include "kernels/cpu/gemm_detail.h"

namespace kern::cpu::gemm_detail {
namespace {

constexpr int kMR = 8;        // register tile: 8 rows x 32 columns (16 zmm accumulators)
constexpr int kNR = 32;       // 2 zmm of float32 accumulators; a B k-pair row is 2 zmm of bf16 pairs
constexpr int64_t kKC = 256;  // K block (even): 128 k-pairs
constexpr int64_t kMC = 240;  // a multiple of kMR
constexpr int64_t kNC = 512;  // a multiple of kNR

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
inline __mmask16 mask_first(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// 16 floats scale * p[0 .. n) (n <= 16; lanes past n are zero and not read), for a bf16 conversion.
inline __m512 load_scaled(const float* p, int64_t n, float scale) {
  const __mmask16 m = mask_first(n);
  const __m512 x = _mm512_maskz_loadu_ps(m, p);
  return scale == 1.0f ? x : _mm512_maskz_mul_ps(m, x, _mm512_set1_ps(scale));  // x * 1 == x: skip it
}

// dst[p * P + r] = (bf16 of scale * src[r * ld + 2p], of scale * src[r * ld + 2p + 1]) (low, high
// half) for r < rows and 2p < kc, the high half zero where 2p + 1 == kc; rows r in [rows, P) are zero.
// The source rows are contiguous in k.
void pack_rows(const float* src, int64_t ld, int rows, int64_t kc, float scale, int P, uint32_t* dst) {
  const int64_t kc2 = (kc + 1) / 2;
  alignas(64) uint32_t tmp[kKC / 2];
  for (int r = 0; r < rows; ++r) {
    const float* s = src + r * ld;
    for (int64_t k0 = 0; k0 < kc; k0 += 32) {
      const __m512 lo = load_scaled(s + k0, kc - k0, scale);
      const __m512 hi = load_scaled(s + k0 + 16, kc - k0 - 16, scale);
      _mm512_store_si512(tmp + k0 / 2, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
    for (int64_t p = 0; p < kc2; ++p) dst[p * P + r] = tmp[p];
  }
  for (int64_t p = 0; p < kc2; ++p)
    for (int r = rows; r < P; ++r) dst[p * P + r] = 0;
}

// dst[p * P + c] = (bf16 of scale * src[2p * ld + c], of scale * src[(2p + 1) * ld + c]) for c < cols,
// the high half zero where 2p + 1 == kc; columns c in [cols, P) are zero. The source rows are k.
void pack_cols(const float* src, int64_t ld, int cols, int64_t kc, float scale, int P, uint32_t* dst) {
  const int64_t kc2 = (kc + 1) / 2;
  // Interleave: word j of the result = (even[j], odd[j]), with even in bf16 lanes 0-15, odd in 16-31.
  alignas(64) static const uint16_t kIdx[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i idx = _mm512_load_si512(kIdx);
  for (int64_t p = 0; p < kc2; ++p) {
    const float* e = src + 2 * p * ld;
    const bool has_odd = 2 * p + 1 < kc;
    for (int c0 = 0; c0 < P; c0 += 16) {
      const int64_t n = cols - c0;
      const __m512 even = load_scaled(e + c0, n, scale);
      const __m512 odd = has_odd ? load_scaled(e + ld + c0, n, scale) : _mm512_setzero_ps();
      const __m512i v = _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(odd, even));
      _mm512_mask_storeu_epi32(dst + p * P + c0, mask_first(P - c0), v);
    }
  }
}

// C tile (kMR x 16 NV, row stride ldc, all valid) from kc2 k-pairs of the packed panels (B rows of kNR
// words, of which the first 16 NV are used). NV = 1 serves ragged right edges of at most 16 columns: each
// lane sees the same vdpbf16ps sequence as with NV = 2, so the bits do not depend on the choice.
template <int NV>
void micro_full(int64_t kc2, const uint32_t* __restrict Ap, const uint32_t* __restrict Bp,
                float* __restrict C, int64_t ldc, Init init, float beta) {
  __m512 acc[kMR][NV];
  if (init == Init::Zero) {
#pragma GCC unroll 8
    for (int i = 0; i < kMR; ++i)
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  } else {
    const __m512 b = _mm512_set1_ps(beta);
#pragma GCC unroll 8
    for (int i = 0; i < kMR; ++i)
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        const __m512 c = _mm512_loadu_ps(C + i * ldc + v * 16);
        acc[i][v] = init == Init::Load ? c : _mm512_mul_ps(b, c);
      }
  }
  for (int64_t p = 0; p < kc2; ++p) {
    __m512bh b[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) b[v] = (__m512bh)_mm512_loadu_si512(Bp + p * kNR + v * 16);
    const uint32_t* a = Ap + p * kMR;
#pragma GCC unroll 8
    for (int i = 0; i < kMR; ++i) {
      const __m512bh ai = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[i]));
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], ai, b[v]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < kMR; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(C + i * ldc + v * 16, acc[i][v]);
}

// An m x n (m <= kMR, n <= kNV * 16) tile: in place when full, else through a local tile, so that every
// valid element sees the same instruction sequence.
template <int NV>
void micro_edge(int64_t kc2, const uint32_t* Ap, const uint32_t* Bp, float* C, int64_t ldc, int m, int n,
                Init init, float beta) {
  constexpr int W = 16 * NV;
  if (m == kMR && n == W) return micro_full<NV>(kc2, Ap, Bp, C, ldc, init, beta);
  alignas(64) float tile[kMR * W] = {};
  if (init != Init::Zero)
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) tile[i * W + j] = C[i * ldc + j];
  micro_full<NV>(kc2, Ap, Bp, tile, W, init, beta);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) C[i * ldc + j] = tile[i * W + j];
}

void micro(int64_t kc2, const uint32_t* Ap, const uint32_t* Bp, float* C, int64_t ldc, int m, int n,
           Init init, float beta) {
  if (n <= 16)
    micro_edge<1>(kc2, Ap, Bp, C, ldc, m, n, init, beta);
  else
    micro_edge<2>(kc2, Ap, Bp, C, ldc, m, n, init, beta);
}

// One macro tile C[i0 : i0+mc, j0 : j0+nc], all K blocks in order.
void macro_tile(const Bf16GemmArgs& q, int64_t i0, int64_t mc, int64_t j0, int64_t nc, uint32_t* Ap,
                uint32_t* Bp) {
  for (int64_t k0 = 0; k0 < q.K; k0 += kKC) {
    const int64_t kc = min64(kKC, q.K - k0), kc2 = (kc + 1) / 2;
    const Init init = k0 > 0           ? Init::Load
                      : q.beta == 0.0f ? Init::Zero
                      : q.beta == 1.0f ? Init::Load
                                       : Init::Scale;
    for (int64_t jr = 0; jr < nc; jr += kNR) {
      const int n = static_cast<int>(min64(kNR, nc - jr));
      uint32_t* dst = Bp + jr * kc2;
      if (!q.transB)
        pack_cols(q.B + k0 * q.ldb + j0 + jr, q.ldb, n, kc, 1.0f, kNR, dst);
      else
        pack_rows(q.B + (j0 + jr) * q.ldb + k0, q.ldb, n, kc, 1.0f, kNR, dst);
    }
    for (int64_t ir = 0; ir < mc; ir += kMR) {
      const int m = static_cast<int>(min64(kMR, mc - ir));
      uint32_t* dst = Ap + ir * kc2;
      if (!q.transA)
        pack_rows(q.A + (i0 + ir) * q.lda + k0, q.lda, m, kc, q.alpha, kMR, dst);
      else
        pack_cols(q.A + k0 * q.lda + i0 + ir, q.lda, m, kc, q.alpha, kMR, dst);
    }
    for (int64_t jr = 0; jr < nc; jr += kNR)
      for (int64_t ir = 0; ir < mc; ir += kMR)
        micro(kc2, Ap + ir * kc2, Bp + jr * kc2, q.C + (i0 + ir) * q.ldc + j0 + jr, q.ldc,
              static_cast<int>(min64(kMR, mc - ir)), static_cast<int>(min64(kNR, nc - jr)), init, q.beta);
  }
}

// Per-thread packing buffer (64-byte aligned, kept between calls, only grows): no allocation on the hot
// path and no standard-library container instantiated in this file.
struct Scratch {
  uint32_t* p = nullptr;
  int64_t n = 0;
  uint32_t* get(int64_t want) {
    if (want > n) {
      std::free(p);
      n = round_up(want, 16);
      p = static_cast<uint32_t*>(std::aligned_alloc(64, static_cast<size_t>(n) * sizeof(uint32_t)));
      if (!p) n = 0;
    }
    return p;
  }
  ~Scratch() { std::free(p); }
};
thread_local Scratch t_scratch[2];

}  // namespace

bool gemm_f32_bf16_avx512(const Bf16GemmArgs& g) {
  const int nthreads = g.nthreads;
  int64_t nc = kNC;
  const int64_t mtiles = (g.M + kMC - 1) / kMC;
  if (g.parallel && mtiles * ((g.N + nc - 1) / nc) < 2 * nthreads)
    nc = max64(kNR, round_up((g.N + 2 * nthreads - 1) / (2 * nthreads), kNR));
  const int64_t ntiles = (g.N + nc - 1) / nc, tiles = mtiles * ntiles;
  const int64_t kc2_max = (min64(kKC, g.K) + 1) / 2;
  const int64_t a_size = round_up(min64(kMC, g.M), kMR) * kc2_max;
  const int64_t b_size = round_up(min64(nc, g.N), kNR) * kc2_max;
  bool ok = true;
#pragma omp parallel if (g.parallel && tiles > 1) reduction(&& : ok)
  {
    uint32_t* Ap = t_scratch[0].get(a_size);
    uint32_t* Bp = t_scratch[1].get(b_size);
    const bool have = Ap && Bp;
    ok = ok && have;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      if (!have) continue;
      const int64_t i0 = (t / ntiles) * kMC, j0 = (t % ntiles) * nc;
      macro_tile(g, i0, min64(kMC, g.M - i0), j0, min64(nc, g.N - j0), Ap, Bp);
    }
  }
  return ok;
}

}  // namespace kern::cpu::gemm_detail
