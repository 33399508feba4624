// Checkpoint key conversion for the class-conditional UNet wrapper (see name_conversion.h).
#include "models/name_conversion.h"

#include <cstring>
#include <set>

namespace engine::models {

namespace {
bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
constexpr const char* kClassEmb = "class_emb.weight";
}  // namespace

std::string convert_legacy_attention_key(const std::string& key) {
  static const std::pair<const char*, const char*> kMap[] = {
      {".query.", ".to_q."}, {".key.", ".to_k."}, {".value.", ".to_v."}, {".proj_attn.", ".to_out.0."}};
  if (key.find("attentions.") == std::string::npos) return key;
  for (const auto& [from, to] : kMap) {
    const size_t pos = key.rfind(from);
    if (pos != std::string::npos && key.find('.', pos + std::strlen(from)) == std::string::npos)
      return key.substr(0, pos) + to + key.substr(pos + std::strlen(from));
  }
  return key;
}

nn::LoadOptions wrapper_load_options(const std::vector<std::pair<std::string, Tensor>>& named,
                                     const st::StFile& f, const WrapperKeyOptions& keys, nn::LoadOptions opt,
                                     WrapperKeyReport* rep) {
  WrapperKeyReport r;
  std::set<std::string> model_keys;
  bool model_has_wrapper = false, file_has_wrapper = false;
  for (const auto& [n, _] : named) {
    model_keys.insert(n);
    model_has_wrapper |= starts_with(n, "model.");
  }
  std::vector<std::string> file_keys;  // after the prefix
  for (const st::StTensor& t : f.tensors)
    if (starts_with(t.name, opt.prefix)) file_keys.push_back(t.name.substr(opt.prefix.size()));
  for (const auto& k : file_keys) file_has_wrapper |= starts_with(k, "model.");
  r.bare_unet = keys.accept_bare_unet && model_has_wrapper && !file_has_wrapper && !file_keys.empty();
  for (const auto& k : file_keys) {
    std::string n = k;
    if (r.bare_unet && !model_keys.count(n)) n = "model." + n;
    if (keys.accept_legacy_attention && !model_keys.count(n)) {
      const std::string c = convert_legacy_attention_key(n);
      if (c != n && model_keys.count(c)) {
        n = c;
        ++r.renamed_legacy;
      }
    }
    if (n != k) opt.rename[k] = n;
  }
  if (r.bare_unet) {
    opt.note += "[bare UNet2DModel keys, 'model.' prepended]";
    if (keys.allow_missing_class_emb)
      opt.allow_missing.push_back(kClassEmb);
    else
      opt.missing_hints[kClassEmb] =
          "(class_emb.weight is not part of a bare UNet2DModel state dict: set allow_missing_class_emb to "
          "keep "
          "the model's)";
  }
  if (rep) *rep = r;
  return opt;
}

nn::LoadReport load_wrapper_state_dict(std::vector<std::pair<std::string, Tensor>>& named,
                                       const st::StFile& f, const WrapperKeyOptions& keys,
                                       nn::LoadOptions opt, WrapperKeyReport* rep) {
  return nn::load_state_dict(named, f, wrapper_load_options(named, f, keys, std::move(opt), rep));
}

}  // namespace engine::models
