// Winograd F(2x2, 3x3) weight gradient of a 3x3 stride-1 pad-1 float32 convolution (Lavin & Gray 2016).
// The forward computes each 2x2 output tile as y_t = A^T [U (.) V_t] A with U = G g G^T and
// V_t = B^T d_t B (d_t: the tile's zero-padded 4x4 input window), so
//   dU[xi][k][c] = sum over tiles t of Mdy_t[xi][k] V_t[xi][c],  Mdy_t = A dy_t A^T   (dy_t: 2x2, zero
//                                                                                     outside the image)
//   dg[k][c]     = G^T dU[.][k][c] G                                                 (float64, rounded once)
// The tiles of all images are processed in chunks, chunk after chunk in tile order: V (the forward's
// input transform, the same SIMD code) and Mdy of a chunk are built, then per transform point xi one
// kern::cpu::gemm dU[xi] (C x K) += V[xi] (C x T) @ Mdy[xi]^T (T x K), with beta = 1 continuing each
// element's FMA chain (gemm's contract), so every dU element is one chain over the tiles in order. Threads
// split the channels c (rows of dU), never the tile reduction; the chunk size depends on C and K only.
// So dw is bitwise independent of the thread count and the ISA path (this file and the SIMD ones are
// built with -ffp-contract=off).
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
      for (int i = 0; i < 2; ++i) {  // along the row: e A^T (conv2d_winograd_wgrad_simd_impl.h's dy_1d)
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

}  // namespace detail

namespace {

constexpr int kA2 = 16;       // transform points of F(2x2, 3x3)
constexpr int64_t kGap = 16;  // spare V / D columns after a chunk (the SIMD transforms write whole vectors,
                              // up to 14 columns past their tiles)

// Tiles per chunk: one thread's V (half the channels) and Mdy within about 1 MiB (its L2 on the target
// Zen 4), a multiple of 16 in [32, 1024]. C and K only, never the thread count.
int64_t chunk_tiles(int64_t C, int64_t K) {
  const int64_t per_tile = kA2 * ((C + 1) / 2 + K) * int64_t(sizeof(float));
  return std::clamp<int64_t>((int64_t(1) << 20) / std::max<int64_t>(per_tile, 1) / 16 * 16, 32, 1024);
}

// Per-thread buffer `slot` of at least n floats, kept between calls (it only grows).
float* scratch(int slot, int64_t n) {
  thread_local std::vector<float> buf[3];  // V, Mdy, dU
  if (static_cast<int64_t>(buf[slot].size()) < n) buf[slot].resize(static_cast<size_t>(n));
  return buf[slot].data();
}

// V[xi][c - c0][j] (Cc = c1 - c0 channels: row stride ld per channel, Cc * ld per xi) for the tiles
// t0 .. t0 + nt - 1 of x: the SIMD input transform on avx2 / avx512 (up to 14 columns past nt), else the
// portable one. Called per image (the transforms index images by their channel count).
void input_channels(CpuIsa isa, const Conv2dShape& s, const float* x, int64_t c0, int64_t c1, int64_t t0,
                    int64_t nt, float* V, int64_t ld) {
  const int64_t TT = ((s.H + 1) / 2) * ((s.W + 1) / 2);
  Conv2dShape one = s;
  one.N = 1, one.C = c1 - c0;
  for (int64_t t = t0, end = t0 + nt; t < end;) {
    const int64_t n = t / TT, cnt = std::min(end, (n + 1) * TT) - t;
    const float* xn = x + (n * s.C + c0) * s.H * s.W;
    float* dst = V + (t - t0);
#if defined(__x86_64__)
    if (isa == CpuIsa::Avx512)
      detail::winograd_input_avx512(2, one, xn, t - n * TT, cnt, dst, ld);
    else if (isa == CpuIsa::Avx2)
      detail::winograd_input_avx2(2, one, xn, t - n * TT, cnt, dst, ld);
    else
#endif
      detail::winograd_input_portable(one, xn, t - n * TT, cnt, dst, ld);
    t += cnt;
  }
}

void dy_transform(CpuIsa isa, const Conv2dShape& s, const float* dy, int64_t t0, int64_t nt, float* D,
                  int64_t ld) {
#if defined(__x86_64__)
  if (isa == CpuIsa::Avx512) return detail::winograd_dy_avx512(s, dy, t0, nt, D, ld);
  if (isa == CpuIsa::Avx2) return detail::winograd_dy_avx2(s, dy, t0, nt, D, ld);
#endif
  (void)isa;
  detail::winograd_dy_portable(s, dy, t0, nt, D, ld);
}

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
  const int64_t TB = chunk_tiles(C, K), ld = TB + kGap, chunks = (T + TB - 1) / TB;
  // Channel blocks (a multiple of 8, the GEMM's register-tile rows), one per thread: each thread owns
  // dU[.][c0 .. c1 - 1][.], transforms its channels of x and all of dy (the smaller half of the work, done
  // by every thread) and runs every chunk's 16 GEMMs for its rows, with no barrier.
  const int nth = omp_in_parallel() ? 1 : omp_get_max_threads();
  const int64_t cblk = std::max<int64_t>(8, (C + nth - 1) / nth + 7) / 8 * 8, parts = (C + cblk - 1) / cblk;
  float* dU = scratch(2, kA2 * K * C);  // dU[xi][c][k]
  const CpuIsa isa = cpu_isa();
#pragma omp parallel for schedule(static, 1) num_threads(nth) if (parts > 1)
  for (int64_t part = 0; part < parts; ++part) {
    const int64_t c0 = part * cblk, c1 = std::min(C, c0 + cblk), Cc = c1 - c0;
    float* V = scratch(0, kA2 * Cc * ld);
    float* D = scratch(1, kA2 * K * ld);
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const int64_t t0 = ch * TB, nt = std::min(TB, T - t0);
      dy_transform(isa, s, dy, t0, nt, D, ld);
      input_channels(isa, s, x, c0, c1, t0, nt, V, ld);
      for (int xi = 0; xi < kA2; ++xi)
        gemm<float>(false, true, Cc, K, nt, 1.0f, V + xi * Cc * ld, ld, D + xi * K * ld, ld,
                    ch == 0 ? 0.0f : 1.0f, dU + xi * C * K + c0 * K, K);
    }
  }
  transform_back(s, dU, dw);
}

}  // namespace kern::cpu
