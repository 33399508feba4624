// Elementwise CUDA kernels: unary ops, SiLU backward, affine, broadcast binary ops (up to kMaxDims
// dims, layouts passed by value), N-d strided copy for 1/2/4/8-byte elements, and fill. Grid-stride
// loops with 64-bit indices; the math mirrors kernels/cpu/elementwise.cpp.
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_kernels.h"

namespace kern::cuda {
namespace {

constexpr int kThreads = 256;

#define GRID_STRIDE_LOOP(i, n)                                              \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); \
       i += int64_t(gridDim.x) * blockDim.x)

__device__ __forceinline__ float sigmoidf(float x) {
  if (x >= 0.f) return 1.f / (1.f + expf(-x));
  const float e = expf(x);
  return e / (1.f + e);
}

template <Unary OP>
__device__ __forceinline__ float apply_unary(float x) {
  if constexpr (OP == Unary::Neg) return -x;
  if constexpr (OP == Unary::Exp) return expf(x);
  if constexpr (OP == Unary::Sin) return sinf(x);
  if constexpr (OP == Unary::Cos) return cosf(x);
  if constexpr (OP == Unary::Silu) return x * sigmoidf(x);
  if constexpr (OP == Unary::Sqrt) return sqrtf(x);
  if constexpr (OP == Unary::Square) return x * x;
  if constexpr (OP == Unary::Sigmoid) return sigmoidf(x);
  return x;
}

template <Unary OP>
__global__ void unary_kernel(int64_t n, const float* __restrict__ x, float* __restrict__ y) {
  GRID_STRIDE_LOOP(i, n) y[i] = apply_unary<OP>(x[i]);
}

__global__ void silu_backward_kernel(int64_t n, const float* __restrict__ x, const float* __restrict__ dy,
                                     float* __restrict__ dx) {
  GRID_STRIDE_LOOP(i, n) {
    const float s = sigmoidf(x[i]);
    dx[i] = dy[i] * (s * (1.f + x[i] * (1.f - s)));
  }
}

__global__ void affine_kernel(int64_t n, const float* __restrict__ x, float a, float b,
                              float* __restrict__ y) {
  GRID_STRIDE_LOOP(i, n) y[i] = fmaf(a, x[i], b);  // one rounding, as on the CPU
}

__global__ void fill_kernel(int64_t n, float* __restrict__ y, float v) { GRID_STRIDE_LOOP(i, n) y[i] = v; }

template <Binary OP>
__device__ __forceinline__ float apply_binary(float u, float v) {
  if constexpr (OP == Binary::Add) return u + v;
  if constexpr (OP == Binary::Sub) return u - v;
  if constexpr (OP == Binary::Mul) return u * v;
  return u / v;
}

template <Binary OP>
__global__ void binary_contig_kernel(int64_t n, const float* __restrict__ a, const float* __restrict__ b,
                                     float* __restrict__ y) {
  GRID_STRIDE_LOOP(i, n) y[i] = apply_binary<OP>(a[i], b[i]);
}

// Element offsets of the row-major linear index i of `shape` under two stride sets.
__device__ __forceinline__ void offsets2(int64_t i, const Strided& shape, const Strided& s0,
                                         const Strided& s1, int64_t& o0, int64_t& o1) {
  o0 = 0;
  o1 = 0;
  // Unrolled over the fixed maximum so the layouts stay in parameter space (no local-memory copy).
#pragma unroll
  for (int d = kMaxDims - 1; d >= 0; --d) {
    if (d >= shape.ndim) continue;
    const int64_t extent = shape.shape[d];
    const int64_t c = i % extent;
    i /= extent;
    o0 += c * s0.stride[d];
    o1 += c * s1.stride[d];
  }
}

template <Binary OP>
__global__ void binary_strided_kernel(int64_t n, Strided out, const float* __restrict__ a, Strided as,
                                      const float* __restrict__ b, Strided bs, float* __restrict__ y) {
  GRID_STRIDE_LOOP(i, n) {
    int64_t oa, ob;
    offsets2(i, out, as, bs, oa, ob);
    y[i] = apply_binary<OP>(a[oa], b[ob]);
  }
}

template <typename E>
__global__ void copy_strided_kernel(int64_t n, Strided src_layout, const E* __restrict__ src,
                                    Strided dst_layout, E* __restrict__ dst) {
  GRID_STRIDE_LOOP(i, n) {
    int64_t os, od;
    offsets2(i, src_layout, src_layout, dst_layout, os, od);
    dst[od] = src[os];
  }
}

void check_ndim(const Strided& s, const char* fn) {
  if (s.ndim < 0 || s.ndim > kMaxDims)
    throw ::engine::Error(std::string("kern::cuda::") + fn + ": ndim " + std::to_string(s.ndim) +
                                " outside [0, " + std::to_string(kMaxDims) + "]");
}

template <Unary OP>
void launch_unary(int64_t n, const float* x, float* y) {
  unary_kernel<OP><<<grid_1d(n, kThreads), kThreads, 0, engine_stream()>>>(n, x, y);
  CUDA_CHECK_LAUNCH();
}

template <Binary OP>
void launch_binary(const Strided& out, const float* a, const Strided& as, const float* b, const Strided& bs,
                   float* y) {
  const int64_t n = numel(out);
  if (n <= 0) return;
  if (is_contiguous(out, as) && is_contiguous(out, bs)) {
    binary_contig_kernel<OP><<<grid_1d(n, kThreads), kThreads, 0, engine_stream()>>>(n, a, b, y);
  } else {
    binary_strided_kernel<OP>
        <<<grid_1d(n, kThreads), kThreads, 0, engine_stream()>>>(n, out, a, as, b, bs, y);
  }
  CUDA_CHECK_LAUNCH();
}

template <typename E>
void launch_copy(int64_t n, const Strided& sl, const void* src, const Strided& dl, void* dst) {
  copy_strided_kernel<E><<<grid_1d(n, kThreads), kThreads, 0, engine_stream()>>>(
      n, sl, static_cast<const E*>(src), dl, static_cast<E*>(dst));
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void unary(Unary op, int64_t n, const float* x, float* y) {
  if (n <= 0) return;
  switch (op) {
    case Unary::Neg:
      return launch_unary<Unary::Neg>(n, x, y);
    case Unary::Exp:
      return launch_unary<Unary::Exp>(n, x, y);
    case Unary::Sin:
      return launch_unary<Unary::Sin>(n, x, y);
    case Unary::Cos:
      return launch_unary<Unary::Cos>(n, x, y);
    case Unary::Silu:
      return launch_unary<Unary::Silu>(n, x, y);
    case Unary::Sqrt:
      return launch_unary<Unary::Sqrt>(n, x, y);
    case Unary::Square:
      return launch_unary<Unary::Square>(n, x, y);
    case Unary::Sigmoid:
      return launch_unary<Unary::Sigmoid>(n, x, y);
  }
  throw ::engine::Error("kern::cuda::unary: unknown op " + std::to_string(static_cast<int>(op)));
}

void silu_backward(int64_t n, const float* x, const float* dy, float* dx) {
  if (n <= 0) return;
  silu_backward_kernel<<<grid_1d(n, kThreads), kThreads, 0, engine_stream()>>>(n, x, dy, dx);
  CUDA_CHECK_LAUNCH();
}

void affine(int64_t n, const float* x, double alpha, double beta, float* y) {
  if (n <= 0) return;
  affine_kernel<<<grid_1d(n, kThreads), kThreads, 0, engine_stream()>>>(n, x, static_cast<float>(alpha),
                                                                        static_cast<float>(beta), y);
  CUDA_CHECK_LAUNCH();
}

void binary(Binary op, const Strided& out, const float* a, const Strided& as, const float* b,
            const Strided& bs, float* y) {
  check_ndim(out, "binary");  // as/bs are read with out.ndim dims, as on the CPU
  switch (op) {
    case Binary::Add:
      return launch_binary<Binary::Add>(out, a, as, b, bs, y);
    case Binary::Sub:
      return launch_binary<Binary::Sub>(out, a, as, b, bs, y);
    case Binary::Mul:
      return launch_binary<Binary::Mul>(out, a, as, b, bs, y);
    case Binary::Div:
      return launch_binary<Binary::Div>(out, a, as, b, bs, y);
  }
  throw ::engine::Error("kern::cuda::binary: unknown op " + std::to_string(static_cast<int>(op)));
}

void copy_strided(int elem_size, const Strided& src_layout, const void* src, const Strided& dst_layout,
                  void* dst) {
  check_ndim(src_layout, "copy_strided");  // dst is read with src's ndim, as on the CPU
  const int64_t n = numel(src_layout);
  if (n <= 0) return;
  if (is_contiguous(src_layout, src_layout) && is_contiguous(src_layout, dst_layout)) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(n) * elem_size, cudaMemcpyDeviceToDevice,
                               engine_stream()));
    return;
  }
  switch (elem_size) {
    case 1:
      return launch_copy<uint8_t>(n, src_layout, src, dst_layout, dst);
    case 2:
      return launch_copy<uint16_t>(n, src_layout, src, dst_layout, dst);
    case 4:
      return launch_copy<uint32_t>(n, src_layout, src, dst_layout, dst);
    case 8:
      return launch_copy<uint64_t>(n, src_layout, src, dst_layout, dst);
    default:
      throw ::engine::Error("kern::cuda::copy_strided: unsupported element size " +
                                  std::to_string(elem_size));
  }
}

void fill(int64_t n, float* y, double value) {
  if (n <= 0) return;
  fill_kernel<<<grid_1d(n, kThreads), kThreads, 0, engine_stream()>>>(n, y, static_cast<float>(value));
  CUDA_CHECK_LAUNCH();
}

}  // namespace kern::cuda
