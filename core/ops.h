// The differentiable ops of the engine. Each op is defined once: argument checks, a
// dispatch to the CPU kernel (float32/float64) or the CUDA kernel (float32), and a backward
// written with other ops or dedicated backward kernels. Shapes follow PyTorch conventions.
#pragma once
#include <optional>
#include <utility>
#include <vector>

#include "core/autograd.h"
#include "core/tensor.h"

namespace engine {

// ---- elementwise, with NumPy/PyTorch broadcasting
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor affine(const Tensor& x, double alpha, double beta);  // alpha * x + beta
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor sin(const Tensor& x);
Tensor cos(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor square(const Tensor& x);
Tensor silu(const Tensor& x);
// torch.sigmoid: 1 / (1 + exp(-x)), elementwise; float32/float64 (CPU), float32 (CUDA).
// sigmoid(+inf) = 1, sigmoid(-inf) = 0, NaN stays NaN. Backward: g * y * (1 - y).
Tensor sigmoid(const Tensor& x);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, double s) { return add(a, s); }
inline Tensor operator-(const Tensor& a, double s) { return add(a, -s); }
inline Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
inline Tensor operator*(double s, const Tensor& a) { return mul(a, s); }
inline Tensor operator/(const Tensor& a, double s) { return mul(a, 1.0 / s); }
inline Tensor operator-(const Tensor& a) { return neg(a); }

// ---- reductions
Tensor sum(const Tensor& x);  // all elements -> 0-d
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
// Sums a broadcast result back to `shape` (the inverse of broadcasting).
Tensor sum_to(const Tensor& x, const Shape& shape);
Tensor mse_loss(const Tensor& pred, const Tensor& target);  // mean((pred - target)^2), 0-d

// ---- linear algebra
// (..., M, K) @ (..., K, N); batch dims must match, or b may be 2-D (shared).
Tensor matmul(const Tensor& a, const Tensor& b);
// y (..., out) = x (..., in) @ weight (out, in)^T + bias (out, or undefined), as one op (PyTorch's
// F.linear / addmm): the bias prefills y and the GEMM runs with beta = 1 (each element's FMA chain starts
// from its bias), on the CPU and through cuBLAS alike. Backward: dx = dy W, dW = dy^T x, db = dy summed
// over the rows. float32/float64 (CUDA: float32). Throws engine::Error on mismatched shapes, dtypes or
// devices.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ---- convolution and normalisation (NCHW)
struct Conv2dOptions {
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  static Conv2dOptions same(int64_t stride, int64_t pad) { return {stride, stride, pad, pad}; }
};
// x (N, C, H, W), weight (K, C, R, S), bias (K) or undefined -> y (N, K, P, Q), with an optional additive
// epilogue in the same op: y[n, k, p, q] = conv + bias[k] + sample_bias[n, k] + residual[n, k, p, q]
// (sample_bias (N, K), residual (N, K, P, Q), each undefined or of x's dtype and device). The CPU adds them
// in the conv's output pass (kern::cpu::conv2d_forward_fused); CUDA runs conv2d_forward, then broadcast
// adds. Backward: d sample_bias = dy summed over (P, Q), d residual = dy. Throws engine::Error on
// mismatched shapes, dtypes or devices.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dOptions& opt,
              const Tensor& sample_bias = Tensor(), const Tensor& residual = Tensor());
// x (N, C, *), gamma/beta (C) or undefined.
Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, double eps);
// silu(group_norm(x, groups, gamma, beta, eps)) as one op (PyTorch has no single op for it; the UNet's
// norm + SiLU pairs). Same arguments, shapes, dtypes (float32/float64) and errors as group_norm.
// CPU: one fused kernel each way, bitwise the same values and gradients as the unfused pair, and it saves
// only x and per-group double statistics for the backward (no normalised copy, unlike group_norm + silu),
// so training uses less memory. CUDA: runs the unfused group_norm + silu composition (no fused CUDA
// kernel; the CUDA path is the existing, verified code).
Tensor group_norm_silu(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, double eps);
// group_norm_silu(concat({x0, x1}, 1), groups, gamma, beta, eps) without materialising the concatenation:
// x0 (N, C0, *) and x1 (N, C1, *) of the same dtype, device, N and trailing dims -> (N, C0 + C1, *);
// gradients flow to x0 and x1 (a UNet up block's hidden state and skip connection). CPU: the fused kernel
// reads both in place and saves them (not a concatenated copy) for the backward; values and gradients are
// bitwise those of the concat + group_norm_silu pair. CUDA: runs that pair. Throws engine::Error on
// mismatched shapes, dtypes or devices and on group_norm's errors for the concatenated shape.
Tensor group_norm_silu_cat(const Tensor& x0, const Tensor& x1, int64_t groups, const Tensor& gamma,
                           const Tensor& beta, double eps);

// ---- attention: q (B, H, Lq, D), k/v (B, H, Lk, D) -> (B, H, Lq, D).
// softmax(q k^T * scale) v with a numerically stable softmax; scale defaults to D^-0.5.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    std::optional<double> scale = std::nullopt);

// ---- indexing and shape
// indices (any shape, int64), table (num, dim) -> (*indices.shape, dim).
Tensor embedding(const Tensor& indices, const Tensor& table);
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
// x (N, C, H, W) -> (N, C, 2H, 2W), nearest neighbour.
Tensor upsample_nearest2x(const Tensor& x);

// ---- random numbers (counter-based Philox: same numbers on CPU and CUDA)
class Generator {
 public:
  explicit Generator(uint64_t seed = 0, uint64_t offset = 0) : seed_(seed), offset_(offset) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed, offset_ = offset; }
  // Reserves n stream positions and returns the first.
  uint64_t advance(uint64_t n) {
    uint64_t o = offset_;
    offset_ += n;
    return o;
  }

 private:
  uint64_t seed_, offset_;
};
Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::F32, Device device = Device::cpu());
Tensor rand(const Shape& shape, Generator& gen, DType dtype = DType::F32, Device device = Device::cpu());

// ---- optimizer update (in place, outside autograd)
// Hyper-parameters of one AdamW step (torch.optim.AdamW semantics); `step` is the 1-based step number after
// the increment (bias correction).
struct AdamWStepParams {
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step;
};
// One fused AdamW step over a group of parameters: params[i], exp_avg[i] and exp_avg_sq[i] are updated in
// place from grads[i]. All tensors contiguous, on one device, of one floating dtype (float32 on CUDA);
// grads[i], exp_avg[i] and exp_avg_sq[i] have params[i]'s shape. The same bits as torch's per-element
// update order on every thread count. Throws engine::Error ("adamw_step: ...") otherwise.
void adamw_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                const std::vector<Tensor>& exp_avg, const std::vector<Tensor>& exp_avg_sq,
                const AdamWStepParams& hp);

}  // namespace engine
