// MnistClassifier: construction, forward (features + head) and strict safetensors load/save.
#include "models/mnist_classifier.h"

#include "core/safetensors.h"
#include "nn/state_dict.h"

namespace engine::models {

MnistClassifier::Block::Block(nn::Init& init, int64_t in, int64_t out, int64_t stride) {
  conv = register_module("conv", std::make_shared<nn::Conv2d>(init, in, out, 3, stride, 1));
  norm = register_module("norm", std::make_shared<nn::GroupNorm>(init, 8, out, 1e-5));
}

Tensor MnistClassifier::Block::forward(const Tensor& x) const { return norm->forward_silu(conv->forward(x)); }

MnistClassifier::MnistClassifier(uint64_t seed, Device device) {
  nn::Init init(seed, DType::F32, device);
  blocks = register_module("blocks", std::make_shared<nn::ModuleList<Block>>());
  blocks->push_back(std::make_shared<Block>(init, 1, 24, 1));
  blocks->push_back(std::make_shared<Block>(init, 24, 48, 2));
  blocks->push_back(std::make_shared<Block>(init, 48, 96, 2));
  blocks->push_back(std::make_shared<Block>(init, 96, kFeatureDim, 1));
  head = register_module("head", std::make_shared<nn::Linear>(init, kFeatureDim, kNumClasses));
}

Tensor MnistClassifier::features(const Tensor& x) const {
  ENGINE_CHECK(
      x.defined() && x.dim() == 4 && x.size(1) == 1 && x.size(2) == kImageSize && x.size(3) == kImageSize,
      "MnistClassifier", "expected x (B, 1, 28, 28), got ",
      x.defined() ? shape_str(x.shape()) : std::string("undefined"));
  Tensor h = x;
  for (const auto& b : *blocks) h = b->forward(h);
  return mean(h, {2, 3});  // (B, 128)
}

Tensor MnistClassifier::head_logits(const Tensor& f) const { return head->forward(f); }

void load_classifier(MnistClassifier& model, const std::string& path) {
  st::StFile f;
  try {
    f = st::read_file(path);
  } catch (const std::exception& e) {
    throw Error(std::string("classifier weights: ") + e.what());
  }
  auto named = model.named_parameters();
  try {
    nn::load_state_dict(named, f);
  } catch (const std::exception& e) {
    throw Error("classifier weights '" + path + "': " + e.what());
  }
}

void save_classifier(const MnistClassifier& model, const std::string& path,
                     const std::map<std::string, std::string>& metadata) {
  st::StFile f = nn::state_dict_to_st(model.named_parameters());
  f.metadata = metadata;
  st::write_file_atomic(path, f);
}

}  // namespace engine::models
