// CPU elementwise kernels: unary ops, SiLU backward, affine, broadcast binary ops, N-d strided copy,
// fill and float/double casts. Contiguous fast paths; generic paths walk the N-d index row by row.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/silu_span.h"

namespace kern::cpu {
namespace {

constexpr int64_t kParThreshold = 32768;  // below this many elements, stay single-threaded

// Splits [0, n) into fixed chunks processed in parallel (one chunk when n is small).
template <typename F>
void for_each_chunk(int64_t n, F&& body) {
  constexpr int64_t kChunk = 8192;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n > kParThreshold)
  for (int64_t c = 0; c < chunks; ++c) body(c * kChunk, std::min(n, (c + 1) * kChunk));
}

// silu(x) = x * sigmoid(x), per chunk through detail::silu_span (kernels/cpu/silu_span.h).
template <typename T>
void silu_forward(int64_t n, const T* x, T* y) {
  for_each_chunk(n, [&](int64_t lo, int64_t hi) { detail::silu_span(x + lo, y + lo, hi - lo); });
}

// Calls body(row, off[0..NOP-1]) for every row (all dims but the innermost) of shape, where off[j] is
// operand j's element offset of the row start (strides[j]); rows are processed in parallel, each thread
// a contiguous range of rows whose offsets it steps with a multi-index counter (one division per range,
// not per row: rows can be as short as a head dimension of 8).
template <int NOP, typename F>
void for_each_row(const Strided& shape, const int64_t* const (&strides)[NOP], F&& body) {
  const int nd = shape.ndim;
  const int64_t inner = nd > 0 ? shape.shape[nd - 1] : 1;
  int64_t rows = 1;
  for (int d = 0; d + 1 < nd; ++d) rows *= shape.shape[d];
  if (rows <= 0 || inner <= 0) return;
#pragma omp parallel if (rows * inner > kParThreshold && rows > 1)
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t r0 = rows * t / nt, r1 = rows * (t + 1) / nt;
    int64_t idx[kern::kMaxDims] = {}, off[NOP] = {};
    int64_t rem = r0;
    for (int d = nd - 2; d >= 0; --d) {
      idx[d] = rem % shape.shape[d];
      rem /= shape.shape[d];
      for (int j = 0; j < NOP; ++j) off[j] += idx[d] * strides[j][d];
    }
    for (int64_t r = r0; r < r1; ++r) {
      body(r, off);
      for (int d = nd - 2; d >= 0; --d) {  // next row: increment the index, carrying leftwards
        for (int j = 0; j < NOP; ++j) off[j] += strides[j][d];
        if (++idx[d] < shape.shape[d]) break;
        for (int j = 0; j < NOP; ++j) off[j] -= idx[d] * strides[j][d];
        idx[d] = 0;
      }
    }
  }
}

// Merges adjacent dims d, d + 1 of `shape` wherever both layouts have stride[d] == stride[d + 1] *
// shape[d + 1] (and drops size-1 dims), so that a copy of (B, L, 8)-shaped rows that are contiguous
// together runs as long rows. The element set and each element's offsets are unchanged.
void coalesce(Strided& shape, Strided& a, Strided& b) {
  Strided s{}, x{}, y{};
  for (int d = 0; d < shape.ndim; ++d) {
    if (shape.shape[d] == 1) continue;
    const int k = s.ndim;
    if (k > 0 && x.stride[k - 1] == a.stride[d] * shape.shape[d] &&
        y.stride[k - 1] == b.stride[d] * shape.shape[d]) {
      s.shape[k - 1] *= shape.shape[d];
      x.stride[k - 1] = a.stride[d];
      y.stride[k - 1] = b.stride[d];
      continue;
    }
    s.shape[k] = shape.shape[d];
    x.stride[k] = a.stride[d];
    y.stride[k] = b.stride[d];
    ++s.ndim;
  }
  if (s.ndim == 0) {  // a single element
    s.ndim = 1;
    s.shape[0] = 1;
    x.stride[0] = y.stride[0] = 1;
  }
  for (int d = 0; d < s.ndim; ++d) x.shape[d] = y.shape[d] = s.shape[d];
  x.ndim = y.ndim = s.ndim;
  shape = s;
  a = x;
  b = y;
}

template <typename T, typename Op>
void binary_impl(Op op, const Strided& out, const T* a, const Strided& as, const T* b, const Strided& bs,
                 T* y) {
  const int64_t n = numel(out);
  if (is_contiguous(out, as) && is_contiguous(out, bs)) {
#pragma omp parallel for simd schedule(static) if (n > kParThreshold)
    for (int64_t i = 0; i < n; ++i) y[i] = op(a[i], b[i]);
    return;
  }
  if (out.ndim == 0) {
    y[0] = op(a[0], b[0]);
    return;
  }
  const int nd = out.ndim;
  const int64_t inner = out.shape[nd - 1];
  const int64_t sa = as.stride[nd - 1], sb = bs.stride[nd - 1];
  const int64_t* const strides[2] = {as.stride, bs.stride};
  for_each_row<2>(out, strides, [&](int64_t r, const int64_t* off) {
    const T* pa = a + off[0];
    const T* pb = b + off[1];
    T* py = y + r * inner;
    if (sa == 1 && sb == 1) {
      for (int64_t i = 0; i < inner; ++i) py[i] = op(pa[i], pb[i]);
    } else if (sa == 1 && sb == 0) {
      const T bv = pb[0];
      for (int64_t i = 0; i < inner; ++i) py[i] = op(pa[i], bv);
    } else if (sa == 0 && sb == 1) {
      const T av = pa[0];
      for (int64_t i = 0; i < inner; ++i) py[i] = op(av, pb[i]);
    } else {
      for (int64_t i = 0; i < inner; ++i) py[i] = op(pa[i * sa], pb[i * sb]);
    }
  });
}

}  // namespace

template <typename T>
void unary(Unary op, int64_t n, const T* x, T* y) {
  switch (op) {
    case Unary::Neg:
#pragma omp parallel for simd schedule(static) if (n > kParThreshold)
      for (int64_t i = 0; i < n; ++i) y[i] = -x[i];
      break;
    case Unary::Exp:
#pragma omp parallel for schedule(static) if (n > kParThreshold)
      for (int64_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
      break;
    case Unary::Sin:
#pragma omp parallel for schedule(static) if (n > kParThreshold)
      for (int64_t i = 0; i < n; ++i) y[i] = std::sin(x[i]);
      break;
    case Unary::Cos:
#pragma omp parallel for schedule(static) if (n > kParThreshold)
      for (int64_t i = 0; i < n; ++i) y[i] = std::cos(x[i]);
      break;
    case Unary::Silu:
      silu_forward(n, x, y);
      break;
    case Unary::Sqrt:
#pragma omp parallel for simd schedule(static) if (n > kParThreshold)
      for (int64_t i = 0; i < n; ++i) y[i] = std::sqrt(x[i]);
      break;
    case Unary::Square:
#pragma omp parallel for simd schedule(static) if (n > kParThreshold)
      for (int64_t i = 0; i < n; ++i) y[i] = x[i] * x[i];
      break;
    case Unary::Sigmoid:  // 1 / (1 + e^-x), written so that e^... never overflows; NaN stays NaN
#pragma omp parallel for schedule(static) if (n > kParThreshold)
      for (int64_t i = 0; i < n; ++i) {
        const T e = std::exp(-std::abs(x[i]));
        y[i] = x[i] >= T(0) ? T(1) / (T(1) + e) : (x[i] < T(0) ? e / (T(1) + e) : x[i]);
      }
      break;
  }
}

// dx = dy * silu'(x), per chunk through detail::silu_grad_span (kernels/cpu/silu_span.h).
template <typename T>
void silu_backward(int64_t n, const T* x, const T* dy, T* dx) {
  for_each_chunk(n,
                 [&](int64_t lo, int64_t hi) { detail::silu_grad_span(x + lo, dy + lo, dx + lo, hi - lo); });
}

template <typename T>
void affine(int64_t n, const T* x, double alpha, double beta, T* y) {
  const T a = T(alpha), b = T(beta);
#pragma omp parallel for simd schedule(static) if (n > kParThreshold)
  for (int64_t i = 0; i < n; ++i) y[i] = std::fma(a, x[i], b);  // one rounding in every lane and the tail
}

template <typename T>
void binary(Binary op, const Strided& out, const T* a, const Strided& as, const T* b, const Strided& bs,
            T* y) {
  switch (op) {
    case Binary::Add:
      binary_impl<T>([](T u, T v) { return u + v; }, out, a, as, b, bs, y);
      break;
    case Binary::Sub:
      binary_impl<T>([](T u, T v) { return u - v; }, out, a, as, b, bs, y);
      break;
    case Binary::Mul:
      binary_impl<T>([](T u, T v) { return u * v; }, out, a, as, b, bs, y);
      break;
    case Binary::Div:
      binary_impl<T>([](T u, T v) { return u / v; }, out, a, as, b, bs, y);
      break;
  }
}

template <typename T>
void copy_strided(const Strided& src_layout, const T* src, const Strided& dst_layout, T* dst) {
  const int64_t n = numel(src_layout);
  if (n <= 0) return;
  if (is_contiguous(src_layout, src_layout) && is_contiguous(src_layout, dst_layout)) {
    std::memcpy(dst, src, sizeof(T) * n);
    return;
  }
  Strided shape = src_layout, sl = src_layout, dl = dst_layout;
  coalesce(shape, sl, dl);
  const int nd = shape.ndim;
  const int64_t ss = sl.stride[nd - 1], ds = dl.stride[nd - 1];
  const int64_t inner = shape.shape[nd - 1];
  const int64_t* const strides[2] = {sl.stride, dl.stride};
  for_each_row<2>(shape, strides, [&](int64_t, const int64_t* off) {
    const T* ps = src + off[0];
    T* pd = dst + off[1];
    if (ss == 1 && ds == 1) {
      std::memcpy(pd, ps, sizeof(T) * inner);
    } else {
      for (int64_t i = 0; i < inner; ++i) pd[i * ds] = ps[i * ss];
    }
  });
}

template <typename T>
void fill(int64_t n, T* y, double value) {
  const T v = static_cast<T>(value);
#pragma omp parallel for simd schedule(static) if (n > kParThreshold)
  for (int64_t i = 0; i < n; ++i) y[i] = v;
}

void cast_f32_to_f64(int64_t n, const float* x, double* y) {
#pragma omp parallel for simd schedule(static) if (n > kParThreshold)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i];
}

void cast_f64_to_f32(int64_t n, const double* x, float* y) {
#pragma omp parallel for simd schedule(static) if (n > kParThreshold)
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(x[i]);
}

KERN_INSTANTIATE_CPU(unary)
KERN_INSTANTIATE_CPU(silu_backward)
KERN_INSTANTIATE_CPU(affine)
KERN_INSTANTIATE_CPU(binary)

#define KERN_INSTANTIATE_COPY(T)                                               \
  template void copy_strided<T>(const Strided&, const T*, const Strided&, T*); \
  template void fill<T>(int64_t, T*, double);
KERN_INSTANTIATE_COPY(float)
KERN_INSTANTIATE_COPY(double)
KERN_INSTANTIATE_COPY(int64_t)
KERN_INSTANTIATE_COPY(uint8_t)
#undef KERN_INSTANTIATE_COPY

}  // namespace kern::cpu
