// UNet2D: diffusers UNet2DModel (positional time embedding, DownBlock2D/AttnDownBlock2D, UNetMidBlock2D,
// UpBlock2D/AttnUpBlock2D) built from a UNet2DConfig for any number of blocks, channels and layers.
// Parameter names and order equal diffusers' state-dict keys (unets/unet_2d.py, unet_2d_blocks.py).
#pragma once
#include <memory>
#include <vector>

#include "models/unet2d_config.h"
#include "nn/layers.h"
#include "nn/module.h"

namespace engine::models {

// DownBlock2D (attentions empty) or AttnDownBlock2D.
class DownBlock : public nn::Module {
 public:
  DownBlock(nn::Init& init, const UNet2DConfig& c, int64_t in, int64_t out, int64_t temb, bool attn,
            bool add_downsample);
  // Appends this block's skip outputs (after each layer, and after the downsampler) to `skips`.
  Tensor forward(Tensor h, const Tensor& temb,
                 std::vector<Tensor>& skips) const;           // (B, in, H, W) -> (B, out, H', W')
  std::shared_ptr<nn::ModuleList<nn::Attention>> attentions;  // registered only for AttnDownBlock2D
  std::shared_ptr<nn::ModuleList<nn::ResnetBlock2D>> resnets;
  std::shared_ptr<nn::ModuleList<nn::Downsample2D>> downsamplers;  // only when add_downsample
};

// UNetMidBlock2D: resnet, then (attention, resnet) pairs; attention only with add_attention.
class MidBlock : public nn::Module {
 public:
  MidBlock(nn::Init& init, const UNet2DConfig& c, int64_t channels, int64_t temb);
  Tensor forward(Tensor h, const Tensor& temb) const;  // (B, C, H, W) -> same
  std::shared_ptr<nn::ModuleList<nn::Attention>> attentions;
  std::shared_ptr<nn::ModuleList<nn::ResnetBlock2D>> resnets;
};

// UpBlock2D or AttnUpBlock2D: layers_per_block + 1 resnets on cat([h, skip]).
class UpBlock : public nn::Module {
 public:
  UpBlock(nn::Init& init, const UNet2DConfig& c, int64_t in, int64_t prev_out, int64_t out, int64_t temb,
          bool attn, bool add_upsample);
  // Pops one skip per resnet from the back of `skips`.
  Tensor forward(Tensor h, const Tensor& temb, std::vector<Tensor>& skips) const;
  std::shared_ptr<nn::ModuleList<nn::Attention>> attentions;
  std::shared_ptr<nn::ModuleList<nn::ResnetBlock2D>> resnets;
  std::shared_ptr<nn::ModuleList<nn::Upsample2D>> upsamplers;
};

class UNet2D : public nn::Module {
 public:
  UNet2D(nn::Init& init, const UNet2DConfig& config);
  UNet2D(const UNet2DConfig& config, uint64_t seed, Device device = Device::cpu(), DType dtype = DType::F32);
  // sample (B, in, H, W), timesteps (B,) (or 0-d / (1,)) float -> (B, out, H, W).
  // H and W must be divisible by 2^(number of blocks - 1).
  Tensor forward(const Tensor& sample, const Tensor& timesteps) const;
  const UNet2DConfig& config() const { return config_; }

  std::shared_ptr<nn::Conv2d> conv_in;
  nn::Timesteps time_proj;
  std::shared_ptr<nn::TimestepEmbedding> time_embedding;
  std::shared_ptr<nn::ModuleList<DownBlock>> down_blocks;
  std::shared_ptr<nn::ModuleList<UpBlock>> up_blocks;
  std::shared_ptr<MidBlock> mid_block;  // null when mid_block_type is null
  std::shared_ptr<nn::GroupNorm> conv_norm_out;
  std::shared_ptr<nn::Conv2d> conv_out;

 private:
  void build(nn::Init& init);
  UNet2DConfig config_;
};

}  // namespace engine::models
