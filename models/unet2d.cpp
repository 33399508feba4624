// UNet2D construction and forward pass, following diffusers' UNet2DModel (see
// /work/shared/reference/unet2d_spec.md §2): registration order reproduces the state-dict key order
// (attentions before resnets; up_blocks before mid_block).
#include "models/unet2d.h"

#include <algorithm>

namespace engine::models {

using nn::Attention;
using nn::ModuleList;
using nn::ResnetBlock2D;

namespace {
std::shared_ptr<Attention> make_attention(nn::Init& init, const UNet2DConfig& c, int64_t channels,
                                          double rescale) {
  const int64_t dim_head = c.head_dim(channels);
  return std::make_shared<Attention>(init, channels, channels / dim_head, dim_head, c.norm_num_groups,
                                     c.norm_eps, rescale);
}
}  // namespace

DownBlock::DownBlock(nn::Init& init, const UNet2DConfig& c, int64_t in, int64_t out, int64_t temb, bool attn,
                     bool add_downsample) {
  if (attn) attentions = register_module("attentions", std::make_shared<ModuleList<Attention>>());
  resnets = register_module("resnets", std::make_shared<ModuleList<ResnetBlock2D>>());
  for (int64_t i = 0; i < c.layers_per_block; ++i) {
    resnets->push_back(
        std::make_shared<ResnetBlock2D>(init, i == 0 ? in : out, out, temb, c.norm_num_groups, c.norm_eps));
    if (attn) attentions->push_back(make_attention(init, c, out, 1.0));
  }
  if (add_downsample) {
    downsamplers = register_module("downsamplers", std::make_shared<ModuleList<nn::Downsample2D>>());
    downsamplers->push_back(std::make_shared<nn::Downsample2D>(init, out, c.downsample_padding));
  }
}

Tensor DownBlock::forward(Tensor h, const Tensor& temb, std::vector<Tensor>& skips) const {
  for (size_t i = 0; i < resnets->size(); ++i) {
    h = (*resnets)[i].forward(h, temb);
    if (attentions) h = (*attentions)[i].forward(h);
    skips.push_back(h);
  }
  if (downsamplers) {
    h = (*downsamplers)[0].forward(h);
    skips.push_back(h);
  }
  return h;
}

MidBlock::MidBlock(nn::Init& init, const UNet2DConfig& c, int64_t ch, int64_t temb) {
  const double scale = c.mid_block_scale_factor;
  attentions = register_module("attentions", std::make_shared<ModuleList<Attention>>());
  resnets = register_module("resnets", std::make_shared<ModuleList<ResnetBlock2D>>());
  // diffusers' UNetMidBlock2D(num_layers=1): resnet, then [attention], resnet.
  resnets->push_back(
      std::make_shared<ResnetBlock2D>(init, ch, ch, temb, c.norm_num_groups, c.norm_eps, scale));
  if (c.add_attention) attentions->push_back(make_attention(init, c, ch, scale));
  resnets->push_back(
      std::make_shared<ResnetBlock2D>(init, ch, ch, temb, c.norm_num_groups, c.norm_eps, scale));
}

Tensor MidBlock::forward(Tensor h, const Tensor& temb) const {
  h = (*resnets)[0].forward(h, temb);
  for (size_t i = 1; i < resnets->size(); ++i) {
    if (!attentions->empty()) h = (*attentions)[i - 1].forward(h);
    h = (*resnets)[i].forward(h, temb);
  }
  return h;
}

UpBlock::UpBlock(nn::Init& init, const UNet2DConfig& c, int64_t in, int64_t prev_out, int64_t out,
                 int64_t temb, bool attn, bool add_upsample) {
  if (attn) attentions = register_module("attentions", std::make_shared<ModuleList<Attention>>());
  resnets = register_module("resnets", std::make_shared<ModuleList<ResnetBlock2D>>());
  const int64_t num_layers = c.layers_per_block + 1;
  for (int64_t i = 0; i < num_layers; ++i) {
    const int64_t res_skip = i == num_layers - 1 ? in : out;
    const int64_t resnet_in = i == 0 ? prev_out : out;
    resnets->push_back(std::make_shared<ResnetBlock2D>(init, resnet_in + res_skip, out, temb,
                                                       c.norm_num_groups, c.norm_eps));
    if (attn) attentions->push_back(make_attention(init, c, out, 1.0));
  }
  if (add_upsample) {
    upsamplers = register_module("upsamplers", std::make_shared<ModuleList<nn::Upsample2D>>());
    upsamplers->push_back(std::make_shared<nn::Upsample2D>(init, out));
  }
}

Tensor UpBlock::forward(Tensor h, const Tensor& temb, std::vector<Tensor>& skips) const {
  for (size_t i = 0; i < resnets->size(); ++i) {
    ENGINE_CHECK(!skips.empty(), "UNet2D", "skip stack exhausted");
    Tensor skip = std::move(skips.back());
    skips.pop_back();
    ENGINE_CHECK(skip.size(2) == h.size(2) && skip.size(3) == h.size(3), "UNet2D", "skip connection ",
                 shape_str(skip.shape()), " does not match the upsampled path ", shape_str(h.shape()));
    h = (*resnets)[i].forward(h, skip, temb);  // on cat([h, skip], 1): hidden first, then skip
    if (attentions) h = (*attentions)[i].forward(h);
  }
  if (upsamplers) h = (*upsamplers)[0].forward(h);
  return h;
}

UNet2D::UNet2D(nn::Init& init, const UNet2DConfig& config)
    : time_proj(config.block_out_channels.at(0), config.flip_sin_to_cos, config.freq_shift), config_(config) {
  build(init);
}

UNet2D::UNet2D(const UNet2DConfig& config, uint64_t seed, Device device, DType dtype)
    : time_proj(config.block_out_channels.at(0), config.flip_sin_to_cos, config.freq_shift), config_(config) {
  nn::Init init(seed, dtype, device);
  build(init);
}

void UNet2D::build(nn::Init& init) {
  const UNet2DConfig& c = config_;
  c.validate();
  const auto& ch = c.block_out_channels;
  const int64_t n = static_cast<int64_t>(ch.size());
  const int64_t temb = c.temb_dim();
  conv_in = register_module("conv_in", std::make_shared<nn::Conv2d>(init, c.in_channels, ch[0], 3, 1, 1));
  time_embedding =
      register_module("time_embedding", std::make_shared<nn::TimestepEmbedding>(init, ch[0], temb));
  down_blocks = register_module("down_blocks", std::make_shared<ModuleList<DownBlock>>());
  up_blocks = register_module("up_blocks", std::make_shared<ModuleList<UpBlock>>());

  int64_t out = ch[0];
  for (int64_t i = 0; i < n; ++i) {
    const int64_t in = out;
    out = ch[i];
    down_blocks->push_back(std::make_shared<DownBlock>(
        init, c, in, out, temb, c.down_block_types[i] == "AttnDownBlock2D", i != n - 1));
  }
  if (c.mid_block)
    mid_block = register_module("mid_block", std::make_shared<MidBlock>(init, c, ch[n - 1], temb));

  std::vector<int64_t> rev(ch.rbegin(), ch.rend());
  out = rev[0];
  for (int64_t i = 0; i < n; ++i) {
    const int64_t prev = out;
    out = rev[i];
    const int64_t in = rev[std::min(i + 1, n - 1)];
    up_blocks->push_back(std::make_shared<UpBlock>(init, c, in, prev, out, temb,
                                                   c.up_block_types[i] == "AttnUpBlock2D", i != n - 1));
  }
  conv_norm_out = register_module(
      "conv_norm_out", std::make_shared<nn::GroupNorm>(init, c.norm_num_groups, ch[0], c.norm_eps));
  conv_out = register_module("conv_out", std::make_shared<nn::Conv2d>(init, ch[0], c.out_channels, 3, 1, 1));
}

Tensor UNet2D::forward(const Tensor& sample, const Tensor& timesteps) const {
  const UNet2DConfig& c = config_;
  ENGINE_CHECK(sample.defined() && sample.dim() == 4 && sample.size(1) == c.in_channels, "UNet2D",
               "expected sample (B, ", c.in_channels, ", H, W), got ",
               sample.defined() ? shape_str(sample.shape()) : std::string("undefined"));
  const int64_t B = sample.size(0), H = sample.size(2), W = sample.size(3);
  const int64_t factor = int64_t{1} << (c.block_out_channels.size() - 1);
  ENGINE_CHECK(H % factor == 0 && W % factor == 0 && H > 0 && W > 0, "UNet2D", "spatial size ", H, "x", W,
               " is not divisible by ", factor, " (2^(", c.block_out_channels.size(),
               " blocks - 1)); the skip connections would not line up");

  Tensor t_emb = time_proj.forward(timesteps, B, sample.dtype(), sample.device());  // (B, ch0)
  Tensor emb = time_embedding->forward(t_emb);                                      // (B, temb)

  Tensor h = conv_in->forward(sample);  // (B, ch0, H, W)
  std::vector<Tensor> skips{h};
  for (const auto& blk : *down_blocks) h = blk->forward(h, emb, skips);
  if (mid_block) h = mid_block->forward(h, emb);
  for (const auto& blk : *up_blocks) h = blk->forward(h, emb, skips);
  h = conv_norm_out->forward_silu(h);  // conv_norm_out + conv_act (SiLU), fused
  return conv_out->forward(h);         // (B, out, H, W)
}

}  // namespace engine::models
