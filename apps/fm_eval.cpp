// fm_eval: measures the quality of class-conditional MNIST samples with the engine's own classifier
// (models/mnist_classifier.h): class accuracy against the requested labels (overall and per class), the
// Frechet distance of classifier features against the MNIST test set beside the real-data floor, and
// k-NN precision/recall (Kynkaanniemi et al. 2019). Samples come from a checkpoint (sampled here, like
// fm_sample) or from a samples safetensors (fm_sample --save-tensor). --sweep-cfg repeats the checkpoint
// evaluation per guidance scale. Prints a table, or JSON with --json.
// Exit status: 0 done, 1 runtime error (bad checkpoint / samples / weights), 2 usage error. See docs/apps.md.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "apps/common/checkpoint.h"
#include "apps/common/cli_checks.h"
#include "apps/common/eval_cache.h"
#include "apps/common/flow_matching.h"
#include "apps/common/malloc_tuning.h"
#include "apps/common/mnist.h"
#include "apps/common/omp_wait.h"
#include "apps/common/phase_timer.h"
#include "apps/common/run_flags.h"
#include "apps/common/sample_eval.h"
#include "apps/common/train_loop.h"
#include "nn/state_dict.h"
#include "runtime/cuda_device.h"

namespace {

namespace app_ns = engine::app;

struct Samples {
  std::vector<float> images;  // n * 28 * 28
  std::vector<int64_t> labels;
};

// Reads `samples` (N, 1, 28, 28) F32 and `labels` (N,) I64 from a safetensors file (fm_sample --save-tensor).
Samples read_samples(const std::string& path) {
  const engine::st::StFile f = engine::st::read_file(path);
  const engine::st::StTensor* s = f.find("samples");
  const engine::st::StTensor* l = f.find("labels");
  if (!s || !l) throw std::runtime_error("'" + path + "': expected tensors `samples` and `labels`");
  if (s->dtype != engine::st::StDtype::F32 || s->shape.size() != 4 || s->shape[1] != 1 || s->shape[2] != 28 ||
      s->shape[3] != 28)
    throw std::runtime_error("'" + path + "': `samples` must be F32 (N, 1, 28, 28)");
  if (l->dtype != engine::st::StDtype::I64 || l->shape.size() != 1 || l->shape[0] != s->shape[0])
    throw std::runtime_error("'" + path +
                             "': `labels` must be I64 (N,) with N = " + std::to_string(s->shape[0]));
  Samples out;
  out.images = engine::nn::tensor_from_st(*s).to_vector<float>();
  out.labels = engine::nn::tensor_from_st(*l).to_vector<int64_t>();
  for (int64_t v : out.labels)
    if (v < 0 || v >= 10)
      throw std::runtime_error("'" + path + "': label " + std::to_string(v) + " out of range [0, 10)");
  return out;
}

void print_table(const std::vector<double>& scales, const std::vector<app_ns::EvalResult>& rs, bool sweep) {
  std::printf("%8s %9s %9s %9s %10s %8s\n", sweep ? "cfg" : "", "accuracy", "FD", "FD floor", "precision",
              "recall");
  for (size_t i = 0; i < rs.size(); ++i) {
    char cfg[32] = "";
    if (sweep) std::snprintf(cfg, sizeof cfg, "%g", scales[i]);
    std::printf("%8s %8.2f%% %9.3f %9.3f %10.3f %8.3f\n", cfg, 100 * rs[i].accuracy, rs[i].fd, rs[i].fd_floor,
                rs[i].precision, rs[i].recall);
  }
  std::printf("per-class accuracy (%%)%s\n", sweep ? ", one row per cfg" : "");
  std::printf("%8s", "");
  for (int c = 0; c < 10; ++c) std::printf(" %6d", c);
  std::printf("\n");
  for (size_t i = 0; i < rs.size(); ++i) {
    char cfg[32] = "";
    if (sweep) std::snprintf(cfg, sizeof cfg, "%g", scales[i]);
    std::printf("%8s", cfg);
    for (int c = 0; c < 10; ++c)
      if (std::isnan(rs[i].class_accuracy[c]))
        std::printf(" %6s", "-");
      else
        std::printf(" %6.1f", 100 * rs[i].class_accuracy[c]);
    std::printf("\n");
  }
}

}  // namespace

int main(int argc, char** argv) {
  engine::app::apply_omp_wait_default(argv);  // first: before any OpenMP region (docs/apps.md "Threads")
  engine::app::apply_malloc_defaults();       // keep freed tensor memory for reuse (docs/apps.md "Memory")
  CLI::App app{
      "fm_eval: score class-conditional MNIST samples with the engine's own classifier: class accuracy\n"
      "(does the model draw the digit it was asked for?), Frechet distance in the classifier's 128-d\n"
      "features against the MNIST test set (beside the floor: training vs test images, same count), and\n"
      "k-NN precision (fidelity) / recall (diversity). Samples come from --checkpoint (sampled here) or\n"
      "--samples (fm_sample --save-tensor).\n"
      "Exit status: 0 done, 1 runtime error, 2 usage error."};
  std::string checkpoint, samples_path, model_config, classifier, data;
  int64_t per_class = 100, k = 3;
  std::vector<double> sweep;
  app_ns::SamplingFlags sf;
  app_ns::ComputeFlags cf;
  std::string cache_dir;
  bool use_ema = true, json = false, no_cache = false;
  auto* src = app.add_option_group("source", "what to evaluate (exactly one)");
  src->add_option("--checkpoint", checkpoint, "fm_train checkpoint (or wrapper state dict) to sample");
  src->add_option("--samples", samples_path,
                  "samples safetensors: `samples` (N, 1, 28, 28) F32 in [-1, 1], `labels` (N,) I64");
  src->require_option(1);
  app.add_option("--data", data, "MNIST directory [default: $MNIST_DIR, else data/mnist]");
  app.add_option("--classifier", classifier,
                 "classifier weights [default: models/weights/mnist_classifier.safetensors]");
  app.add_option("--model-config", model_config, "ConditionalConfig JSON [default: the checkpoint's]");
  app.add_option("--per-class", per_class, "samples per class (checkpoint mode; 10 classes)")
      ->check(app_ns::int_in(1, 1000))
      ->capture_default_str();
  app_ns::add_sampling_flags(app, sf, "noise seed (as fm_sample) and reference-subset seed");
  app.add_option("--sweep-cfg", sweep, "comma-separated guidance scales, one evaluation each (e.g. 1,2,3,5)")
      ->check(app_ns::finite(-1000, 1000))
      ->delimiter(',');
  app_ns::EmaFlags ema_flags;
  app_ns::add_ema_flags(app, ema_flags);
  app_ns::add_compute_flags(app, cf);
  app.add_option("--k", k, "neighbourhood size for precision/recall")
      ->check(app_ns::int_in(1, 100))
      ->capture_default_str();
  app.add_flag("--json", json, "print one JSON object instead of the table");
  app.add_option("--cache-dir", cache_dir,
                 "where the real-data reference statistics are cached, keyed by classifier, MNIST files, "
                 "n, seed [default: $FM_EVAL_CACHE, else $XDG_CACHE_HOME/engine-fm_eval, else "
                 "~/.cache/engine-fm_eval]");
  app.add_flag("--no-cache", no_cache,
               "compute the reference statistics without reading or writing the cache");
  if (const int rc = app_ns::parse_command_line(app, argc, argv); rc >= 0) return rc;

  try {
    app_ns::SampleOptions opt;
    engine::Device device;
    std::string data_dir;
    try {
      app_ns::check_ema_flags(ema_flags);
      if (!samples_path.empty() && !sweep.empty())
        throw app_ns::UsageError("--sweep-cfg needs --checkpoint (samples files are already drawn)");
      app_ns::apply_sampling_flags(sf, opt);
      device = app_ns::apply_compute_flags(cf);
      if (classifier.empty()) classifier = app_ns::default_classifier_path();
      if (!std::filesystem::is_regular_file(classifier))
        throw app_ns::UsageError("--classifier '" + classifier + "': no such file");
      const std::string& in = checkpoint.empty() ? samples_path : checkpoint;
      if (!std::filesystem::is_regular_file(in))
        throw app_ns::UsageError(std::string(checkpoint.empty() ? "--samples" : "--checkpoint") + " '" + in +
                                 "': no such file");
      data_dir = app_ns::resolve_data_dir(data);
    } catch (const engine::Error& e) {
      throw app_ns::UsageError(e.what());
    } catch (const app_ns::DataError& e) {
      throw app_ns::UsageError(std::string("--data: ") + e.what());
    }

    const int64_t steps = sf.steps;
    const double cfg_scale = sf.cfg_scale;
    const uint64_t seed = sf.seed;
    // Inputs are read before the (slower) reference statistics, so a bad file fails fast.
    app_ns::PhaseTimer timer;
    Samples given;
    std::unique_ptr<engine::models::ConditionalUNet> model;
    int64_t n = 0;
    if (!samples_path.empty()) {
      given = read_samples(samples_path);
      n = static_cast<int64_t>(given.labels.size());
      if (n <= k || n > 10000)
        throw std::runtime_error("'" + samples_path + "': " + std::to_string(n) +
                                 " samples; fm_eval needs more than --k and at most 10,000");
    } else {
      const app_ns::Checkpoint ckpt = app_ns::read_checkpoint(checkpoint);
      engine::models::ConditionalConfig config =
          model_config.empty() ? ckpt.config : app_ns::read_model_config(model_config);
      const int64_t H = config.unet.sample_size > 0 ? config.unet.sample_size : 28;
      if (config.image_channels() != 1 || H != 28 || config.num_classes < 10)
        throw app_ns::CheckpointError(
            "fm_eval needs a 28x28, 1-channel model with at least 10 classes (MNIST)");
      use_ema = app_ns::use_ema_weights(ema_flags, ckpt.has_ema());
      model = std::make_unique<engine::models::ConditionalUNet>(config, 0, device);
      app_ns::load_weights(*model, ckpt, use_ema);
      model->eval();
      n = 10 * per_class;
      if (n <= k) throw app_ns::UsageError("--per-class: need more than --k samples in total");
    }

    engine::models::MnistClassifier clf(0, device);
    engine::models::load_classifier(clf, classifier);
    clf.eval();
    timer.mark("load");
    // The reference (11,000 classifier passes) comes from the cache when an entry for exactly these inputs
    // exists; a hit gives the same bits as computing it (eval_cache.h).
    if (no_cache)
      cache_dir.clear();
    else if (cache_dir.empty())
      cache_dir = app_ns::default_eval_cache_dir();
    std::string key;
    std::optional<app_ns::EvalReference> cached;
    if (!cache_dir.empty()) {
      key = app_ns::reference_key(clf, classifier, data_dir, n, seed);
      cached = app_ns::load_cached_reference(cache_dir, key, n);
      timer.mark("ref cache");
    }
    app_ns::EvalReference ref;
    if (cached) {
      ref = std::move(*cached);
    } else {
      const app_ns::MnistSet train = app_ns::load_mnist(data_dir, true);
      const app_ns::MnistSet test = app_ns::load_mnist(data_dir, false);
      timer.mark("mnist");
      ref = app_ns::make_reference(clf, train, test, n, seed, &timer);
      if (!cache_dir.empty() && !app_ns::save_cached_reference(cache_dir, key, ref))
        std::fprintf(stderr, "fm_eval: note: cannot write the reference cache in '%s' (continuing)\n",
                     cache_dir.c_str());
      timer.mark("ref stats");
    }

    std::vector<double> scales = sweep.empty() ? std::vector<double>{cfg_scale} : sweep;
    std::vector<app_ns::EvalResult> results;
    if (model) {
      std::vector<int64_t> classes(10);
      for (int c = 0; c < 10; ++c) classes[c] = c;
      const std::vector<int64_t> lab = app_ns::grid_labels(classes, per_class);
      for (double s : scales) {
        opt.cfg_scale = s;
        engine::Generator gen(app_ns::sampling_rng_seed(seed));  // same noise for every scale
        engine::Tensor x =
            app_ns::sample(*model, engine::Tensor::from_vector<int64_t>(lab, {n}), gen, opt, 28, 28);
        timer.mark("sampling");
        results.push_back(app_ns::evaluate_images(clf, ref, x.data<float>(), lab, k, &timer));
      }
    } else {
      results.push_back(app_ns::evaluate_images(clf, ref, given.images.data(), given.labels, k, &timer));
    }
    const double secs = timer.total_wall(), sample_secs = timer.wall("sampling");

    if (json) {
      nlohmann::json j;
      j["source"] = model ? checkpoint : samples_path;
      j["classifier"] = classifier;
      j["classifier_test_accuracy"] = ref.test_accuracy;
      j["n"] = n;
      j["k"] = k;
      if (model) {
        j["sampling"] = {{"steps", steps},
                         {"solver", app_ns::solver_name(opt.solver)},
                         {"seed", seed},
                         {"ema", use_ema},
                         {"device", device.str()}};
        j["sampling"]["precision"] = app_ns::running_precision(device);
      }
      j["results"] = nlohmann::json::array();
      for (size_t i = 0; i < results.size(); ++i) {
        nlohmann::json r = results[i].to_json();
        if (model) r["cfg_scale"] = scales[i];
        j["results"].push_back(r);
      }
      j["seconds"] = secs;
      j["sampling_seconds"] = sample_secs;
      j["timings"] = timer.to_json();
      j["reference_cached"] = cached.has_value();
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      if (model)
        std::printf("fm_eval: %lld samples from %s (%s %lld steps, %s weights, device %s)\n",
                    static_cast<long long>(n), checkpoint.c_str(), app_ns::solver_name(opt.solver),
                    static_cast<long long>(steps), use_ema ? "EMA" : "raw",
                    app_ns::device_description(device).c_str());
      else
        std::printf("fm_eval: %lld samples from %s\n", static_cast<long long>(n), samples_path.c_str());
      std::printf(
          "classifier %s: %.2f%% on the MNIST test set; FD against the test set, floor = %lld "
          "training images; precision/recall k = %lld\n",
          classifier.c_str(), 100 * ref.test_accuracy, static_cast<long long>(n), static_cast<long long>(k));
      print_table(scales, results, model != nullptr);
      std::printf("%.1f s (sampling %.1f s)\ntime: %s%s\n", secs, sample_secs, timer.summary().c_str(),
                  cached ? " (reference statistics from the cache)" : "");
    }
    return 0;
  } catch (const app_ns::UsageError& e) {
    std::fprintf(stderr, "fm_eval: %s\nRun with --help for more information.\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fm_eval: %s\n", e.what());
    return 1;
  } catch (...) {
    std::fprintf(stderr, "fm_eval: unknown error\n");
    return 1;
  }
}
