// ConditionalUNet: the blog's class-conditional wrapper around UNet2D. The class embedding (optionally
// zeroed per sample for classifier-free guidance) is broadcast over the image and concatenated as extra
// input channels. Parameters: class_emb.weight, then model.<diffusers key>.
#pragma once
#include <memory>

#include "models/unet2d.h"
#include "nn/layers.h"

namespace engine::models {

class ConditionalUNet : public nn::Module {
 public:
  ConditionalUNet(const ConditionalConfig& config, uint64_t seed, Device device = Device::cpu(),
                  DType dtype = DType::F32);
  // x (B, C, H, W), timesteps (B,) float, labels (B,) int64, drop (B,) uint8 (1 = class embedding zeroed)
  // or undefined (none dropped) -> (B, C, H, W).
  Tensor forward(const Tensor& x, const Tensor& timesteps, const Tensor& labels,
                 const Tensor& drop = Tensor()) const;
  const ConditionalConfig& config() const { return config_; }

  std::shared_ptr<nn::Embedding> class_emb;
  std::shared_ptr<UNet2D> model;

 private:
  ConditionalConfig config_;
};

}  // namespace engine::models
