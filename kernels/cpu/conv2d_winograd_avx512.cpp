// The AVX-512 Winograd tile transforms (conv2d_winograd_simd.h). This file alone is compiled with
// -mavx512f -ffp-contract=off; conv2d_winograd.cpp calls it only when cpu_isa() allows.
// F(2x2) on rows of at most 7 tiles (the UNet's 14x14 and 7x7 maps): "packed" vectors whose 16 lanes are
// P = min(16 / TX, 4) whole tile rows of one image (14 of 16 lanes at 14x14, 16 of 16 at 7x7, where one
// tile row per vector used 7 or 4 of 8): each staged image row (2 TX + 2 <= 16 columns) is one masked zmm
// load, and one vpermt2ps per pair of tile rows puts element j of every tile in its lane. The output
// transform unpacks the same way (one vpermt2ps and one masked store per output row). Tiles of a chunk
// that do not fill whole tile rows, wider rows and F(4x4) take the one-row pieces of
// conv2d_winograd_simd_impl.h (16 lanes where a tile row fills them, else 8). Each tile's float
// operations are those of the portable path (F23v), so the bits are the same.
#include "kernels/cpu/conv2d_winograd_simd.h"
#include "kernels/cpu/conv2d_winograd_simd_impl.h"

namespace kern::cpu::detail {
namespace {

using V16 = Vec<16>::F;

// The permutations of packed vectors for an image of TX <= 7 tiles per row, W columns.
struct Packed {
  int64_t TX, P;        // tiles per row, tile rows per vector
  __m512i in_idx[4];    // element j: lane q = p TX + tx <- source lane 2 tx + j of row register p % 2 (+16)
  __mmask16 hi_rows;    // lanes of tile rows 2 and 3 (the second register pair)
  __mmask16 row_load;   // staged lanes 1 .. W: image columns 0 .. W - 1 (lane 0: the left padding)
  __m512i out_idx[4];   // tile row p: output column q <- lane p TX + q / 2 of Y[.][q % 2]
  __mmask16 row_store;  // output columns 0 .. W - 1
  Packed(int64_t W, int64_t TX_) : TX(TX_), P(imin(16 / TX_, 4)) {
    alignas(64) int32_t t[16];
    for (int j = 0; j < 4; ++j) {
      for (int q = 0; q < 16; ++q) {
        const int64_t p = imin(q / TX, P - 1), tx = q / TX < P ? q % TX : 0;
        t[q] = static_cast<int32_t>((p % 2) * 16 + 2 * tx + j);
      }
      in_idx[j] = _mm512_load_si512(t);
    }
    hi_rows = 0;
    for (int q = 0; q < 16; ++q)
      if (q / TX >= 2) hi_rows = static_cast<__mmask16>(hi_rows | (1u << q));
    row_load = static_cast<__mmask16>(((1u << W) - 1) << 1);
    row_store = static_cast<__mmask16>((1u << W) - 1);
    for (int p = 0; p < 4; ++p) {
      for (int q = 0; q < 16; ++q) {
        const int64_t lane = imin(p * TX + q / 2, 15);
        t[q] = static_cast<int32_t>((q % 2) * 16 + lane);
      }
      out_idx[p] = _mm512_load_si512(t);
    }
  }
};

// Element j of the tiles of tile rows ty0 .. ty0 + g - 1 (g <= P) at row r of their 4 x 4 input tiles.
// Pairs: the register pairs (1: P <= 2, 2: P <= 4).
template <int Pairs>
inline void packed_gather(const Packed& pk, const float* plane, int64_t H, int64_t W, int64_t ty0, int64_t g,
                          int r, V16* d) {
  __m512 src[2 * Pairs];
  for (int p = 0; p < 2 * Pairs; ++p) {
    const int64_t h = 2 * (ty0 + p) - 1 + r;
    src[p] = p < g && h >= 0 && h < H ? _mm512_maskz_loadu_ps(pk.row_load, plane + h * W - 1)
                                      : _mm512_setzero_ps();
  }
  for (int j = 0; j < 4; ++j) {
    __m512 v = _mm512_permutex2var_ps(src[0], pk.in_idx[j], src[1]);
    if constexpr (Pairs == 2)
      v = _mm512_mask_blend_ps(pk.hi_rows, v, _mm512_permutex2var_ps(src[2], pk.in_idx[j], src[3]));
    d[j] = (V16)v;
  }
}

// The input transform of tile rows ty0 .. ty0 + g - 1 of image n (whole rows) into V columns col ..
// (16 columns written; those past the g TX tiles are overwritten by the next piece or left in the caller's
// spare columns).
template <int Pairs>
void input_packed_group(const Packed& pk, const Conv2dShape& s, const float* x, int64_t n, int64_t ty0,
                        int64_t g, float* V, int64_t ld, int64_t col) {
  const int64_t H = s.H, W = s.W, C = s.C, cs = C * ld;
  for (int64_t c = 0; c < C; ++c) {
    const float* plane = x + (n * C + c) * H * W;
    V16 T1[4][4];
    for (int r = 0; r < 4; ++r) {
      V16 d[4];
      packed_gather<Pairs>(pk, plane, H, W, ty0, g, r, d);
      F23v::input(d, T1[r]);  // along the row: d B
    }
    float* out = V + c * ld + col;
    for (int j = 0; j < 4; ++j) {
      V16 cj[4], o[4];
      for (int i = 0; i < 4; ++i) cj[i] = T1[i][j];
      F23v::input(cj, o);  // along the column: B^T
      for (int i = 0; i < 4; ++i) store(out + (i * 4 + j) * cs, o[i]);
    }
  }
}

// The output pixels of tile rows ty0 .. ty0 + g - 1 of image n from M columns col .. (whole rows):
// (A^T M A + e) + r, the operations of output_piece.
void output_packed_group(const Packed& pk, const Conv2dShape& s, const float* M, int64_t ld, int64_t col,
                         int64_t n, int64_t ty0, int64_t g, const float* b, const WinogradAdd& add,
                         float* y) {
  const int64_t H = s.H, W = s.W, K = s.K;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t nk = n * K + k;
    float* plane = y + nk * H * W;
    const float* rplane = add.r ? add.r + nk * H * W : nullptr;
    const bool has_e = b || add.t;
    const float bias = winograd_epilogue_bias(b, add.t, k, nk);
    V16 Mt[4][4], T2[2][4], Y[2][2];
    for (int xi = 0; xi < 16; ++xi) Mt[xi / 4][xi % 4] = load<V16>(M + (xi * K + k) * ld + col);
    for (int j = 0; j < 4; ++j) {
      V16 cj[4], o[2];
      for (int i = 0; i < 4; ++i) cj[i] = Mt[i][j];
      F23v::output(cj, o);  // A^T M
      for (int i = 0; i < 2; ++i) T2[i][j] = o[i];
    }
    for (int i = 0; i < 2; ++i) F23v::output(T2[i], Y[i]);  // (.) A
    if (has_e)
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) Y[i][j] = Y[i][j] + bias;
    for (int64_t p = 0; p < g; ++p)
      for (int i = 0; i < 2; ++i) {
        const int64_t h = 2 * (ty0 + p) + i;
        if (h >= H) continue;
        V16 v = (V16)_mm512_permutex2var_ps((__m512)Y[i][0], pk.out_idx[p], (__m512)Y[i][1]);
        if (rplane) v = v + (V16)_mm512_maskz_loadu_ps(pk.row_store, rplane + h * W);
        _mm512_mask_storeu_ps(plane + h * W, pk.row_store, (__m512)v);
      }
  }
}

// Calls piece(n, ty, tx0, cnt, col) for the tiles of t0 .. t0 + nt - 1 outside whole tile rows and
// group(n, ty0, g, col) for runs of g <= P whole tile rows of one image, in increasing col.
template <class Piece, class Group>
void for_packed(const Conv2dShape& s, int64_t P, int64_t t0, int64_t nt, Piece piece, Group group) {
  const int64_t TX = (s.W + 1) / 2, TT = ((s.H + 1) / 2) * TX;
  for (int64_t t = t0, end = t0 + nt; t < end;) {
    const int64_t n = t / TT, r0 = t % TT, r1 = imin(TT, r0 + (end - t)), col0 = t - t0;
    const int64_t f0 = (r0 + TX - 1) / TX * TX, f1 = r1 / TX * TX;  // the whole rows: tiles f0 .. f1 - 1
    if (f0 >= f1) {                                                 // no whole row: one or two pieces
      for (int64_t r = r0; r < r1;) {
        const int64_t cnt = imin(TX - r % TX, r1 - r);
        piece(n, r / TX, r % TX, cnt, col0 + (r - r0));
        r += cnt;
      }
    } else {
      if (r0 < f0) piece(n, r0 / TX, r0 % TX, f0 - r0, col0);
      for (int64_t ty = f0 / TX; ty < f1 / TX; ty += P)
        group(n, ty, imin(P, f1 / TX - ty), col0 + (ty * TX - r0));
      if (f1 < r1) piece(n, f1 / TX, 0, r1 - f1, col0 + (f1 - r0));
    }
    t += r1 - r0;
  }
}

inline bool packs(int tile, const Conv2dShape& s) { return tile == 2 && s.W >= 1 && (s.W + 1) / 2 <= 7; }

}  // namespace

void winograd_input_avx512(int tile, const Conv2dShape& s, const float* x, int64_t t0, int64_t nt, float* V,
                           int64_t ld) {
  if (packs(tile, s)) {
    const Packed pk(s.W, (s.W + 1) / 2);
    for_packed(
        s, pk.P, t0, nt,
        [&](int64_t n, int64_t ty, int64_t tx0, int64_t cnt, int64_t col) {
          input_piece<F23v, 8>(s, x, n, ty, tx0, cnt, V, ld, col);
        },
        [&](int64_t n, int64_t ty0, int64_t g, int64_t col) {
          if (pk.P > 2)
            input_packed_group<2>(pk, s, x, n, ty0, g, V, ld, col);
          else
            input_packed_group<1>(pk, s, x, n, ty0, g, V, ld, col);
        });
    return;
  }
  const bool w = use16(s, tile);
  if (tile == 4)
    w ? input_tiles<F43v, 16>(s, x, t0, nt, V, ld) : input_tiles<F43v, 8>(s, x, t0, nt, V, ld);
  else
    w ? input_tiles<F23v, 16>(s, x, t0, nt, V, ld) : input_tiles<F23v, 8>(s, x, t0, nt, V, ld);
}

void winograd_output_avx512(int tile, const Conv2dShape& s, const float* M, int64_t ld, int64_t t0,
                            int64_t nt, const float* b, const WinogradAdd& add, float* y) {
  if (packs(tile, s)) {
    const Packed pk(s.W, (s.W + 1) / 2);
    for_packed(
        s, pk.P, t0, nt,
        [&](int64_t n, int64_t ty, int64_t tx0, int64_t cnt, int64_t col) {
          output_piece<F23v, 8>(s, M, ld, col, 0, s.K, n, ty, tx0, cnt, b, add, y);
        },
        [&](int64_t n, int64_t ty0, int64_t g, int64_t col) {
          output_packed_group(pk, s, M, ld, col, n, ty0, g, b, add, y);
        });
    return;
  }
  const bool w = use16(s, tile);
  if (tile == 4)
    w ? output_tiles<F43v, 16>(s, M, ld, t0, nt, b, add, y)
      : output_tiles<F43v, 8>(s, M, ld, t0, nt, b, add, y);
  else
    w ? output_tiles<F23v, 16>(s, M, ld, t0, nt, b, add, y)
      : output_tiles<F23v, 8>(s, M, ld, t0, nt, b, add, y);
}

}  // namespace kern::cpu::detail
