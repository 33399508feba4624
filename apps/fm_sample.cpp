// fm_sample: draws class-conditional MNIST samples from a flow-matching checkpoint (fm_train's, or a plain
// wrapper state dict exported from PyTorch) with classifier-free guidance, and writes a grid PNG with one
// row per class (and optionally the raw samples as safetensors).
// Exit status: 0 done, 1 runtime error (bad checkpoint / config), 2 usage error. See docs/apps.md.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "apps/common/checkpoint.h"
#include "apps/common/cli_checks.h"
#include "apps/common/flow_matching.h"
#include "apps/common/image_grid.h"
#include "apps/common/malloc_tuning.h"
#include "apps/common/omp_wait.h"
#include "apps/common/run_flags.h"
#include "apps/common/train_loop.h"
#include "nn/state_dict.h"
#include "runtime/cuda_device.h"

int main(int argc, char** argv) {
  engine::app::apply_omp_wait_default(argv);  // first: before any OpenMP region (docs/apps.md "Threads")
  engine::app::apply_malloc_defaults();       // keep freed tensor memory for reuse (docs/apps.md "Memory")
  namespace app_ns = engine::app;
  CLI::App app{
      "fm_sample: sample MNIST digits from a flow-matching checkpoint with classifier-free guidance.\n"
      "Writes a PNG grid with one row per class (pixel values in [-1, 1] clipped and mapped to 0..255),\n"
      "labelled with the class of each row and the steps, solver, CFG scale and seed (--bare-grid: none).\n"
      "Exit status: 0 done, 1 runtime error (unreadable/corrupt/mismatched checkpoint), 2 usage error."};
  std::string checkpoint, model_config, out = "grid.png", save_tensor;
  int64_t per_class = 8;
  std::vector<int64_t> classes;
  bool use_ema = true, quiet = false, allow_missing_class_emb = false, bare_grid = false;
  app_ns::SamplingFlags sf;
  app_ns::ComputeFlags cf;
  app.add_option("--checkpoint", checkpoint,
                 "fm_train checkpoint, or a wrapper state dict as safetensors (e.g. from "
                 "scripts/convert_lightning_ckpt.py)")
      ->required();
  app.add_option("--model-config", model_config,
                 "ConditionalConfig JSON [default: the checkpoint's `config` metadata, else the seed model]");
  app_ns::add_sampling_flags(
      app, sf, "noise seed (same seed, same samples; fm_train's samples_final.png uses its --seed)");
  app.add_option("--per-class", per_class, "samples per class (columns of the grid)")
      ->check(app_ns::int_in(1, 10000))
      ->capture_default_str();
  app.add_option("--classes", classes, "comma-separated classes, one grid row each [default: all]")
      ->check(app_ns::int_in(0, 1e9))
      ->delimiter(',');
  app_ns::EmaFlags ema_flags;
  app_ns::add_ema_flags(app, ema_flags);
  app_ns::add_compute_flags(app, cf);
  app.add_option("--out", out, "grid PNG path (must end in .png)")->capture_default_str();
  app.add_option("--save-tensor", save_tensor,
                 "also write the raw samples (must end in .safetensors): `samples` (N, 1, H, W) F32 and "
                 "`labels` (N,) I64");
  app.add_flag("--allow-missing-class-emb", allow_missing_class_emb,
               "accept a bare UNet2DModel state dict (no class_emb.weight): the class embedding stays "
               "untrained (seed 0), so class conditioning is meaningless");
  app.add_flag("--bare-grid", bare_grid,
               "write only the samples (grayscale, no caption line and no class labels left of the rows)");
  app.add_flag("--quiet", quiet, "print nothing but errors");
  if (const int rc = app_ns::parse_command_line(app, argc, argv); rc >= 0) return rc;

  try {
    app_ns::SampleOptions opt;
    engine::Device device;
    try {
      // Output paths first: a bad --out must not cost a sampling run.
      app_ns::check_ema_flags(ema_flags);
      app_ns::check_output_file("--out", out, ".png");
      if (!save_tensor.empty()) app_ns::check_output_file("--save-tensor", save_tensor, ".safetensors");
      app_ns::apply_sampling_flags(sf, opt);
      device = app_ns::apply_compute_flags(cf);
    } catch (const engine::Error& e) {
      throw app_ns::UsageError(e.what());
    }

    const int64_t steps = sf.steps;
    const double cfg_scale = sf.cfg_scale;
    const uint64_t seed = sf.seed;
    const app_ns::Checkpoint ckpt = app_ns::read_checkpoint(checkpoint);
    engine::models::ConditionalConfig config =
        model_config.empty() ? ckpt.config : app_ns::read_model_config(model_config);
    if (config.image_channels() != 1)
      throw app_ns::CheckpointError("the model has " + std::to_string(config.image_channels()) +
                                    " image channels; fm_sample writes grayscale grids (1 channel)");
    if (classes.empty())
      for (int64_t c = 0; c < std::min<int64_t>(config.num_classes, 10); ++c) classes.push_back(c);
    for (int64_t c : classes)
      if (c < 0 || c >= config.num_classes)
        throw app_ns::UsageError("--classes: class " + std::to_string(c) + " out of range [0, " +
                                 std::to_string(config.num_classes) + ")");
    use_ema = app_ns::use_ema_weights(ema_flags, ckpt.has_ema());

    engine::models::ConditionalUNet model(config, 0, device);
    try {
      app_ns::load_weights(model, ckpt, use_ema, allow_missing_class_emb);
    } catch (const app_ns::CheckpointError& e) {
      const std::string src = !model_config.empty() ? "--model-config " + model_config
                              : ckpt.has_config     ? std::string("the config stored in the checkpoint")
                                                    : std::string(
                                                          "the seed model config (the checkpoint has no config "
                                                              "metadata; pass --model-config)");
      throw app_ns::CheckpointError(std::string(e.what()) + " [model built from " + src + "]");
    }
    model.eval();

    const int64_t H = config.unet.sample_size > 0 ? config.unet.sample_size : 28, W = H;
    const std::vector<int64_t> lab = app_ns::grid_labels(classes, per_class);
    const int64_t N = static_cast<int64_t>(lab.size());
    engine::Generator gen(app_ns::sampling_rng_seed(seed));
    const auto t0 = std::chrono::steady_clock::now();
    engine::Tensor samples = app_ns::sample(model, engine::Tensor::from_vector<int64_t>(lab, {N}), gen, opt,
                                            H, W);  // (N, 1, H, W)
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    app_ns::GridLabels labels;
    if (!bare_grid) {
      char cfg_text[32];
      std::snprintf(cfg_text, sizeof cfg_text, "%g", cfg_scale);
      labels.caption = std::to_string(steps) + " " + app_ns::solver_name(opt.solver) + " steps, CFG " +
                       cfg_text + ", seed " + std::to_string(seed) + ", " + (use_ema ? "EMA" : "raw") +
                       " weights";
      for (int64_t c : classes) labels.row_labels.push_back("class " + std::to_string(c));
    }
    app_ns::write_grid_png(out, samples.data<float>(), N, H, W, per_class, 2, labels);
    if (!save_tensor.empty()) {
      engine::st::StFile f;
      f.tensors.push_back(engine::nn::st_from_tensor("samples", samples));
      f.tensors.push_back(
          engine::nn::st_from_tensor("labels", engine::Tensor::from_vector<int64_t>(lab, {N})));
      f.metadata = {{"checkpoint", checkpoint},
                    {"steps", std::to_string(steps)},
                    {"cfg_scale", std::to_string(cfg_scale)},
                    {"solver", app_ns::solver_name(opt.solver)},
                    {"seed", std::to_string(seed)},
                    {"ema", use_ema ? "true" : "false"}};
      engine::st::write_file_atomic(save_tensor, f);
    }
    if (!quiet)
      std::printf(
          "fm_sample: %lld samples (%zu classes x %lld), %s %lld steps, CFG %g, %s weights, device %s: "
          "%.2f s -> %s%s%s\n",
          static_cast<long long>(N), classes.size(), static_cast<long long>(per_class),
          app_ns::solver_name(opt.solver), static_cast<long long>(steps), cfg_scale, use_ema ? "EMA" : "raw",
          app_ns::device_description(device).c_str(), secs, out.c_str(), save_tensor.empty() ? "" : ", ",
          save_tensor.c_str());
    return 0;
  } catch (const app_ns::UsageError& e) {
    std::fprintf(stderr, "fm_sample: %s\nRun with --help for more information.\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fm_sample: %s\n", e.what());
    return 1;
  } catch (...) {
    std::fprintf(stderr, "fm_sample: unknown error\n");
    return 1;
  }
}
