// fm_train: class-conditional flow matching on MNIST with the engine (the blog recipe: seed UNet, sigma ~
// U[0.006, 0.994], velocity target noise - x, 10% class dropout, AdamW 1e-3, batch 128, 10 epochs).
// Exit status: 0 done, 1 runtime error (data, checkpoint, non-finite loss), 2 usage error,
// 130 stopped by SIGINT/SIGTERM after saving a checkpoint. See docs/apps.md.
#include <omp.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>

#include "apps/common/checkpoint.h"
#include "apps/common/cli_checks.h"
#include "apps/common/dist.h"
#include "apps/common/malloc_tuning.h"
#include "apps/common/mnist.h"
#include "apps/common/omp_wait.h"
#include "apps/common/run_flags.h"
#include "apps/common/sample_eval.h"
#include "apps/common/train_loop.h"
#include "runtime/cuda_device.h"

namespace {

volatile sig_atomic_t g_signal = 0;
std::atomic<int64_t> g_first_signal_ns{0};  // CLOCK_MONOTONIC time of the first signal
static_assert(std::atomic<int64_t>::is_always_lock_free, "used in a signal handler");

// The first SIGINT/SIGTERM asks for a clean stop (checkpoint, exit 130). A second one at least a second
// later kills the process at once. Repeats within that second are the same request: `timeout` and other
// supervisors send the signal both to the child and to its process group, microseconds apart, and with
// a plain "second signal kills" (SA_RESETHAND) that race killed the run before it saved its checkpoint.
extern "C" void on_signal(int sig) {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);  // async-signal-safe (POSIX)
  const int64_t now_ns = int64_t(now.tv_sec) * 1000000000 + now.tv_nsec;
  if (g_signal == 0) {
    g_signal = sig;
    g_first_signal_ns = now_ns;
    return;
  }
  if (now_ns - g_first_signal_ns >= 1000000000) {
    signal(sig, SIG_DFL);
    raise(sig);
  }
}

void install_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGINT);  // the handler is never interrupted by the other stop signal
  sigaddset(&sa.sa_mask, SIGTERM);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

// The word as a POSIX shell reads it back: unchanged when safe, else single-quoted.
std::string shell_quote(const std::string& w) {
  if (!w.empty() &&
      w.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+-=./:@,%") ==
          std::string::npos)
    return w;
  std::string q = "'";
  for (char c : w) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace

int main(int argc, char** argv) {
  engine::app::apply_omp_wait_default(argv);  // first: before any OpenMP region (docs/apps.md "Threads")
  engine::app::apply_malloc_defaults();       // keep freed tensor memory for reuse (docs/apps.md "Memory")
  using engine::app::TrainConfig;
  using engine::app::UsageError;
  namespace app_ns = engine::app;
  CLI::App app{
      "fm_train: train a class-conditional flow-matching UNet on MNIST (CPU or CUDA).\n"
      "Writes metrics.csv, TensorBoard events, loss.png, sample grids and checkpoint.safetensors into "
      "--out.\n"
      "Exit status: 0 done, 1 runtime error (bad data/checkpoint, NaN/Inf loss), 2 usage error,\n"
      "130 stopped by Ctrl-C/SIGTERM (the current step finishes and a checkpoint is saved first)."};
  TrainConfig cfg;
  std::string data, device_str = "auto", model_config, resume, precision = "fp32";
  int threads = 0;
  app.add_option("--data", data,
                 "MNIST directory with the four IDX(.gz) files [default: $MNIST_DIR, else data/mnist]");
  app.add_option("--epochs", cfg.epochs, "number of passes over the training images")
      ->check(app_ns::int_in(1, 1e6))
      ->capture_default_str();
  app.add_option(
         "--max-steps", cfg.max_steps,
         "stop when the global step count reaches N (0 = run all epochs; counts from the start of the run, "
         "also when resuming)")
      ->check(app_ns::int_in(0))
      ->capture_default_str();
  app.add_option("--batch-size", cfg.batch_size,
                 "images per step (the last batch of an epoch may be smaller)")
      ->check(app_ns::int_in(1, 1e6))
      ->capture_default_str();
  app.add_option("--lr", cfg.lr, "AdamW learning rate (betas 0.9/0.999, eps 1e-8, weight decay 0.01)")
      ->check(app_ns::finite(0, 10))
      ->capture_default_str();
  app.add_option("--cfg-drop", cfg.cfg_drop,
                 "probability of dropping the class label per image (trains the unconditional model for CFG)")
      ->check(app_ns::finite(0, 1))
      ->capture_default_str();
  app.add_option("--seed", cfg.seed, "seed of the weights, data order and all noise")
      ->check(app_ns::int_in(0, 18446744073709551615.0))
      ->capture_default_str();
  app.add_option("--device", device_str, "cpu, cuda, cuda:N or auto (cuda when a GPU is present)")
      ->capture_default_str();
  app.add_option("--model-config", model_config,
                 "ConditionalConfig JSON: diffusers UNet2DModel keys + num_classes, class_emb_size "
                 "[default: the blog's seed model, 1.7M parameters]");
  app.add_option("--out", cfg.out_dir,
                 "output directory [default: runs/fm; with --resume: the checkpoint's directory]");
  app.add_option(
      "--resume", resume,
      "continue from a checkpoint: weights, EMA, AdamW moments, step, data position and RNG state; "
      "flags not given take their value from the checkpoint");
  app.add_option(
         "--ema-decay", cfg.ema_decay,
         "EMA of the weights (saved in checkpoints, used for sample grids); the decay at update t (from 0) "
         "is min(ema-decay, (1+t)/(10+t)) as a warm-up; 0 disables the EMA")
      ->check(app_ns::number_in(0, 1, false, /*hi_open=*/true))
      ->capture_default_str();
  app.add_option("--checkpoint-every", cfg.checkpoint_every,
                 "save checkpoint.safetensors every N steps (and always at the end; 0 = only at the end)")
      ->check(app_ns::int_in(0))
      ->capture_default_str();
  app.add_option("--sample-every", cfg.sample_every,
                 "write samples_step<N>.png (EMA weights, 8 per class, 15 Euler steps, CFG 3) every N steps; "
                 "samples_final.png is always written at the end (0 = only at the end)")
      ->check(app_ns::int_in(0))
      ->capture_default_str();
  int64_t eval_per_class = 10;
  std::string eval_classifier;
  app.add_option("--eval-every", cfg.eval_every,
                 "every N steps and at the end, score eval-per-class x 10 samples (EMA weights, 15 Euler "
                 "steps, CFG 3) with fm_eval's classifier: accuracy, FD, FD floor, precision, recall to "
                 "TensorBoard (eval/*) and eval.csv (0 = off)")
      ->check(app_ns::int_in(0))
      ->capture_default_str();
  app.add_option("--eval-per-class", eval_per_class, "samples per class for --eval-every")
      ->check(app_ns::int_in(1, 1000))
      ->capture_default_str();
  app.add_option(
      "--eval-classifier", eval_classifier,
      "classifier weights for --eval-every [default: models/weights/mnist_classifier.safetensors]");
  bool no_samples = false;
  app.add_flag("--no-samples", no_samples, "write no sample grids at all (quick runs)");
  app.add_option("--limit", cfg.limit, "use only the first N training images (0 = all 60000)")
      ->check(app_ns::int_in(0))
      ->capture_default_str();
  app.add_option("--threads", threads, "OpenMP threads for CPU compute (0 = all cores)")
      ->check(app_ns::int_in(0, 4096))
      ->capture_default_str();
  app_ns::add_precision_flag(app, precision);
  app.add_flag("--quiet", cfg.quiet, "no progress output (errors are still printed)");
  bool dist_flag = false;
  double dist_timeout = 300;
  app.add_flag("--dist", dist_flag,
               "data parallel over MPI (docs/distributed.md); implied when started by mpirun/srun, which set "
               "OMPI_COMM_WORLD_SIZE/PMIX_SIZE/PMI_SIZE. --batch-size stays the global batch; rank 0 writes");
  app.add_option("--grad-chunk", cfg.grad_chunk,
                 "deterministic mode: compute the gradient per chunk of N images of every batch and sum the "
                 "chunks in order, so results are bitwise equal for any number of ranks, one process "
                 "included (0 = off: one shard per rank, summed by MPI_Allreduce)")
      ->check(app_ns::int_in(0, 1e6))
      ->capture_default_str();
  app.add_option("--dist-timeout", dist_timeout,
                 "seconds a rank waits in a collective before it declares a peer dead or hung and aborts the "
                 "job (must exceed rank 0's longest checkpoint/sample/eval pause)")
      ->check(app_ns::finite(0.1, 1e6))
      ->capture_default_str();
  std::string debug_fault;
  int debug_fault_rank = 1;
  int64_t debug_fault_step = 1;
  app.add_option("--debug-fault", debug_fault,
                 "testing only: 'kill' (SIGKILL) or 'hang' (sleep forever) rank --debug-fault-rank before "
                 "step --debug-fault-step")
      ->check(CLI::IsMember({"kill", "hang"}))
      ->group("Testing");
  app.add_option("--debug-fault-rank", debug_fault_rank, "testing only: the rank --debug-fault hits")
      ->check(app_ns::int_in(0, 1e6))
      ->group("Testing");
  app.add_option("--debug-fault-step", debug_fault_step, "testing only: the step --debug-fault hits")
      ->check(app_ns::int_in(1))
      ->group("Testing");
  app.add_option("--debug-nan-at-step", cfg.debug_nan_at_step,
                 "testing only: treat the loss of step N as NaN (exercises the non-finite-loss exit)")
      ->check(app_ns::int_in(0))
      ->group("Testing");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  auto given = [&](const char* flag) { return app.count(flag) > 0; };

  // Data parallelism: MPI when asked for or launched by an MPI launcher; errors of a multi-rank run end
  // the whole job (MPI_Abort), so that no rank waits for one that has gone.
  std::unique_ptr<engine::app::dist::Communicator> comm;
  std::unique_ptr<engine::app::dist::DeviceAllreduce> nccl;  // destroyed before comm (MPI_Finalize)
  auto finish = [&](int code) {
    if (comm && comm->size() > 1 && code != 0) comm->abort(code);
    return code;
  };
  auto prefix = [&] {
    return comm && comm->rank() > 0 ? "fm_train: rank " + std::to_string(comm->rank()) + ": "
                                    : std::string("fm_train: ");
  };
  try {
    const int launched = engine::app::dist::launcher_world_size();
    if (dist_flag || launched > 0) {
      if (!engine::app::dist::built_with_mpi())
        throw UsageError(std::string(dist_flag ? "--dist"
                                               : "started by an MPI launcher with " +
                                                     std::to_string(launched) + " processes") +
                         ": this fm_train was built without MPI (install libopenmpi-dev openmpi-bin and "
                         "reconfigure; see docs/distributed.md)");
      comm = engine::app::dist::make_mpi(dist_timeout);
    }
    if (comm && comm->rank() > 0) cfg.quiet = true;  // the other ranks print nothing but errors
    cfg.comm = comm.get();
    if (!debug_fault.empty() && comm && comm->rank() == debug_fault_rank) {
      const bool kill = debug_fault == "kill";
      cfg.before_step = [kill, debug_fault_step](int64_t step) {
        if (step != debug_fault_step) return;
        if (kill) raise(SIGKILL);
        for (;;) pause();
      };
    }
    try {
      if (threads > 0) omp_set_num_threads(threads);
      cfg.device = engine::Device::parse(device_str);
      // One GPU per rank of a node: "cuda"/"auto" pick cuda:<local rank> (docs/distributed.md).
      if (comm && comm->size() > 1 && cfg.device.is_cuda() && device_str.find(':') == std::string::npos &&
          engine::cuda::device_count() > 0)
        cfg.device.index = comm->local_rank() % engine::cuda::device_count();
      precision = app_ns::apply_precision_flag(precision, cfg.device);  // the precision that runs
      if (cfg.device.is_cuda() && cfg.device.index >= engine::cuda::device_count())
        throw UsageError("--device " + device_str + ": no such CUDA device" +
                         (engine::cuda::built_with_cuda() ? "" : " (built without CUDA)"));
    } catch (const engine::Error& e) {
      throw UsageError(e.what());
    }
    if (!model_config.empty()) cfg.model = engine::app::read_model_config(model_config);

    std::unique_ptr<engine::app::Checkpoint> ckpt;
    if (!resume.empty()) {
      ckpt = std::make_unique<engine::app::Checkpoint>(engine::app::read_checkpoint(resume));
      if (!ckpt->training)
        throw engine::app::CheckpointError(
            "checkpoint '" + resume +
            "' is not a training checkpoint (no format engine-fm-checkpoint-v1), "
            "so it cannot be resumed");
      const nlohmann::json& a = ckpt->state.train_args;
      if (!model_config.empty() && cfg.model.to_json() != ckpt->config.to_json())
        throw UsageError("--model-config " + model_config + " differs from the model config stored in " +
                         resume);
      cfg.model = ckpt->config;
      auto fixed = [&](const char* flag, const char* key, auto& v) {
        using T = std::decay_t<decltype(v)>;
        if (!a.contains(key)) return;
        const T stored = a.at(key).get<T>();
        if (given(flag) && v != stored)
          throw UsageError(std::string(flag) + " cannot change when resuming (the checkpoint used " +
                           a.at(key).dump() + ")");
        v = stored;
      };
      auto inherit = [&](const char* flag, const char* key, auto& v) {
        using T = std::decay_t<decltype(v)>;
        if (!given(flag) && a.contains(key)) v = a.at(key).get<T>();
      };
      fixed("--batch-size", "batch_size", cfg.batch_size);
      fixed("--seed", "seed", cfg.seed);
      fixed("--limit", "limit", cfg.limit);
      inherit("--epochs", "epochs", cfg.epochs);
      inherit("--max-steps", "max_steps", cfg.max_steps);
      inherit("--lr", "lr", cfg.lr);
      inherit("--cfg-drop", "cfg_drop", cfg.cfg_drop);
      inherit("--ema-decay", "ema_decay", cfg.ema_decay);
      inherit("--checkpoint-every", "checkpoint_every", cfg.checkpoint_every);
      inherit("--sample-every", "sample_every", cfg.sample_every);
      inherit("--grad-chunk", "grad_chunk", cfg.grad_chunk);
      if (!given("--no-samples") && a.contains("no_samples") && a.at("no_samples").is_boolean())
        no_samples = a.at("no_samples").get<bool>();
      // The data directory the run used (stored absolute), unless --data is given.
      if (data.empty() && a.contains("data") && a.at("data").is_string()) {
        data = a.at("data").get<std::string>();
        std::error_code ec;
        if (!std::filesystem::is_directory(data, ec))
          throw engine::app::DataError("the MNIST directory '" + data + "' stored in " + resume +
                                       " is not a directory any more; pass --data DIR");
      }
      if (!given("--out")) cfg.out_dir = std::filesystem::path(resume).parent_path().string();
      if (cfg.out_dir.empty()) cfg.out_dir = ".";
    }
    if (cfg.batch_size < 1) throw UsageError("--batch-size must be >= 1");
    if (cfg.grad_chunk < 0) throw UsageError("--grad-chunk must be >= 0");
    if (cfg.epochs < 1) throw UsageError("--epochs must be >= 1");
    if (cfg.max_steps < 0 || cfg.limit < 0 || cfg.checkpoint_every < 0 || cfg.sample_every < 0)
      throw UsageError("--max-steps, --limit, --checkpoint-every and --sample-every must be >= 0");
    if (!(std::isfinite(cfg.lr) && cfg.lr >= 0 && cfg.lr <= 10))
      throw UsageError("--lr must be a finite number in [0, 10]");
    if (!(cfg.cfg_drop >= 0 && cfg.cfg_drop <= 1)) throw UsageError("--cfg-drop must be in [0, 1]");
    if (!(cfg.ema_decay >= 0 && cfg.ema_decay < 1)) throw UsageError("--ema-decay must be in [0, 1)");

    // Every output path before any heavy work (data loading, model construction).
    if (!comm || comm->rank() == 0) app_ns::check_output_dir("--out", cfg.out_dir);

    if (no_samples) {
      cfg.sample_every = 0;
      cfg.final_samples = false;
    }
    std::vector<std::string> data_notes;
    cfg.data_dir = std::filesystem::absolute(engine::app::resolve_data_dir(data, &data_notes))
                       .lexically_normal()
                       .string();
    if (!comm || comm->rank() == 0)
      for (const std::string& n : data_notes) std::fprintf(stderr, "fm_train: note: %s\n", n.c_str());
    cfg.train_args = {{"epochs", cfg.epochs},
                      {"max_steps", cfg.max_steps},
                      {"batch_size", cfg.batch_size},
                      {"lr", cfg.lr},
                      {"cfg_drop", cfg.cfg_drop},
                      {"seed", cfg.seed},
                      {"ema_decay", cfg.ema_decay},
                      {"checkpoint_every", cfg.checkpoint_every},
                      {"sample_every", cfg.sample_every},
                      {"limit", cfg.limit},
                      {"data", cfg.data_dir},
                      {"device", cfg.device.str()},
                      {"precision", precision},
                      {"model_config", model_config},
                      {"no_samples", no_samples},
                      {"grad_chunk", cfg.grad_chunk}};
    std::shared_ptr<app_ns::TrainingEvaluator> evaluator;
    if (cfg.eval_every > 0 && (!comm || comm->rank() == 0)) {
      if (eval_classifier.empty()) eval_classifier = app_ns::default_classifier_path();
      if (!std::filesystem::is_regular_file(eval_classifier))
        throw UsageError("--eval-classifier '" + eval_classifier + "': no such file");
      evaluator = std::make_shared<app_ns::TrainingEvaluator>(
          cfg.data_dir, eval_classifier, eval_per_class, cfg.device, app_ns::sampling_rng_seed(cfg.seed));
      cfg.evaluate = [evaluator](const engine::models::ConditionalUNet& m) {
        const app_ns::EvalResult r = (*evaluator)(m);
        return std::vector<std::pair<std::string, double>>{{"accuracy", r.accuracy},
                                                           {"fd", r.fd},
                                                           {"fd_floor", r.fd_floor},
                                                           {"precision", r.precision},
                                                           {"recall", r.recall}};
      };
    }
    // CUDA ranks sum the default-mode gradients with NCCL in device memory when the build has it
    // (UNVERIFIED on GPUs); deterministic mode and builds without NCCL go through the host and MPI.
    if (comm && comm->size() > 1 && cfg.device.is_cuda() && cfg.grad_chunk == 0 &&
        engine::app::dist::built_with_nccl()) {
      // All ranks or none: a rank that cannot load libnccl sends every rank the host way.
      std::string why;
      double loadable = engine::app::dist::nccl_loadable(&why) ? 1 : 0;
      comm->allreduce_sum(&loadable, 1);
      if (loadable == comm->size()) {
        nccl = engine::app::dist::make_nccl(*comm, cfg.device.index, dist_timeout);
        cfg.device_reduce = nccl.get();
      } else if (!cfg.quiet || !why.empty()) {
        std::fprintf(stderr, "%snote: NCCL not loadable on every rank (%s); gradients go through MPI\n",
                     prefix().c_str(), why.empty() ? "on another rank" : why.c_str());
      }
    }
    cfg.stop_requested = [] { return g_signal != 0; };
    install_handlers();

    const engine::app::TrainResult r = engine::app::train(cfg, ckpt.get());
    switch (r.status) {
      case engine::app::TrainResult::Status::Done:
      case engine::app::TrainResult::Status::NothingToDo:
        return 0;
      case engine::app::TrainResult::Status::NonFinite:
        if (!comm || comm->rank() == 0) std::fprintf(stderr, "fm_train: %s\n", r.message.c_str());
        return 1;  // every rank saw the same (reduced) loss and returns here

      case engine::app::TrainResult::Status::Interrupted:
        if (comm && comm->rank() > 0) return 130;
        std::fprintf(stderr,
                     "fm_train: stopped by %s after step %lld; checkpoint saved at %s (continue with: %s "
                     "--resume %s)\n",
                     g_signal == SIGTERM ? "SIGTERM" : "SIGINT", static_cast<long long>(r.step),
                     r.checkpoint.c_str(), shell_quote(argv[0]).c_str(), shell_quote(r.checkpoint).c_str());
        return 130;
    }
    return 0;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s%s\nRun with --help for more information.\n", prefix().c_str(), e.what());
    return finish(2);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s%s\n", prefix().c_str(), e.what());
    return finish(1);
  } catch (...) {
    std::fprintf(stderr, "%sunknown error\n", prefix().c_str());
    return finish(1);
  }
}
