// Checkpoint writing, reading, validation and loading (see checkpoint.h for the layout).
#include "apps/common/checkpoint.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/bounded_json.h"
#include "models/name_conversion.h"
#include "nn/state_dict.h"

namespace engine::app {

namespace {
using nlohmann::json;

constexpr const char* kEma = "ema.";
constexpr const char* kExpAvg = "optim.exp_avg.";
constexpr const char* kExpAvgSq = "optim.exp_avg_sq.";

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

[[noreturn]] void fail(const std::string& path, const std::string& why) {
  throw CheckpointError("checkpoint '" + path + "': " + why);
}

std::string require(const st::StFile& f, const std::string& path, const std::string& key) {
  auto it = f.metadata.find(key);
  if (it == f.metadata.end()) fail(path, "metadata key '" + key + "' is missing");
  return it->second;
}

int64_t parse_i64(const std::string& path, const std::string& key, const std::string& v) {
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno != 0 || x < 0)
    fail(path, "metadata '" + key + "' is not a non-negative integer: '" + truncate_text(v, 80) + "'");
  return x;
}

uint64_t parse_u64(const std::string& path, const std::string& key, const std::string& v) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long x = std::strtoull(v.c_str(), &end, 10);
  if (v.empty() || v[0] == '-' || *end != '\0' || errno != 0)
    fail(path, "metadata '" + key + "' is not an unsigned integer: '" + truncate_text(v, 80) + "'");
  return x;
}

double parse_f64(const std::string& path, const std::string& key, const std::string& v) {
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(x))
    fail(path, "metadata '" + key + "' is not a finite number: '" + truncate_text(v, 80) + "'");
  return x;
}

// Metadata values are untrusted: bounded size and depth, no duplicate keys (core/bounded_json.h).
json parse_json(const std::string& path, const std::string& key, const std::string& v) {
  try {
    return parse_json_bounded(v, "metadata '" + key + "'");
  } catch (const std::exception& e) {
    fail(path, e.what());
  }
}

// train_args values that fm_train converts back to C++ types must have the matching JSON type: integers
// exact and in int64 range (seed: non-negative), floats finite, strings strings.
void check_train_args(const std::string& path, const json& a) {
  if (!a.is_object()) fail(path, "metadata 'train_args' is not a JSON object");
  auto bad = [&](const std::string& k, const char* want) {
    fail(path, "metadata 'train_args' key '" + k + "' must be " + want + ", got " + json_excerpt(a.at(k)));
  };
  for (const char* k :
       {"epochs", "max_steps", "batch_size", "checkpoint_every", "sample_every", "limit", "grad_chunk"})
    if (a.contains(k) && !(a.at(k).is_number_integer() &&
                           (!a.at(k).is_number_unsigned() ||
                            a.at(k).get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max()))))
      bad(k, "an integer in int64 range");
  if (a.contains("seed") && !a.at("seed").is_number_unsigned()) bad("seed", "a non-negative integer");
  for (const char* k : {"lr", "cfg_drop", "ema_decay"})
    if (a.contains(k) && !(a.at(k).is_number() && std::isfinite(a.at(k).get<double>())))
      bad(k, "a finite number");
  for (const char* k : {"data", "device", "model_config"})
    if (a.contains(k) && !a.at(k).is_string()) bad(k, "a string");
}

std::string num(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

void append(st::StFile& f, const std::string& prefix, const nn::NamedTensors& named) {
  for (const auto& [n, t] : named) f.tensors.push_back(nn::st_from_tensor(prefix + n, t));
}

}  // namespace

void save_checkpoint(const std::string& path, const models::ConditionalUNet& model,
                     const models::ConditionalUNet* ema, const nn::AdamW* opt, const TrainingState& s) {
  st::StFile f;
  append(f, "", model.named_parameters());
  if (ema) append(f, kEma, ema->named_parameters());
  if (opt) {
    for (size_t i = 0; i < opt->names().size(); ++i) {
      f.tensors.push_back(nn::st_from_tensor(kExpAvg + opt->names()[i], opt->exp_avg()[i]));
      f.tensors.push_back(nn::st_from_tensor(kExpAvgSq + opt->names()[i], opt->exp_avg_sq()[i]));
    }
  }
  const nn::AdamWOptions& a = s.adamw;
  f.metadata = {
      {"format", kCheckpointFormat},
      {"config", model.config().to_json().dump()},
      {"step", std::to_string(s.step)},
      {"epoch", std::to_string(s.epoch)},
      {"batch_in_epoch", std::to_string(s.batch_in_epoch)},
      {"rng_seed", std::to_string(s.rng_seed)},
      {"rng_offset", std::to_string(s.rng_offset)},
      {"adamw", json{{"lr", a.lr},
                     {"beta1", a.beta1},
                     {"beta2", a.beta2},
                     {"eps", a.eps},
                     {"weight_decay", a.weight_decay}}
                    .dump()},
      {"ema_decay", num(ema ? s.ema_decay : 0.0)},
      {"train_args", s.train_args.dump()},
  };
  try {
    st::write_file_atomic(path, f);
  } catch (const std::exception& e) {
    fail(path, std::string("cannot write: ") + e.what());
  }
}

std::vector<std::string> remove_stale_temp_files(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> removed;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    // ".<target>.tmp.<pid>.<counter>"
    if (name.size() < 2 || name[0] != '.') continue;
    const size_t t = name.rfind(".tmp.");
    if (t == std::string::npos || t == 0) continue;
    const std::string tail = name.substr(t + 5);
    const size_t dot = tail.find('.');
    if (dot == std::string::npos || dot == 0 || dot + 1 >= tail.size()) continue;
    const std::string pid_s = tail.substr(0, dot), cnt_s = tail.substr(dot + 1);
    auto digits = [](const std::string& x) {
      return !x.empty() && x.find_first_not_of("0123456789") == std::string::npos && x.size() < 10;
    };
    if (!digits(pid_s) || !digits(cnt_s)) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(pid_s));
    if (pid == ::getpid() || pid <= 0) continue;
    if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // the writer still runs (or we cannot tell)
    std::error_code rc;
    if (it->is_regular_file(rc) && fs::remove(it->path(), rc)) removed.push_back(name);
  }
  return removed;
}

Checkpoint read_checkpoint(const std::string& path) {
  st::StFile f;
  try {
    f = st::read_file(path);
  } catch (const std::exception& e) {
    fail(path, e.what());
  }
  return checkpoint_from_st(std::move(f), path);
}

Checkpoint checkpoint_from_st(st::StFile f, const std::string& path) {
  Checkpoint c;
  c.path = path;
  auto fmt = f.metadata.find("format");
  c.training = fmt != f.metadata.end() && fmt->second == kCheckpointFormat;
  if (fmt != f.metadata.end() && !c.training && starts_with(fmt->second, "engine-fm-checkpoint"))
    fail(path,
         "unsupported checkpoint format '" + fmt->second + "' (this build reads " + kCheckpointFormat + ")");

  if (auto it = f.metadata.find("config"); it != f.metadata.end()) {
    try {
      c.config = models::ConditionalConfig::from_json(parse_json(path, "config", it->second));
      c.config.validate();
    } catch (const CheckpointError&) {
      throw;
    } catch (const std::exception& e) {
      fail(path, std::string("invalid model config in metadata: ") + e.what());
    }
    c.has_config = true;
  } else if (c.training) {
    fail(path, "metadata key 'config' is missing");
  }

  if (c.training) {
    TrainingState& s = c.state;
    s.step = parse_i64(path, "step", require(f, path, "step"));
    s.epoch = parse_i64(path, "epoch", require(f, path, "epoch"));
    s.batch_in_epoch = parse_i64(path, "batch_in_epoch", require(f, path, "batch_in_epoch"));
    s.rng_seed = parse_u64(path, "rng_seed", require(f, path, "rng_seed"));
    s.rng_offset = parse_u64(path, "rng_offset", require(f, path, "rng_offset"));
    s.ema_decay = parse_f64(path, "ema_decay", require(f, path, "ema_decay"));
    const json a = parse_json(path, "adamw", require(f, path, "adamw"));
    try {
      s.adamw.lr = a.at("lr").get<double>();
      s.adamw.beta1 = a.at("beta1").get<double>();
      s.adamw.beta2 = a.at("beta2").get<double>();
      s.adamw.eps = a.at("eps").get<double>();
      s.adamw.weight_decay = a.at("weight_decay").get<double>();
    } catch (const std::exception& e) {
      fail(path, std::string("metadata 'adamw' is incomplete: ") + e.what());
    }
    s.train_args = parse_json(path, "train_args", require(f, path, "train_args"));
    check_train_args(path, s.train_args);
  }

  for (st::StTensor& t : f.tensors) {
    if (!c.training) {
      c.weights.tensors.push_back(std::move(t));
    } else if (starts_with(t.name, kEma)) {
      t.name = t.name.substr(std::string(kEma).size());
      c.ema.tensors.push_back(std::move(t));
    } else if (starts_with(t.name, kExpAvgSq)) {
      t.name = t.name.substr(std::string(kExpAvgSq).size());
      c.exp_avg_sq.tensors.push_back(std::move(t));
    } else if (starts_with(t.name, kExpAvg)) {
      t.name = t.name.substr(std::string(kExpAvg).size());
      c.exp_avg.tensors.push_back(std::move(t));
    } else {
      c.weights.tensors.push_back(std::move(t));
    }
  }
  if (c.weights.tensors.empty()) fail(path, "contains no model weights");
  if (c.training && c.state.ema_decay > 0 && !c.has_ema())
    fail(path, "metadata says ema_decay " + num(c.state.ema_decay) + " but no ema.* tensors are stored");
  return c;
}

namespace {

// load_state_dict's report is one summary line plus one line per problem (sometimes 100+). Keeps the summary
// and the first few problems on one line; the hint about the C++ option becomes the CLI flag.
std::string one_line_mismatch(const std::string& msg, bool* class_emb_hint) {
  std::istringstream in(msg);
  std::string line, summary, first;
  int64_t items = 0, shown = 0;
  *class_emb_hint = false;
  while (std::getline(in, line)) {
    if (summary.empty()) {
      summary = line;
      continue;
    }
    const size_t b = line.find_first_not_of(' ');
    if (b == std::string::npos) continue;
    line = line.substr(b);
    if (line.rfind("(class_emb.weight is not part", 0) == 0) {
      *class_emb_hint = true;
      continue;
    }
    ++items;
    if (shown < 3) {
      first += (shown ? "; " : "") + line;
      ++shown;
    }
  }
  if (items == 0) return summary;
  std::string out = summary + ": " + first;
  if (items > shown) out += "; ... (" + std::to_string(items - shown) + " more)";
  return out;
}

}  // namespace

void load_weights(models::ConditionalUNet& model, const Checkpoint& c, bool use_ema,
                  bool allow_missing_class_emb) {
  if (use_ema && !c.has_ema()) fail(c.path, "has no EMA weights (ema.* tensors)");
  auto named = model.named_parameters();
  // Training checkpoints are ours (current names, wrapper keys); exported weights may be converted.
  models::WrapperKeyOptions keys;
  keys.accept_bare_unet = !c.training;
  keys.accept_legacy_attention = !c.training;
  keys.allow_missing_class_emb = allow_missing_class_emb && !c.training;
  try {
    const nn::LoadReport rep = models::load_wrapper_state_dict(named, use_ema ? c.ema : c.weights, keys);
    for (const std::string& k : rep.kept)
      std::fprintf(stderr,
                   "note: checkpoint '%s' is a bare UNet2DModel state dict without %s; the model's own "
                   "(untrained, seed 0) %s is used (--allow-missing-class-emb)\n",
                   c.path.c_str(), k.c_str(), k.c_str());
  } catch (const std::exception& e) {
    bool hint = false;
    std::string m = one_line_mismatch(e.what(), &hint);
    if (hint)
      m += " (class_emb.weight is not part of a bare UNet2DModel state dict: pass --allow-missing-class-emb "
           "to sample with an untrained class embedding)";
    fail(c.path, std::string(use_ema ? "EMA weights: " : "") + m);
  }
}

void load_optimizer(nn::AdamW& opt, const Checkpoint& c) {
  if (!c.has_optimizer()) fail(c.path, "has no optimizer state (optim.exp_avg.* / optim.exp_avg_sq.*)");
  std::vector<Tensor> m, v;
  nn::NamedTensors nm, nv;
  for (size_t i = 0; i < opt.names().size(); ++i) {
    const Tensor& ref = opt.exp_avg()[i];
    m.push_back(Tensor::zeros(ref.shape(), ref.dtype()));
    v.push_back(Tensor::zeros(ref.shape(), ref.dtype()));
    nm.emplace_back(opt.names()[i], m.back());
    nv.emplace_back(opt.names()[i], v.back());
  }
  try {
    nn::load_state_dict(nm, c.exp_avg);
  } catch (const std::exception& e) {
    fail(c.path, std::string("optimizer exp_avg: ") + e.what());
  }
  try {
    nn::load_state_dict(nv, c.exp_avg_sq);
  } catch (const std::exception& e) {
    fail(c.path, std::string("optimizer exp_avg_sq: ") + e.what());
  }
  opt.load_state(c.state.step, m, v);
}

models::ConditionalConfig parse_model_config(std::string_view text, const std::string& what) {
  try {
    models::ConditionalConfig c = models::ConditionalConfig::from_json(parse_json_bounded(text, what));
    c.validate();
    return c;
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    // parse_json_bounded's messages already start with `what`.
    throw CheckpointError(msg.compare(0, what.size(), what) == 0 ? msg : what + ": " + msg);
  }
}

models::ConditionalConfig read_model_config(const std::string& path) {
  const std::string what = "model config '" + path + "'";
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError(what + ": cannot open file");
  // Read at most one byte past the limit, so a huge file is rejected without being read whole.
  std::string text(kMaxJsonBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) throw CheckpointError(what + ": read error");
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxJsonBytes)
    throw CheckpointError(what + ": file is larger than the " + std::to_string(kMaxJsonBytes) +
                          "-byte limit for a config");
  return parse_model_config(text, what);
}

}  // namespace engine::app
