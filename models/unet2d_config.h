// UNet2DModel configuration with diffusers' keys and defaults, JSON round trip and validation, plus the
// class-conditional wrapper's config (class embedding concatenated as extra input channels).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace engine::models {

struct UNet2DConfig {
  int64_t sample_size = 0;  // metadata only; 0 = null
  int64_t in_channels = 3, out_channels = 3;
  std::vector<int64_t> block_out_channels = {224, 448, 672, 896};
  int64_t layers_per_block = 2;
  std::vector<std::string> down_block_types = {"DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D",
                                               "AttnDownBlock2D"};
  std::vector<std::string> up_block_types = {"AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"};
  int64_t attention_head_dim = 8;  // 0 = null in JSON: dim_head = the block's channels (one head)
  int64_t norm_num_groups = 32;
  double norm_eps = 1e-5;
  bool flip_sin_to_cos = true;
  double freq_shift = 0;
  int64_t downsample_padding = 1;
  double mid_block_scale_factor = 1;
  bool add_attention = true;
  int64_t time_embedding_dim = 0;  // 0 = null: block_out_channels[0] * 4
  bool mid_block = true;           // mid_block_type "UNetMidBlock2D" (true) or null (false)

  // Throws engine::Error naming the offending key.
  static UNet2DConfig from_json(const nlohmann::json& j);
  nlohmann::json to_json() const;
  void validate() const;
  // The seed model's UNet (configs/seed.json without the wrapper keys).
  static UNet2DConfig seed();
  int64_t temb_dim() const { return time_embedding_dim > 0 ? time_embedding_dim : block_out_channels[0] * 4; }
  int64_t head_dim(int64_t channels) const { return attention_head_dim > 0 ? attention_head_dim : channels; }
};

// The text of configs/seed.json as embedded at build time (the one source of the seed config).
const char* seed_config_json();

struct ConditionalConfig {
  UNet2DConfig unet = UNet2DConfig::seed();  // the seed model unless set
  int64_t num_classes = 10, class_emb_size = 1;

  int64_t image_channels() const { return unet.in_channels - class_emb_size; }
  // The UNet config plus "num_classes" and "class_emb_size".
  static ConditionalConfig from_json(const nlohmann::json& j);
  nlohmann::json to_json() const;
  void validate() const;
  // The blog's MNIST model, parsed from configs/seed.json (embedded at build time): 32/64/64 channels,
  // 2 input channels (image + class embedding), 1 output channel, 10 classes.
  static ConditionalConfig seed();
};

}  // namespace engine::models
