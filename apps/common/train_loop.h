// The fm_train training loop as a library function (the binary parses flags and calls train()): data
// loading, the flow-matching step, AdamW, EMA, logging (metrics.csv with loss per sigma bin, TensorBoard,
// progress bar, loss.png and loss_sigma.png), periodic
// checkpoints and sample grids, exact resume, stop requests (signals) and non-finite-loss handling.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "apps/common/checkpoint.h"
#include "apps/common/dist.h"
#include "core/tensor.h"
#include "models/unet2d_config.h"

namespace engine::app {

struct TrainConfig {
  std::string data_dir;  // MNIST directory (already resolved)
  int64_t epochs = 10;
  int64_t max_steps = 0;  // stop when the global step count reaches this (0 = no limit)
  int64_t batch_size = 128;
  double lr = 1e-3;
  double cfg_drop = 0.1;
  uint64_t seed = 0;
  Device device = Device::cpu();
  models::ConditionalConfig model = models::ConditionalConfig::seed();
  std::string out_dir = "runs/fm";
  double ema_decay = 0.999;        // 0 disables the EMA
  int64_t checkpoint_every = 500;  // steps; 0 = only at the end
  int64_t sample_every = 1000;     // steps; 0 = only at the end
  bool final_samples = true;       // samples_final.png at the end
  int64_t limit = 0;               // use only the first N training images (0 = all)
  bool quiet = false;
  int64_t debug_nan_at_step = 0;  // testing: pretend the loss of this (1-based) step is NaN
  nlohmann::json train_args = nlohmann::json::object();  // stored in checkpoints
  std::function<bool()> stop_requested;                  // polled after every step
  // Sample-quality evaluation every `eval_every` steps and at the end (0 = off): `evaluate` gets the model
  // that is sampled (the EMA if any) and returns named figures, logged to TensorBoard as eval/<name> and to
  // <out>/eval.csv (step + names).
  int64_t eval_every = 0;
  std::function<std::vector<std::pair<std::string, double>>(const models::ConditionalUNet&)> evaluate;
  // Data parallelism (docs/distributed.md): with comm (not owned; nullptr = one process) every rank runs
  // train() on the same config; each computes the gradients of its share of every global batch of
  // batch_size and all apply the same AdamW step. Only rank 0 writes files or prints (the others behave as
  // quiet). grad_chunk > 0: gradients are computed per chunk of grad_chunk images and summed in chunk
  // order, bitwise independent of the number of ranks (also with one process).
  dist::Communicator* comm = nullptr;
  dist::DeviceAllreduce* device_reduce = nullptr;  // NCCL for CUDA ranks (not owned; nullptr = via comm)
  int64_t grad_chunk = 0;
  std::function<void(int64_t)> before_step;  // testing: called with the 1-based number of the next step
};

struct TrainResult {
  // NothingToDo: a resumed checkpoint is already at (or past) the run's last step; no file was touched.
  enum class Status { Done, Interrupted, NonFinite, NothingToDo };
  Status status = Status::Done;
  int64_t step = 0;                       // global step count at exit
  std::vector<int64_t> steps;             // the steps run by this call ...
  std::vector<double> losses;             // ... and their losses
  std::string checkpoint;                 // last checkpoint written or resumed from ("" if none)
  std::string message;                    // for NonFinite: the user-facing explanation
  double ms_per_step = 0, img_per_s = 0;  // averages over this call's steps after the first
};

// Seeds derived from --seed for the training noise and the sample grids (the model initialisation uses
// --seed itself, the data order the loader's own shuffle of --seed).
uint64_t training_rng_seed(uint64_t seed);
uint64_t sampling_rng_seed(uint64_t seed);

// Runs (or, with `resume`, continues) training. `resume` must have been read with read_checkpoint; its
// model config, batch size, seed and limit must equal cfg's (the caller merges flags). Throws on errors
// (DataError, CheckpointError, engine::Error); a non-finite loss returns Status::NonFinite without touching
// the last checkpoint. A resume with no step left prints one line and returns Status::NothingToDo before
// touching any file. At start, temporary files left in cfg.out_dir by a killed writer are removed (with a
// note). TensorBoard events are flushed at every checkpoint and at least every 10 s. A failed checkpoint
// write throws CheckpointError saying which earlier checkpoint (if any) is still in place.
TrainResult train(const TrainConfig& cfg, const Checkpoint* resume = nullptr);

// Loss column of a metrics.csv (step order), for plots.
std::vector<double> read_metrics_losses(const std::string& path);

// The columns of a metrics.csv the plots use: step, loss and (kSigmaBins per row; NaN = no sample in that
// bin, or a file without loss_sigma_* columns: empty rows) the per-sigma-bin mean losses. A missing file
// gives empty vectors.
struct MetricsLog {
  std::vector<int64_t> steps;
  std::vector<double> losses;
  std::vector<std::vector<double>> sigma_bins;
};
MetricsLog read_metrics(const std::string& path);

}  // namespace engine::app
