// Training checkpoints of the flow-matching apps: one safetensors file that is at the same time a loadable
// ConditionalUNet state dict (the model weights under their plain wrapper keys class_emb.weight,
// model.conv_in.weight, ...) plus the rest of the training state under prefixes that cannot collide:
//   ema.<key>                 EMA of the weights
//   optim.exp_avg.<key>       AdamW first moments
//   optim.exp_avg_sq.<key>    AdamW second moments
// and __metadata__ (all strings): format = "engine-fm-checkpoint-v1", config (ConditionalConfig JSON), step,
// epoch and batch_in_epoch (position of the NEXT batch), rng_seed and rng_offset (Philox generator state),
// adamw (JSON options), ema_decay, train_args (JSON of the training flags).
// Files without that format tag (e.g. a PyTorch export by scripts/convert_lightning_ckpt.py) are read as
// plain weights; their optional `config` metadata is honoured.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "core/safetensors.h"
#include "models/conditional_unet.h"
#include "nn/adamw.h"

namespace engine::app {

inline constexpr const char* kCheckpointFormat = "engine-fm-checkpoint-v1";

// Every checkpoint problem; the message names the file.
class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct TrainingState {
  int64_t step = 0;   // optimizer steps done
  int64_t epoch = 0;  // data-loader position of the next batch
  int64_t batch_in_epoch = 0;
  uint64_t rng_seed = 0, rng_offset = 0;
  nn::AdamWOptions adamw;
  double ema_decay = 0;  // 0 = no EMA stored
  nlohmann::json train_args = nlohmann::json::object();
};

// Writes atomically (a crash leaves the previous file intact). `ema` and `opt` may be null.
void save_checkpoint(const std::string& path, const models::ConditionalUNet& model,
                     const models::ConditionalUNet* ema, const nn::AdamW* opt, const TrainingState& state);

// Removes the temporary files that the atomic writer (st::write_bytes_atomic: ".<name>.tmp.<pid>.<n>") left
// in `dir` when its process was killed mid-write; files of a still-running process are kept. Returns the
// removed file names (empty if none or `dir` does not exist). Never throws.
std::vector<std::string> remove_stale_temp_files(const std::string& dir);

struct Checkpoint {
  std::string path;
  bool training = false;    // has the engine-fm-checkpoint-v1 format tag
  bool has_config = false;  // `config` metadata present (else config is the seed config)
  models::ConditionalConfig config;
  TrainingState state;                           // meaningful when training
  st::StFile weights, ema, exp_avg, exp_avg_sq;  // split by prefix (prefix removed)

  bool has_ema() const { return !ema.tensors.empty(); }
  bool has_optimizer() const { return !exp_avg.tensors.empty() && !exp_avg_sq.tensors.empty(); }
};

// Reads and validates a checkpoint (or a plain wrapper / bare UNet2DModel state dict). Throws
// CheckpointError naming the file for unreadable, truncated or corrupt files and bad metadata.
Checkpoint read_checkpoint(const std::string& path);
// The same validation for an already parsed safetensors file; `path` only names it in messages.
Checkpoint checkpoint_from_st(st::StFile f, const std::string& path);

// Strict loads (every key, shape and dtype checked). Throw CheckpointError with one line: the counts of
// missing/unexpected/mismatched keys, the first three, and the file. allow_missing_class_emb: a bare
// UNet2DModel state dict (no class_emb.weight) keeps the model's own class embedding, with a note on stderr.
void load_weights(models::ConditionalUNet& model, const Checkpoint& ckpt, bool use_ema,
                  bool allow_missing_class_emb = false);
void load_optimizer(nn::AdamW& opt, const Checkpoint& ckpt);

// Reads a ConditionalConfig JSON file (diffusers UNet2DModel keys + num_classes, class_emb_size).
// JSON text over 1 MB (kMaxJsonBytes), nested deeper than 64 levels, with duplicate keys, non-integral or
// out-of-range integers, or failing validation throws CheckpointError naming the file.
models::ConditionalConfig read_model_config(const std::string& path);
// The same for JSON text in memory; `what` names it in messages (e.g. "model config 'x.json'").
models::ConditionalConfig parse_model_config(std::string_view text, const std::string& what);

}  // namespace engine::app
