// Internal: the per-element SiLU forward and backward code of the CPU kernels, on one contiguous span
// without threading. elementwise.cpp (silu_forward / silu_backward, per chunk) and group_norm.cpp (the
// fused group_norm_silu, per channel) both call these, so the fused op's SiLU is bitwise the unfused one.
// Float with AVX2: every element (the tail too, via a masked load) goes through the same vector code, so
// an element's result does not depend on its position (lane independence). silu(-inf) = NaN as in
// PyTorch. In-place use (y == x, dx == x or dx == dy) is allowed: each element is read before it is
// written. Not kernel API.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/cpu/simd_math.h"

namespace kern::cpu::detail {

// Scalar sigmoid without overflow: 1/(1+e^-x) for x >= 0, e^x/(1+e^x) below.
template <typename T>
inline T sigmoid_scalar(T x) {
  if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}

// y[i] = x[i] * sigmoid(x[i]) for i in [0, n).
template <typename T>
inline void silu_span(const T* x, T* y, int64_t n) {
  int64_t i = 0;
#ifdef KERN_CPU_AVX2
  if constexpr (std::is_same_v<T, float>) {
    for (; i + 8 <= n; i += 8) {
      const __m256 xv = _mm256_loadu_ps(x + i);
      _mm256_storeu_ps(y + i, _mm256_mul_ps(xv, simd::sigmoid(xv)));
    }
    if (i < n) {
      const __m256 xv = simd::load_tail(x + i, n - i);
      simd::store_tail(y + i, n - i, _mm256_mul_ps(xv, simd::sigmoid(xv)));
    }
    return;
  }
#endif
  for (; i < n; ++i) y[i] = x[i] * sigmoid_scalar(x[i]);
}

// dx[i] = dy[i] * silu'(x[i]), silu'(x) = s * (1 + x * (1 - s)), s = sigmoid(x), for i in [0, n).
template <typename T>
inline void silu_grad_span(const T* x, const T* dy, T* dx, int64_t n) {
  int64_t i = 0;
#ifdef KERN_CPU_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256 one = _mm256_set1_ps(1.0f);
    auto grad = [&](__m256 xv, __m256 dyv) {
      const __m256 s = simd::sigmoid(xv);
      return _mm256_mul_ps(dyv, _mm256_mul_ps(s, _mm256_fmadd_ps(xv, _mm256_sub_ps(one, s), one)));
    };
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(dx + i, grad(_mm256_loadu_ps(x + i), _mm256_loadu_ps(dy + i)));
    if (i < n)
      simd::store_tail(dx + i, n - i, grad(simd::load_tail(x + i, n - i), simd::load_tail(dy + i, n - i)));
    return;
  }
#endif
  for (; i < n; ++i) {
    const T s = sigmoid_scalar(x[i]);
    dx[i] = dy[i] * (s * (T(1) + x[i] * (T(1) - s)));
  }
}

}  // namespace kern::cpu::detail
