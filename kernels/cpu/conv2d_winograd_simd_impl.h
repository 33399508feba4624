// Internal: the one template behind conv2d_winograd_simd.h's AVX2 and AVX-512 transforms, included only
// by conv2d_winograd_avx2.cpp and conv2d_winograd_avx512.cpp (everything here has internal linkage, so no
// function compiled for one ISA can be picked by the linker for another caller).
//
// Layout: the lanes of a vector are L consecutive tiles of one tile row of one image (tx0 .. tx0 + L - 1),
// i.e. consecutive V / M columns. Along a row, tile tx reads image columns m tx - 1 .. m tx + a - 2, so
// element j of the L tiles is the stride-m sequence row[w0 + m l + j]: for m = 2 two contiguous masked
// loads (the zero padding and the row's end are masked-off lanes) and one even/odd shuffle, for m = 4
// four masked loads, two rounds of even/odd shuffles and a lane shift; never a gather or a staging copy.
// The output tiles are interleaved back the same way (zips, masked stores at the row's end). The arithmetic
// is the scalar file's, operation for operation, on GCC vector types
// (-ffp-contract=off: no FMA), so the bits are those of the portable path. (conv2d_winograd_avx512.cpp
// packs several whole tile rows per vector for F(2x2) rows of <= 7 tiles and uses these pieces for the rest.)
#pragma once
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as the unused merge source, which
// -Wmaybe-uninitialized reports at every inlined call: a known false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/cpu/conv2d_winograd.h"
#include "kernels/cpu/conv2d_winograd_f43.h"
#include "kernels/kernel_shapes.h"

namespace kern::cpu::detail {
namespace {

constexpr int64_t kSeg = 64;  // tiles of one row processed per piece

// Local min / clamp instead of std::min / std::clamp: a std:: template instantiated here would be a weak
// symbol compiled for this file's ISA that the linker may pick for every other caller (at -O0).
inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
// v clamped to the lanes [0, L].
inline int64_t clampL(int64_t v, int L) { return v < 0 ? 0 : v > L ? L : v; }

template <int L>
struct Vec;
template <>
struct Vec<8> {
  typedef float F __attribute__((vector_size(32)));
  static F even(F a, F b) { return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14); }
  static F odd(F a, F b) { return __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15); }
  static F zip_lo(F a, F b) { return __builtin_shufflevector(a, b, 0, 8, 1, 9, 2, 10, 3, 11); }
  static F zip_hi(F a, F b) { return __builtin_shufflevector(a, b, 4, 12, 5, 13, 6, 14, 7, 15); }
  // Lanes 1 .. 7 of a, then lane 0 of b.
  static F shift1(F a, F b) { return __builtin_shufflevector(a, b, 1, 2, 3, 4, 5, 6, 7, 8); }
  static __m256i mask(int64_t lo, int64_t hi) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_and_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(hi)), idx),
                            _mm256_cmpgt_epi32(idx, _mm256_set1_epi32(static_cast<int>(lo) - 1)));
  }
  typedef __m256i Mask;
  // The lanes l with lo <= l < hi.
  static Mask range(int64_t lo, int64_t hi) { return mask(clampL(lo, 8), clampL(hi, 8)); }
  // Lane l = p[l] in the lanes of k, else 0 (the other lanes' addresses are never read).
  static F load_masked(const float* p, Mask k) { return (F)_mm256_maskload_ps(p, k); }
  // p[l] = lane l for l < n.
  static void store_n(float* p, F v, int64_t n) { _mm256_maskstore_ps(p, mask(0, clampL(n, 8)), (__m256)v); }
};
#if defined(__AVX512F__)  // 64-byte vectors only where they are registers
template <>
struct Vec<16> {
  typedef float F __attribute__((vector_size(64)));
  static F even(F a, F b) {
    return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  }
  static F odd(F a, F b) {
    return __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  }
  static F zip_lo(F a, F b) {
    return __builtin_shufflevector(a, b, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  }
  static F zip_hi(F a, F b) {
    return __builtin_shufflevector(a, b, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  }
  static F shift1(F a, F b) {
    return __builtin_shufflevector(a, b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
  }
  static __mmask16 mask(int64_t lo, int64_t hi) {
    return static_cast<__mmask16>(((1u << clampL(hi, 16)) - 1) & ~((1u << clampL(lo, 16)) - 1));
  }
  typedef __mmask16 Mask;
  static Mask range(int64_t lo, int64_t hi) { return mask(lo, hi); }
  static F load_masked(const float* p, Mask k) { return (F)_mm512_maskz_loadu_ps(k, p); }
  static void store_n(float* p, F v, int64_t n) { _mm512_mask_storeu_ps(p, mask(0, n), (__m512)v); }
};
#endif

template <class V>
V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class V>
void store(float* p, V v) {
  std::memcpy(p, &v, sizeof v);
}

// The 1-D transforms of conv2d_winograd.cpp's F23 / F43, written once for any T (float or a vector):
// the same expressions, the same order.
struct F23v {
  static constexpr int m = 2, a = 4;
  template <class T>
  static void input(const T* d, T* o) {
    o[0] = d[0] - d[2];
    o[1] = d[1] + d[2];
    o[2] = d[2] - d[1];
    o[3] = d[1] - d[3];
  }
  template <class T>
  static void output(const T* v, T* y) {
    y[0] = (v[0] + v[1]) + v[2];
    y[1] = (v[1] - v[2]) - v[3];
  }
};

// F(4, 3): the shared expressions of conv2d_winograd_f43.h (the portable path calls the same ones).
struct F43v {
  static constexpr int m = 4, a = 6;
  template <class T>
  static void input(const T* d, T* o) {
    F43Ops::input(d, o);
  }
  template <class T>
  static void output(const T* v, T* y) {
    F43Ops::output(v, y);
  }
};

// The load masks of gather_row for the vector whose element j = 0 is at image column w0. m = 2: for j = 0
// and 2, the lanes of columns w0 + j .. w0 + j + L - 1 (lo) and the next L (hi) inside [0, W). m = 4: the
// lanes of columns w0 + i L .. w0 + i L + L - 1 inside [0, W), i < 4, and whether columns w0 + 4 L and
// w0 + 4 L + 1 (elements 4 and 5 of the last lane) are.
template <int L>
struct RowMasks {
  typename Vec<L>::Mask lo[2], hi[2], q[4];
  bool tail[2];
  RowMasks(int64_t w0, int64_t W, int m) {
    if (m == 2) {
      for (int h = 0; h < 2; ++h) {
        const int64_t w = w0 + 2 * h;
        lo[h] = Vec<L>::range(-w, W - w);
        hi[h] = Vec<L>::range(-(w + L), W - (w + L));
      }
    } else {
      for (int i = 0; i < 4; ++i) q[i] = Vec<L>::range(-(w0 + i * L), W - (w0 + i * L));
      for (int i = 0; i < 2; ++i) tail[i] = w0 + 4 * L + i >= 0 && w0 + 4 * L + i < W;
    }
  }
};

// d[j] (lane l) = row[w0 + m l + j] for j < a, 0 where that column is outside [0, W) or row is nullptr
// (the zero padding).
template <class F, int L>
void gather_row(const float* row, int64_t w0, int64_t W, const RowMasks<L>& k, typename Vec<L>::F* d) {
  using VT = typename Vec<L>::F;
  if (!row) {
    for (int j = 0; j < F::a; ++j) d[j] = VT{};
    return;
  }
  if constexpr (F::m == 2) {
    for (int j = 0; j < F::a; j += 2) {
      const VT lo = Vec<L>::load_masked(row + w0 + j, k.lo[j / 2]);
      const VT hi = Vec<L>::load_masked(row + w0 + j + L, k.hi[j / 2]);
      d[j] = Vec<L>::even(lo, hi);
      d[j + 1] = Vec<L>::odd(lo, hi);
    }
  } else {
    // m = 4: four masked loads of 4 L consecutive columns, a 4-way deinterleave (two rounds of even / odd)
    // for elements 0 .. 3; elements 4 and 5 are elements 0 and 1 of the next lane (one lane shift, the
    // last lane's from the two columns after the loads).
    static_assert(F::m == 4 && F::a == 6);
    VT x[4];
    for (int i = 0; i < 4; ++i) x[i] = Vec<L>::load_masked(row + w0 + i * L, k.q[i]);
    const VT e01 = Vec<L>::even(x[0], x[1]), o01 = Vec<L>::odd(x[0], x[1]);
    const VT e23 = Vec<L>::even(x[2], x[3]), o23 = Vec<L>::odd(x[2], x[3]);
    d[0] = Vec<L>::even(e01, e23);
    d[1] = Vec<L>::even(o01, o23);
    d[2] = Vec<L>::odd(e01, e23);
    d[3] = Vec<L>::odd(o01, o23);
    VT t4{}, t5{};
    t4[0] = k.tail[0] ? row[w0 + 4 * L] : 0.0f;
    t5[0] = k.tail[1] ? row[w0 + 4 * L + 1] : 0.0f;
    d[4] = Vec<L>::shift1(d[0], t4);
    d[5] = Vec<L>::shift1(d[1], t5);
  }
}

// Calls fn(n, ty, tx0, cnt, col) for each piece of at most kSeg tiles of one tile row among the global
// tiles t0 .. t0 + nt - 1 (col: the first tile's column relative to t0), in increasing col.
template <class Fn>
void for_row_pieces(const Conv2dShape& s, int m, int64_t t0, int64_t nt, Fn fn) {
  const int64_t TY = (s.H + m - 1) / m, TX = (s.W + m - 1) / m;
  for (int64_t t = t0, end = t0 + nt; t < end;) {
    const int64_t n = t / (TY * TX), r = t % (TY * TX), ty = r / TX, tx = r % TX;
    const int64_t cnt = imin(imin(TX - tx, end - t), kSeg);
    fn(n, ty, tx, cnt, t - t0);
    t += cnt;
  }
}

// The input transform of tiles tx0 .. tx0 + cnt - 1 of tile row ty of image n into V columns col ..
// (full vectors: up to L - 1 columns past the piece are written too, and overwritten by the next piece;
// their lanes read only columns inside the image row, the rest is masked).
template <class F, int L>
void input_piece(const Conv2dShape& s, const float* x, int64_t n, int64_t ty, int64_t tx0, int64_t cnt,
                 float* V, int64_t ld, int64_t col) {
  using VT = typename Vec<L>::F;
  constexpr int a = F::a, m = F::m;
  const int64_t H = s.H, W = s.W, C = s.C, nv = (cnt + L - 1) / L;
  for (int64_t v = 0; v < nv; ++v) {
    const int64_t w0 = m * (tx0 + v * L) - 1;  // the image column of lane 0's element 0 (pad 1)
    const RowMasks<L> masks(w0, W, m);         // the same for every row and channel
    for (int64_t c = 0; c < C; ++c) {
      const float* plane = x + (n * C + c) * H * W;
      VT T1[a][a];
      for (int r = 0; r < a; ++r) {
        const int64_t h = ty * m - 1 + r;
        VT d[a];
        gather_row<F, L>(h >= 0 && h < H ? plane + h * W : nullptr, w0, W, masks, d);  // nullptr: padding
        F::input(d, T1[r]);                                                            // along the row: d B
      }
      for (int j = 0; j < a; ++j) {
        VT cj[a], o[a];
        for (int i = 0; i < a; ++i) cj[i] = T1[i][j];
        F::input(cj, o);  // along the column: B^T
        for (int i = 0; i < a; ++i) store(V + ((i * a + j) * C + c) * ld + col + v * L, o[i]);
      }
    }
  }
}

// v + the residual row's first n columns (lane l: r[l]; lanes >= n are not read and add 0).
template <int L>
typename Vec<L>::F add_row(typename Vec<L>::F v, const float* r, int64_t n) {
  using VT = typename Vec<L>::F;
  return v + (n >= L ? load<VT>(r) : Vec<L>::load_masked(r, Vec<L>::range(0, n)));
}

// One F(2x2) output row of a vector's tiles: lane l's two outputs y0[l], y1[l] interleaved into columns
// 2 l, 2 l + 1 of row (ncols of them), plus the residual row r's pixels where r is given, then stored (masked
// at the row's end). Shared by output_piece and output_rows_f23: the same operations on every path.
template <int L>
inline void store_row_f23(typename Vec<L>::F y0, typename Vec<L>::F y1, const float* r, int64_t ncols,
                          float* row) {
  typename Vec<L>::F lo = Vec<L>::zip_lo(y0, y1), hi = Vec<L>::zip_hi(y0, y1);
  if (r) {
    lo = add_row<L>(lo, r, ncols);
    if (ncols > L) hi = add_row<L>(hi, r + L, ncols - L);
  }
  if (ncols >= L) {
    store(row, lo);
    Vec<L>::store_n(row + L, hi, ncols - L);
  } else {
    Vec<L>::store_n(row, lo, ncols);
  }
}

// The output pixels of tiles tx0 .. tx0 + cnt - 1 of tile row ty of image n from M columns col ..:
// (A^T M A + e) + r, the portable transform_output_block's operations (e = winograd_epilogue_bias, added
// in the tile layout; the residual r added in the image layout, after the zips, before the stores).
template <class F, int L>
void output_piece(const Conv2dShape& s, const float* M, int64_t ld, int64_t col, int64_t k0, int64_t k1,
                  int64_t n, int64_t ty, int64_t tx0, int64_t cnt, const float* b, const WinogradAdd& add,
                  float* y) {
  using VT = typename Vec<L>::F;
  constexpr int a = F::a, m = F::m;
  const int64_t H = s.H, W = s.W, K = s.K, nv = (cnt + L - 1) / L;
  const int mi = static_cast<int>(imin(m, H - ty * m));
  for (int64_t k = k0; k < k1; ++k) {
    const int64_t nk = n * K + k;
    float* plane = y + nk * H * W;
    const float* rplane = add.r ? add.r + nk * H * W : nullptr;
    const bool has_e = b || add.t;
    const float bias = winograd_epilogue_bias(b, add.t, k, nk);
    for (int64_t v = 0; v < nv; ++v) {
      VT Mt[a][a], T2[m][a], Y[m][m];
      for (int xi = 0; xi < a * a; ++xi) Mt[xi / a][xi % a] = load<VT>(M + (xi * K + k) * ld + col + v * L);
      for (int j = 0; j < a; ++j) {
        VT cj[a], o[m];
        for (int i = 0; i < a; ++i) cj[i] = Mt[i][j];
        F::output(cj, o);  // A^T M
        for (int i = 0; i < m; ++i) T2[i][j] = o[i];
      }
      for (int i = 0; i < m; ++i) F::output(T2[i], Y[i]);  // (.) A
      if (has_e)
        for (int i = 0; i < m; ++i)
          for (int j = 0; j < m; ++j) Y[i][j] = Y[i][j] + bias;
      // This vector's tiles: tx0 + v L + l, l < lanes; their columns q0 .. q0 + ncols - 1.
      const int64_t lanes = imin(L, cnt - v * L), q0 = m * (tx0 + v * L);
      const int64_t ncols = imin(m * lanes, W - q0);
      for (int i = 0; i < mi; ++i) {
        float* row = plane + (ty * m + i) * W + q0;
        const float* rrow = rplane ? rplane + (ty * m + i) * W + q0 : nullptr;
        if constexpr (m == 2) {
          store_row_f23<L>(Y[i][0], Y[i][1], rrow, ncols, row);
        } else {
          // m = 4: two rounds of zips interleave the 4 outputs of each lane into 4 L consecutive columns.
          const VT p0 = Vec<L>::zip_lo(Y[i][0], Y[i][2]), p1 = Vec<L>::zip_hi(Y[i][0], Y[i][2]);
          const VT q0 = Vec<L>::zip_lo(Y[i][1], Y[i][3]), q1 = Vec<L>::zip_hi(Y[i][1], Y[i][3]);
          VT o[4] = {Vec<L>::zip_lo(p0, q0), Vec<L>::zip_hi(p0, q0), Vec<L>::zip_lo(p1, q1),
                     Vec<L>::zip_hi(p1, q1)};
          for (int h = 0; h < 4 && h * L < ncols; ++h) {
            if (rrow) o[h] = add_row<L>(o[h], rrow + h * L, ncols - h * L);
            if (ncols >= (h + 1) * L)
              store(row + h * L, o[h]);
            else
              Vec<L>::store_n(row + h * L, o[h], ncols - h * L);
          }
        }
      }
    }
  }
}

// One tile-row piece of a chunk (for_row_pieces' arguments).
struct Piece {
  int64_t n, ty, tx0, cnt, col;
};

// A per-thread array of at least n pieces, kept between calls (it only grows) and freed when the thread
// ends (OpenMP pools end threads when they shrink). Raw ::operator new, not std::vector: no template
// instantiated for this file's ISA (see imin).
struct PieceBuffer {
  Piece* p = nullptr;
  int64_t cap = 0;
  ~PieceBuffer() { ::operator delete(p); }
};
inline Piece* piece_buffer(int64_t n) {
  static thread_local PieceBuffer b;
  if (b.cap < n) {
    ::operator delete(b.p);
    b.p = static_cast<Piece*>(::operator new(static_cast<size_t>(n) * sizeof(Piece)));
    b.cap = n;
  }
  return b.p;
}

// L = 16 only where it needs fewer vectors per tile row than L = 8 (the lanes of a vector never span two
// rows, so a 7-tile row fills 7 of 8 lanes but only 7 of 16).
inline bool use16(const Conv2dShape& s, int m) {
  const int64_t TX = (s.W + m - 1) / m;
  return (TX + 15) / 16 < (TX + 7) / 8;
}

template <class F, int L>
void input_tiles(const Conv2dShape& s, const float* x, int64_t t0, int64_t nt, float* V, int64_t ld) {
  for_row_pieces(s, F::m, t0, nt, [&](int64_t n, int64_t ty, int64_t tx0, int64_t cnt, int64_t col) {
    input_piece<F, L>(s, x, n, ty, tx0, cnt, V, ld, col);
  });
}

// output_tiles' channel-outer loop for F(2x2): the operations of output_piece (same bits), inlined into one
// loop over the vectors of the pieces per output channel, the 16 M rows of channel k addressed from 4 row
// pointers and the row stride. output_piece, called once per piece and channel, kept its 16 row offsets
// in vector registers (moved back before each load) and reloaded spills: perf put a third of its time
// there. 1.3-1.5x less time at 28x28 (bench/RESULTS.md 2026-12-01 15:40).
template <int L>
void output_rows_f23(const Conv2dShape& s, const float* M, int64_t ld, const Piece* pieces, int64_t np,
                     const float* b, const WinogradAdd& add, float* y) {
  using VT = typename Vec<L>::F;
  const int64_t H = s.H, W = s.W, K = s.K, HW = H * W, S = K * ld, S3 = 3 * S;
  const bool has_e = b || add.t;
  for (int64_t k = 0; k < K; ++k) {
    const float* mk = M + k * ld;
    for (int64_t ip = 0, v = 0; ip < np;) {  // vector v of piece ip: its tiles tx0 + v L ..
      const Piece& p = pieces[ip];
      const int64_t tx0 = p.tx0 + v * L, cnt = imin(L, p.cnt - v * L);
      if ((v + 1) * L < p.cnt)
        ++v;
      else
        ++ip, v = 0;
      VT Mt[4][4], T2[2][4], Y[2][2];
      for (int i = 0; i < 4; ++i) {
        const float* r = mk + 4 * i * S + p.col + (tx0 - p.tx0);
        Mt[i][0] = load<VT>(r), Mt[i][1] = load<VT>(r + S), Mt[i][2] = load<VT>(r + 2 * S);
        Mt[i][3] = load<VT>(r + S3);
      }
      for (int j = 0; j < 4; ++j) {
        VT cj[4], o[2];
        for (int i = 0; i < 4; ++i) cj[i] = Mt[i][j];
        F23v::output(cj, o);  // A^T M
        T2[0][j] = o[0], T2[1][j] = o[1];
      }
      for (int i = 0; i < 2; ++i) F23v::output(T2[i], Y[i]);  // (.) A
      const int64_t nk = p.n * K + k;
      if (has_e) {
        const float bias = winograd_epilogue_bias(b, add.t, k, nk);
        for (int i = 0; i < 2; ++i)
          for (int j = 0; j < 2; ++j) Y[i][j] = Y[i][j] + bias;
      }
      const int64_t q0 = 2 * tx0, ncols = imin(2 * cnt, W - q0);
      const int mi = static_cast<int>(imin(2, H - p.ty * 2));
      for (int i = 0; i < mi; ++i) {
        const int64_t off = nk * HW + (p.ty * 2 + i) * W + q0;
        store_row_f23<L>(Y[i][0], Y[i][1], add.r ? add.r + off : nullptr, ncols, y + off);
      }
    }
  }
}

// Rows of at least this many tiles run the output transform channel by channel (outer), piece by piece
// (inner): the M rows [xi][k] are read front to back, each cache line once (piece-outer order reads 16 K
// partial lines per piece, more than L1 holds, so each line comes from L2 two or three times). Measured
// (bench/winograd_xform_bench, AVX-512 path, bench/RESULTS.md 2026-12-01): 14-23% less time at 28x28
// (TX = 14) in and out of cache, but 30-50% more at 7x7 (TX = 4) and in cache at 14x14 (TX = 7), which keep
// piece-outer order. The order never changes the bits (each tile's operations are fixed).
constexpr int64_t kKOuterMinTx = 12;
template <class F, int L>
void output_tiles(const Conv2dShape& s, const float* M, int64_t ld, int64_t t0, int64_t nt, const float* b,
                  const WinogradAdd& add, float* y) {
  const int64_t TX = (s.W + F::m - 1) / F::m;
  if (TX < kKOuterMinTx) {
    for_row_pieces(s, F::m, t0, nt, [&](int64_t n, int64_t ty, int64_t tx0, int64_t cnt, int64_t col) {
      output_piece<F, L>(s, M, ld, col, 0, s.K, n, ty, tx0, cnt, b, add, y);
    });
    return;
  }
  // The pieces, located once (64-bit divisions) rather than once per output channel.
  Piece* pieces = piece_buffer(nt);
  int64_t np = 0;
  for_row_pieces(s, F::m, t0, nt, [&](int64_t n, int64_t ty, int64_t tx0, int64_t cnt, int64_t col) {
    pieces[np++] = Piece{n, ty, tx0, cnt, col};
  });
  if constexpr (F::m == 2) return output_rows_f23<L>(s, M, ld, pieces, np, b, add, y);
  for (int64_t k = 0; k < s.K; ++k)
    for (int64_t i = 0; i < np; ++i) {
      const Piece& p = pieces[i];
      output_piece<F, L>(s, M, ld, p.col, k, k + 1, p.n, p.ty, p.tx0, p.cnt, b, add, y);
    }
}

}  // namespace
}  // namespace kern::cpu::detail
