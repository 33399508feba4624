// Plain shape descriptors shared by the CPU and CUDA kernel interfaces.
// Kernels see raw buffers plus these descriptors; they know nothing about Tensor, autograd or which device a
// tensor lives on (that is core/'s job: it makes the tensors' device current before calling a CUDA kernel).
// The CUDA kernels take the current device's stream, cuBLAS handle and scratch memory from runtime/, the
// bottom layer (runtime/cuda_runtime.h); nothing here or in kernels/ includes core/.
#pragma once
#include <cstdint>

namespace kern {

// NCHW conv: x (N, C, H, W), w (K, C, R, S), b (K), y (N, K, P, Q).
struct Conv2dShape {
  int64_t N, C, H, W;  // input
  int64_t K, R, S;     // out channels, kernel height, kernel width
  int64_t stride_h, stride_w, pad_h, pad_w;
  int64_t P, Q;  // output height, width
  double flops() const { return 2.0 * N * K * P * Q * C * R * S; }
};

// Output side of a convolution along one axis (dilation 1, PyTorch's formula):
// floor((in + 2 * pad - k) / stride) + 1. The one place this formula is written.
constexpr int64_t conv_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad) {
  return (in + 2 * pad - k) / stride + 1;
}
// A Conv2dShape with its output size P, Q computed by conv_out_size.
constexpr Conv2dShape conv2d_shape(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R,
                                   int64_t S, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                   int64_t pad_w) {
  return {N,
          C,
          H,
          W,
          K,
          R,
          S,
          stride_h,
          stride_w,
          pad_h,
          pad_w,
          conv_out_size(H, R, stride_h, pad_h),
          conv_out_size(W, S, stride_w, pad_w)};
}

// Elementwise op codes.
enum class Unary : int { Neg, Exp, Sin, Cos, Silu, Sqrt, Square, Sigmoid };
enum class Binary : int { Add, Sub, Mul, Div };

// Broadcast strided iteration: at most this many dims. The op layer rejects more (core/ops/dispatch.h
// layout_of); dims are passed as they are, not coalesced.
constexpr int kMaxDims = 8;
struct Strided {
  int ndim;
  int64_t shape[kMaxDims];
  int64_t stride[kMaxDims];  // in elements; 0 for broadcast dims
};

// Number of elements of s's shape (1 for ndim 0).
inline int64_t numel(const Strided& s) {
  int64_t n = 1;
  for (int d = 0; d < s.ndim; ++d) n *= s.shape[d];
  return n;
}

// True when strides s walk shape_of's shape (same ndim) in row-major order without gaps: then element i
// sits at offset i. Dims of extent 1 may carry any stride. The CPU and CUDA kernels take their flat
// (non-strided) path on it.
inline bool is_contiguous(const Strided& shape_of, const Strided& s) {
  int64_t expect = 1;
  for (int d = shape_of.ndim - 1; d >= 0; --d) {
    if (shape_of.shape[d] != 1 && s.stride[d] != expect) return false;
    expect *= shape_of.shape[d];
  }
  return true;
}

// Largest attention head dim (the CUDA kernel keeps a query row in registers, padded to 8/16/32/64). The op
// (core/ops/attention.cpp) enforces it on every device, so a model that runs on one device runs on all.
constexpr int64_t kMaxAttentionHeadDim = 64;

// Hyper-parameters of one AdamW step (torch.optim.AdamW semantics).
struct AdamWParams {
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step;  // 1-based step number after increment (for bias correction)
};

}  // namespace kern
