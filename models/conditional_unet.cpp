// ConditionalUNet forward: cat([x, class_emb(labels) * keep], dim 1) -> UNet2D.
#include "models/conditional_unet.h"

namespace engine::models {

ConditionalUNet::ConditionalUNet(const ConditionalConfig& config, uint64_t seed, Device device, DType dtype)
    : config_(config) {
  config_.validate();
  nn::Init init(seed, dtype, device);
  class_emb = register_module(
      "class_emb", std::make_shared<nn::Embedding>(init, config_.num_classes, config_.class_emb_size));
  model = register_module("model", std::make_shared<UNet2D>(init, config_.unet));
}

Tensor ConditionalUNet::forward(const Tensor& x, const Tensor& timesteps, const Tensor& labels,
                                const Tensor& drop) const {
  const int64_t C = config_.image_channels(), E = config_.class_emb_size;
  ENGINE_CHECK(x.defined() && x.dim() == 4 && x.size(1) == C, "ConditionalUNet", "expected x (B, ", C,
               ", H, W), got ", x.defined() ? shape_str(x.shape()) : std::string("undefined"));
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3);
  ENGINE_CHECK(labels.defined() && labels.dtype() == DType::I64 && labels.dim() == 1 && labels.size(0) == B,
               "ConditionalUNet", "expected labels (", B, ",) int64, got ",
               labels.defined() ? dtype_name(labels.dtype()) + std::string(" ") + shape_str(labels.shape())
                                : std::string("undefined"));
  Tensor emb = class_emb->forward(labels.to(x.device()));  // (B, E)
  if (drop.defined()) {
    ENGINE_CHECK(drop.dim() == 1 && drop.size(0) == B, "ConditionalUNet", "expected drop (", B, ",), got ",
                 shape_str(drop.shape()));
    // keep = 1 - drop as a float mask (B, 1)
    Tensor keep = affine(drop.to(emb.dtype()).to(emb.device()), -1.0, 1.0).reshape({B, 1});
    emb = emb * keep;
  }
  Tensor cond = emb.reshape({B, E, 1, 1}).expand({B, E, H, W});  // (B, E, H, W)
  return model->forward(concat({x, cond}, 1), timesteps);        // (B, C + E, H, W) -> (B, C, H, W)
}

}  // namespace engine::models
