// CPU scaled dot-product attention (forward saves the row log-sum-exp; backward recomputes the
// probabilities from it). Two paths, both one head per OpenMP iteration (static schedule), so the results
// are bitwise independent of the thread count and of the number of heads:
// - float with head dim D <= 16 (the UNet's D = 8): the small-D kernel of attention_small.h, in its
//   AVX-512, AVX2 or portable build chosen by cpu_isa() (the three give the same bits). It never forms an
//   (Lq, Lk) matrix and does not go through gemm<float>, so --precision bf16 does not change it.
// - double, or D > 16: per head, gemm calls around an (Lq, Lk) score matrix and a row softmax.
// attention_{forward,backward}_blhd run the small-D kernel on heads read and written in place in
// (B, L, H, D) tensors (row stride H * D), attention_{forward,backward}_bhdl on heads in (B, H, D, L)
// tensors (column stride L: the channel-major layout of the nn Attention layer): the same bits as the
// contiguous (B, H, L, D) call.
// Non-finite scores follow torch.softmax (see cpu_kernels.h): a NaN score, a +inf score or a row of
// only -inf scores makes the row NaN; a -inf score alone gets probability 0.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cpu/attention_small.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/simd_math.h"
#include "kernels/cpu/softmax_avx512.h"

namespace kern::cpu {
namespace {
bool head_parallel(int64_t BH) { return !omp_in_parallel() && omp_get_max_threads() > 1 && BH > 1; }

// The small-D kernel applies to float heads with 1 <= D <= kAttnSmallMaxD and non-empty rows.
template <typename T>
bool small_d(int64_t Lq, int64_t Lk, int64_t D) {
  return std::is_same_v<T, float> && D >= 1 && D <= detail::kAttnSmallMaxD && Lq >= 1 && Lk >= 1;
}

// The small-D head kernels of the ISA path in use (the portable build where the AVX ones are not built).
detail::AttnSmallForward small_forward() {
#if defined(__x86_64__)
  switch (cpu_isa()) {
    case CpuIsa::Avx512:
      return detail::attn_small_forward_avx512;
    case CpuIsa::Avx2:
      return detail::attn_small_forward_avx2;
    default:
      break;
  }
#endif
  return detail::attn_small_forward_scalar;
}
detail::AttnSmallBackward small_backward() {
#if defined(__x86_64__)
  switch (cpu_isa()) {
    case CpuIsa::Avx512:
      return detail::attn_small_backward_avx512;
    case CpuIsa::Avx2:
      return detail::attn_small_backward_avx2;
    default:
      break;
  }
#endif
  return detail::attn_small_backward_scalar;
}

// Where the heads of B * H (batch, head) pairs live: q, k, v, o (dout, dq, dk, dv) are (B, L, H, D)
// tensors (bhdl = false; L = Lq or Lk): head h = b * H + hh starts at b * L * H * D + hh * D, rows H * D
// apart, columns 1 apart (H = 1 is the contiguous (BH, L, D) layout); or (B, H, D, L) tensors (bhdl =
// true): head h starts at h * D * L, rows 1 apart, columns L apart. lse is (B, H, Lq) either way.
struct HeadLayout {
  int64_t H, D;
  bool bhdl;
  int64_t offset(int64_t h, int64_t L) const { return bhdl ? h * D * L : (h / H) * L * H * D + (h % H) * D; }
  int64_t row_stride() const { return bhdl ? 1 : H * D; }
  int64_t col_stride(int64_t L) const { return bhdl ? L : 1; }
};

// One head per OpenMP iteration (static), so the bits depend neither on the thread count nor on the layout.
// lse may be null (not computed).
void small_forward_heads(int64_t B, const HeadLayout& hl, int64_t Lq, int64_t Lk, double scale,
                         const float* q, const float* k, const float* v, float* o, float* lse) {
  const detail::AttnSmallForward head = small_forward();
  const float s = static_cast<float>(scale);
  const int64_t BH = B * hl.H, D = hl.D;
  const int64_t rq = hl.row_stride(), cq = hl.col_stride(Lq), rk = hl.row_stride(), ck = hl.col_stride(Lk);
#pragma omp parallel if (head_parallel(BH))
  {
    std::vector<float> ws(detail::attn_small_scratch_floats(Lq, Lk, D, false));
#pragma omp for schedule(static)
    for (int64_t h = 0; h < BH; ++h) {
      const int64_t oq = hl.offset(h, Lq), ok = hl.offset(h, Lk);
      head(Lq, Lk, D, rq, cq, rk, ck, s, q + oq, k + ok, v + ok, o + oq, lse ? lse + h * Lq : nullptr,
           ws.data());
    }
  }
}

void small_backward_heads(int64_t B, const HeadLayout& hl, int64_t Lq, int64_t Lk, double scale,
                          const float* q, const float* k, const float* v, const float* o, const float* lse,
                          const float* dout, float* dq, float* dk, float* dv) {
  const detail::AttnSmallBackward head = small_backward();
  const float s = static_cast<float>(scale);
  const int64_t BH = B * hl.H, D = hl.D;
  const int64_t rq = hl.row_stride(), cq = hl.col_stride(Lq), rk = hl.row_stride(), ck = hl.col_stride(Lk);
#pragma omp parallel if (head_parallel(BH))
  {
    std::vector<float> ws(detail::attn_small_scratch_floats(Lq, Lk, D, true));
#pragma omp for schedule(static)
    for (int64_t h = 0; h < BH; ++h) {
      const int64_t oq = hl.offset(h, Lq), ok = hl.offset(h, Lk);
      head(Lq, Lk, D, rq, cq, rk, ck, s, q + oq, k + ok, v + ok, o + oq, lse + h * Lq, dout + oq, dq + oq,
           dk + ok, dv + ok, ws.data());
    }
  }
}

// row[j] = exp(row[j] - sub) for j < n; returns sum_j row[j]. Float rows use AVX2 when available,
// the tail included (masked lanes), so every element goes through the same code and the sum's
// order depends only on n. NaN propagates (exp_nonpos(NaN) = NaN).
// With avx512 the AVX-512 version (softmax_avx512.h) runs instead: the same bits, 16 lanes at a time.
// It is used only where this file has the AVX2 version to match (a build with -march=x86-64-v3 or
// better): in a build without it (e.g. the Debug/sanitizer build) every ISA setting takes the scalar
// loop, so the results stay independent of the ISA setting there too.
template <typename T>
double exp_sub_row(T* row, int64_t n, T sub, bool avx512) {
#if defined(__x86_64__) && defined(KERN_CPU_AVX2)
  if constexpr (std::is_same_v<T, float>) {
    if (avx512) return detail::exp_sub_row_f32_avx512(row, n, sub);
  }
#endif
  (void)avx512;
#ifdef KERN_CPU_AVX2
  if constexpr (std::is_same_v<T, float>) {
    return simd::sum_lanes_f64(simd::exp_sub_tail_avx2(row, 0, n, sub, _mm256_setzero_ps()));
  }
#endif
  double sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    row[j] = std::exp(row[j] - sub);
    sum += row[j];
  }
  return sum;
}

// Row maximum that propagates NaN (a NaN anywhere gives NaN, like torch.max). Float rows: one AVX2 pass
// of max plus an unordered-compare flag (no branch per element); the tail through masked lanes.
template <typename T>
T row_max(const T* row, int64_t n) {
#ifdef KERN_CPU_AVX2
  if constexpr (std::is_same_v<T, float>) {
    __m256 m = _mm256_set1_ps(-std::numeric_limits<float>::infinity()), bad = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
      const __m256 x = _mm256_loadu_ps(row + j);
      m = _mm256_max_ps(m, x);
      bad = _mm256_or_ps(bad, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    }
    if (j < n) {
      const __m256 x = simd::load_tail(row + j, n - j, -std::numeric_limits<float>::infinity());
      m = _mm256_max_ps(m, x);
      bad = _mm256_or_ps(bad, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    }
    if (_mm256_movemask_ps(bad)) return std::numeric_limits<float>::quiet_NaN();
    alignas(32) float l[8];
    _mm256_store_ps(l, m);
    float r = l[0];
    for (int i = 1; i < 8; ++i) r = l[i] > r ? l[i] : r;
    return r;
  }
#endif
  T m = row[0];
  bool nan = false;
#pragma omp simd reduction(max : m) reduction(|| : nan)
  for (int64_t j = 0; j < n; ++j) {
    m = row[j] > m ? row[j] : m;
    nan = nan || row[j] != row[j];
  }
  return nan ? std::numeric_limits<T>::quiet_NaN() : m;
}
}  // namespace

template <typename T>
void attention_forward(int64_t BH, int64_t Lq, int64_t Lk, int64_t D, double scale, const T* q, const T* k,
                       const T* v, T* o, T* lse) {
  if constexpr (std::is_same_v<T, float>) {
    if (small_d<T>(Lq, Lk, D)) return small_forward_heads(BH, {1, D, false}, Lq, Lk, scale, q, k, v, o, lse);
  }
  const bool avx512 = cpu_isa() == CpuIsa::Avx512;
#pragma omp parallel if (head_parallel(BH))
  {
    std::vector<T> P(Lq * Lk);  // (Lq, Lk) scores, then unnormalised probabilities exp(s - max)
    std::vector<T> inv(Lq);     // 1 / row sums: applied to the (Lq, D) output instead of the (Lq, Lk) P
#pragma omp for schedule(static)
    for (int64_t h = 0; h < BH; ++h) {
      const T* qh = q + h * Lq * D;
      const T* kh = k + h * Lk * D;
      const T* vh = v + h * Lk * D;
      T* oh = o + h * Lq * D;
      gemm<T>(false, true, Lq, Lk, D, T(scale), qh, D, kh, D, T(0), P.data(), Lk);
      for (int64_t i = 0; i < Lq; ++i) {
        T* row = P.data() + i * Lk;
        const T m = row_max(row, Lk);
        const double sum = exp_sub_row(row, Lk, m, avx512);
        inv[i] = T(1.0 / sum);
        if (lse != nullptr) lse[h * Lq + i] = T(double(m) + std::log(sum));
      }
      gemm<T>(false, false, Lq, D, Lk, T(1), P.data(), Lk, vh, D, T(0), oh, D);
      for (int64_t i = 0; i < Lq; ++i)
        for (int64_t d = 0; d < D; ++d) oh[i * D + d] *= inv[i];
    }
  }
}

template <typename T>
void attention_backward(int64_t BH, int64_t Lq, int64_t Lk, int64_t D, double scale, const T* q, const T* k,
                        const T* v, const T* o, const T* lse, const T* dout, T* dq, T* dk, T* dv) {
  if constexpr (std::is_same_v<T, float>) {
    if (small_d<T>(Lq, Lk, D))
      return small_backward_heads(BH, {1, D, false}, Lq, Lk, scale, q, k, v, o, lse, dout, dq, dk, dv);
  }
  const bool avx512 = cpu_isa() == CpuIsa::Avx512;
#pragma omp parallel if (head_parallel(BH))
  {
    std::vector<T> P(Lq * Lk), dS(Lq * Lk);  // (Lq, Lk) each
#pragma omp for schedule(static)
    for (int64_t h = 0; h < BH; ++h) {
      const T* qh = q + h * Lq * D;
      const T* kh = k + h * Lk * D;
      const T* vh = v + h * Lk * D;
      const T* oh = o + h * Lq * D;
      const T* doh = dout + h * Lq * D;
      gemm<T>(false, true, Lq, Lk, D, T(scale), qh, D, kh, D, T(0), P.data(), Lk);
      for (int64_t i = 0; i < Lq; ++i) {
        T* row = P.data() + i * Lk;
        const T l = lse[h * Lq + i];
        exp_sub_row(row, Lk, l, avx512);
      }
      gemm<T>(true, false, Lk, D, Lq, T(1), P.data(), Lk, doh, D, T(0), dv + h * Lk * D, D);  // dV = P^T dO
      gemm<T>(false, true, Lq, Lk, D, T(1), doh, D, vh, D, T(0), dS.data(), Lk);              // dP = dO V^T
      for (int64_t i = 0; i < Lq; ++i) {
        double delta = 0;  // rowsum(dO * O)
        for (int64_t d = 0; d < D; ++d) delta += double(doh[i * D + d]) * double(oh[i * D + d]);
        const T dl = T(delta);
        T* ds = dS.data() + i * Lk;
        const T* p = P.data() + i * Lk;
        for (int64_t j = 0; j < Lk; ++j) ds[j] = p[j] * (ds[j] - dl);
      }
      gemm<T>(false, false, Lq, D, Lk, T(scale), dS.data(), Lk, kh, D, T(0), dq + h * Lq * D, D);
      gemm<T>(true, false, Lk, D, Lq, T(scale), dS.data(), Lk, qh, D, T(0), dk + h * Lk * D, D);
    }
  }
}

KERN_INSTANTIATE_CPU(attention_forward)
KERN_INSTANTIATE_CPU(attention_backward)

bool attention_blhd_supported(int64_t Lq, int64_t Lk, int64_t D) { return small_d<float>(Lq, Lk, D); }

namespace {
// The argument check of the in-place (B, L, H, D) / (B, H, D, L) entry points below.
void require_small_heads(const char* fn, int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D) {
  if (B < 0 || H < 1 || !attention_blhd_supported(Lq, Lk, D))
    throw std::invalid_argument(std::string(fn) + ": needs B >= 0, H >= 1, Lq, Lk >= 1, 1 <= D <= 16");
}
}  // namespace

void attention_forward_blhd(int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D, double scale,
                            const float* q, const float* k, const float* v, float* o, float* lse) {
  require_small_heads("attention_forward_blhd", B, H, Lq, Lk, D);
  small_forward_heads(B, {H, D, false}, Lq, Lk, scale, q, k, v, o, lse);
}

void attention_backward_blhd(int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D, double scale,
                             const float* q, const float* k, const float* v, const float* o, const float* lse,
                             const float* dout, float* dq, float* dk, float* dv) {
  require_small_heads("attention_backward_blhd", B, H, Lq, Lk, D);
  small_backward_heads(B, {H, D, false}, Lq, Lk, scale, q, k, v, o, lse, dout, dq, dk, dv);
}

void attention_forward_bhdl(int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D, double scale,
                            const float* q, const float* k, const float* v, float* o, float* lse) {
  require_small_heads("attention_forward_bhdl", B, H, Lq, Lk, D);
  small_forward_heads(B, {H, D, true}, Lq, Lk, scale, q, k, v, o, lse);
}

void attention_backward_bhdl(int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D, double scale,
                             const float* q, const float* k, const float* v, const float* o, const float* lse,
                             const float* dout, float* dq, float* dk, float* dv) {
  require_small_heads("attention_backward_bhdl", B, H, Lq, Lk, D);
  small_backward_heads(B, {H, D, true}, Lq, Lk, scale, q, k, v, o, lse, dout, dq, dk, dv);
}

}  // namespace kern::cpu
