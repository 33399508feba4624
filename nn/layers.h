// Layers of the diffusers UNet2DModel family, named after diffusers' state-dict keys: Conv2d, Linear,
// GroupNorm, Embedding, Attention (diffusers `Attention` on NCHW maps), ResnetBlock2D, Downsample2D,
// Upsample2D, Timesteps (sinusoidal projection) and TimestepEmbedding. Initialisation follows
// PyTorch's defaults (kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)) for weights and biases).
#pragma once
#include <memory>

#include "nn/module.h"

namespace engine::nn {

// SiLU is engine::silu (core/ops.h): no parameters, no module needed.
class Conv2d : public Module {
 public:
  Conv2d(Init& init, int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t padding = 0,
         bool bias = true);
  Tensor forward(const Tensor& x) const;  // (B, in, H, W) -> (B, out, P, Q)
  // The same plus sample_bias (B, out) broadcast over (P, Q) and residual (B, out, P, Q) (either may be
  // undefined), in the conv op itself (engine::conv2d's epilogue). Throws engine::Error on shape mismatch.
  Tensor forward(const Tensor& x, const Tensor& sample_bias, const Tensor& residual) const;
  // forward(concat({x0, x1}, 1)) without the concatenation, x0 (B, C0, H, W), x1 (B, in - C0, H, W): a
  // conv of x0 with the weight's first C0 input channels (and the bias), then one of x1 with the rest
  // that continues it through its residual epilogue. Each output is one sum in the concatenation's order
  // (bias, x0's channels, x1's), so on the CPU a 1x1 conv (the UNet's shortcuts) gives the bits of the
  // concatenated one, whose copy it saves; other kernels may pick another algorithm per part (e.g.
  // Winograd), a different rounding. An odd C0 concatenates (the bf16 GEMM sums channels in pairs).
  // Throws engine::Error when the parts differ in B, H or W or their channels do not add up to in.
  Tensor forward_cat(const Tensor& x0, const Tensor& x1) const;
  Tensor weight, bias;  // (out, in, k, k), (out)
  int64_t stride, padding;
};

class Linear : public Module {
 public:
  Linear(Init& init, int64_t in, int64_t out, bool bias = true);
  Tensor forward(const Tensor& x) const;  // (..., in) -> (..., out)
  Tensor weight, bias;                    // (out, in), (out)
};

class GroupNorm : public Module {
 public:
  GroupNorm(Init& init, int64_t groups, int64_t channels, double eps, bool affine = true);
  Tensor forward(const Tensor& x) const;  // (B, C, *)
  // silu(forward(x)) as one op (engine::group_norm_silu: fused on the CPU, the unfused pair on CUDA).
  Tensor forward_silu(const Tensor& x) const;  // (B, C, *)
  // forward_silu(concat({x0, x1}, 1)) without the concatenation (engine::group_norm_silu_cat): x0 (B, C0, *),
  // x1 (B, C - C0, *) -> (B, C, *).
  Tensor forward_silu_cat(const Tensor& x0, const Tensor& x1) const;
  Tensor weight, bias;  // (C) each; undefined without affine
  int64_t groups;
  double eps;
};

class Embedding : public Module {
 public:
  Embedding(Init& init, int64_t num, int64_t dim);
  Tensor forward(const Tensor& idx) const;  // int64 (*) -> (*, dim)
  Tensor weight;                            // (num, dim), N(0, 1)
};

// diffusers `Attention` as UNet2DModel's attention blocks build it (_from_deprecated_attn_block):
// GroupNorm -> q/k/v projections -> per-head softmax(q k^T / sqrt(dim_head)) v -> to_out.0 ->
// + residual -> / rescale_output_factor. heads * dim_head may differ from the channel count.
class Attention : public Module {
 public:
  Attention(Init& init, int64_t channels, int64_t heads, int64_t dim_head, int64_t norm_groups, double eps,
            double rescale_output_factor = 1.0);
  Tensor forward(const Tensor& x) const;  // (B, C, H, W) -> (B, C, H, W)
  int64_t channels, heads, dim_head;
  double rescale_output_factor;
  std::shared_ptr<GroupNorm> group_norm;
  std::shared_ptr<Linear> to_q, to_k, to_v;
  std::shared_ptr<ModuleList<Linear>> to_out;  // [Linear(inner, C)] (+ Dropout(0) in diffusers: no params)
};

// diffusers ResnetBlock2D with time_embedding_norm="default" (temb added after conv1).
class ResnetBlock2D : public Module {
 public:
  ResnetBlock2D(Init& init, int64_t in, int64_t out, int64_t temb_channels, int64_t groups, double eps,
                double output_scale_factor = 1.0);
  Tensor forward(const Tensor& x, const Tensor& temb) const;  // (B, in, H, W), (B, T) -> (B, out, H, W)
  // forward(concat({x0, x1}, 1), temb) (an up block's hidden state and skip connection), x0 (B, C0, H, W),
  // x1 (B, in - C0, H, W). On the CPU, with a shortcut conv, without the concatenation: norm1 + SiLU and
  // the shortcut read x0 and x1 in place (GroupNorm::forward_silu_cat, Conv2d::forward_cat), bitwise the
  // concatenated block's values and gradients, and the backward keeps no concatenated copy. CUDA (no
  // two-part kernels yet), blocks without a shortcut, and x0 and x1 that are one tensor (their gradients
  // would be summed in another order) concatenate. Bitwise gradients also need x1's other consumers, if
  // any, to receive their gradient after this block (as the UNet's down path does: h is computed from it).
  Tensor forward(const Tensor& x0, const Tensor& x1, const Tensor& temb) const;
  int64_t in_channels, out_channels;
  double output_scale_factor;
  std::shared_ptr<GroupNorm> norm1;
  std::shared_ptr<Conv2d> conv1;
  std::shared_ptr<Linear> time_emb_proj;
  std::shared_ptr<GroupNorm> norm2;
  std::shared_ptr<Conv2d> conv2;
  std::shared_ptr<Conv2d> conv_shortcut;  // 1x1 with bias, only when in != out
};

// 3x3 stride-2 conv. padding 0 reproduces diffusers' asymmetric (0, 1, 0, 1) zero pad.
class Downsample2D : public Module {
 public:
  Downsample2D(Init& init, int64_t channels, int64_t padding);
  Tensor forward(const Tensor& x) const;  // (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)) for padding 1
  int64_t padding;
  std::shared_ptr<Conv2d> conv;
};

class Upsample2D : public Module {
 public:
  Upsample2D(Init& init, int64_t channels);
  Tensor forward(const Tensor& x) const;  // (B, C, H, W) -> (B, C, 2H, 2W)
  std::shared_ptr<Conv2d> conv;
};

// diffusers get_timestep_embedding (scale 1, max_period 10000), computed in float32 exactly like
// torch does, then cast to `dtype` on `device`; for dtype F64 computed in float64 throughout (same order),
// which diffusers does not do (tests/reference/make_fixtures.py patches it to match). No parameters.
class Timesteps {
 public:
  Timesteps(int64_t dim, bool flip_sin_to_cos, double freq_shift)
      : dim(dim), flip_sin_to_cos(flip_sin_to_cos), freq_shift(freq_shift) {}
  // t (B,) (or 0-d / (1,), broadcast to `batch`) -> (B, dim)
  Tensor forward(const Tensor& t, int64_t batch, DType dtype, Device device) const;
  int64_t dim;
  bool flip_sin_to_cos;
  double freq_shift;
};

class TimestepEmbedding : public Module {
 public:
  TimestepEmbedding(Init& init, int64_t in, int64_t dim);
  Tensor forward(const Tensor& x) const;  // (B, in) -> (B, dim): linear_2(silu(linear_1(x)))
  std::shared_ptr<Linear> linear_1, linear_2;
};

}  // namespace engine::nn
