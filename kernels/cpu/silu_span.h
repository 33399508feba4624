// Internal: the per-element SiLU forward and backward code of the CPU kernels, on one contiguous span
// without threading. elementwise.cpp (silu_forward / silu_backward, per chunk) and group_norm.cpp (the
// fused group_norm_silu, per channel) both call these, so the fused op's SiLU is bitwise the unfused one.
// Float: silu(v) = v / (1 + e^-v) and silu'(v) = s * (1 + v * (1 - s)), s = 1 / (1 + e^-v), from
// silu_math.h (8 lanes with AVX2, else its one-lane code, which gives the same bits); every element (the
// tail too, via a masked load) goes through the same code, so an element's result does not depend on its
// position (lane independence). Double: std::exp. silu(-inf) = NaN as in PyTorch. In-place use (y == x,
// dx == x or dx == dy) is allowed: each element is read before it is written. Not kernel API.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/cpu/silu_math.h"

namespace kern::cpu::detail {

// Scalar sigmoid without overflow: 1/(1+e^-x) for x >= 0, e^x/(1+e^x) below (the double path).
template <typename T>
inline T sigmoid_scalar(T x) {
  if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}

// y[i] = x[i] * sigmoid(x[i]) (float: x[i] / (1 + e^-x[i])) for i in [0, n).
template <typename T>
inline void silu_span(const T* x, T* y, int64_t n) {
  int64_t i = 0;
  if constexpr (std::is_same_v<T, float>) {
#ifdef KERN_CPU_AVX2
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, silu_math::silu8(_mm256_loadu_ps(x + i)));
    if (i < n) simd::store_tail(y + i, n - i, silu_math::silu8(simd::load_tail(x + i, n - i)));
#else
    for (; i < n; ++i) y[i] = silu_math::silu1(x[i]);
#endif
    return;
  }
  for (; i < n; ++i) y[i] = x[i] * sigmoid_scalar(x[i]);
}

// dx[i] = dy[i] * silu'(x[i]), silu'(x) = s * (1 + x * (1 - s)), s = sigmoid(x), for i in [0, n).
template <typename T>
inline void silu_grad_span(const T* x, const T* dy, T* dx, int64_t n) {
  int64_t i = 0;
  if constexpr (std::is_same_v<T, float>) {
#ifdef KERN_CPU_AVX2
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(dx + i, silu_math::silu_grad8(_mm256_loadu_ps(x + i), _mm256_loadu_ps(dy + i)));
    if (i < n)
      simd::store_tail(dx + i, n - i,
                       silu_math::silu_grad8(simd::load_tail(x + i, n - i), simd::load_tail(dy + i, n - i)));
#else
    for (; i < n; ++i) dx[i] = silu_math::silu_grad1(x[i], dy[i]);
#endif
    return;
  }
  for (; i < n; ++i) {
    const T s = sigmoid_scalar(x[i]);
    dx[i] = dy[i] * (s * (T(1) + x[i] * (T(1) - s)));
  }
}

}  // namespace kern::cpu::detail
