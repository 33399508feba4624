// State-dict I/O between Tensors and safetensors files (core/safetensors.h): conversion both ways, and a
// strict loader that checks every key, shape and dtype against a model and reports all mismatches at once.
// The loader knows no model's naming: key conversions (e.g. the UNet wrapper's in models/name_conversion.h)
// reach it as a rename map.
#pragma once
#include <map>
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
  std::string prefix;                   // only file keys starting with this are considered (then stripped)
  bool allow_dtype_conversion = false;  // e.g. F32 file into an F64 model
  // File key (after the prefix) -> model key, for files written under other names; keys not in the map are
  // used as they are. Built by a model's name conversion (models/name_conversion.h).
  std::map<std::string, std::string> rename;
  // Model keys the file may lack: they keep their values and are listed in LoadReport::kept.
  std::vector<std::string> allow_missing;
  std::string note;                                  // appended to the first line of a mismatch error
  std::map<std::string, std::string> missing_hints;  // model key -> a line added when that key is missing
};

struct LoadReport {
  int64_t loaded = 0;                  // tensors copied
  int64_t renamed = 0;                 // file keys renamed through LoadOptions::rename
  std::vector<std::string> kept;       // model keys left untouched (allowed missing)
  std::vector<std::string> converted;  // keys whose dtype was converted
};

// Copies the file's tensors into `named` (model key -> tensor, values replaced in place). Throws
// engine::Error listing every missing key, unexpected key, shape and dtype mismatch and duplicate (after
// renaming); nothing is copied then.
LoadReport load_state_dict(std::vector<std::pair<std::string, Tensor>>& named, const st::StFile& f,
                           const LoadOptions& opt = {});

}  // namespace engine::nn
