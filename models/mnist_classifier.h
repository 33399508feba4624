// MnistClassifier: the small convolutional MNIST classifier that fm_eval scores samples with, built from the
// engine's own layers and trained by the engine (apps/fm_classifier.cpp; committed weights in
// models/weights/). Architecture (input (B, 1, 28, 28) in [-1, 1], 1 = white digit on -1 background):
//   blocks.0: Conv2d(1 -> 24, 3x3, stride 1, pad 1)   GroupNorm(8, 24)  SiLU  -> (B, 24, 28, 28)
//   blocks.1: Conv2d(24 -> 48, 3x3, stride 2, pad 1)  GroupNorm(8, 48)  SiLU  -> (B, 48, 14, 14)
//   blocks.2: Conv2d(48 -> 96, 3x3, stride 2, pad 1)  GroupNorm(8, 96)  SiLU  -> (B, 96, 7, 7)
//   blocks.3: Conv2d(96 -> 128, 3x3, stride 1, pad 1) GroupNorm(8, 128) SiLU  -> (B, 128, 7, 7)
//   features: mean over H, W                                               -> (B, 128)  (the feature layer)
//   head: Linear(128 -> 10)                                                -> (B, 10) logits
// Parameters are named blocks.<i>.conv.*, blocks.<i>.norm.*, head.* (safetensors state-dict keys).
#pragma once
#include <map>
#include <memory>
#include <string>

#include "nn/layers.h"
#include "nn/module.h"

namespace engine::models {

class MnistClassifier : public nn::Module {
 public:
  static constexpr int64_t kFeatureDim = 128, kNumClasses = 10, kImageSize = 28;

  // Parameters initialised from `seed` (PyTorch-default uniform init) on `device`.
  explicit MnistClassifier(uint64_t seed = 0, Device device = Device::cpu());

  // x (B, 1, 28, 28) float -> (B, 128) features (after the last SiLU, averaged over space).
  // Throws engine::Error for another shape.
  Tensor features(const Tensor& x) const;
  // features (B, 128) -> (B, 10) logits.
  Tensor head_logits(const Tensor& features) const;
  // x (B, 1, 28, 28) -> (B, 10) logits.
  Tensor forward(const Tensor& x) const { return head_logits(features(x)); }

  struct Block : nn::Module {
    Block(nn::Init& init, int64_t in, int64_t out, int64_t stride);
    Tensor forward(const Tensor& x) const;
    std::shared_ptr<nn::Conv2d> conv;
    std::shared_ptr<nn::GroupNorm> norm;
  };
  std::shared_ptr<nn::ModuleList<Block>> blocks;
  std::shared_ptr<nn::Linear> head;
};

// Strictly loads a classifier state dict (every key, shape, dtype) from a safetensors file. Throws
// engine::Error naming the file on a missing/corrupt file or mismatched keys.
void load_classifier(MnistClassifier& model, const std::string& path);
// Writes the parameters (and string metadata) atomically as safetensors.
void save_classifier(const MnistClassifier& model, const std::string& path,
                     const std::map<std::string, std::string>& metadata = {});

}  // namespace engine::models
