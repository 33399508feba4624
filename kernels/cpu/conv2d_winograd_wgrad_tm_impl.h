// Internal: the tile-major transforms of the Winograd weight gradient (conv2d_winograd_wgrad.h,
// winograd_input_tm_* / winograd_dy_tm_*), included only by conv2d_winograd_wgrad_avx2.cpp and _avx512.cpp
// (internal linkage; no std:: template is instantiated here, so nothing compiled for one ISA can be picked
// by the linker for another caller).
//
// Layout: the lanes of a vector are L consecutive channels of one tile. The image rows a tile row needs are
// first transposed channel-last into a small ring of row buffers (row h in slot h mod R, kept while the
// next tile row of the same image reuses it: the input transform's rows 2 ty + 1 and 2 ty + 2), with the
// zero padding written as zero columns and zero rows; then each tile's window is whole-vector loads and
// each of its 16 transform points one whole-vector store straight into the tile-major output the GEMM
// reads (no staging block, no transpose of the 16x larger transformed data). The arithmetic is the
// portable code's (winograd_input_portable, winograd_dy_portable), operation for operation, on GCC vector
// types (-ffp-contract=off), each lane one channel: the same bits.
#pragma once
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/cpu/transpose8x8_avx2.h"
#include "kernels/kernel_shapes.h"

namespace kern::cpu::detail {
namespace {

template <int L>
struct TmVec;
template <>
struct TmVec<8> {
  typedef float F __attribute__((vector_size(32)));
  // The caller's ldo >= round8(c1 - c0): the lanes past nc land in its padding columns (a masked store,
  // vmaskmovps, measured far slower on AMD).
  static void store(float* p, F v, int) { _mm256_storeu_ps(p, (__m256)v); }
};
#if defined(__AVX512F__)
template <>
struct TmVec<16> {
  typedef float F __attribute__((vector_size(64)));
  static void store(float* p, F v, int nc) {
    if (nc == 16)
      _mm512_storeu_ps(p, (__m512)v);
    else
      _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << nc) - 1), (__m512)v);
  }
};
#endif

template <class V>
inline V tm_load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Buffer columns of one row: x: image columns -1 .. 2 TX (index w + 1); dy: 0 .. 2 TX - 1 (index w).
inline int64_t tm_cols(const Conv2dShape& s, bool dy) {
  return dy ? (s.W + 1) / 2 * 2 : (s.W + 1) / 2 * 2 + 2;
}

// Row h of channels [cb, cb + nc) (nc <= L) of image plane block src (channel c at src + c * H * W),
// channel-last into row[(w + off) * L + (c - cb)]; lanes nc .. L - 1 and the columns outside the image 0.
template <int L>
void tm_fill_row(const float* src, int64_t HW, int64_t W, int64_t h, int nc, int64_t off, int64_t cols,
                 float* row) {
  for (int g = 0; g < L / 8; ++g) {
    const int cg = nc - 8 * g;  // channels in this group of 8
    for (int64_t w0 = 0; w0 < W; w0 += 8) {
      const int64_t m = W - w0 < 8 ? W - w0 : 8;
      __m256 r[8];
      if (m == 8) {
        for (int i = 0; i < 8; ++i)
          r[i] = i < cg ? _mm256_loadu_ps(src + (8 * g + i) * HW + h * W + w0) : _mm256_setzero_ps();
      } else {
        const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i k = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(m)), idx);
        for (int i = 0; i < 8; ++i)
          r[i] = i < cg ? _mm256_maskload_ps(src + (8 * g + i) * HW + h * W + w0, k) : _mm256_setzero_ps();
      }
      transpose8x8(r);  // column w0 + j in r[j]
      for (int64_t j = 0; j < m; ++j) _mm256_storeu_ps(row + (w0 + j + off) * L + 8 * g, r[j]);
    }
  }
  for (int64_t w = 0; w < cols; ++w)
    if (w < off || w >= W + off) std::memset(row + w * L, 0, L * sizeof(float));
}

// out[xi * xs + (t - t0) * ldo + (c - c0)] = point xi of the transform of channel c, global tile t, for
// c in [c0, c1), t in [t0, t0 + nt): the input transform B^T d_t B of x (kDy false, channels s.C) or
// A dy_t A^T of dy (kDy true, channels s.K). buf: tm_buf_floats(s) floats of scratch.
template <int L, bool kDy>
void tm_transform(const Conv2dShape& s, const float* src, int64_t c0, int64_t c1, int64_t t0, int64_t nt,
                  float* out, int64_t xs, int64_t ldo, float* buf) {
  using VT = typename TmVec<L>::F;
  constexpr int R = kDy ? 2 : 4;  // image rows per tile row (a power of two: the ring's slot is h % R)
  const int64_t H = s.H, W = s.W, HW = H * W, CH = kDy ? s.K : s.C, TX = (W + 1) / 2, TT = (H + 1) / 2 * TX,
                cols = tm_cols(s, kDy), off = kDy ? 0 : 1, rl = cols * L;
  float* zero = buf + R * rl;
  std::memset(zero, 0, rl * sizeof(float));
  for (int64_t cb = c0; cb < c1; cb += L) {
    const int nc = static_cast<int>(c1 - cb < L ? c1 - cb : L);
    int64_t slot_h[R], slot_n = -1;
    for (int64_t t = t0, end = t0 + nt; t < end;) {
      const int64_t n = t / TT, r = t % TT, ty = r / TX, tx0 = r % TX,
                    cnt = TX - tx0 < end - t ? TX - tx0 : end - t;
      if (n != slot_n) {
        for (int i = 0; i < R; ++i) slot_h[i] = -1;
        slot_n = n;
      }
      const float* rows[R];
      for (int i = 0; i < R; ++i) {
        const int64_t h = kDy ? 2 * ty + i : 2 * ty - 1 + i;
        if (h < 0 || h >= H) {
          rows[i] = zero;
          continue;
        }
        float* row = buf + (h % R) * rl;
        if (slot_h[h % R] != h) {
          tm_fill_row<L>(src + (n * CH + cb) * HW, HW, W, h, nc, off, cols, row);
          slot_h[h % R] = h;
        }
        rows[i] = row;
      }
      // Prefetch the image rows the tile row two ahead will fill (its new rows; in the next image past this
      // one's end): the row ring reads 16 planes a row at a time, too short a stream per plane for the
      // hardware prefetchers. A prefetch never faults, so past the tensor's end it is only wasted.
      for (int i = kDy ? 0 : 2; i < R; ++i) {
        const int64_t g = n * H + (kDy ? 2 * ty + i : 2 * ty - 1 + i) + 4, gn = g / H, gh = g % H;
        const int64_t bytes = W * int64_t(sizeof(float));
        uintptr_t p = reinterpret_cast<uintptr_t>(src) + ((gn * CH + cb) * HW + gh * W) * sizeof(float);
        for (int c = 0; c < nc; ++c, p += HW * sizeof(float)) {
          for (int64_t b = 0; b < bytes; b += 64)
            _mm_prefetch(reinterpret_cast<const char*>(p + b), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(p + bytes - 1), _MM_HINT_T0);
        }
      }
      float* o0 = out + (t - t0) * ldo + (cb - c0);
      for (int64_t j = 0; j < cnt; ++j) {
        const int64_t w = 2 * (tx0 + j);  // the window's first buffer column
        float* o = o0 + j * ldo;
        if constexpr (kDy) {
          VT rw[2][4];
          for (int i = 0; i < 2; ++i) {  // along the row: e A^T
            const VT e0 = tm_load<VT>(rows[i] + w * L), e1 = tm_load<VT>(rows[i] + (w + 1) * L);
            rw[i][0] = e0;
            rw[i][1] = e0 + e1;
            rw[i][2] = e0 - e1;
            rw[i][3] = -e1;
          }
          for (int c = 0; c < 4; ++c) {  // along the column: A
            const VT a0 = rw[0][c], a1 = rw[1][c];
            TmVec<L>::store(o + (0 * 4 + c) * xs, a0, nc);
            TmVec<L>::store(o + (1 * 4 + c) * xs, a0 + a1, nc);
            TmVec<L>::store(o + (2 * 4 + c) * xs, a0 - a1, nc);
            TmVec<L>::store(o + (3 * 4 + c) * xs, -a1, nc);
          }
        } else {
          VT t1[4][4];
          for (int i = 0; i < 4; ++i) {  // along the rows: d B
            VT d[4];
            for (int q = 0; q < 4; ++q) d[q] = tm_load<VT>(rows[i] + (w + q) * L);
            t1[i][0] = d[0] - d[2];
            t1[i][1] = d[1] + d[2];
            t1[i][2] = d[2] - d[1];
            t1[i][3] = d[1] - d[3];
          }
          for (int q = 0; q < 4; ++q) {  // along the columns: B^T
            TmVec<L>::store(o + (0 * 4 + q) * xs, t1[0][q] - t1[2][q], nc);
            TmVec<L>::store(o + (1 * 4 + q) * xs, t1[1][q] + t1[2][q], nc);
            TmVec<L>::store(o + (2 * 4 + q) * xs, t1[2][q] - t1[1][q], nc);
            TmVec<L>::store(o + (3 * 4 + q) * xs, t1[1][q] - t1[3][q], nc);
          }
        }
      }
      t += cnt;
    }
  }
}

}  // namespace
}  // namespace kern::cpu::detail
