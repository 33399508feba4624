// Fuzz entry points: one parser each, with consistency checks on accepted inputs (see fuzz_entries.h).
#include "tests/fuzz/fuzz_entries.h"

#include <stdexcept>
#include <string_view>
#include <vector>

#include "apps/common/checkpoint.h"
#include "apps/common/mnist.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "nn/state_dict.h"

namespace engine::fuzz {

namespace {
void require(bool ok, const char* what) {
  if (!ok) throw std::logic_error(std::string("fuzz consistency check failed: ") + what);
}
}  // namespace

int safetensors_entry(const uint8_t* data, size_t size) {
  st::StFile f;
  try {
    f = st::parse(data, size, "fuzz");
  } catch (const st::Error&) {
    return 1;
  }
  for (const st::StTensor& t : f.tensors) {
    require(t.data.size() == static_cast<size_t>(t.numel()) * st::dtype_size(t.dtype), "data size");
    try {
      Tensor x = nn::tensor_from_st(t, Device::cpu());
      require(x.numel() == t.numel(), "Tensor numel");
    } catch (const engine::Error&) {  // unsupported dtype (F16, BF16, I32)
    }
  }
  const std::vector<uint8_t> again = st::serialize(f);
  const st::StFile g = st::parse(again.data(), again.size(), "fuzz re-serialized");
  require(g.tensors.size() == f.tensors.size() && g.metadata == f.metadata, "round trip");
  for (const st::StTensor& t : f.tensors) {
    const st::StTensor* u = g.find(t.name);
    require(u && u->shape == t.shape && u->dtype == t.dtype && u->data == t.data, "round trip tensor");
  }
  return 0;
}

int checkpoint_entry(const uint8_t* data, size_t size) {
  try {
    st::StFile f = st::parse(data, size, "fuzz");
    const app::Checkpoint c = app::checkpoint_from_st(std::move(f), "fuzz");
    if (c.has_config) c.config.validate();
    return 0;
  } catch (const st::Error&) {
    return 1;
  } catch (const app::CheckpointError&) {
    return 1;
  }
}

int model_config_entry(const uint8_t* data, size_t size) {
  models::ConditionalConfig c;
  try {
    c = app::parse_model_config(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  } catch (const app::CheckpointError&) {
    return 1;
  }
  const models::ConditionalConfig d = models::ConditionalConfig::from_json(c.to_json());
  require(d.to_json() == c.to_json(), "config round trip");
  return 0;
}

int idx_entry(const uint8_t* data, size_t size) {
  int rc = 1;
  std::vector<uint8_t> payload;
  try {
    const auto dims = app::parse_idx(data, size, "fuzz", app::kIdxImagesMagic, 3, payload);
    require(dims.size() == 3 && payload.size() == static_cast<size_t>(dims[0] * dims[1] * dims[2]),
            "images payload size");
    rc = 0;
  } catch (const app::DataError&) {
  }
  try {
    const auto dims = app::parse_idx(data, size, "fuzz", app::kIdxLabelsMagic, 1, payload);
    require(dims.size() == 1 && payload.size() == static_cast<size_t>(dims[0]), "labels payload size");
    rc = 0;
  } catch (const app::DataError&) {
  }
  return rc;
}

Entry entry_by_name(const std::string& name) {
  if (name == "safetensors") return safetensors_entry;
  if (name == "checkpoint") return checkpoint_entry;
  if (name == "model_config") return model_config_entry;
  if (name == "idx") return idx_entry;
  return nullptr;
}

}  // namespace engine::fuzz
