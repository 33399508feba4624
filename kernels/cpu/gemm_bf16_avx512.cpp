// The bf16 path of the float32 GEMM (kern::cpu::gemm<float> under MatmulPrecision::Bf16): the same BLIS
// loop structure as gemm.cpp (macro tiles of C, K blocks, packed A and B panels, one register
// microkernel), but the packing rounds alpha * A and B to bf16 and lays them out in k-pairs for
// vdpbf16ps, which accumulates in float32. This file alone is compiled with -mavx512f -mavx512bf16
// -mavx512bw -mavx512vl and may only be called on a CPU with AVX512_BF16 (gemm.cpp checks cpuid).
// Threads split C by the float32 driver's tile plan (plan_tiles). Packing is vectorised: k-contiguous
// operands (A untransposed, B transposed) are converted row by row and transposed in registers; k-major
// ones are converted a k-pair row at a time, and an untransposed B panel is packed by its first micro tile
// while it computes. Packing only changes where the rounded words go, never their values or their order.
//
// bf16_pack_a / gemm_bf16_packed_a (gemm_bf16.h) split the same GEMM into packing A once and a serial
// product reusing it: the same words, the same per-element instruction sequence, the same bits.
//
// Everything except the entry points has internal linkage and no standard-library template is
// instantiated here, so the linker can never pick an AVX-512 copy of a shared (COMDAT) function for a
// CPU without it (`nm -C` on the object lists the entry points as its only defined global symbols).
//
// Per C element, with a'[i][k] = bf16(float(alpha * A[i][k])) and b'[k][j] = bf16(B[k][j]) (round to
// nearest even, NaN stays NaN, denormals flush to signed zero), and acc = the beta-initialised C:
//   for each K block of kKC (fixed, from k = 0), for p over the block's k-pairs (an odd K gets a zero
//   pair partner): acc = vdpbf16ps(acc, a'[i][2p..2p+1], b'[2p..2p+1][j])
// one fixed instruction sequence per element, so the result is bitwise independent of M, N, the tile
// position, the thread count and the batch size (on a fixed machine). It differs from the float32 path.
#include <immintrin.h>
#include <omp.h>
// GCC 12's AVX-512 shuffle intrinsics (_mm512_unpacklo_epi32 and others) pass an intentionally undefined
// vector, and -Wmaybe-uninitialized reports at every inlined call: a known false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <cstdint>
#include <cstdlib>

#include "kernels/cpu/gemm_bf16.h"
#include "kernels/cpu/gemm_detail.h"

namespace kern::cpu::gemm_detail {
namespace {

constexpr int kMR = 8;        // register tile: 8 rows x 32 columns (16 zmm accumulators)
constexpr int kNR = 32;       // 2 zmm of float32 accumulators; a B k-pair row is 2 zmm of bf16 pairs
constexpr int64_t kKC = 256;  // K block (even): 128 k-pairs

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
// Start of tile i of `tiles` over `panels` panels of width w (TilePlan::row_start / col_start).
inline int64_t tile_start(int64_t i, int64_t panels, int64_t tiles, int64_t w) {
  return i * panels / tiles * w;
}
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

// 16 words: word j = (bf16 of scale * even[j], of scale * odd[j]) (low, high half), j < n valid (the
// rest zero); odd == nullptr gives zero high halves (an odd K's last pair).
inline __m512i kpair_words(const float* even, const float* odd, int64_t n, float scale) {
  // Interleave: word j of the result = (even[j], odd[j]), with even in bf16 lanes 0-15, odd in 16-31.
  alignas(64) static const uint16_t kIdx[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512 e = load_scaled(even, n, scale);
  const __m512 o = odd ? load_scaled(odd, n, scale) : _mm512_setzero_ps();
  return _mm512_permutexvar_epi16(_mm512_load_si512(kIdx), (__m512i)_mm512_cvtne2ps_pbh(o, e));
}

// Packs k-pairs of a source whose rows are k (row stride ld) and whose columns c in [0, cols) run across
// the panels: panel q (width P = 8 or 32, at dst + q * P * kc2) gets
//   dst[q P kc2 + p P + c - q P] = (bf16 of scale * src[2p * ld + c], of scale * src[(2p + 1) * ld + c])
// for all round_up(cols, P) columns (the ones past cols zero) and p < kc2 = ceil(kc / 2), the high half zero
// where 2p + 1 == kc. Row pair by row pair across all panels, so that the source is read in long runs.
void pack_kpairs(const float* src, int64_t ld, int64_t cols, int64_t kc, float scale, int P, uint32_t* dst) {
  const int64_t kc2 = (kc + 1) / 2, width = round_up(cols, P);
  for (int64_t p = 0; p < kc2; ++p) {
    const float* e = src + 2 * p * ld;
    const float* o = 2 * p + 1 < kc ? e + ld : nullptr;
    for (int64_t c0 = 0; c0 < width; c0 += 16) {
      const __m512i v = kpair_words(e + c0, o ? o + c0 : nullptr, cols - c0, scale);
      if (P == 32) {
        _mm512_storeu_si512(dst + (c0 / 32) * 32 * kc2 + p * 32 + c0 % 32, v);
      } else {  // P == 8: two panels of 8 words (the second only if it exists)
        _mm256_storeu_si256((__m256i*)(dst + (c0 / 8) * 8 * kc2 + p * 8), _mm512_castsi512_si256(v));
        if (c0 + 8 < width)
          _mm256_storeu_si256((__m256i*)(dst + (c0 / 8 + 1) * 8 * kc2 + p * 8),
                              _mm512_extracti64x4_epi64(v, 1));
      }
    }
  }
}

// One panel from a source whose rows r < rows (row stride ld, rows <= P) are contiguous in k:
//   dst[p * P + r] = (bf16 of scale * src[r * ld + 2p], of scale * src[r * ld + 2p + 1])
// the high half zero where 2p + 1 == kc, rows r in [rows, P) zero. Blocks of 8 rows x 16 k-pairs, converted
// row by row and transposed in registers (8 x 16 words -> 16 x 8).
void pack_rows(const float* src, int64_t ld, int rows, int64_t kc, float scale, int P, uint32_t* dst) {
  const int64_t kc2 = (kc + 1) / 2;
  for (int r0 = 0; r0 < P; r0 += 8) {
    const int nr = rows - r0 < 0 ? 0 : rows - r0 > 8 ? 8 : rows - r0;
    for (int64_t k0 = 0; k0 < kc; k0 += 32) {
      __m512i v[8];
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
        if (i < nr) {
          const float* s = src + (r0 + i) * ld + k0;
          v[i] = (__m512i)_mm512_cvtne2ps_pbh(load_scaled(s + 16, kc - k0 - 16, scale),
                                              load_scaled(s, kc - k0, scale));
        } else {
          v[i] = _mm512_setzero_si512();
        }
      }
      // Lane L of t: rows (i, i + 1) of pairs 4L + {0, 1} (t[2h]) or 4L + {2, 3} (t[2h + 1]).
      __m512i t[8], u[8];
#pragma GCC unroll 4
      for (int h = 0; h < 4; ++h) {
        t[2 * h] = _mm512_unpacklo_epi32(v[2 * h], v[2 * h + 1]);
        t[2 * h + 1] = _mm512_unpackhi_epi32(v[2 * h], v[2 * h + 1]);
      }
      // Lane L of u[j] (u[4 + j]): rows 0-3 (4-7) of pair 4L + j.
#pragma GCC unroll 2
      for (int g = 0; g < 2; ++g) {
        u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g + 0], t[4 * g + 2]);
        u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g + 0], t[4 * g + 2]);
        u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
        u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
      }
      const int64_t p0 = k0 / 2, np = kc2 - p0 < 16 ? kc2 - p0 : 16;
      uint32_t* d = dst + p0 * P + r0;
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const __m512i lo = _mm512_shuffle_i32x4(u[j], u[4 + j], _MM_SHUFFLE(1, 0, 1, 0));  // a0 a1 b0 b1
        const __m512i hi = _mm512_shuffle_i32x4(u[j], u[4 + j], _MM_SHUFFLE(3, 2, 3, 2));  // a2 a3 b2 b3
        const __m512i x = _mm512_shuffle_i32x4(lo, lo, _MM_SHUFFLE(3, 1, 2, 0));           // pairs j, 4 + j
        const __m512i y = _mm512_shuffle_i32x4(hi, hi, _MM_SHUFFLE(3, 1, 2, 0));  // pairs 8 + j, 12 + j
        const __m256i out[4] = {_mm512_castsi512_si256(x), _mm512_extracti64x4_epi64(x, 1),
                                _mm512_castsi512_si256(y), _mm512_extracti64x4_epi64(y, 1)};
#pragma GCC unroll 4
        for (int q = 0; q < 4; ++q)
          if (4 * q + j < np) _mm256_storeu_si256((__m256i*)(d + (4 * q + j) * P), out[q]);
      }
    }
  }
}

// An untransposed B panel for the microkernel to pack as it goes (PackSrc::B == nullptr: none): columns
// [0, n) of rows [0, kc) of B (row stride ldb).
struct PackSrc {
  const float* B;
  int64_t ldb, kc;
  int n;
};

// C tile (kMR x 16 NV, row stride ldc, all valid) from kc2 k-pairs of the packed panels (B rows of kNR
// words, of which the first 16 NV are used). NV = 1 serves ragged right edges of at most 16 columns: each
// lane sees the same vdpbf16ps sequence as with NV = 2, so the bits do not depend on the choice.
// PACK: the B panel is not packed yet: each k-pair row is made from src (the words pack_kpairs writes),
// used at once and stored to Bp for the panel's other tiles, so that reading and converting B overlaps the
// vdpbf16ps work (a separate packing pass stalled on B's loads).
template <int NV, bool PACK>
void micro_full(int64_t kc2, const uint32_t* __restrict Ap, uint32_t* __restrict Bp, float* __restrict C,
                int64_t ldc, Init init, float beta, const PackSrc& src) {
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
    if constexpr (PACK) {
      const float* e = src.B + 2 * p * src.ldb;
      const float* o = 2 * p + 1 < src.kc ? e + src.ldb : nullptr;
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        const __m512i w = kpair_words(e + v * 16, o ? o + v * 16 : nullptr, src.n - v * 16, 1.0f);
        _mm512_storeu_si512(Bp + p * kNR + v * 16, w);
        b[v] = (__m512bh)w;
      }
    } else {
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) b[v] = (__m512bh)_mm512_loadu_si512(Bp + p * kNR + v * 16);
    }
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
template <int NV, bool PACK>
void micro_edge(int64_t kc2, const uint32_t* Ap, uint32_t* Bp, float* C, int64_t ldc, int m, int n, Init init,
                float beta, const PackSrc& src) {
  constexpr int W = 16 * NV;
  if (m == kMR && n == W) return micro_full<NV, PACK>(kc2, Ap, Bp, C, ldc, init, beta, src);
  alignas(64) float tile[kMR * W] = {};
  if (init != Init::Zero)
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) tile[i * W + j] = C[i * ldc + j];
  micro_full<NV, PACK>(kc2, Ap, Bp, tile, W, init, beta, src);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) C[i * ldc + j] = tile[i * W + j];
}

// One tile; src.B != nullptr: the tile also packs its (not yet packed) B panel into Bp.
void micro(int64_t kc2, const uint32_t* Ap, uint32_t* Bp, float* C, int64_t ldc, int m, int n, Init init,
           float beta, const PackSrc& src) {
  if (src.B) {
    if (n <= 16)
      micro_edge<1, true>(kc2, Ap, Bp, C, ldc, m, n, init, beta, src);
    else
      micro_edge<2, true>(kc2, Ap, Bp, C, ldc, m, n, init, beta, src);
  } else {
    if (n <= 16)
      micro_edge<1, false>(kc2, Ap, Bp, C, ldc, m, n, init, beta, src);
    else
      micro_edge<2, false>(kc2, Ap, Bp, C, ldc, m, n, init, beta, src);
  }
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
    if (q.transA)
      pack_kpairs(q.A + k0 * q.lda + i0, q.lda, mc, kc, q.alpha, kMR, Ap);
    else
      for (int64_t ir = 0; ir < mc; ir += kMR)
        pack_rows(q.A + (i0 + ir) * q.lda + k0, q.lda, static_cast<int>(min64(kMR, mc - ir)), kc, q.alpha,
                  kMR, Ap + ir * kc2);
    // A transposed B panel is packed right before the micro tiles that use it; an untransposed one by the
    // panel's first tile, as it computes (the same words). Each panel is used only by its own tiles, so
    // all of them share one panel buffer (kNR x kc2 words, L1-sized; was nc x kc2: end to end within the
    // noise, 1% less process CPU time in two contended pairs, bench/RESULTS.md).
    for (int64_t jr = 0; jr < nc; jr += kNR) {
      const int n = static_cast<int>(min64(kNR, nc - jr));
      uint32_t* bp = Bp;
      PackSrc src{nullptr, 0, 0, 0};
      if (!q.transB)
        src = PackSrc{q.B + k0 * q.ldb + j0 + jr, q.ldb, kc, n};
      else
        pack_rows(q.B + (j0 + jr) * q.ldb + k0, q.ldb, n, kc, 1.0f, kNR, bp);
      for (int64_t ir = 0; ir < mc; ir += kMR) {
        micro(kc2, Ap + ir * kc2, bp, q.C + (i0 + ir) * q.ldc + j0 + jr, q.ldc,
              static_cast<int>(min64(kMR, mc - ir)), n, init, q.beta, src);
        src.B = nullptr;
      }
    }
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
  // The float32 driver's tile plan (gemm.cpp): panels shared out evenly, the tile count a multiple of the
  // thread count, so that the threads of the static schedule get the same work. (TilePlan's inline members
  // are not called here: see the header on shared functions; the tile bounds are computed locally.)
  const TilePlan pl = plan_tiles(g.M, g.N, kMR, kNR, g.parallel ? g.nthreads : 1);
  const int64_t tiles = pl.mtiles * pl.ntiles;
  const int64_t kc2_max = (min64(kKC, g.K) + 1) / 2;
  const int64_t a_size = pl.mc_max * kc2_max, b_size = kNR * kc2_max;
  bool ok = true;
#pragma omp parallel num_threads(pl.threads) if (pl.threads > 1) reduction(&& : ok)
  {
    uint32_t* Ap = t_scratch[0].get(a_size);
    uint32_t* Bp = t_scratch[1].get(b_size);
    const bool have = Ap && Bp;
    ok = ok && have;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      if (!have) continue;
      const int64_t ti = t / pl.ntiles, tj = t % pl.ntiles;
      const int64_t i0 = tile_start(ti, pl.mpanels, pl.mtiles, kMR),
                    i1 = min64(g.M, tile_start(ti + 1, pl.mpanels, pl.mtiles, kMR));
      const int64_t j0 = tile_start(tj, pl.npanels, pl.ntiles, kNR),
                    j1 = min64(g.N, tile_start(tj + 1, pl.npanels, pl.ntiles, kNR));
      if (i1 > i0 && j1 > j0) macro_tile(g, i0, i1 - i0, j0, j1 - j0, Ap, Bp);
    }
  }
  return ok;
}

int64_t bf16_packed_a_words(int64_t M, int64_t K) { return round_up(M, kMR) * ((K + 1) / 2); }

// Per K block of kKC (from k = 0) at Ap + round_up(M, kMR) * k0 / 2, the panels of kMR rows at ir * kc2:
// the layout macro_tile packs for a tile with i0 = 0 and mc = M (every K block but the last is even).
void bf16_pack_a(bool transA, int64_t M, int64_t K, float alpha, const float* A, int64_t lda, uint32_t* Ap) {
  const int64_t Mp = round_up(M, kMR);
  for (int64_t k0 = 0; k0 < K; k0 += kKC) {
    const int64_t kc = min64(kKC, K - k0), kc2 = (kc + 1) / 2;
    uint32_t* dst = Ap + Mp * (k0 / 2);
    if (transA)
      pack_kpairs(A + k0 * lda, lda, M, kc, alpha, kMR, dst);
    else
      for (int64_t ir = 0; ir < M; ir += kMR)
        pack_rows(A + ir * lda + k0, lda, static_cast<int>(min64(kMR, M - ir)), kc, alpha, kMR,
                  dst + ir * kc2);
  }
}

// macro_tile's loops over the whole of C with A already packed; B one panel at a time through a single
// panel buffer (each panel is used only by the tiles of its columns, right after it is packed).
bool gemm_bf16_packed_a(int64_t M, int64_t N, int64_t K, const uint32_t* Ap, bool transB, const float* B,
                        int64_t ldb, float beta, float* C, int64_t ldc) {
  const int64_t Mp = round_up(M, kMR);
  uint32_t* Bp = t_scratch[1].get(kNR * ((min64(kKC, K) + 1) / 2));
  if (!Bp) return false;
  for (int64_t k0 = 0; k0 < K; k0 += kKC) {
    const int64_t kc = min64(kKC, K - k0), kc2 = (kc + 1) / 2;
    const Init init = k0 > 0         ? Init::Load
                      : beta == 0.0f ? Init::Zero
                      : beta == 1.0f ? Init::Load
                                     : Init::Scale;
    const uint32_t* a = Ap + Mp * (k0 / 2);
    for (int64_t jr = 0; jr < N; jr += kNR) {
      const int n = static_cast<int>(min64(kNR, N - jr));
      PackSrc src{nullptr, 0, 0, 0};
      if (!transB)
        src = PackSrc{B + k0 * ldb + jr, ldb, kc, n};
      else
        pack_rows(B + jr * ldb + k0, ldb, n, kc, 1.0f, kNR, Bp);
      for (int64_t ir = 0; ir < M; ir += kMR) {
        micro(kc2, a + ir * kc2, Bp, C + ir * ldc + jr, ldc, static_cast<int>(min64(kMR, M - ir)), n, init,
              beta, src);
        src.B = nullptr;
      }
    }
  }
  return true;
}

}  // namespace kern::cpu::gemm_detail
