// Internal: the AVX2 / AVX-512 versions of the Winograd input and output tile transforms of
// conv2d_winograd.cpp (conv2d_winograd_avx2.cpp / conv2d_winograd_avx512.cpp, each compiled for its ISA
// alone; call them only when cpu_isa() is at least that ISA). Each is bitwise the portable per-tile code:
// the same float operations in the same order on every element (-ffp-contract=off), only run on 8 or 16
// tiles of one tile row at once (AVX-512, F(2x2), rows of <= 7 tiles: 2 to 4 whole tile rows at once).
// Not part of the kernel API.
#pragma once
#include <cstdint>

#include "kernels/cpu/conv2d_winograd.h"
#include "kernels/kernel_shapes.h"

namespace kern::cpu::detail {

// V[xi][c][j] (row stride ld per c, C * ld per xi), j < nt, = the input transform B^T d B of global tile
// t0 + j of x (N, C, H, W) (tiles numbered image by image, row by row; m x m output pixels each).
// tile: m = 2 or 4.
void winograd_input_avx2(int tile, const Conv2dShape& s, const float* x, int64_t t0, int64_t nt, float* V,
                         int64_t ld);
void winograd_input_avx512(int tile, const Conv2dShape& s, const float* x, int64_t t0, int64_t nt, float* V,
                           int64_t ld);

// The output pixels of tiles t0 .. t0 + nt - 1 in y (N, K, H, W): (A^T M[.][k][j] A + e) + r, e =
// winograd_epilogue_bias(b, add.t) where b or add.t is given, r = add.r's pixel where given;
// M[xi][k][j] with row stride ld per k (columns up to a multiple of 16 past nt may be read; ld must allow
// that).
void winograd_output_avx2(int tile, const Conv2dShape& s, const float* M, int64_t ld, int64_t t0, int64_t nt,
                          const float* b, const WinogradAdd& add, float* y);
void winograd_output_avx512(int tile, const Conv2dShape& s, const float* M, int64_t ld, int64_t t0,
                            int64_t nt, const float* b, const WinogradAdd& add, float* y);

}  // namespace kern::cpu::detail
