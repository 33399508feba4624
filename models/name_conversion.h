// Checkpoint key conversion for the class-conditional UNet wrapper (the one place that knows its naming):
// bare UNet2DModel state dicts (no "model." prefix, no class_emb.weight) and diffusers' legacy attention
// names (query/key/value/proj_attn). Produces options for the generic loader nn::load_state_dict.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/safetensors.h"
#include "core/tensor.h"
#include "nn/state_dict.h"

namespace engine::models {

// "a.attentions.0.query.weight" -> "a.attentions.0.to_q.weight"; also key/value/proj_attn -> to_k/to_v/
// to_out.0. Keys outside "attentions." blocks and non-legacy keys are returned unchanged.
std::string convert_legacy_attention_key(const std::string& key);

struct WrapperKeyOptions {
  bool accept_legacy_attention = true;   // query/key/value/proj_attn -> to_q/to_k/to_v/to_out.0
  bool accept_bare_unet = true;          // file keys without "model." into a wrapper whose UNet is `model`
  bool allow_missing_class_emb = false;  // with a bare UNet file, keep the model's class_emb.weight
};

struct WrapperKeyReport {
  int64_t renamed_legacy = 0;  // legacy attention keys renamed
  bool bare_unet = false;      // "model." was prepended to the file's keys
};

// Adds the wrapper's key conversions for file `f` (keys after `opt.prefix`) into model keys `named` to
// `opt` (rename map, allowed missing class_emb.weight, error note and hint) and returns it. A file is a
// bare UNet when the model has "model." keys and no file key does. `rep` (optional) says what applies.
nn::LoadOptions wrapper_load_options(const std::vector<std::pair<std::string, Tensor>>& named,
                                     const st::StFile& f, const WrapperKeyOptions& keys,
                                     nn::LoadOptions opt = {}, WrapperKeyReport* rep = nullptr);

// nn::load_state_dict with the wrapper's key conversions. Throws engine::Error as load_state_dict does.
nn::LoadReport load_wrapper_state_dict(std::vector<std::pair<std::string, Tensor>>& named,
                                       const st::StFile& f, const WrapperKeyOptions& keys = {},
                                       nn::LoadOptions opt = {}, WrapperKeyReport* rep = nullptr);

}  // namespace engine::models
