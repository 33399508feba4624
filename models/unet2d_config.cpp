// UNet2DConfig / ConditionalConfig JSON parsing and validation. Every error names the JSON key.
#include "models/unet2d_config.h"

#include <cmath>
#include <map>
#include <set>

#include "core/bounded_json.h"
#include "core/error.h"
#include "models/seed_config.h"  // generated from configs/seed.json

namespace engine::models {

using nlohmann::json;

namespace {
[[noreturn]] void bad(const std::string& key, const std::string& why) {
  throw Error("UNet2DConfig: key '" + key + "': " + why);
}
// Integers in a config must be exact and within +-2^31 (no architecture needs more, and the limit keeps
// products of config values far from int64 overflow). Integral floats (diffusers writes e.g. 1.0) are
// accepted; 1e300, 3.5, NaN-like, true/false and strings are not.
constexpr int64_t kMaxConfigInt = int64_t{1} << 31;
int64_t get_int(const std::string& key, const json& v) {
  if (v.is_number_unsigned()) {
    if (v.get<uint64_t>() <= static_cast<uint64_t>(kMaxConfigInt))
      return static_cast<int64_t>(v.get<uint64_t>());
  } else if (v.is_number_integer()) {
    const int64_t x = v.get<int64_t>();
    if (x >= -kMaxConfigInt && x <= kMaxConfigInt) return x;
  } else if (v.is_number_float()) {
    const double d = v.get<double>();
    if (!std::isfinite(d) || d != std::trunc(d)) bad(key, "expected an integer, got " + json_excerpt(v));
    // The range test comes before the cast: casting an out-of-range double is undefined behaviour.
    if (std::fabs(d) <= static_cast<double>(kMaxConfigInt)) return static_cast<int64_t>(d);
  } else {
    bad(key, "expected an integer, got " + json_excerpt(v));
  }
  bad(key, "integer " + json_excerpt(v) + " is out of range (|value| <= 2^31)");
}
// True if `v` is an integer that int64 holds exactly (checked before any cast: casting an out-of-range
// double is undefined behaviour).
bool exact_int(double v) { return std::fabs(v) <= 9007199254740992.0 && v == std::trunc(v); }
double get_num(const std::string& key, const json& v) {
  if (v.is_number() && std::isfinite(v.get<double>())) return v.get<double>();
  bad(key, "expected a finite number, got " + json_excerpt(v));
}
bool get_bool(const std::string& key, const json& v) {
  if (v.is_boolean()) return v.get<bool>();
  bad(key, "expected true/false, got " + json_excerpt(v));
}
std::vector<int64_t> get_int_list(const std::string& key, const json& v) {
  if (!v.is_array()) bad(key, "expected a list of integers, got " + json_excerpt(v));
  std::vector<int64_t> out;
  for (const json& e : v) out.push_back(get_int(key, e));
  return out;
}
std::vector<std::string> get_str_list(const std::string& key, const json& v) {
  if (!v.is_array()) bad(key, "expected a list of strings, got " + json_excerpt(v));
  std::vector<std::string> out;
  for (const json& e : v) {
    if (!e.is_string()) bad(key, "expected a list of strings, got " + json_excerpt(v));
    out.push_back(e.get<std::string>());
  }
  return out;
}
// diffusers arguments we accept only at their default (anything else changes the architecture).
void require_default(const std::string& key, const json& v) {
  static const std::map<std::string, json> kDefaults = {{"center_input_sample", false},
                                                        {"time_embedding_type", "positional"},
                                                        {"downsample_type", "conv"},
                                                        {"upsample_type", "conv"},
                                                        {"dropout", 0.0},
                                                        {"act_fn", "silu"},
                                                        {"attn_norm_num_groups", nullptr},
                                                        {"resnet_time_scale_shift", "default"},
                                                        {"class_embed_type", nullptr},
                                                        {"num_class_embeds", nullptr},
                                                        {"num_train_timesteps", nullptr}};
  const json& d = kDefaults.at(key);
  if (key == "act_fn" && v == "swish") return;  // diffusers maps "swish" to nn.SiLU as well
  const bool same = (d.is_number() && v.is_number()) ? d.get<double>() == v.get<double>() : d == v;
  if (!same)
    bad(key, "value " + json_excerpt(v) + " is not supported (only the diffusers default " + d.dump() + ")");
}
bool is_default_only_key(const std::string& key) {
  static const std::set<std::string> k = {"center_input_sample",
                                          "time_embedding_type",
                                          "downsample_type",
                                          "upsample_type",
                                          "dropout",
                                          "act_fn",
                                          "attn_norm_num_groups",
                                          "resnet_time_scale_shift",
                                          "class_embed_type",
                                          "num_class_embeds",
                                          "num_train_timesteps"};
  return k.count(key) > 0;
}
}  // namespace

UNet2DConfig UNet2DConfig::from_json(const json& j) {
  if (!j.is_object()) throw Error("UNet2DConfig: expected a JSON object, got " + json_excerpt(j));
  UNet2DConfig c;
  for (const auto& [key, v] : j.items()) {
    if (!key.empty() && key[0] == '_') continue;  // _class_name, _diffusers_version, ...
    if (key == "sample_size") {
      if (v.is_null())
        c.sample_size = 0;
      else if (v.is_array() && v.size() == 2 && get_int(key, v[0]) == get_int(key, v[1]))
        c.sample_size = get_int(key, v[0]);
      else
        c.sample_size = get_int(key, v);
    } else if (key == "in_channels")
      c.in_channels = get_int(key, v);
    else if (key == "out_channels")
      c.out_channels = get_int(key, v);
    else if (key == "block_out_channels")
      c.block_out_channels = get_int_list(key, v);
    else if (key == "layers_per_block")
      c.layers_per_block = get_int(key, v);
    else if (key == "down_block_types")
      c.down_block_types = get_str_list(key, v);
    else if (key == "up_block_types")
      c.up_block_types = get_str_list(key, v);
    else if (key == "attention_head_dim")
      c.attention_head_dim = v.is_null() ? 0 : get_int(key, v);
    else if (key == "norm_num_groups")
      c.norm_num_groups = get_int(key, v);
    else if (key == "norm_eps")
      c.norm_eps = get_num(key, v);
    else if (key == "flip_sin_to_cos")
      c.flip_sin_to_cos = get_bool(key, v);
    else if (key == "freq_shift")
      c.freq_shift = get_num(key, v);
    else if (key == "downsample_padding")
      c.downsample_padding = get_int(key, v);
    else if (key == "mid_block_scale_factor")
      c.mid_block_scale_factor = get_num(key, v);
    else if (key == "add_attention")
      c.add_attention = get_bool(key, v);
    else if (key == "time_embedding_dim")
      c.time_embedding_dim = v.is_null() ? 0 : get_int(key, v);
    else if (key == "mid_block_type") {
      if (v.is_null())
        c.mid_block = false;
      else if (v == "UNetMidBlock2D")
        c.mid_block = true;
      else
        bad(key, "unsupported value " + json_excerpt(v) + " (supported: \"UNetMidBlock2D\", null)");
    } else if (is_default_only_key(key))
      require_default(key, v);
    else
      bad(key, "unknown configuration key");
  }
  c.validate();
  return c;
}

json UNet2DConfig::to_json() const {
  json j;
  j["sample_size"] = sample_size > 0 ? json(sample_size) : json(nullptr);
  j["in_channels"] = in_channels;
  j["out_channels"] = out_channels;
  j["block_out_channels"] = block_out_channels;
  j["layers_per_block"] = layers_per_block;
  j["down_block_types"] = down_block_types;
  j["up_block_types"] = up_block_types;
  j["attention_head_dim"] = attention_head_dim > 0 ? json(attention_head_dim) : json(nullptr);
  j["norm_num_groups"] = norm_num_groups;
  j["norm_eps"] = norm_eps;
  j["flip_sin_to_cos"] = flip_sin_to_cos;
  if (exact_int(freq_shift))
    j["freq_shift"] = static_cast<int64_t>(freq_shift);
  else
    j["freq_shift"] = freq_shift;
  j["downsample_padding"] = downsample_padding;
  if (exact_int(mid_block_scale_factor))
    j["mid_block_scale_factor"] = static_cast<int64_t>(mid_block_scale_factor);
  else
    j["mid_block_scale_factor"] = mid_block_scale_factor;
  j["add_attention"] = add_attention;
  j["time_embedding_dim"] = time_embedding_dim > 0 ? json(time_embedding_dim) : json(nullptr);
  j["mid_block_type"] = mid_block ? json("UNetMidBlock2D") : json(nullptr);
  return j;
}

void UNet2DConfig::validate() const {
  if (in_channels < 1) bad("in_channels", "must be >= 1, got " + std::to_string(in_channels));
  if (out_channels < 1) bad("out_channels", "must be >= 1, got " + std::to_string(out_channels));
  if (block_out_channels.empty()) bad("block_out_channels", "must not be empty");
  if (norm_num_groups < 1) bad("norm_num_groups", "must be >= 1, got " + std::to_string(norm_num_groups));
  for (int64_t ch : block_out_channels) {
    if (ch < 1) bad("block_out_channels", "channels must be >= 1, got " + std::to_string(ch));
    if (ch % norm_num_groups != 0)
      bad("norm_num_groups", std::to_string(ch) + " channels (block_out_channels) are not divisible by " +
                                 std::to_string(norm_num_groups) + " groups");
  }
  const size_t n = block_out_channels.size();
  if (down_block_types.size() != n)
    bad("down_block_types", "has " + std::to_string(down_block_types.size()) +
                                " entries, block_out_channels " + std::to_string(n));
  if (up_block_types.size() != n)
    bad("up_block_types",
        "has " + std::to_string(up_block_types.size()) + " entries, block_out_channels " + std::to_string(n));
  for (const auto& t : down_block_types)
    if (t != "DownBlock2D" && t != "AttnDownBlock2D")
      bad("down_block_types", "unsupported block type '" + t + "' (supported: DownBlock2D, AttnDownBlock2D)");
  for (const auto& t : up_block_types)
    if (t != "UpBlock2D" && t != "AttnUpBlock2D")
      bad("up_block_types", "unsupported block type '" + t + "' (supported: UpBlock2D, AttnUpBlock2D)");
  if (layers_per_block < 1) bad("layers_per_block", "must be >= 1, got " + std::to_string(layers_per_block));
  if (attention_head_dim < 0) bad("attention_head_dim", "must be >= 1 or null");
  for (size_t i = 0; i < n; ++i) {
    const bool attn = down_block_types[i] == "AttnDownBlock2D" || up_block_types[i] == "AttnUpBlock2D" ||
                      (i + 1 == n && mid_block && add_attention);
    // Attention blocks use heads = channels // attention_head_dim; zero heads would be an empty layer.
    if (attn && head_dim(block_out_channels[i]) > block_out_channels[i])
      bad("attention_head_dim", std::to_string(attention_head_dim) + " exceeds the " +
                                    std::to_string(block_out_channels[i]) +
                                    " channels of an attention block");
  }
  if (!(norm_eps > 0)) bad("norm_eps", "must be > 0");
  if (downsample_padding < 0) bad("downsample_padding", "must be >= 0");
  if (!(mid_block_scale_factor > 0)) bad("mid_block_scale_factor", "must be > 0");
  if (time_embedding_dim < 0) bad("time_embedding_dim", "must be >= 1 or null");
  if (block_out_channels[0] < 2)
    bad("block_out_channels", "the first entry (timestep embedding size) must be >= 2");
  if (static_cast<double>(block_out_channels[0] / 2) == freq_shift)
    bad("freq_shift", "equals half the timestep embedding size (division by zero)");
}

const char* seed_config_json() { return generated::kSeedConfigJson; }

UNet2DConfig UNet2DConfig::seed() {
  // Parsed on its own (not via ConditionalConfig::seed(), whose default member is this function).
  static const UNet2DConfig kSeed = [] {
    json j = parse_json_bounded(seed_config_json(), "configs/seed.json");
    j.erase("num_classes");
    j.erase("class_emb_size");
    return UNet2DConfig::from_json(j);
  }();
  return kSeed;
}

ConditionalConfig ConditionalConfig::seed() {
  // Parsed once (validated like any user config); copies are handed out.
  static const ConditionalConfig kSeed =
      ConditionalConfig::from_json(parse_json_bounded(seed_config_json(), "configs/seed.json"));
  return kSeed;
}

ConditionalConfig ConditionalConfig::from_json(const json& j) {
  if (!j.is_object()) throw Error("ConditionalConfig: expected a JSON object, got " + json_excerpt(j));
  ConditionalConfig c;
  json unet = j;
  if (j.contains("num_classes")) {
    c.num_classes = get_int("num_classes", j["num_classes"]);
    unet.erase("num_classes");
  }
  if (j.contains("class_emb_size")) {
    c.class_emb_size = get_int("class_emb_size", j["class_emb_size"]);
    unet.erase("class_emb_size");
  }
  c.unet = UNet2DConfig::from_json(unet);
  c.validate();
  return c;
}

json ConditionalConfig::to_json() const {
  json j = unet.to_json();
  j["num_classes"] = num_classes;
  j["class_emb_size"] = class_emb_size;
  return j;
}

void ConditionalConfig::validate() const {
  unet.validate();
  if (num_classes < 1) bad("num_classes", "must be >= 1, got " + std::to_string(num_classes));
  if (class_emb_size < 1) bad("class_emb_size", "must be >= 1, got " + std::to_string(class_emb_size));
  if (image_channels() < 1)
    bad("in_channels", std::to_string(unet.in_channels) + " leaves no image channel next to class_emb_size " +
                           std::to_string(class_emb_size) +
                           " (in_channels = image channels + class_emb_size)");
  if (unet.out_channels != image_channels())
    throw Error(
        "UNet2DConfig: keys 'in_channels' (" + std::to_string(unet.in_channels) + ") and 'out_channels' (" +
        std::to_string(unet.out_channels) + ") disagree: in_channels must equal out_channels + " +
        "class_emb_size = " + std::to_string(unet.out_channels + class_emb_size) +
        " (the model sees the image channels plus the class embedding and predicts the image channels)");
}

}  // namespace engine::models
