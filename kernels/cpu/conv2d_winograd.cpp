// Winograd F(m x m, 3 x 3) forward convolution (Lavin & Gray 2016), m = 2 or 4, for 3x3 stride-1 pad-1
// float32 convolutions, and the ENGINE_CPU_CONV setting.
//
//   U[xi][k][c] = (G g_kc G^T)[xi]           weights, in float64, rounded once (per call)
//   V[xi][c][t] = (B^T d_ct B)[xi]           input tiles (a x a, a = m + 2), zero-padded at the borders
//   M[xi]       = U[xi] (K x C) @ V[xi] (C x T)   one kern::cpu::gemm per transform point xi (bf16 mode:
//                 gemm_bf16_packed_a on U rounded and packed once per call; gemm<float>'s bits)
//   y tile      = (A^T M[.][k][t] A + e[n][k]) + r[n][k][tile]   e = b[k] + t[n][k] (the terms given)
// The tiles of all images are processed in chunks of TB tiles (the chunk is a unit of OpenMP work and
// keeps V and M in cache). Bitwise determinism: each transform is a fixed sequence of float operations
// on one tile (this file is built with -ffp-contract=off and explicit operation order; vectorising it
// over tiles changes nothing), and each M element is gemm's fixed FMA chain over c, independent of the
// matrix sizes, the tile's position in the chunk, the thread count and the ISA.
// The input and output transforms below are the portable path (ENGINE_CPU_ISA=scalar, non-x86 builds):
// 16 consecutive tiles per block, gathered pixel by pixel. On avx2 / avx512 the SIMD versions of
// conv2d_winograd_simd.h run instead (8 or 16 tiles of one tile row per vector, or on AVX-512 for F(2x2)
// rows of <= 7 tiles 2 to 4 whole tile rows per vector; shuffles and masked loads instead of gathers; the
// same bits, WinogradConv.SimdTransformsBitwiseTheScalarPath*).
#include "kernels/cpu/conv2d_winograd.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/cpu/conv2d_winograd_f43.h"
#include "kernels/cpu/conv2d_winograd_simd.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/gemm_bf16.h"

namespace kern::cpu {
namespace {

constexpr int kL = 16;  // tiles per transform block: the lanes the transform loops vectorise over
constexpr int kW = 8;   // output channels per weight-transform block (float64 lanes)

// F(2x2, 3x3): a = 4.
struct F23 {
  static constexpr int m = 2, a = 4;
  // o = B^T d, per lane l: d[j * ds + l], o[i * os + l].
  static void input(const float* d, int64_t ds, float* o, int64_t os) {
    for (int l = 0; l < kL; ++l) {
      const float d0 = d[l], d1 = d[ds + l], d2 = d[2 * ds + l], d3 = d[3 * ds + l];
      o[l] = d0 - d2;
      o[os + l] = d1 + d2;
      o[2 * os + l] = d2 - d1;
      o[3 * os + l] = d1 - d3;
    }
  }
  // u = G g (float64), per lane l < kW: g[r * gs + l], u[i * us + l].
  static void weight(const double* g, int64_t gs, double* u, int64_t us) {
    for (int l = 0; l < kW; ++l) {
      const double g0 = g[l], g1 = g[gs + l], g2 = g[2 * gs + l];
      u[l] = g0;
      u[us + l] = (g0 + g1 + g2) * 0.5;
      u[2 * us + l] = (g0 - g1 + g2) * 0.5;
      u[3 * us + l] = g2;
    }
  }
  // y = A^T v.
  static void output(const float* v, int64_t vs, float* y, int64_t ys) {
    for (int l = 0; l < kL; ++l) {
      const float v0 = v[l], v1 = v[vs + l], v2 = v[2 * vs + l], v3 = v[3 * vs + l];
      y[l] = (v0 + v1) + v2;
      y[ys + l] = (v1 - v2) - v3;
    }
  }
};

// F(4x4, 3x3): a = 6, interpolation points {0, 2/3, -2/3, 3/2, -3/2, inf} (chosen for float32 accuracy;
// the 1-D transforms and their derivation: conv2d_winograd_f43.h, shared with the SIMD paths).
struct F43 {
  static constexpr int m = 4, a = 6;
  static void input(const float* d, int64_t ds, float* o, int64_t os) {
    for (int l = 0; l < kL; ++l) {
      float di[a], oi[a];
      for (int j = 0; j < a; ++j) di[j] = d[j * ds + l];
      detail::F43Ops::input(di, oi);
      for (int i = 0; i < a; ++i) o[i * os + l] = oi[i];
    }
  }
  static void weight(const double* g, int64_t gs, double* u, int64_t us) {
    for (int l = 0; l < kW; ++l) {
      double ui[a];
      detail::F43Ops::weight(g[l], g[gs + l], g[2 * gs + l], ui);
      for (int i = 0; i < a; ++i) u[i * us + l] = ui[i];
    }
  }
  static void output(const float* v, int64_t vs, float* y, int64_t ys) {
    for (int l = 0; l < kL; ++l) {
      float vi[a], yi[m];
      for (int j = 0; j < a; ++j) vi[j] = v[j * vs + l];
      detail::F43Ops::output(vi, yi);
      for (int i = 0; i < m; ++i) y[i * ys + l] = yi[i];
    }
  }
};

// U[xi][c][k] (a*a, C, K), i.e. U_xi transposed, from w (K, C, 3, 3): G g G^T in float64, rounded once.
// Vectorised over kW output channels at a time.
template <class F>
void transform_weights(const Conv2dShape& s, const float* w, float* U) {
  constexpr int a = F::a;
  const int64_t K = s.K, C = s.C, KC = K * C;
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && KC >= 1024)
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k0 = 0; k0 < K; k0 += kW) {
      const int nk = static_cast<int>(std::min<int64_t>(kW, K - k0));
      double g[3][3][kW], t[a][3][kW], u[a][a][kW];
      for (int l = 0; l < kW; ++l)
        for (int r = 0; r < 9; ++r) g[r / 3][r % 3][l] = l < nk ? w[((k0 + l) * C + c) * 9 + r] : 0.0;
      for (int col = 0; col < 3; ++col) F::weight(&g[0][col][0], 3 * kW, &t[0][col][0], 3 * kW);  // G g
      for (int i = 0; i < a; ++i) F::weight(&t[i][0][0], kW, &u[i][0][0], kW);                    // (.) G^T
      for (int xi = 0; xi < a * a; ++xi) {
        float* dst = U + xi * KC + c * K + k0;
        for (int l = 0; l < nk; ++l) dst[l] = static_cast<float>(u[xi / a][xi % a][l]);
      }
    }
}

// Where the tiles of one block of kL lanes lie: image n, top-left output pixel (p0, q0). Lanes past
// the last tile get n = -1.
struct Lanes {
  int64_t n[kL], p0[kL], q0[kL];
};

Lanes locate(int64_t t0, int64_t T, int64_t TY, int64_t TX, int m) {
  Lanes L;
  for (int l = 0; l < kL; ++l) {
    const int64_t t = t0 + l;
    if (t >= T) {
      L.n[l] = -1, L.p0[l] = L.q0[l] = 0;
      continue;
    }
    L.n[l] = t / (TY * TX);
    const int64_t r = t % (TY * TX);
    L.p0[l] = (r / TX) * m, L.q0[l] = (r % TX) * m;
  }
  return L;
}

// V[xi][c][col0 + l] (row stride ldv per c, C * ldv per xi) for the kL tiles starting at global tile t0.
template <class F>
void transform_input_block(const Conv2dShape& s, const float* x, const Lanes& L, float* V, int64_t ldv,
                           int64_t col0) {
  constexpr int a = F::a;
  const int64_t H = s.H, W = s.W;
  alignas(64) float P[a][a][kL], T1[a][a][kL], Vt[a][a][kL];
  for (int64_t c = 0; c < s.C; ++c) {
    for (int l = 0; l < kL; ++l) {
      if (L.n[l] < 0) {
        for (int i = 0; i < a; ++i)
          for (int j = 0; j < a; ++j) P[i][j][l] = 0.0f;
        continue;
      }
      const float* img = x + (L.n[l] * s.C + c) * H * W;
      const int64_t h0 = L.p0[l] - 1, w0 = L.q0[l] - 1;  // pad 1
      const bool inside = h0 >= 0 && w0 >= 0 && h0 + a <= H && w0 + a <= W;
      for (int i = 0; i < a; ++i) {
        const int64_t h = h0 + i;
        if (inside) {
          const float* row = img + h * W + w0;
          for (int j = 0; j < a; ++j) P[i][j][l] = row[j];
        } else {
          for (int j = 0; j < a; ++j) {
            const int64_t ww = w0 + j;
            P[i][j][l] = (h >= 0 && h < H && ww >= 0 && ww < W) ? img[h * W + ww] : 0.0f;
          }
        }
      }
    }
    for (int i = 0; i < a; ++i) F::input(&P[i][0][0], kL, &T1[i][0][0], kL);           // along rows: d B
    for (int j = 0; j < a; ++j) F::input(&T1[0][j][0], a * kL, &Vt[0][j][0], a * kL);  // columns: B^T
    for (int xi = 0; xi < a * a; ++xi)
      std::memcpy(V + (xi * s.C + c) * ldv + col0, &Vt[xi / a][xi % a][0], sizeof(float) * kL);
  }
}

// y tiles from M[xi][k][col0 + l] (row stride ldm per k, K * ldm per xi), plus the epilogue's terms:
// (Y + e) + r with e = b[k] + t[n, k] (each term only where given), r the residual pixel.
template <class F>
void transform_output_block(const Conv2dShape& s, const float* M, int64_t ldm, int64_t col0, const Lanes& L,
                            const float* b, const WinogradAdd& add, float* y) {
  constexpr int a = F::a, m = F::m;
  const int64_t H = s.H, W = s.W;
  alignas(64) float Mt[a][a][kL], T2[m][a][kL], Y[m][m][kL];
  for (int64_t k = 0; k < s.K; ++k) {
    for (int xi = 0; xi < a * a; ++xi)
      std::memcpy(&Mt[xi / a][xi % a][0], M + (xi * s.K + k) * ldm + col0, sizeof(float) * kL);
    for (int j = 0; j < a; ++j) F::output(&Mt[0][j][0], a * kL, &T2[0][j][0], a * kL);  // A^T M
    for (int i = 0; i < m; ++i) F::output(&T2[i][0][0], kL, &Y[i][0][0], kL);           // (.) A
    for (int l = 0; l < kL; ++l) {
      if (L.n[l] < 0) continue;
      const int64_t nk = L.n[l] * s.K + k;
      const bool has_e = b || add.t;
      const float e = winograd_epilogue_bias(b, add.t, k, nk);
      float* out = y + nk * H * W;
      const float* res = add.r ? add.r + nk * H * W : nullptr;
      const int mi = static_cast<int>(std::min<int64_t>(m, H - L.p0[l]));
      const int mj = static_cast<int>(std::min<int64_t>(m, W - L.q0[l]));
      for (int i = 0; i < mi; ++i) {
        const int64_t off = (L.p0[l] + i) * W + L.q0[l];
        float* row = out + off;
        for (int j = 0; j < mj; ++j) {
          const float v = has_e ? Y[i][j][l] + e : Y[i][j][l];
          row[j] = res ? v + res[off + j] : v;
        }
      }
    }
  }
}

// Tiles per chunk: V and M of one chunk within about 1 MiB, a multiple of kL, in [64, 512].
int64_t chunk_tiles(int a, int64_t C, int64_t K) {
  const int64_t per_tile = int64_t(a) * a * (C + K) * int64_t(sizeof(float));
  int64_t tb = (int64_t(1) << 20) / std::max<int64_t>(per_tile, 1);
  tb = std::clamp<int64_t>(tb / 32 * 32, 64, 512);
  return tb;
}

// Per-thread buffer `slot` of at least n floats, kept between calls (it only grows): no page faults on the
// hot path. Stale contents are never read into results (M columns past a chunk's tiles feed only the
// discarded lanes of the output transform).
float* scratch(int slot, int64_t n) {
  thread_local std::vector<float> buf[4];  // U, V, M, the backward-data weights
  if (static_cast<int64_t>(buf[slot].size()) < n) buf[slot].resize(static_cast<size_t>(n));
  return buf[slot].data();
}

// The calling thread's buffer for the bf16-packed U (at least n words), kept between calls (only grows).
uint32_t* packed_u_scratch(int64_t n) {
  thread_local std::vector<uint32_t> buf;
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(static_cast<size_t>(n));
  return buf.data();
}

// The SIMD transforms of one chunk (tiles t0 .. t0 + nt - 1) for the ISA path; false where there is none
// (the scalar path, or a build without the AVX files). V and M need ld >= nt + 15 (the vectors' tails).
bool transform_input_simd(CpuIsa isa, int m, const Conv2dShape& s, const float* x, int64_t t0, int64_t nt,
                          float* V, int64_t ld) {
#if defined(__x86_64__)
  if (isa == CpuIsa::Avx512) return detail::winograd_input_avx512(m, s, x, t0, nt, V, ld), true;
  if (isa == CpuIsa::Avx2) return detail::winograd_input_avx2(m, s, x, t0, nt, V, ld), true;
#endif
  return false;
}

bool transform_output_simd(CpuIsa isa, int m, const Conv2dShape& s, const float* M, int64_t ld, int64_t t0,
                           int64_t nt, const float* b, const WinogradAdd& add, float* y) {
#if defined(__x86_64__)
  if (isa == CpuIsa::Avx512) return detail::winograd_output_avx512(m, s, M, ld, t0, nt, b, add, y), true;
  if (isa == CpuIsa::Avx2) return detail::winograd_output_avx2(m, s, M, ld, t0, nt, b, add, y), true;
#endif
  return false;
}

template <class F>
void winograd(const Conv2dShape& s, const float* x, const float* w, const float* b, const WinogradAdd& add,
              float* y) {
  constexpr int a = F::a, m = F::m, A2 = a * a;
  const int64_t TY = (s.H + m - 1) / m, TX = (s.W + m - 1) / m, T = s.N * TY * TX;
  if (T == 0 || s.K == 0) return;
  float* U = scratch(0, A2 * s.K * s.C);
  transform_weights<F>(s, w, U);
  // Chunks: at most chunk_tiles() tiles each, their number a multiple of the thread count so that the
  // threads get equal work (the chunking never changes the results).
  const int nth = omp_in_parallel() ? 1 : omp_get_max_threads();
  int64_t chunks = (T + chunk_tiles(a, s.C, s.K) - 1) / chunk_tiles(a, s.C, s.K);
  if (nth > 1) chunks = (std::max<int64_t>(chunks, nth) + nth - 1) / nth * nth;
  const int64_t TB = ((T + chunks - 1) / chunks + kL - 1) / kL * kL;
  chunks = (T + TB - 1) / TB;
  // Row stride of V and M: TB plus 20 floats. Not a power of two, so that the GEMM's in-place B rows do not
  // all fall into the same cache sets (a power-of-two stride made TB = 512 2.5x slower); and not a multiple
  // of 16 floats, because the transforms write / read the 16 (36) rows V[xi][c] / M[xi][k] of one channel
  // together, C * ld (K * ld) floats apart: with ld a multiple of 16 and C = 64 or 128 that stride is a
  // multiple of 4 KiB, all those rows share one L1 set (12 ways), and the transforms took twice as long
  // (TB + 16 before; bench/RESULTS.md 2026-12-01). Rows stay 16-byte aligned; never changes the bits.
  const int64_t ld = TB + 20;
  const bool par = nth > 1 && chunks > 1;
  // The input / output transforms: the AVX-512 or AVX2 version (conv2d_winograd_simd.h: the same bits, on
  // 8 or 16 tiles of a tile row at once) where the ISA path allows, else the portable blocks below.
  const CpuIsa isa = cpu_isa();
  // bf16 mode, where each chunk's GEMMs are serial anyway (every thread its own chunks, or one thread): U is
  // rounded to bf16 and packed once per call (gemm_bf16.h) instead of by every chunk's GEMMs, the same
  // words and bits as gemm<float> (GemmBf16Packed.*). A single chunk on several threads keeps gemm<float>,
  // which splits that chunk's GEMMs over the threads.
  const uint32_t* Up = nullptr;
  int64_t up_words = 0;
#if defined(__x86_64__)
  if ((par || nth == 1) && matmul_precision_active() == MatmulPrecision::Bf16) {
    up_words = gemm_detail::bf16_packed_a_words(s.K, s.C);
    uint32_t* p = packed_u_scratch(A2 * up_words);
    for (int xi = 0; xi < A2; ++xi)
      gemm_detail::bf16_pack_a(true, s.K, s.C, 1.0f, U + xi * s.K * s.C, s.K, p + xi * up_words);
    Up = p;
  }
#endif
  std::atomic<bool> oom{false};
#pragma omp parallel if (par)
  {
    float* V = scratch(1, A2 * s.C * ld);
    float* M = scratch(2, A2 * s.K * ld);
#pragma omp for schedule(static)
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const int64_t t_begin = ch * TB, nt = std::min(TB, T - t_begin);
      if (!transform_input_simd(isa, m, s, x, t_begin, nt, V, ld))
        for (int64_t col = 0; col < nt; col += kL)
          transform_input_block<F>(s, x, locate(t_begin + col, T, TY, TX, m), V, ld, col);
      for (int xi = 0; xi < A2; ++xi) {
#if defined(__x86_64__)
        if (Up) {
          if (!gemm_detail::gemm_bf16_packed_a(s.K, nt, s.C, Up + xi * up_words, false, V + xi * s.C * ld, ld,
                                               0.0f, M + xi * s.K * ld, ld))
            oom.store(true, std::memory_order_relaxed);
          continue;
        }
#endif
        gemm<float>(true, false, s.K, nt, s.C, 1.0f, U + xi * s.K * s.C, s.K, V + xi * s.C * ld, ld, 0.0f,
                    M + xi * s.K * ld, ld);
      }
      if (!transform_output_simd(isa, m, s, M, ld, t_begin, nt, b, add, y))
        for (int64_t col = 0; col < nt; col += kL)
          transform_output_block<F>(s, M, ld, col, locate(t_begin + col, T, TY, TX, m), b, add, y);
    }
  }
  if (oom.load()) throw std::bad_alloc();
}

CpuConvAlgo g_override = CpuConvAlgo::Auto;

CpuConvAlgo env_algo() {
  const char* env = std::getenv("ENGINE_CPU_CONV");
  if (!env || !*env) return CpuConvAlgo::Auto;
  const std::string v(env);
  if (v == "auto") return CpuConvAlgo::Auto;
  if (v == "winograd") return CpuConvAlgo::Winograd;
  if (v == "im2col") return CpuConvAlgo::Im2col;
  throw engine::Error("ENGINE_CPU_CONV='" + v + "': expected auto, winograd or im2col");
}

}  // namespace

const char* cpu_conv_algo_name(CpuConvAlgo a) {
  switch (a) {
    case CpuConvAlgo::Auto:
      return "auto";
    case CpuConvAlgo::Im2col:
      return "im2col";
    case CpuConvAlgo::Winograd:
      return "winograd";
  }
  return "?";
}

CpuConvAlgo cpu_conv_algo() {
  static const CpuConvAlgo env = env_algo();  // read even under an override (check_cpu_settings)
  return g_override != CpuConvAlgo::Auto ? g_override : env;
}

void set_cpu_conv_algo(CpuConvAlgo a) { g_override = a; }

bool winograd_applies(const Conv2dShape& s) {
  return s.R == 3 && s.S == 3 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 1 && s.pad_w == 1 &&
         s.P == s.H && s.Q == s.W;
}

bool winograd_selected(const Conv2dShape& s) {
  if (!winograd_applies(s)) return false;
  const CpuConvAlgo a = cpu_conv_algo();
  // Auto: a rule on the channel counts only (never on the batch size or thread count, which must not
  // change the bits); kWinogradAutoMinCK (1024: the UNet's 32 -> 32 convs and up) where it measured faster.
  return a == CpuConvAlgo::Winograd || (a == CpuConvAlgo::Auto && s.C * s.K >= kWinogradAutoMinCK);
}

void conv2d_forward_winograd(const Conv2dShape& s, const float* x, const float* w, const float* b, float* y,
                             int tile, const WinogradAdd& add) {
  if (!winograd_applies(s))
    throw engine::Error("conv2d_forward_winograd: needs a 3x3 kernel, stride 1, padding 1");
  if (tile == 4)
    winograd<F43>(s, x, w, b, add, y);
  else if (tile == 2)
    winograd<F23>(s, x, w, b, add, y);
  else
    throw engine::Error("conv2d_forward_winograd: tile must be 2 or 4, got " + std::to_string(tile));
}

void conv2d_backward_input_winograd(const Conv2dShape& s, const float* dy, const float* w, float* dx,
                                    int tile) {
  if (!winograd_applies(s))
    throw engine::Error("conv2d_backward_input_winograd: needs a 3x3 kernel, stride 1, padding 1");
  // dx = conv(dy, w') with w'[c][k][r][q] = w[k][c][2-r][2-q]: a 3x3 stride-1 pad-1 conv from K to C
  // channels.
  Conv2dShape t = s;
  t.C = s.K, t.K = s.C;
  // (A per-thread buffer, every element written: no allocation or zeroing per call.)
  float* wt = scratch(3, s.K * s.C * 9);
  for (int64_t k = 0; k < s.K; ++k)
    for (int64_t c = 0; c < s.C; ++c)
      for (int r = 0; r < 9; ++r) wt[(c * s.K + k) * 9 + (8 - r)] = w[(k * s.C + c) * 9 + r];
  conv2d_forward_winograd(t, dy, wt, nullptr, dx, tile);
}

}  // namespace kern::cpu
