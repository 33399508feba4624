// Winograd F(2x2, 3x3) weight gradient of a 3x3 stride-1 pad-1 float32 convolution (Lavin & Gray 2016).
// The forward computes each 2x2 output tile as y_t = A^T [U (.) V_t] A with U = G g G^T and
// V_t = B^T d_t B (d_t: the tile's zero-padded 4x4 input window), so
//   dU[xi][k][c] = sum over tiles t of Mdy_t[xi][k] V_t[xi][c],  Mdy_t = A dy_t A^T   (dy_t: 2x2, zero
//                                                                                     outside the image)
//   dg[k][c]     = G^T dU[.][k][c] G                                                 (float64, rounded once)
// The tiles of all images are processed in chunks, chunk after chunk in tile order: V (the forward's
// input transform, the same expressions) and Mdy of a chunk are built tile-major (V[xi][t][c],
// Mdy[xi][t][k]: on the SIMD paths straight from registers with 8 or 16 channels per vector,
// conv2d_winograd_wgrad_tm_impl.h; on the portable one staged and transposed 8 x 8), then per transform point
// xi one kern::cpu::gemm dU[xi] (C x K) += V[xi]^T (C x T) @ Mdy[xi] (T x K), both operands read in place,
// with beta = 1 continuing each element's FMA chain (gemm's contract), so every dU element is one chain
// over the tiles in order. Each thread builds the chunk's Mdy for itself; the GEMMs split the
// channels c (rows of dU), never the tile reduction; the chunk size depends on C and K only. So dw is
// bitwise independent of the thread count and the ISA path (this file and the SIMD ones are built with
// -ffp-contract=off), and of the layouts (the same values, the same chains).
#include "kernels/cpu/conv2d_winograd_wgrad.h"

#include <omp.h>

#include <algorithm>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/cpu/conv2d_winograd.h"
#include "kernels/cpu/conv2d_winograd_simd.h"
#include "kernels/cpu/cpu_kernels.h"

namespace kern::cpu {
namespace detail {

void winograd_dy_portable(const Conv2dShape& s, const float* dy, int64_t t0, int64_t nt, float* D,
                          int64_t ld) {
  const int64_t H = s.H, W = s.W, K = s.K, TY = (H + 1) / 2, TX = (W + 1) / 2;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < nt; ++j) {
      const int64_t t = t0 + j, n = t / (TY * TX), r = t % (TY * TX), p0 = r / TX * 2, q0 = r % TX * 2;
      const float* plane = dy + (n * K + k) * H * W;
      float e[2][2], rw[2][4];
      for (int i = 0; i < 2; ++i)
        for (int c = 0; c < 2; ++c) e[i][c] = p0 + i < H && q0 + c < W ? plane[(p0 + i) * W + q0 + c] : 0.0f;
      for (int i = 0; i < 2; ++i) {  // along the row: e A^T (the tile-major SIMD versions' expressions)
        rw[i][0] = e[i][0];
        rw[i][1] = e[i][0] + e[i][1];
        rw[i][2] = e[i][0] - e[i][1];
        rw[i][3] = -e[i][1];
      }
      for (int c = 0; c < 4; ++c) {  // along the column: A
        const float a0 = rw[0][c], a1 = rw[1][c];
        const float o[4] = {a0, a0 + a1, a0 - a1, -a1};
        for (int i = 0; i < 4; ++i) D[((i * 4 + c) * K + k) * ld + j] = o[i];
      }
    }
}

void winograd_input_portable(const Conv2dShape& s, const float* x, int64_t t0, int64_t nt, float* V,
                             int64_t ld) {
  const int64_t H = s.H, W = s.W, C = s.C, TY = (H + 1) / 2, TX = (W + 1) / 2;
  // o = B^T d along one axis: conv2d_winograd.cpp's F23::input.
  auto b1 = [](const float* d, float* o) {
    o[0] = d[0] - d[2];
    o[1] = d[1] + d[2];
    o[2] = d[2] - d[1];
    o[3] = d[1] - d[3];
  };
  for (int64_t c = 0; c < C; ++c)
    for (int64_t j = 0; j < nt; ++j) {
      const int64_t t = t0 + j, n = t / (TY * TX), r = t % (TY * TX), h0 = r / TX * 2 - 1,
                    w0 = r % TX * 2 - 1;
      const float* plane = x + (n * C + c) * H * W;
      float d[4][4], t1[4][4];
      for (int i = 0; i < 4; ++i)
        for (int q = 0; q < 4; ++q) {
          const int64_t h = h0 + i, w = w0 + q;
          d[i][q] = h >= 0 && h < H && w >= 0 && w < W ? plane[h * W + w] : 0.0f;
        }
      for (int i = 0; i < 4; ++i) b1(d[i], t1[i]);  // along the rows: d B
      for (int q = 0; q < 4; ++q) {                 // along the columns: B^T
        const float col[4] = {t1[0][q], t1[1][q], t1[2][q], t1[3][q]};
        float o[4];
        b1(col, o);
        for (int i = 0; i < 4; ++i) V[((i * 4 + q) * C + c) * ld + j] = o[i];
      }
    }
}

void transpose8_portable(const float* src, int64_t lds, int64_t n, float* dst, int64_t ldd) {
  for (int64_t j = 0; j < n; ++j)
    for (int r = 0; r < 8; ++r) dst[j * ldd + r] = src[r * lds + j];
}

}  // namespace detail

namespace {

constexpr int kA2 = 16;              // transform points of F(2x2, 3x3)
constexpr int64_t kBlk = 32;         // tiles per staging block of the portable transforms
constexpr int64_t kLds = kBlk + 16;  // the portable path's stage row stride

// Tiles per chunk: one thread's V (half the channels) and Mdy within about 1 MiB (its L2 on the target
// Zen 4), a multiple of 16 in [32, 1024]. C and K only, never the thread count (fp32 results do not depend
// on it at all; bf16 ones may, through the bf16 GEMM's blocking, so it is kept as it was).
int64_t chunk_tiles(int64_t C, int64_t K) {
  const int64_t per_tile = kA2 * ((C + 1) / 2 + K) * int64_t(sizeof(float));
  return std::clamp<int64_t>((int64_t(1) << 20) / std::max<int64_t>(per_tile, 1) / 16 * 16, 32, 1024);
}

int64_t round8(int64_t v) { return (v + 7) / 8 * 8; }

}  // namespace

int64_t detail::winograd_tm_buf_floats(const Conv2dShape& s) {
  return 5 * ((s.W + 1) / 2 * 2 + 2) * 16;  // 4 ring rows + 1 zero row of tm_cols <= 2 TX + 2 columns
}

namespace {

// Per-thread buffer `slot` of at least n floats, kept between calls (it only grows; new space is zero).
float* scratch(int slot, int64_t n) {
  thread_local std::vector<float> buf[4];  // V, Mdy, dU (the calling thread's, shared by the team), stage
  if (static_cast<int64_t>(buf[slot].size()) < n) buf[slot].resize(static_cast<size_t>(n));
  return buf[slot].data();
}

// The portable path's tile-major transform of at most 8 channels [c0, c1) of one of x (N, C, H, W) or dy
// (N, K, H, W) (`is_dy`) for the tiles t0 .. t0 + nt - 1 (nt <= kBlk, all of image n = t0 / TT):
//   out[xi * xs + j * ldo + (c - c0)] = the transform's point xi of channel c, tile t0 + j.
// The channel-major portable transforms write the staging block stage[xi][c - c0][j] (L1-sized), which
// 8-row transposes then store tile-major: the layout the GEMM reads in place (no packing). Columns
// c1 - c0 .. 7 of out are written with stale stage rows (the caller's padding, never read).
void transform_block(bool is_dy, const Conv2dShape& s, const float* src, int64_t c0, int64_t c1, int64_t t0,
                     int64_t nt, float* stage, float* out, int64_t xs, int64_t ldo) {
  const int64_t TT = ((s.H + 1) / 2) * ((s.W + 1) / 2), n = t0 / TT, CH = is_dy ? s.K : s.C;
  Conv2dShape one = s;
  one.N = 1;
  (is_dy ? one.K : one.C) = c1 - c0;
  const float* img = src + (n * CH + c0) * s.H * s.W;
  const int64_t tl = t0 - n * TT;
  if (is_dy)
    detail::winograd_dy_portable(one, img, tl, nt, stage, kLds);
  else
    detail::winograd_input_portable(one, img, tl, nt, stage, kLds);
  const int64_t cc = c1 - c0;
  for (int xi = 0; xi < kA2; ++xi) {
    const float* blk = stage + xi * cc * kLds;  // rows cc .. 7 past it: the next point's rows (or spare)
    detail::transpose8_portable(blk, kLds, nt, out + xi * xs, ldo);
  }
}

// The tile-major transform of channels [c0, c1) of x (B^T d B, !is_dy) or dy (A dy A^T, is_dy) for the
// chunk's tiles t0 .. t0 + nt - 1 at out[xi * xs + (t - t0) * ldo + (c - c0)] (ldo >= round8(c1 - c0)). The
// SIMD paths write straight from registers in one call (winograd_*_tm_*; the row ring spans the whole
// chunk), the portable one blocks of 8 channels x at most kBlk tiles of one image through
// transform_block's staging.
void transform_chunk(CpuIsa isa, bool is_dy, const Conv2dShape& s, const float* src, int64_t c0, int64_t c1,
                     int64_t t0, int64_t nt, float* out, int64_t xs, int64_t ldo) {
  float* buf = scratch(3, std::max(kA2 * 8 * kLds, detail::winograd_tm_buf_floats(s)));
#if defined(__x86_64__)
  if (isa == CpuIsa::Avx512)
    return (is_dy ? detail::winograd_dy_tm_avx512 : detail::winograd_input_tm_avx512)(s, src, c0, c1, t0, nt,
                                                                                      out, xs, ldo, buf);
  if (isa == CpuIsa::Avx2)
    return (is_dy ? detail::winograd_dy_tm_avx2 : detail::winograd_input_tm_avx2)(s, src, c0, c1, t0, nt, out,
                                                                                  xs, ldo, buf);
#endif
  const int64_t TT = ((s.H + 1) / 2) * ((s.W + 1) / 2);
  for (int64_t cb = c0; cb < c1; cb += 8)
    for (int64_t t = t0, end = t0 + nt; t < end;) {
      const int64_t tb = std::min({end, (t / TT + 1) * TT, t + kBlk});
      transform_block(is_dy, s, src, cb, std::min(c1, cb + 8), t, tb - t, buf,
                      out + (t - t0) * ldo + (cb - c0), xs, ldo);
      t = tb;
    }
}

// A per-transform-point stride of at least n floats that is not a multiple of 4 KiB: the 16 points'
// stores of one tile then fall into different L1 sets (1 KiB apart) instead of all into one.
int64_t point_stride(int64_t n) { return (n + 1023) / 1024 * 1024 + 64; }

// dw[k][c] (3 x 3) = G^T dU[.][c][k] G in float64, rounded once; G =
// [[1,0,0],[.5,.5,.5],[.5,-.5,.5],[0,0,1]].
void transform_back(const Conv2dShape& s, const float* dU, float* dw) {
  const int64_t K = s.K, C = s.C, KC = K * C;
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && KC >= 1024)
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c) {
      double u[4][4], t[3][4];
      for (int xi = 0; xi < kA2; ++xi) u[xi / 4][xi % 4] = dU[xi * KC + c * K + k];
      for (int j = 0; j < 4; ++j) {  // G^T u, down the columns
        const double h = (u[1][j] + u[2][j]) * 0.5;
        t[0][j] = u[0][j] + h;
        t[1][j] = (u[1][j] - u[2][j]) * 0.5;
        t[2][j] = h + u[3][j];
      }
      float* out = dw + (k * C + c) * 9;
      for (int r = 0; r < 3; ++r) {  // (.) G, along the rows
        const double h = (t[r][1] + t[r][2]) * 0.5;
        out[r * 3 + 0] = static_cast<float>(t[r][0] + h);
        out[r * 3 + 1] = static_cast<float>((t[r][1] - t[r][2]) * 0.5);
        out[r * 3 + 2] = static_cast<float>(h + t[r][3]);
      }
    }
}

}  // namespace

void conv2d_backward_weight_winograd(const Conv2dShape& s, const float* dy, const float* x, float* dw) {
  if (!winograd_applies(s))
    throw engine::Error("conv2d_backward_weight_winograd: needs a 3x3 kernel, stride 1, padding 1");
  const int64_t K = s.K, C = s.C, TY = (s.H + 1) / 2, TX = (s.W + 1) / 2, T = s.N * TY * TX;
  if (K == 0 || C == 0) return;
  if (T == 0) {
    std::fill(dw, dw + K * C * 9, 0.0f);
    return;
  }
  const int64_t TB = chunk_tiles(C, K), chunks = (T + TB - 1) / TB;
  // Channel blocks (a multiple of 8, the GEMM's register-tile rows), one per thread: each thread owns
  // dU[.][c0 .. c1 - 1][.] and, chunk by chunk, transforms its channels of x (V, tile-major: V[xi][t][c])
  // and all of dy (Mdy, tile-major: D[xi][t][k]) into its own buffers, then runs the chunk's 16 GEMMs
  // dU[xi] (Cc x K) += V[xi]^T (Cc x T) @ D[xi] (T x K) for its rows, both operands read in place
  // (transposed A with alpha 1, untransposed B: nothing is packed). Every thread builds the whole of Mdy:
  // the threads never wait for each other until the join. (Mdy built once per chunk and shared, by claimed
  // items into three rotating buffers, cost more than the duplicated work on 2 threads: each thread's stores
  // went to lines the other core had just read, and its GEMMs read lines the other core had just written.
  // Weight gradient 0.92x the time over the UNet's shapes, 0.68x at 32 -> 32 @28, bench/RESULTS.md
  // 2026-12-02. Measured on 2 threads only: with many threads and few input channels the repeated dy
  // transform grows to dominate.)
  const int nth = omp_in_parallel() ? 1 : omp_get_max_threads();
  const int64_t cblk = std::max<int64_t>(8, (C + nth - 1) / nth + 7) / 8 * 8, parts = (C + cblk - 1) / cblk;
  const int want = static_cast<int>(std::min<int64_t>(nth, parts));
  const int64_t ldk = round8(K), xs = point_stride(TB * ldk);
  float* dU = scratch(2, kA2 * K * C);  // dU[xi][c][k]
  const CpuIsa isa = cpu_isa();
#pragma omp parallel num_threads(want) if (want > 1)
  {
    const int tid = omp_get_thread_num(), team = omp_get_num_threads();
    float* D = scratch(1, kA2 * xs);
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const int64_t t0 = ch * TB, nt = std::min(TB, T - t0);
      transform_chunk(isa, true, s, dy, 0, K, t0, nt, D, xs, ldk);
      for (int64_t part = tid; part < parts; part += team) {
        const int64_t c0 = part * cblk, c1 = std::min(C, c0 + cblk), Cc = c1 - c0, ldc = round8(Cc);
        const int64_t xsv = point_stride(TB * ldc);
        float* V = scratch(0, kA2 * xsv);
        transform_chunk(isa, false, s, x, c0, c1, t0, nt, V, xsv, ldc);
        for (int xi = 0; xi < kA2; ++xi)
          gemm<float>(true, false, Cc, K, nt, 1.0f, V + xi * xsv, ldc, D + xi * xs, ldk,
                      ch == 0 ? 0.0f : 1.0f, dU + xi * C * K + c0 * K, K);
      }
    }
  }
  transform_back(s, dU, dw);
}

}  // namespace kern::cpu
