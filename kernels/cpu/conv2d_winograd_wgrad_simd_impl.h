// Internal: the one template behind the AVX2 and AVX-512 dy transforms of the Winograd weight gradient
// (conv2d_winograd_wgrad.h), included only by conv2d_winograd_wgrad_avx2.cpp / _avx512.cpp. It reuses the
// vector helpers of conv2d_winograd_simd_impl.h (internal linkage: nothing compiled for one ISA can be
// picked by the linker for another caller).
//
// Layout: the lanes of a vector are L consecutive tiles of one tile row (consecutive D columns). Tile tx
// reads dy columns 2 tx and 2 tx + 1, so element j of the L tiles is row[q0 + 2 l + j]: two contiguous
// masked loads (the row's end is a masked-off lane) and one even/odd shuffle, the output transform's zips
// in reverse. The arithmetic is the portable code's, operation for operation. Stores are whole vectors (up
// to L - 1 columns past a piece, like the input transform's).
#pragma once
#include "kernels/cpu/conv2d_winograd_simd_impl.h"

namespace kern::cpu::detail {
namespace {

// o = A e: {e0, e0 + e1, e0 - e1, -e1} (the portable winograd_dy_portable's expressions).
template <class T>
void dy_1d(T e0, T e1, T* o) {
  o[0] = e0;
  o[1] = e0 + e1;
  o[2] = e0 - e1;
  o[3] = -e1;
}

// The dy transform of tiles tx0 .. tx0 + cnt - 1 of tile row ty of image n into D columns col ..
template <int L>
void dy_piece(const Conv2dShape& s, const float* dy, int64_t n, int64_t ty, int64_t tx0, int64_t cnt,
              float* D, int64_t ld, int64_t col) {
  using VT = typename Vec<L>::F;
  const int64_t H = s.H, W = s.W, K = s.K, nv = (cnt + L - 1) / L;
  for (int64_t v = 0; v < nv; ++v) {
    const int64_t q0 = 2 * (tx0 + v * L);
    const typename Vec<L>::Mask lo_mask = Vec<L>::range(0, W - q0), hi_mask = Vec<L>::range(0, W - q0 - L);
    float* out = D + col + v * L;
    for (int64_t k = 0; k < K; ++k) {
      const float* plane = dy + (n * K + k) * H * W;
      VT r[2][4];
      for (int i = 0; i < 2; ++i) {
        const int64_t h = 2 * ty + i;
        VT e0{}, e1{};
        if (h < H) {
          const VT lo = Vec<L>::load_masked(plane + h * W + q0, lo_mask);
          const VT hi = Vec<L>::load_masked(plane + h * W + q0 + L, hi_mask);
          e0 = Vec<L>::even(lo, hi);
          e1 = Vec<L>::odd(lo, hi);
        }
        dy_1d(e0, e1, r[i]);  // along the row: e A^T
      }
      for (int j = 0; j < 4; ++j) {
        VT o[4];
        dy_1d(r[0][j], r[1][j], o);  // along the column: A
        // Whole vectors: the lanes past the piece land in columns the next piece (or the caller's spare
        // columns) overwrites; a masked store (vmaskmovps) measured far slower on AMD.
        for (int i = 0; i < 4; ++i) store(out + ((i * 4 + j) * K + k) * ld, o[i]);
      }
    }
  }
}

template <int L>
void dy_tiles(const Conv2dShape& s, const float* dy, int64_t t0, int64_t nt, float* D, int64_t ld) {
  for_row_pieces(s, 2, t0, nt, [&](int64_t n, int64_t ty, int64_t tx0, int64_t cnt, int64_t col) {
    dy_piece<L>(s, dy, n, ty, tx0, cnt, D, ld, col);
  });
}

}  // namespace
}  // namespace kern::cpu::detail
