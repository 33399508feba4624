// CPU conv2d (NCHW) via im2col + GEMM, OpenMP-parallel over the batch. 1x1 stride-1 pad-0 convolutions
// skip im2col; stride-1 forwards with K <= 4 output channels run a direct conv (the same FMA chains). Every
// output is bitwise independent of the thread count: forward and backward-data work per image (pointwise
// convs on small images: per group of images side by side, the same chains), and the weight gradient is one
// FMA chain per element over the images in order (gemm.cpp), the bias gradient added in the same image loop
// (conv2d_bias_grad.h). float32 3x3 stride-1 pad-1 convs
// take Winograd F(2x2, 3x3) instead where winograd_selected(s) (conv2d_winograd.cpp,
// conv2d_winograd_wgrad.cpp).
#include <omp.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/cpu/conv2d_bias_grad.h"
#include "kernels/cpu/conv2d_winograd.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/gemm_a_rows.h"

namespace kern::cpu {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

bool is_pointwise(const Conv2dShape& s) {
  return s.R == 1 && s.S == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0;
}

// Valid output-column range [q0, q1) for kernel column sc: input column q*sw - pw + sc in [0, W).
void q_range(const Conv2dShape& s, int64_t sc, int64_t& q0, int64_t& q1) {
  q0 = std::max<int64_t>(0, ceil_div(s.pad_w - sc, s.stride_w));
  q1 = std::min<int64_t>(s.Q, floor_div(s.W - 1 + s.pad_w - sc, s.stride_w) + 1);
  if (q1 < q0) q1 = q0;
}

// dst[q] = src[q * stride] for q in [q0, q1) (an image row's strided columns; not kern::cpu::copy_strided).
// Float with stride 2 (the downsample convs) and AVX2, at least 8 outputs: 8 at a time from two loads, src[2q
// .. 2q+7] and src[2q+7 .. 2q+14] (never past the last value used), the last block overlapping the one before
// (no masked loads or stores: slow on AMD); a plain loop otherwise. Data movement only: the values are the
// same either way.
template <typename T>
void copy_every_stride(const T* src, int64_t stride, int64_t q0, int64_t q1, T* dst) {
#ifdef __AVX2__
  if constexpr (std::is_same_v<T, float>) {
    if (stride == 2 && q1 - q0 >= 8) {
      for (int64_t q = q0;; q += 8) {
        q = std::min(q, q1 - 8);
        const __m256 a = _mm256_loadu_ps(src + 2 * q), b = _mm256_loadu_ps(src + 2 * q + 7);
        const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 2, 0));  // a0 a2 b1 b3 | a4 a6 b5 b7
        _mm256_storeu_ps(
            dst + q, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0))));
        if (q + 8 >= q1) return;
      }
    }
  }
#endif
  for (int64_t q = q0; q < q1; ++q) dst[q] = src[q * stride];
}

// Rows [r0, r0 + nr) of the im2col of x (C, H, W), row (c, r, sc) = (c * R + r) * S + sc
//   -> cols (nr, P*Q).
template <typename T>
void im2col_rows(const Conv2dShape& s, const T* x, int64_t r0, int64_t nr, T* cols) {
  const int64_t P = s.P, Q = s.Q;
  for (int64_t rr = 0; rr < nr; ++rr) {
    const int64_t row_idx = r0 + rr, c = row_idx / (s.R * s.S), r = row_idx / s.S % s.R, sc = row_idx % s.S;
    T* row = cols + rr * P * Q;
    int64_t q0, q1;
    q_range(s, sc, q0, q1);
    for (int64_t p = 0; p < P; ++p) {
      T* dst = row + p * Q;
      const int64_t h = p * s.stride_h - s.pad_h + r;
      if (h < 0 || h >= s.H) {
        std::fill(dst, dst + Q, T(0));
        continue;
      }
      std::fill(dst, dst + q0, T(0));
      std::fill(dst + q1, dst + Q, T(0));
      const T* src = x + (c * s.H + h) * s.W - s.pad_w + sc;
      if (s.stride_w == 1) {
        std::memcpy(dst + q0, src + q0, sizeof(T) * (q1 - q0));
      } else {
        copy_every_stride(src, s.stride_w, q0, q1, dst);
      }
    }
  }
}

// x (C, H, W) -> cols (C*R*S, P*Q).
template <typename T>
void im2col(const Conv2dShape& s, const T* x, T* cols) {
  im2col_rows(s, x, 0, s.C * s.R * s.S, cols);
}

// Output channels up to which the forward runs direct and backward-data skips the cols matrix.
constexpr int64_t kDirectMaxK = 4;

// dx (C, H, W) += the im2col row (c, r, sc) of a cols matrix (P*Q values).
template <typename T>
void col2im_row(const Conv2dShape& s, int64_t c, int64_t r, int64_t sc, const T* row, T* dx) {
  const int64_t Q = s.Q;
  int64_t q0, q1;
  q_range(s, sc, q0, q1);
  for (int64_t p = 0; p < s.P; ++p) {
    const int64_t h = p * s.stride_h - s.pad_h + r;
    if (h < 0 || h >= s.H) continue;
    const T* src = row + p * Q;
    T* dst = dx + (c * s.H + h) * s.W - s.pad_w + sc;
    if (s.stride_w == 1) {
      for (int64_t q = q0; q < q1; ++q) dst[q] += src[q];
    } else {
      for (int64_t q = q0; q < q1; ++q) dst[q * s.stride_w] += src[q];
    }
  }
}

// cols (C*R*S, P*Q) -> dx (C, H, W), overwriting dx: +0, then the rows added in (c, r, sc) order.
template <typename T>
void col2im(const Conv2dShape& s, const T* cols, T* dx) {
  std::fill(dx, dx + s.C * s.H * s.W, T(0));
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t sc = 0; sc < s.S; ++sc)
        col2im_row(s, c, r, sc, cols + ((c * s.R + r) * s.S + sc) * s.P * s.Q, dx);
}

// Backward-data of one image with few output channels (K <= kDirectMaxK: conv_out): each cols row is
// computed when it is added (into `row`, P*Q values) instead of a (C*R*S, P*Q) GEMM of depth K whose
// register tiles would be all stores: row = the GEMM's chain, acc = +0, acc = fma(w[k][c][r][sc], dy[k], acc)
// for k in order; then col2im's adds in its order. The same bits as gemm + col2im.
template <typename T>
void backward_input_small_k(const Conv2dShape& s, const T* w, const T* __restrict dyn, T* dxn,
                            T* __restrict row) {
  const int64_t CRS = s.C * s.R * s.S, PQ = s.P * s.Q;
  std::fill(dxn, dxn + s.C * s.H * s.W, T(0));
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t sc = 0; sc < s.S; ++sc) {
        const int64_t crs = (c * s.R + r) * s.S + sc;
        for (int64_t k = 0; k < s.K; ++k) {  // k = 0 starts the chains from +0 (no separate fill)
          const T wv = w[k * CRS + crs];
          const T* __restrict d = dyn + k * PQ;
          if (k == 0)
            for (int64_t i = 0; i < PQ; ++i) row[i] = std::fma(wv, d[i], T(0));
          else
            for (int64_t i = 0; i < PQ; ++i) row[i] = std::fma(wv, d[i], row[i]);
        }
        col2im_row(s, c, r, sc, row, dxn);
      }
}

// Stride-1 convs with few output channels (conv_out: K = 1) run direct instead of im2col + GEMM, whose
// register tile would be mostly padding rows (MR = 8 or 6) and whose im2col copies the input R*S times:
// conv_out's forward 5-7x faster (bench/RESULTS.md, 2026-12-01). Not for more channels: conv_in (K = 32)
// measured 2x slower direct (no reuse of the loaded inputs across k).
// In bf16 mode too (docs/apps.md "Precision"): these kernels are float32 and run no GEMM; im2col + the bf16
// GEMM took 1.2-4.7x their time on conv_out (bench/RESULTS.md, 2026-12-02).
bool small_k_selected(const Conv2dShape& s) { return s.K <= kDirectMaxK && !is_pointwise(s); }
template <typename T>
bool direct_selected(const Conv2dShape& s) {
  return s.stride_h == 1 && s.stride_w == 1 && small_k_selected(s);
}

// One image's outputs y_n (K, P, Q) by the direct conv: each element is the im2col GEMM's chain exactly,
// acc = y_n (the prefilled epilogue e + r; +0 when init_zero); for (c, r, s) in order:
// acc = fma(w[k][c][r][s], xv, acc), with xv = +0 outside the image (read from the zero-padded copy xp
// (C, Hp, Wp) of x_n, as im2col would write it). Vectorised over q (32 outputs of a row at a time,
// reading 32 consecutive xp values: lanes past Q read the next row and are never stored).
template <typename T>
void direct_rows(const Conv2dShape& s, const T* xp, int64_t Hp, int64_t Wp, const T* w, bool init_zero,
                 T* yn) {
  const int64_t CRS = s.C * s.R * s.S;
  constexpr int64_t kB = 32;
  // ENGINE_CPU_ISA=scalar takes the portable loop (the same bits: one std::fma per lane and step).
  const bool simd = cpu_isa() != CpuIsa::Scalar;
  for (int64_t k = 0; k < s.K; ++k)
    for (int64_t p = 0; p < s.P; ++p)
      for (int64_t q0 = 0; q0 < s.Q; q0 += kB) {
        const int64_t nq = std::min(kB, s.Q - q0);
        T* yo = yn + (k * s.P + p) * s.Q + q0;
        const T* xo = xp + p * Wp + q0;
        const T* wk = w + k * CRS;
#ifdef __AVX2__
        if constexpr (std::is_same_v<T, float>) {
          if (simd) {
            __m256i mask[4];
            __m256 acc[4];
            for (int v = 0; v < 4; ++v) {
              const int lanes = static_cast<int>(std::clamp<int64_t>(nq - 8 * v, 0, 8));
              mask[v] =
                  _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
              acc[v] = init_zero ? _mm256_setzero_ps() : _mm256_maskload_ps(yo + 8 * v, mask[v]);
            }
            for (int64_t c = 0, i = 0; c < s.C; ++c)
              for (int64_t r = 0; r < s.R; ++r)
                for (int64_t sc = 0; sc < s.S; ++sc, ++i) {
                  const __m256 wv = _mm256_set1_ps(wk[i]);
                  const float* xr = xo + (c * Hp + r) * Wp + sc;
                  for (int v = 0; v < 4; ++v)
                    acc[v] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xr + 8 * v), acc[v]);
                }
            for (int v = 0; v < 4; ++v) _mm256_maskstore_ps(yo + 8 * v, mask[v], acc[v]);
            continue;
          }
        }
#endif
        T acc[kB];
        for (int64_t j = 0; j < kB; ++j) acc[j] = init_zero || j >= nq ? T(0) : yo[j];
        for (int64_t c = 0, i = 0; c < s.C; ++c)
          for (int64_t r = 0; r < s.R; ++r)
            for (int64_t sc = 0; sc < s.S; ++sc, ++i) {
              const T wv = wk[i];
              const T* xr = xo + (c * Hp + r) * Wp + sc;
              for (int64_t j = 0; j < kB; ++j) acc[j] = std::fma(wv, xr[j], acc[j]);
            }
        for (int64_t j = 0; j < nq; ++j) yo[j] = acc[j];
      }
}

// xp (C, Hp, Wp) <- x_n zero-padded by (pad_h, pad_w); xp has room past the end for the vector reads.
template <typename T>
void pad_image(const Conv2dShape& s, const T* xn, int64_t Hp, int64_t Wp, T* xp) {
  for (int64_t c = 0; c < s.C; ++c) {
    T* plane = xp + c * Hp * Wp;
    for (int64_t h = 0; h < s.H; ++h)
      std::memcpy(plane + (h + s.pad_h) * Wp + s.pad_w, xn + (c * s.H + h) * s.W, sizeof(T) * s.W);
  }
}

// Parallelise over the batch only when there is enough of it; otherwise let OpenBLAS use the threads.
bool batch_parallel(int64_t N) {
  return !omp_in_parallel() && omp_get_max_threads() > 1 && N >= omp_get_max_threads();
}

// Pointwise convs on small images (P*Q <= kGroupMaxPQ: the attention projections and shortcuts at 14x14
// and 7x7) run one GEMM over about kGroupCols columns of several images side by side (their channel rows
// gathered into a (rows, g*P*Q) buffer, the result scattered back) instead of one per image, whose 196 or
// 49 columns leave a narrow strip (4 columns; 7x7: a half tile and 1 column) per image and a call per
// 1.6 or 0.4 MFLOP. Each thread takes a contiguous range of images, in groups. Every output element keeps
// its FMA chain (over the input channels, from its prefilled value): the same bits as per image, for any
// grouping and thread count. kGroupCols: 512 measured as fast as 1024 or faster (bench/RESULTS.md,
// 2026-12-01). In bf16 mode too for the forward and the input gradient (each output's k-pairs run over the
// input channels, whatever the columns: the same bits; 7x7 0.57-0.71x, 14x14 0.73-0.95x the time except
// the input gradient of 32 -> 64 (1.21x), bench/RESULTS.md 2026-12-02); the weight gradient only at an
// even pixel count (grouped_wgrad_selected).
constexpr int64_t kGroupMaxPQ = 196, kGroupCols = 512;

template <typename T>
bool grouped_selected(const Conv2dShape& s) {
  return is_pointwise(s) && s.P * s.Q <= kGroupMaxPQ && s.N > 1;
}

// The weight gradient's reduction runs over the pixels, which the bf16 GEMM sums in k-pairs from each call's
// first column (K blocks of an even size): with an odd number of pixels per image (7x7: 49) grouped images
// would pair pixels of neighbouring images and change the bf16 bits, so bf16 mode keeps one GEMM per image
// there. With an even number (14x14) every image starts a pair: the same pairs, the same bits.
template <typename T>
bool grouped_wgrad_selected(const Conv2dShape& s) {
  if constexpr (std::is_same_v<T, float>) {
    if (matmul_precision_active() != MatmulPrecision::Fp32 && s.P * s.Q % 2 != 0) return false;
  }
  return grouped_selected<T>(s);
}

// dst (rows, g * PQ) <- images [0, g) of src (image stride img, rows of PQ values each), side by side.
template <typename T>
void gather_images(const T* src, int64_t img, int64_t rows, int64_t PQ, int64_t g, T* dst) {
  for (int64_t j = 0; j < g; ++j)
    for (int64_t c = 0; c < rows; ++c)
      std::memcpy(dst + (c * g + j) * PQ, src + j * img + c * PQ, sizeof(T) * PQ);
}

// The inverse: images [0, g) of dst <- src (rows, g * PQ).
template <typename T>
void scatter_images(const T* src, int64_t img, int64_t rows, int64_t PQ, int64_t g, T* dst) {
  for (int64_t j = 0; j < g; ++j)
    for (int64_t c = 0; c < rows; ++c)
      std::memcpy(dst + j * img + c * PQ, src + (c * g + j) * PQ, sizeof(T) * PQ);
}

// The calling thread's contiguous share [n0, n1) of N images.
void thread_images(int64_t N, int64_t& n0, int64_t& n1) {
  const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
  n0 = N * id / nt, n1 = N * (id + 1) / nt;
}

// The conv epilogue's prefill of image n's output: row k (PQ values, rows ld apart from yn) becomes
// e + r[n, k, :] per element (e = b[k] + t[n, k], the terms given; winograd_epilogue_bias, as the Winograd
// outputs' e). Writes nothing and returns false when no term is given; returns true otherwise.
template <typename T>
bool prefill_epilogue(const Conv2dShape& s, const T* b, const T* t, const T* r, int64_t n, T* yn,
                      int64_t ld) {
  if (!b && !t && !r) return false;
  const int64_t PQ = s.P * s.Q;
  for (int64_t k = 0; k < s.K; ++k) {
    const int64_t nk = n * s.K + k;
    T* yk = yn + k * ld;
    const T e = winograd_epilogue_bias(b, t, k, nk);
    if (!r)
      std::fill(yk, yk + PQ, e);
    else if (b || t)
      for (int64_t i = 0; i < PQ; ++i) yk[i] = e + r[nk * PQ + i];
    else
      std::memcpy(yk, r + nk * PQ, sizeof(T) * PQ);
  }
  return true;
}

// conv2d_forward_fused's pointwise forward, grouped (see grouped_selected).
template <typename T>
void forward_grouped(const Conv2dShape& s, const T* x, const T* w, const T* b, const T* t, const T* r, T* y) {
  const int64_t PQ = s.P * s.Q, G = std::max<int64_t>(1, kGroupCols / PQ);
#pragma omp parallel if (batch_parallel(s.N))
  {
    int64_t n0, n1;
    thread_images(s.N, n0, n1);
    std::vector<T> xg(s.C * G * PQ), yg(s.K * G * PQ);
    for (int64_t g0 = n0; g0 < n1; g0 += G) {
      const int64_t g = std::min(G, n1 - g0), L = g * PQ;
      gather_images(x + g0 * s.C * PQ, s.C * PQ, s.C, PQ, g, xg.data());
      // The epilogue's prefill (as conv2d_forward_fused's), in the grouped layout.
      T beta = T(0);
      for (int64_t j = 0; j < g; ++j)
        if (prefill_epilogue(s, b, t, r, g0 + j, yg.data() + j * PQ, L)) beta = T(1);
      gemm<T>(false, false, s.K, L, s.C, T(1), w, s.C, xg.data(), L, beta, yg.data(), L);
      scatter_images(yg.data(), s.K * PQ, s.K, PQ, g, y + g0 * s.K * PQ);
    }
  }
}

// conv2d_backward_input's pointwise pass, grouped (see grouped_selected).
template <typename T>
void backward_input_grouped(const Conv2dShape& s, const T* dy, const T* w, T* dx) {
  const int64_t PQ = s.P * s.Q, G = std::max<int64_t>(1, kGroupCols / PQ);
#pragma omp parallel if (batch_parallel(s.N))
  {
    int64_t n0, n1;
    thread_images(s.N, n0, n1);
    std::vector<T> dyg(s.K * G * PQ), dxg(s.C * G * PQ);
    for (int64_t g0 = n0; g0 < n1; g0 += G) {
      const int64_t g = std::min(G, n1 - g0), L = g * PQ;
      gather_images(dy + g0 * s.K * PQ, s.K * PQ, s.K, PQ, g, dyg.data());
      gemm<T>(true, false, s.C, L, s.K, T(1), w, s.C, dyg.data(), L, T(0), dxg.data(), L);
      scatter_images(dxg.data(), s.C * PQ, s.C, PQ, g, dx + g0 * s.C * PQ);
    }
  }
}

}  // namespace

template <typename T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* w, const T* b, T* y) {
  conv2d_forward_fused<T>(s, x, w, b, nullptr, nullptr, y);
}

template <typename T>
void conv2d_forward_fused(const Conv2dShape& s, const T* x, const T* w, const T* b, const T* t, const T* r,
                          T* y) {
  const int64_t CRS = s.C * s.R * s.S, PQ = s.P * s.Q, CHW = s.C * s.H * s.W;
  // float32 3x3 stride-1 pad-1: Winograd unless ENGINE_CPU_CONV=im2col or C * K is below the auto
  // threshold (winograd_selected: settings and channel counts only, never the batch or thread count;
  // float64 stays exact: im2col). In bf16 mode too, with the transform-domain GEMMs in bf16: 1.7x the
  // error of im2col + bf16 GEMM on the UNet's 3x3 shapes (RMS 4.0e-3 vs 2.35e-3 of the output RMS; bound:
  // GemmBf16.Conv2dWinograd*), but bf16 by im2col measured slower than fp32 by Winograd
  // (bench/RESULTS.md, 2026-12-01).
  if constexpr (std::is_same_v<T, float>) {
    if (winograd_selected(s)) return conv2d_forward_winograd(s, x, w, b, y, kWinogradTile, {t, r});
  }
  if (grouped_selected<T>(s)) return forward_grouped(s, x, w, b, t, r, y);
  const bool pw = is_pointwise(s), direct = direct_selected<T>(s);
  // The direct conv's zero-padded image (C, Hp, Wp), with room for its reads past the last row.
  const int64_t Hp = s.H + 2 * s.pad_h, Wp = s.W + 2 * s.pad_w, xp_size = s.C * Hp * Wp + Wp + s.S + 64;
#pragma omp parallel if (batch_parallel(s.N))
  {
    std::vector<T> cols(pw || direct ? 0 : CRS * PQ);  // (C*R*S, P*Q)
    std::vector<T> xp(direct ? xp_size : 0);           // zeros outside the image, kept between images
#pragma omp for schedule(static)
    for (int64_t n = 0; n < s.N; ++n) {
      const T* xn = x + n * CHW;
      T* yn = y + n * s.K * PQ;  // (K, P*Q)
      const T* src = xn;
      if (direct) {
        pad_image(s, xn, Hp, Wp, xp.data());
      } else if (!pw) {
        im2col(s, xn, cols.data());
        src = cols.data();
      }
      // The epilogue's terms prefill y and gemm (beta = 1) continues each element's FMA chain from them.
      const T beta = prefill_epilogue(s, b, t, r, n, yn, PQ) ? T(1) : T(0);
      if (direct)
        direct_rows(s, xp.data(), Hp, Wp, w, beta == T(0), yn);
      else
        gemm<T>(false, false, s.K, PQ, CRS, T(1), w, CRS, src, PQ, beta, yn, PQ);
    }
  }
}

template <typename T>
void conv2d_backward_input(const Conv2dShape& s, const T* dy, const T* w, T* dx) {
  // float32 3x3 stride-1 pad-1: a Winograd conv of dy with the flipped, transposed weights, on the same
  // rule as the forward (ENGINE_CPU_CONV); float64 stays exact (im2col).
  if constexpr (std::is_same_v<T, float>) {
    if (winograd_selected(s)) return conv2d_backward_input_winograd(s, dy, w, dx);
  }
  if (grouped_selected<T>(s)) return backward_input_grouped(s, dy, w, dx);
  const int64_t CRS = s.C * s.R * s.S, PQ = s.P * s.Q, CHW = s.C * s.H * s.W;
  const bool pw = is_pointwise(s), small_k = small_k_selected(s);
#pragma omp parallel if (batch_parallel(s.N))
  {
    std::vector<T> cols(pw ? 0 : small_k ? PQ : CRS * PQ);  // (C*R*S, P*Q); small_k: one row
#pragma omp for schedule(static)
    for (int64_t n = 0; n < s.N; ++n) {
      const T* dyn = dy + n * s.K * PQ;
      T* dxn = dx + n * CHW;
      if (small_k) {
        backward_input_small_k(s, w, dyn, dxn, cols.data());
      } else if (pw) {
        gemm<T>(true, false, s.C, PQ, s.K, T(1), w, CRS, dyn, PQ, T(0), dxn, PQ);
      } else {
        gemm<T>(true, false, CRS, PQ, s.K, T(1), w, CRS, dyn, PQ, T(0), cols.data(), PQ);
        col2im(s, cols.data(), dxn);
      }
    }
  }
}

namespace {

using conv2d_detail::bias_grad;
using conv2d_detail::BiasGrad;
using conv2d_detail::BiasPartials;

// dw (K, C*R*S) by im2col + GEMM (overwrites dw), and the bias gradients bg asks for (conv2d_bias_grad.h),
// each image's added right after its GEMM, while its dy is in cache (the bits of bias_grad's own pass).
template <typename T>
void backward_weight_im2col(const Conv2dShape& s, const T* dy, const T* x, T* dw, const BiasGrad<T>& bg) {
  const int64_t CRS = s.C * s.R * s.S, PQ = s.P * s.Q, CHW = s.C * s.H * s.W;
  const bool pw = is_pointwise(s);
  // dw (K, C*R*S) = sum over images n of dy_n (K, P*Q) @ cols_n^T, accumulated image after image with
  // beta = 1. gemm continues each element's FMA chain exactly (it reloads C between calls), so dw is one
  // chain over (n, p, q) in order, fma(dy, col, acc). Of the two operands (both P*Q-contiguous), the one
  // with more rows is the GEMM's A, read in place (gemm_a_rows: no packing), and the other is its
  // transposed B, packed: with C*R*S > K the GEMM computes dw^T = sum cols_n @ dy_n^T into a scratch
  // (the same chains: an FMA's two factors commute exactly) and transposes it at the end. The threads
  // split A's or B's rows (below; multiples of 8 or 16, so that 2 threads get equal halves on the UNet's
  // shapes): each runs the whole image loop for its block with no barrier. A block changes which thread
  // computes an element, never its chain: the same bits for any thread count (and, by gemm's invariant,
  // any block boundaries).
  const bool transposed = CRS > s.K;  // A = cols (C*R*S rows), B = dy; else A = dy (K rows), B = cols
  const int64_t rows = transposed ? CRS : s.K, brows = transposed ? s.K : CRS;  // A's and B's rows
  if (rows == 0 || brows == 0) return bias_grad(s, dy, bg.db, bg.dt);           // dw is empty
  const int64_t work = s.K * CRS * PQ;
  const int nthreads = omp_in_parallel() || work < (int64_t(1) << 16) ? 1 : omp_get_max_threads();
  // Pointwise (no im2col to build per thread): the threads split B's rows (dw's columns when not
  // transposed; multiples of 16, a whole AVX2 tile or half an AVX-512 one), so that each packs only its
  // share of B^T (the attention projections' 64 x 64 at 14 x 14: the transposing pack was a fifth of the
  // time, and split by A's rows both threads packed all of it). Otherwise (and when B has at most 16
  // rows, one block: 256 -> 4 channels would run on one thread) they split A's rows, each building only its
  // own im2col rows when A is cols.
  const bool split_b = pw && brows > 16;
  const int64_t split = split_b ? brows : rows, align = split_b ? 16 : 8;
  const int64_t chunk = ((split + nthreads - 1) / nthreads + align - 1) / align * align;
  const int64_t nblocks = (split + chunk - 1) / chunk;
  std::vector<T> dwt(transposed ? CRS * s.K : 0);  // dw^T (C*R*S, K) when transposed
#pragma omp parallel for schedule(static, 1) num_threads(nthreads) if (nblocks > 1)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t s0 = blk * chunk, ns = std::min(chunk, split - s0);
    // A's rows [r0, r0 + nr) and B's rows [c0, c0 + nc) of this block.
    const int64_t r0 = split_b ? 0 : s0, nr = split_b ? rows : ns;
    const int64_t c0 = split_b ? s0 : 0, nc = split_b ? ns : brows;
    // This image's im2col: rows [r0, r0 + nr) when transposed, all of it otherwise (pointwise: x_n).
    std::vector<T> cols(pw ? 0 : (transposed ? nr : CRS) * PQ);
    // The bias channels [k0, k1) of this block: its own dy rows when A = dy split by rows; otherwise (every
    // block reads all of dy_n) an even share of the K channels.
    const bool own_rows = !split_b && !transposed;
    const int64_t k0 = own_rows ? r0 : blk * s.K / nblocks,
                  k1 = own_rows ? r0 + nr : (blk + 1) * s.K / nblocks;
    std::vector<BiasPartials> bp(bg.any() ? k1 - k0 : 0, BiasPartials{});
    // Pointwise on small images (grouped_wgrad_selected): G images per GEMM, their A and B rows gathered side
    // by side, so that the reduction runs over (image, pixel) in order, as image after image: the same
    // chains.
    const int64_t G = grouped_wgrad_selected<T>(s) ? std::max<int64_t>(1, kGroupCols / PQ) : 1;
    std::vector<T> ag(G > 1 ? nr * G * PQ : 0), bgt(G > 1 ? nc * G * PQ : 0);
    for (int64_t n = 0; n < s.N; n += G) {
      const int64_t g = std::min(G, s.N - n), L = g * PQ;
      const T beta = n == 0 ? T(0) : T(1);
      const T* dyn = dy + n * s.K * PQ;
      const T* src = x + n * CHW + (transposed ? r0 : c0) * PQ;
      // A's rows (transposed: x's [r0, r0 + nr), else dy's) and B's rows (dy's or x's [c0, c0 + nc)).
      const T* a = transposed ? src : dyn + r0 * PQ;
      const T* b = transposed ? dyn + c0 * PQ : src;
      if (G > 1) {
        gather_images(a, transposed ? CHW : s.K * PQ, nr, PQ, g, ag.data());
        gather_images(b, transposed ? s.K * PQ : CHW, nc, PQ, g, bgt.data());
        a = ag.data(), b = bgt.data();
      } else if (!pw) {
        if (transposed)
          im2col_rows(s, x + n * CHW, r0, nr, cols.data());
        else
          im2col(s, x + n * CHW, cols.data());
        (transposed ? a : b) = cols.data();
      }
      if (transposed)
        gemm_a_rows<T>(true, nr, nc, L, a, L, b, L, beta, dwt.data() + r0 * s.K + c0, s.K);
      else
        gemm_a_rows<T>(true, nr, nc, L, a, L, b, L, beta, dw + r0 * CRS + c0, CRS);
      if (bg.any())
        for (int64_t j = 0; j < g; ++j) bg.add_image(n + j, k0, k1, bp.data());
    }
    bg.finish(k0, k1, bp.data());
  }
  if (s.N == 0) {
    std::fill(dw, dw + s.K * CRS, T(0));
  } else if (transposed) {
    for (int64_t k = 0; k < s.K; ++k)
      for (int64_t c = 0; c < CRS; ++c) dw[k * CRS + c] = dwt[c * s.K + k];
  }
}

}  // namespace

template <typename T>
void conv2d_backward_weight(const Conv2dShape& s, const T* dy, const T* x, T* dw, T* db) {
  conv2d_backward_weight_fused<T>(s, dy, x, dw, db, nullptr);
}

// The weight gradient with few output channels (direct_selected: conv_out, K = 1), without im2col: the
// cols (C*R*S rows of P*Q per image, 0.9 MB for conv_out) cost more to build than the K-row GEMM that
// reads them once. Each dw element is backward_weight_im2col's chain exactly: acc = +0, then for n, p, q in
// order acc = fma(xv, dy_n[k][p][q], acc), xv = x_n[c][p + r - pad_h][q + sc - pad_w], +0 outside the image.
// Vectorised over kLanes channels: each image's block of channels is copied channel-last into a zero-bordered
// xt (Hp, Wp, kLanes), so that the R*S values of a (p, q) are R*S vector loads; the accumulators stay in acc
// between images. The threads split the channel blocks, each running every image: a block changes which
// thread computes an element, never its chain (the same bits for any thread count and ISA path).
template <typename T>
void backward_weight_small_k(const Conv2dShape& s, const T* dy, const T* x, T* dw) {
  constexpr int64_t kLanes = 8;
  const int64_t RS = s.R * s.S, PQ = s.P * s.Q, HW = s.H * s.W;
  const int64_t Hp = s.H + 2 * s.pad_h, Wp = s.W + 2 * s.pad_w;  // = P + R - 1, Q + S - 1 (stride 1)
  const int64_t blocks = (s.C + kLanes - 1) / kLanes;
  const int nthreads =
      omp_in_parallel() ? 1 : static_cast<int>(std::min<int64_t>(omp_get_max_threads(), blocks));
  const bool simd = cpu_isa() != CpuIsa::Scalar;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
  {
    // The border stays +0. In a last, part-filled block the lanes past C hold an earlier block's values:
    // their chains are never stored.
    std::vector<T> xt(Hp * Wp * kLanes, T(0));
    std::vector<T> acc(s.K * RS * kLanes);  // (K, R*S, kLanes): the chains between images
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t c0 = blk * kLanes, nc = std::min(kLanes, s.C - c0);
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t n = 0; n < s.N; ++n) {
        const T* xn = x + (n * s.C + c0) * HW;
        for (int64_t c = 0; c < nc; ++c)
          for (int64_t h = 0; h < s.H; ++h) {
            T* d = xt.data() + ((h + s.pad_h) * Wp + s.pad_w) * kLanes + c;
            const T* src = xn + c * HW + h * s.W;
            for (int64_t w = 0; w < s.W; ++w) d[w * kLanes] = src[w];
          }
        for (int64_t k = 0; k < s.K; ++k) {
          T* a = acc.data() + k * RS * kLanes;
          const T* dyk = dy + (n * s.K + k) * PQ;
#ifdef __AVX2__
          if constexpr (std::is_same_v<T, float>) {
            if (simd && s.R == 3 && s.S == 3) {
              __m256 av[9];
              for (int i = 0; i < 9; ++i) av[i] = _mm256_loadu_ps(a + i * kLanes);
              for (int64_t p = 0; p < s.P; ++p)
                for (int64_t q = 0; q < s.Q; ++q) {
                  const __m256 d = _mm256_set1_ps(dyk[p * s.Q + q]);
                  const float* xq = xt.data() + (p * Wp + q) * kLanes;
                  for (int r = 0; r < 3; ++r)
                    for (int sc = 0; sc < 3; ++sc)
                      av[r * 3 + sc] =
                          _mm256_fmadd_ps(_mm256_loadu_ps(xq + (r * Wp + sc) * kLanes), d, av[r * 3 + sc]);
                }
              for (int i = 0; i < 9; ++i) _mm256_storeu_ps(a + i * kLanes, av[i]);
              continue;
            }
          }
#endif
          for (int64_t p = 0; p < s.P; ++p)
            for (int64_t q = 0; q < s.Q; ++q) {
              const T d = dyk[p * s.Q + q];
              const T* xq = xt.data() + (p * Wp + q) * kLanes;
              for (int64_t r = 0, i = 0; r < s.R; ++r)
                for (int64_t sc = 0; sc < s.S; ++sc, ++i)
                  for (int64_t l = 0; l < kLanes; ++l)
                    a[i * kLanes + l] = std::fma(xq[(r * Wp + sc) * kLanes + l], d, a[i * kLanes + l]);
            }
        }
      }
      for (int64_t k = 0; k < s.K; ++k)
        for (int64_t c = 0; c < nc; ++c)
          for (int64_t i = 0; i < RS; ++i) dw[(k * s.C + c0 + c) * RS + i] = acc[(k * RS + i) * kLanes + c];
    }
  }
}

template <typename T>
void conv2d_backward_weight_fused(const Conv2dShape& s, const T* dy, const T* x, T* dw, T* db, T* dt) {
  // float32 3x3 stride-1 pad-1 on the forward's rule (winograd_selected): Winograd F(2x2, 3x3), one FMA
  // chain per transform-domain element over the tiles in order (conv2d_winograd_wgrad.cpp); float64 and
  // every other shape: im2col + GEMM.
  // The bias gradients: in the im2col path's image loop, after the Winograd weight gradient in a pass of
  // their own.
  if constexpr (std::is_same_v<T, float>) {
    if (winograd_selected(s)) {
      conv2d_backward_weight_winograd(s, dy, x, dw);
      return bias_grad(s, dy, db, dt);
    }
  }
  if (direct_selected<T>(s) && s.N > 0) {
    backward_weight_small_k(s, dy, x, dw);
    return bias_grad(s, dy, db, dt);
  }
  backward_weight_im2col(s, dy, x, dw, BiasGrad<T>{s, dy, db, dt});
}

KERN_INSTANTIATE_CPU(conv2d_forward)
template void conv2d_forward_fused<float>(const Conv2dShape&, const float*, const float*, const float*,
                                          const float*, const float*, float*);
template void conv2d_forward_fused<double>(const Conv2dShape&, const double*, const double*, const double*,
                                           const double*, const double*, double*);
template void conv2d_backward_weight_fused<float>(const Conv2dShape&, const float*, const float*, float*,
                                                  float*, float*);
template void conv2d_backward_weight_fused<double>(const Conv2dShape&, const double*, const double*, double*,
                                                   double*, double*);
KERN_INSTANTIATE_CPU(conv2d_backward_input)
KERN_INSTANTIATE_CPU(conv2d_backward_weight)

}  // namespace kern::cpu
