// Layer implementations (see layers.h). Shapes follow PyTorch/diffusers conventions.
#include "nn/layers.h"

#include <cmath>

#include "core/autograd.h"

namespace engine::nn {

// ---------------------------------------------------------------- Conv2d / Linear / norms
Conv2d::Conv2d(Init& init, int64_t in, int64_t out, int64_t kernel, int64_t stride_, int64_t padding_,
               bool bias_)
    : stride(stride_), padding(padding_) {
  ENGINE_CHECK(in > 0 && out > 0 && kernel > 0 && stride_ > 0 && padding_ >= 0, "Conv2d",
               "invalid arguments in=", in, " out=", out, " kernel=", kernel, " stride=", stride_,
               " padding=", padding_);
  const double bound = 1.0 / std::sqrt(static_cast<double>(in * kernel * kernel));
  weight = register_parameter("weight", init.uniform({out, in, kernel, kernel}, bound));
  if (bias_) bias = register_parameter("bias", init.uniform({out}, bound));
}

Tensor Conv2d::forward(const Tensor& x) const {
  return conv2d(x, weight, bias, Conv2dOptions::same(stride, padding));
}

Tensor Conv2d::forward(const Tensor& x, const Tensor& sample_bias, const Tensor& residual) const {
  return conv2d(x, weight, bias, Conv2dOptions::same(stride, padding), sample_bias, residual);
}

Tensor Conv2d::forward_cat(const Tensor& x0, const Tensor& x1) const {
  const int64_t in = weight.size(1);
  ENGINE_CHECK(x0.defined() && x1.defined(), "Conv2d", "forward_cat: undefined input");
  ENGINE_CHECK(x0.dim() == 4 && x1.dim() == 4 && x0.size(0) == x1.size(0) && x0.size(2) == x1.size(2) &&
                   x0.size(3) == x1.size(3),
               "Conv2d", "forward_cat: parts ", shape_str(x0.shape()), " and ", shape_str(x1.shape()),
               " must be (B, C0, H, W) and (B, C1, H, W)");
  ENGINE_CHECK(x0.size(1) + x1.size(1) == in, "Conv2d", "forward_cat: parts ", shape_str(x0.shape()), " and ",
               shape_str(x1.shape()), " do not have ", in, " input channels between them");
  const int64_t c0 = x0.size(1);
  // The bf16 GEMM (--precision bf16) sums the input channels in pairs: a split after an odd channel would
  // pair them differently from the concatenation.
  if (c0 % 2 != 0) return forward(concat({x0, x1}, 1));
  const Conv2dOptions opt = Conv2dOptions::same(stride, padding);
  Tensor y0 = conv2d(x0, weight.narrow(1, 0, c0), bias, opt);                     // bias + x0's channels
  return conv2d(x1, weight.narrow(1, c0, in - c0), Tensor(), opt, Tensor(), y0);  // ... + x1's channels
}

Linear::Linear(Init& init, int64_t in, int64_t out, bool bias_) {
  ENGINE_CHECK(in > 0 && out > 0, "Linear", "invalid sizes in=", in, " out=", out);
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  weight = register_parameter("weight", init.uniform({out, in}, bound));
  if (bias_) bias = register_parameter("bias", init.uniform({out}, bound));
}

Tensor Linear::forward(const Tensor& x) const { return linear(x, weight, bias); }

GroupNorm::GroupNorm(Init& init, int64_t groups_, int64_t channels, double eps_, bool affine)
    : groups(groups_), eps(eps_) {
  ENGINE_CHECK(groups_ > 0 && channels > 0 && channels % groups_ == 0, "GroupNorm", "channels ", channels,
               " not divisible by groups ", groups_);
  if (affine) {
    weight = register_parameter("weight", init.constant({channels}, 1.0));
    bias = register_parameter("bias", init.constant({channels}, 0.0));
  }
}

Tensor GroupNorm::forward(const Tensor& x) const { return group_norm(x, groups, weight, bias, eps); }

Tensor GroupNorm::forward_silu(const Tensor& x) const {
  return group_norm_silu(x, groups, weight, bias, eps);
}

Tensor GroupNorm::forward_silu_cat(const Tensor& x0, const Tensor& x1) const {
  return group_norm_silu_cat(x0, x1, groups, weight, bias, eps);
}

Embedding::Embedding(Init& init, int64_t num, int64_t dim) {
  ENGINE_CHECK(num > 0 && dim > 0, "Embedding", "invalid sizes num=", num, " dim=", dim);
  weight = register_parameter("weight", init.normal({num, dim}));
}

Tensor Embedding::forward(const Tensor& idx) const { return embedding(idx, weight); }

// ---------------------------------------------------------------- Attention
Attention::Attention(Init& init, int64_t channels_, int64_t heads_, int64_t dim_head_, int64_t norm_groups,
                     double eps, double rescale)
    : channels(channels_), heads(heads_), dim_head(dim_head_), rescale_output_factor(rescale) {
  ENGINE_CHECK(heads_ > 0 && dim_head_ > 0, "Attention", "invalid heads=", heads_, " dim_head=", dim_head_,
               " for ", channels_, " channels");
  const int64_t inner = heads * dim_head;
  group_norm = register_module("group_norm", std::make_shared<GroupNorm>(init, norm_groups, channels, eps));
  to_q = register_module("to_q", std::make_shared<Linear>(init, channels, inner));
  to_k = register_module("to_k", std::make_shared<Linear>(init, channels, inner));
  to_v = register_module("to_v", std::make_shared<Linear>(init, channels, inner));
  to_out = register_module("to_out", std::make_shared<ModuleList<Linear>>());
  to_out->push_back(std::make_shared<Linear>(init, inner, channels));
}

namespace {
// lin (out, in) applied along the channels of t (B, in, H, W) -> (B, out, H, W): a 1x1 conv with lin's
// weight viewed as (out, in, 1, 1) (no copy; gradients flow to lin's parameters through the view), plus
// residual (B, out, H, W) when given, in the conv's output pass.
Tensor channel_linear(const Linear& lin, const Tensor& t, const Tensor& residual = Tensor()) {
  return conv2d(t, lin.weight.reshape({lin.weight.size(0), lin.weight.size(1), 1, 1}), lin.bias,
                Conv2dOptions{}, Tensor(), residual);
}
}  // namespace

Tensor Attention::forward(const Tensor& x) const {
  ENGINE_CHECK(x.dim() == 4 && x.size(1) == channels, "Attention", "expected (B, ", channels, ", H, W), got ",
               shape_str(x.shape()));
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3), L = H * W, inner = heads * dim_head;
  const double scale = 1.0 / std::sqrt(static_cast<double>(dim_head));
  Tensor h = group_norm->forward(x.reshape({B, channels, L}));  // (B, C, L)
  Tensor o;
  if (!x.device().is_cuda()) {
    // Channel-major, no transposes: q = W_q h + b_q per image (a 1x1 conv) is (B, heads*D, L) = (B, heads,
    // D, L); its (B, heads, L, D) view (strides (.., D*L, 1, L)) is read in place by the CPU attention
    // kernel, which writes o as (B, heads, D, L) memory; to_out is another 1x1 conv straight to NCHW.
    const Tensor h4 = h.reshape({B, channels, H, W});
    auto heads_of = [&](const Linear& lin) {  // (B, heads*D, H, W) -> (B, heads, L, D) view
      return channel_linear(lin, h4).reshape({B, heads, dim_head, L}).transpose(2, 3);
    };
    o = scaled_dot_product_attention(heads_of(*to_q), heads_of(*to_k), heads_of(*to_v), scale);
    o = o.transpose(2, 3).reshape({B, inner, H, W});  // a view of the kernel's (B, heads, D, L) output
    o = channel_linear((*to_out)[0], o, x);           // (B, C, H, W): to_out(o) + x, one pass
  } else {
    // CUDA: token-major (the layout its attention kernel reads): (B, L, C) once for the three projections.
    h = h.transpose(1, 2).contiguous();
    auto split = [&](const Tensor& t) {  // (B, L, heads*D) -> (B, heads, L, D)
      return t.reshape({B, L, heads, dim_head}).permute({0, 2, 1, 3});
    };
    o = scaled_dot_product_attention(split(to_q->forward(h)), split(to_k->forward(h)),
                                     split(to_v->forward(h)), scale);
    o = o.permute({0, 2, 1, 3}).reshape({B, L, inner});      // (B, L, inner)
    o = (*to_out)[0].forward(o);                             // (B, L, C)
    o = o.transpose(1, 2).reshape({B, channels, H, W}) + x;  // (B, C, H, W)
  }
  // Invariant: divide, do not multiply by the reciprocal. diffusers' AttnProcessor / AttnProcessor2_0 end
  // with `hidden_states = hidden_states / attn.rescale_output_factor` (after the residual add), and x / s
  // rounds differently from x * (1 / s) for most s (e.g. the mid block's mid_block_scale_factor), so only
  // the division matches diffusers bitwise (tests/reference fixtures). Skipped at 1, where it is exact.
  return rescale_output_factor == 1.0 ? o
                                      : div(o, Tensor::scalar(rescale_output_factor, o.dtype(), o.device()));
}

// ---------------------------------------------------------------- ResnetBlock2D
ResnetBlock2D::ResnetBlock2D(Init& init, int64_t in, int64_t out, int64_t temb_channels, int64_t groups,
                             double eps, double osf)
    : in_channels(in), out_channels(out), output_scale_factor(osf) {
  norm1 = register_module("norm1", std::make_shared<GroupNorm>(init, groups, in, eps));
  conv1 = register_module("conv1", std::make_shared<Conv2d>(init, in, out, 3, 1, 1));
  time_emb_proj = register_module("time_emb_proj", std::make_shared<Linear>(init, temb_channels, out));
  norm2 = register_module("norm2", std::make_shared<GroupNorm>(init, groups, out, eps));
  conv2 = register_module("conv2", std::make_shared<Conv2d>(init, out, out, 3, 1, 1));
  if (in != out)
    conv_shortcut = register_module("conv_shortcut", std::make_shared<Conv2d>(init, in, out, 1, 1, 0));
}

namespace {
// ResnetBlock2D's forward, its input read by its two consumers: norm1_silu() = silu(norm1(x)) and
// shortcut() = conv_shortcut(x), or x itself (called in this order, after the time projection).
template <typename Norm1Silu, typename Shortcut>
Tensor resnet_forward(const ResnetBlock2D& b, Norm1Silu norm1_silu, Shortcut shortcut, const Tensor& temb) {
  // diffusers: h = conv1(silu(norm1(x))) + time_emb_proj(silu(temb))[:, :, None, None]; the time term is
  // conv1's per-sample bias here, added in the conv op (conv2d's epilogue) instead of a separate add.
  Tensor t = b.time_emb_proj->forward(engine::silu(temb));  // (B, out)
  Tensor h = b.conv1->forward(norm1_silu(), t, Tensor());   // (B, out, H, W)
  h = b.norm2->forward_silu(h);  // dropout (p = 0 in diffusers' default and our recipe) is the identity
  // diffusers: (shortcut(x) + conv2(h)) / output_scale_factor; the residual is conv2's epilogue.
  Tensor o = b.conv2->forward(h, Tensor(), shortcut());
  const double osf = b.output_scale_factor;
  return osf == 1.0 ? o : div(o, Tensor::scalar(osf, o.dtype(), o.device()));
}
}  // namespace

Tensor ResnetBlock2D::forward(const Tensor& x, const Tensor& temb) const {
  return resnet_forward(
      *this, [&] { return norm1->forward_silu(x); },
      [&] { return conv_shortcut ? conv_shortcut->forward(x) : x; }, temb);
}

namespace {
// Whether a and b send their gradients to the same place (the same tensor, e.g. a UNet without a mid block,
// whose first up resnet gets the down path's output as both h and skip). The concatenation sums its four
// gradient pieces two and two; the concat-free block would sum them one by one, another rounding.
bool same_gradient_target(const Tensor& a, const Tensor& b) {
  if (!a.requires_grad() || !b.requires_grad()) return false;
  return a.grad_fn() ? a.grad_fn() == b.grad_fn() : a.impl() == b.impl();
}
}  // namespace

Tensor ResnetBlock2D::forward(const Tensor& x0, const Tensor& x1, const Tensor& temb) const {
  if (x0.device().is_cuda() || !conv_shortcut || same_gradient_target(x0, x1))
    return forward(concat({x0, x1}, 1), temb);
  // x = cat([x0, x1], 1) read in place by its two consumers.
  return resnet_forward(
      *this, [&] { return norm1->forward_silu_cat(x0, x1); },
      [&] { return conv_shortcut->forward_cat(x0, x1); }, temb);
}

// ---------------------------------------------------------------- Down/Upsample2D
Downsample2D::Downsample2D(Init& init, int64_t channels, int64_t padding_) : padding(padding_) {
  conv = register_module("conv", std::make_shared<Conv2d>(init, channels, channels, 3, 2, padding_));
}

Tensor Downsample2D::forward(const Tensor& x) const {
  if (padding != 0) return conv->forward(x);
  // diffusers: F.pad(x, (0, 1, 0, 1)) before a padding-0 conv.
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor right = Tensor::zeros({B, C, H, 1}, x.dtype(), x.device());
  Tensor xp = concat({x, right}, 3);  // (B, C, H, W+1)
  Tensor bottom = Tensor::zeros({B, C, 1, W + 1}, x.dtype(), x.device());
  return conv->forward(concat({xp, bottom}, 2));  // conv on (B, C, H+1, W+1)
}

Upsample2D::Upsample2D(Init& init, int64_t channels) {
  conv = register_module("conv", std::make_shared<Conv2d>(init, channels, channels, 3, 1, 1));
}

Tensor Upsample2D::forward(const Tensor& x) const { return conv->forward(upsample_nearest2x(x)); }

// ---------------------------------------------------------------- time embedding
namespace {
// get_timestep_embedding in arithmetic type R, in torch's order:
// exponent = (-ln(1e4) * arange) / (half - shift); f = exp(exponent); arg = t * f; [sin | cos] (or flipped).
template <typename R>
std::vector<R> sinusoid(const std::vector<double>& tv, int64_t batch, int64_t dim, bool flip, double shift) {
  const int64_t half = dim / 2;
  std::vector<R> freq(half);
  const R neg_log = static_cast<R>(-std::log(10000.0));
  const R denom = static_cast<R>(static_cast<double>(half) - shift);
  for (int64_t i = 0; i < half; ++i) freq[i] = std::exp(neg_log * static_cast<R>(i) / denom);
  std::vector<R> emb(static_cast<size_t>(batch * dim), R(0));  // odd dim: last column stays 0
  for (int64_t b = 0; b < batch; ++b) {
    const R tb = static_cast<R>(tv[tv.size() == 1 ? 0 : b]);
    R* row = emb.data() + b * dim;
    for (int64_t i = 0; i < half; ++i) {
      const R arg = tb * freq[i];
      const R s = std::sin(arg), c = std::cos(arg);
      row[i] = flip ? c : s;
      row[half + i] = flip ? s : c;
    }
  }
  return emb;
}
}  // namespace

Tensor Timesteps::forward(const Tensor& t, int64_t batch, DType dtype, Device device) const {
  ENGINE_CHECK(t.defined() && (t.dim() == 0 || (t.dim() == 1 && (t.size(0) == batch || t.size(0) == 1))),
               "Timesteps", "expected timesteps of shape (", batch, ",), (1,) or (), got ",
               t.defined() ? shape_str(t.shape()) : std::string("undefined"));
  std::vector<double> tv = t.detach().to(Device::cpu()).to(DType::F64).to_vector<double>();
  const int64_t half = dim / 2;
  ENGINE_CHECK(static_cast<double>(half) != freq_shift, "Timesteps", "half dim ", half, " equals freq_shift");
  // A float64 model computes the sinusoid in float64 (an exact float64 reference needs it); any other
  // dtype uses float32 exactly like diffusers, which computes it in float32 whatever the model's dtype.
  if (dtype == DType::F64)
    return Tensor::from_vector(sinusoid<double>(tv, batch, dim, flip_sin_to_cos, freq_shift), {batch, dim})
        .to(device);
  Tensor e = Tensor::from_vector(sinusoid<float>(tv, batch, dim, flip_sin_to_cos, freq_shift), {batch, dim});
  return e.to(dtype).to(device);
}

TimestepEmbedding::TimestepEmbedding(Init& init, int64_t in, int64_t dim) {
  linear_1 = register_module("linear_1", std::make_shared<Linear>(init, in, dim));
  linear_2 = register_module("linear_2", std::make_shared<Linear>(init, dim, dim));
}

Tensor TimestepEmbedding::forward(const Tensor& x) const {
  return linear_2->forward(engine::silu(linear_1->forward(x)));
}

}  // namespace engine::nn
