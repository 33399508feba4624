// State-dict I/O between Tensors and safetensors files (core/safetensors.h): conversion both ways, and a
// strict loader that checks every key, shape and dtype against a model and reports all mismatches at once.
// Accepts diffusers' legacy attention key names and bare UNet2DModel state dicts for the wrapper.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "core/safetensors.h"
#include "core/tensor.h"

namespace engine::nn {

// F32/F64/I64/U8 tensors are stored with their own dtype.
st::StTensor st_from_tensor(const std::string& name, const Tensor& t);
st::StFile state_dict_to_st(const std::vector<std::pair<std::string, Tensor>>& named,
                            const std::string& prefix = "");
// F32/F64/I64/U8 only (other safetensors dtypes throw naming the tensor and dtype).
Tensor tensor_from_st(const st::StTensor& t, Device device = Device::cpu());

struct LoadOptions {
  std::string prefix;                    // only file keys starting with this are considered (then stripped)
  bool allow_dtype_conversion = false;   // e.g. F32 file into an F64 model
  bool accept_legacy_attention = true;   // query/key/value/proj_attn -> to_q/to_k/to_v/to_out.0
  bool accept_bare_unet = true;          // file keys without "model." into a wrapper whose UNet is `model`
  bool allow_missing_class_emb = false;  // with a bare UNet file, keep the model's class_emb.weight
};

struct LoadReport {
  int64_t loaded = 0;                  // tensors copied
  int64_t renamed_legacy = 0;          // legacy attention keys renamed
  bool bare_unet = false;              // "model." was prepended to the file's keys
  std::vector<std::string> kept;       // model keys left untouched (allowed missing)
  std::vector<std::string> converted;  // keys whose dtype was converted
};

// Throws engine::Error listing every missing key, unexpected key, shape and dtype mismatch.
LoadReport load_state_dict(std::vector<std::pair<std::string, Tensor>>& named, const st::StFile& f,
                           const LoadOptions& opt = {});

// "a.attentions.0.query.weight" -> "a.attentions.0.to_q.weight" (unchanged if not a legacy key).
std::string convert_legacy_attention_key(const std::string& key);

}  // namespace engine::nn
