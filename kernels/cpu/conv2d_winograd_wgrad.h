// Internal: the tile transforms of the Winograd F(2x2, 3x3) weight gradient (conv2d_winograd_wgrad.cpp),
// exposed for the tests. Each ISA version is bitwise the portable one (the same float operations on every
// element, -ffp-contract=off), only run on 8 or 16 channels at once. Not part of the kernel API.
#pragma once
#include <cstdint>

#include "kernels/kernel_shapes.h"

namespace kern::cpu::detail {

// D[xi][k][j] (row stride ld per k, K * ld per xi), j < nt, = A dy_t A^T (4 x 4, xi = 4 i + j) of global
// tile t = t0 + j of dy (N, K, H, W): dy_t = dy[n][k][2 ty .. 2 ty + 1][2 tx .. 2 tx + 1], zero outside the
// image; A^T = [[1, 1, 1, 0], [0, 1, -1, -1]] (tiles numbered image by image, row by row). Writes only
// the nt columns. (The scalar path's transform and the reference of the SIMD tile-major ones below.)
void winograd_dy_portable(const Conv2dShape& s, const float* dy, int64_t t0, int64_t nt, float* D,
                          int64_t ld);

// The portable F(2x2, 3x3) input transform V[xi][c][j] = (B^T d_t B)[xi], as conv2d_winograd_simd.h's
// winograd_input_avx2 / _avx512 (tile 2) compute it, bit for bit. Writes only the nt columns.
void winograd_input_portable(const Conv2dShape& s, const float* x, int64_t t0, int64_t nt, float* V,
                             int64_t ld);

// The tile-major transforms the weight gradient's GEMMs read in place (conv2d_winograd_wgrad_tm_impl.h):
//   out[xi * xs + (t - t0) * ldo + (c - c0)] = point xi (of 16) of channel c, global tile t,
// for c in [c0, c1), t in [t0, t0 + nt) (any images, tiles numbered as above): the input transform
// B^T d_t B of x (N, C, H, W) (winograd_input_tm_*, bitwise winograd_input_portable) or A dy_t A^T of dy
// (N, K, H, W) (winograd_dy_tm_*, bitwise winograd_dy_portable). ldo >= round8(c1 - c0): the AVX2 version
// writes whole 8-channel vectors into the padding columns (the AVX-512 one masks them off). buf: scratch of
// winograd_tm_buf_floats(s) floats. Throws nothing; the shapes are the caller's to check.
int64_t winograd_tm_buf_floats(const Conv2dShape& s);
void winograd_input_tm_avx2(const Conv2dShape& s, const float* x, int64_t c0, int64_t c1, int64_t t0,
                            int64_t nt, float* out, int64_t xs, int64_t ldo, float* buf);
void winograd_input_tm_avx512(const Conv2dShape& s, const float* x, int64_t c0, int64_t c1, int64_t t0,
                              int64_t nt, float* out, int64_t xs, int64_t ldo, float* buf);
void winograd_dy_tm_avx2(const Conv2dShape& s, const float* dy, int64_t c0, int64_t c1, int64_t t0,
                         int64_t nt, float* out, int64_t xs, int64_t ldo, float* buf);
void winograd_dy_tm_avx512(const Conv2dShape& s, const float* dy, int64_t c0, int64_t c1, int64_t t0,
                           int64_t nt, float* out, int64_t xs, int64_t ldo, float* buf);

// An 8-row block transposed: dst[j * ldd + r] = src[r * lds + j] for r < 8, j < n (a copy, no arithmetic;
// the scalar path's tile-major staging). Writes only the n rows of 8 floats of dst.
void transpose8_portable(const float* src, int64_t lds, int64_t n, float* dst, int64_t ldd);

}  // namespace kern::cpu::detail
