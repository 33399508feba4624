// fm_bench: end-to-end throughput of the engine on the flow-matching workload, with the same work and the
// same metric keys as bench/torch_baseline.py (so bench/compare_torch.sh can put them side by side):
//   train   one step at --batch: x ~ U[-1, 1], draws as in the recipe (noise, sigma ~ U[0.006, 0.994],
//           timesteps = 1000 sigma, 10% class drop), MSE(pred, noise - x), backward, AdamW(1e-3) step
//           -> train_ms_per_step (median of --iters after --warmup), train_img_per_s, peak_mem_bytes
//           (CUDA: caching-allocator peak during training; CPU: peak RSS of the process, like torch's)
//   sample80      8 images per class x 10, 15 Euler steps, CFG scale 3, cond + uncond in one batch of 160
//                 (--quick: sample10, one image per class)
//   sample_large  the same with --sample-batch images (forward batches of 2x that; 0 = skip)
// --profile: after the timed runs, --profile-steps more training steps and one small sampling run are
// profiled per op (runtime/profiler.h, docs/profiling.md) and their tables printed; --profile-trace also
// writes a Chrome trace of both. The timed metrics and the JSON are not affected.
// Example: build/bin/fm_bench --device cpu --threads 2 --json out/fm_bench.json
#include <omp.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "apps/common/checkpoint.h"
#include "apps/common/cli_checks.h"
#include "apps/common/flow_matching.h"
#include "apps/common/malloc_tuning.h"
#include "apps/common/omp_wait.h"
#include "apps/common/run_flags.h"
#include "core/autograd.h"
#include "core/ops.h"
#include "kernels/cpu/conv2d_winograd.h"
#include "kernels/cpu/cpu_kernels.h"
#include "models/conditional_unet.h"
#include "nn/adamw.h"
#include "runtime/cuda_device.h"
#include "runtime/profiler.h"

namespace {

using namespace engine;
using Clock = std::chrono::steady_clock;

void sync(Device dev) {
  if (dev.is_cuda()) cuda::synchronize(dev.index);
}

// Median seconds of `iters` calls after `warmup` calls; the device is synchronised before each clock read.
double timed(const std::function<void()>& fn, Device dev, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) fn();
  sync(dev);
  std::vector<double> ts;
  for (int i = 0; i < std::max(iters, 1); ++i) {
    const auto t0 = Clock::now();
    fn();
    sync(dev);
    ts.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(ts.begin(), ts.end());
  const size_t n = ts.size();
  return n % 2 ? ts[n / 2] : 0.5 * (ts[n / 2 - 1] + ts[n / 2]);
}

int64_t peak_rss_bytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;  // Linux: KiB
}

// Labels like torch_baseline.py: arange(classes).repeat_interleave(ceil(n / classes))[:n].
Tensor sample_labels(int64_t n, int64_t classes) {
  const int64_t per = (n + classes - 1) / classes;
  std::vector<int64_t> lab;
  for (int64_t c = 0; c < classes && static_cast<int64_t>(lab.size()) < n; ++c)
    for (int64_t k = 0; k < per && static_cast<int64_t>(lab.size()) < n; ++k) lab.push_back(c);
  return Tensor::from_vector<int64_t>(lab, {n});
}

std::string device_label(Device dev, int threads) {
  if (dev.is_cuda()) return cuda::device_name(dev.index);
  std::string model = "cpu";
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  namespace kc = kern::cpu;
  return model + " (" + std::to_string(threads) + " threads, " + kc::cpu_isa_name(kc::cpu_isa()) + " GEMM, " +
         kc::matmul_precision_name(kc::matmul_precision_active()) + ")";
}

}  // namespace

int main(int argc, char** argv) {
  engine::app::apply_omp_wait_default(argv);  // first: before any OpenMP region (docs/apps.md "Threads")
  engine::app::apply_malloc_defaults();       // keep freed tensor memory for reuse (docs/apps.md "Memory")
  CLI::App app{
      "fm_bench: train-step and sampling throughput of the flow-matching UNet (metrics and JSON keys of "
      "bench/torch_baseline.py)."};
  std::string device_str = "auto", model_config, json_path;
  int64_t batch = 128, sample_batch = -1;
  int warmup = 3, iters = 20, sample_iters = 3, threads = 0;
  uint64_t seed = 0;
  bool quick = false;
  std::string precision = "fp32";
  std::string bm_min_time;  // accepted for scripts/gpu_check.sh, which runs every *_bench with it
  bool profile = false;
  std::string profile_trace;
  int profile_steps = 0;
  app.add_option("--device", device_str, "cpu, cuda, cuda:N or auto")->capture_default_str();
  app.add_option("--model-config", model_config, "ConditionalConfig JSON [default: the seed model]");
  app.add_option("--batch", batch, "training batch [default: 128; --quick: 8]")->check(app::int_in(1, 1e6));
  app.add_option("--warmup", warmup, "untimed training steps (and sampling runs)")
      ->check(app::int_in(0, 1e6))
      ->capture_default_str();
  app.add_option("--iters", iters, "timed training steps (median)")
      ->check(app::int_in(1, 1e6))
      ->capture_default_str();
  app.add_option("--sample-iters", sample_iters, "timed sampling runs (median)")
      ->check(app::int_in(1, 1e6))
      ->capture_default_str();
  app.add_option("--sample-batch", sample_batch,
                 "images for the large sampling run (default 1024; --quick: 128; 0 = skip)")
      ->check(app::int_in(0, 1e6));
  app.add_option("--threads", threads, "CPU threads (omp_set_num_threads; 0 = OpenMP default)")
      ->check(app::int_in(0, 4096));
  app::add_precision_flag(app, precision);
  app.add_option("--seed", seed, "seed of the weights and all draws")
      ->check(app::int_in(0, 18446744073709551615.0))
      ->capture_default_str();
  app.add_flag("--quick", quick,
               "smoke run in seconds: batch 8, warmup 0, iters 1, sample-iters 1, a 10-image sampling run "
               "(sample10_img_per_s instead of sample80) and no large one (flags given explicitly still "
               "apply)");
  app.add_option("--json", json_path, "write {meta, engine: {metrics}} here (must end in .json)");
  app.add_flag(
      "--profile", profile,
      "after the timed runs, profile --profile-steps more training steps and one small sampling run "
      "per op: a table of calls, total ms, % of the wall time, GFLOP/s and GB/s each (docs/profiling.md)");
  app.add_option("--profile-steps", profile_steps,
                 "training steps that --profile records [default: min(iters, 5)]")
      ->check(app::int_in(1, 1e6));
  app.add_option("--profile-trace", profile_trace,
                 "also write a Chrome trace JSON (Perfetto) of the profiled runs here (must end in .json; "
                 "implies --profile)");
  app.add_option("--benchmark_min_time", bm_min_time, "(Google Benchmark flag, ignored; implies --quick)")
      ->group("");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  try {
    if (!bm_min_time.empty()) quick = true;
    auto given = [&](const char* f) { return app.count(f) > 0; };
    if (quick) {
      if (!given("--batch")) batch = 8;
      if (!given("--warmup")) warmup = 0;
      if (!given("--iters")) iters = 1;
      if (!given("--sample-iters")) sample_iters = 1;
    }
    if (sample_batch < 0) sample_batch = quick ? 0 : 1024;
    if (!profile_trace.empty() || given("--profile-steps")) profile = true;
    if (profile_steps <= 0) profile_steps = std::min(iters, 5);
    if (!profile_trace.empty()) app::check_output_file("--profile-trace", profile_trace, ".json");
    const int64_t small_n = quick ? 10 : 80;  // the small sampling run: 80 = 8 per class, as torch_baseline
    if (threads > 0) omp_set_num_threads(threads);
    threads = omp_get_max_threads();
    Device dev = Device::cpu();
    try {
      dev = Device::parse(device_str);
    } catch (const Error& e) {
      throw app::UsageError(e.what());
    }
    app::apply_precision_flag(precision, dev);  // first: bf16 on CUDA is its own error
    if (dev.is_cuda() && dev.index >= cuda::device_count())
      throw app::UsageError("--device " + device_str + ": no such CUDA device" +
                            (cuda::built_with_cuda() ? "" : " (built without CUDA)"));
    if (!json_path.empty()) {  // before any compute; a missing parent directory is created at the end
      const auto parent = std::filesystem::path(json_path).parent_path();
      std::error_code ec;
      if (!parent.empty() && !std::filesystem::exists(parent, ec)) {
        if (std::filesystem::path(json_path).extension() != ".json")
          throw app::UsageError("--json '" + json_path + "': give a file name ending in .json");
        app::check_output_dir("--json", parent.string());
      } else {
        app::check_output_file("--json", json_path, ".json");
      }
    }
    if (dev.is_cuda()) cuda::set_device(dev.index);

    models::ConditionalConfig cfg = models::ConditionalConfig::seed();
    if (!model_config.empty()) cfg = app::read_model_config(model_config);
    const int64_t C = cfg.image_channels(), H = 28, W = 28, classes = cfg.num_classes;

    models::ConditionalUNet model(cfg, seed, dev);
    nn::AdamW opt(model.named_parameters(), nn::AdamWOptions{.lr = 1e-3});
    Generator gen(seed + 1);
    std::printf("fm_bench: device %s, %lld parameters, batch %lld, threads %d%s\n",
                device_label(dev, threads).c_str(), static_cast<long long>(model.num_parameters()),
                static_cast<long long>(batch), threads, quick ? " (--quick smoke run)" : "");
    std::fflush(stdout);

    // ---- training step
    auto train_step = [&] {
      Tensor x = affine(rand({batch, C, H, W}, gen, DType::F32, dev), 2.0, -1.0);  // (B, C, H, W) in [-1, 1)
      const std::vector<float> u = rand({batch}, gen).to_vector<float>();
      std::vector<int64_t> lab(static_cast<size_t>(batch));
      for (int64_t i = 0; i < batch; ++i)
        lab[i] = std::min<int64_t>(classes - 1, static_cast<int64_t>(u[i] * classes));
      Tensor labels = Tensor::from_vector<int64_t>(lab, {batch}, dev);  // (B,)
      app::StepDraws d = app::draw_step(gen, batch, C, H, W, /*cfg_drop=*/0.1, dev);
      opt.zero_grad();
      Tensor loss = app::flow_matching_loss(model, x, labels, d);  // 0-d
      loss.backward();
      opt.step();
    };
    model.train();
    if (dev.is_cuda()) {
      train_step();  // the first step fills the caching allocator; peak is measured from a clean mark
      sync(dev);
      cuda::reset_peak(dev.index);
    }
    double sec = timed(train_step, dev, warmup, iters);
    nlohmann::json res;
    res["train_ms_per_step"] = sec * 1e3;
    res["train_img_per_s"] = batch / sec;
    res["peak_mem_bytes"] =
        dev.is_cuda() ? static_cast<int64_t>(cuda::allocator_stats(dev.index).peak_bytes) : peak_rss_bytes();
    std::printf("train: %.1f ms/step (median of %d), %.1f img/s\n", sec * 1e3, iters, batch / sec);
    std::fflush(stdout);
    // The profile of this section only: an ENGINE_PROFILE run's whole-run report is replaced by these.
    const prof::Options popt{.trace = !profile_trace.empty()};
    auto profiled = [&](const std::function<void()>& fn, const std::string& title, int runs) {
      prof::disable_exit_report();
      prof::stop();
      prof::clear_table();
      sync(dev);
      prof::start(popt);
      for (int i = 0; i < runs; ++i) fn();
      sync(dev);
      prof::stop();
      const prof::Summary s = prof::summary();
      char per[96];
      std::snprintf(per, sizeof per, " (%d run%s, %.1f ms per run)", runs, runs == 1 ? "" : "s",
                    s.wall_ms / runs);
      std::printf("\n%s", prof::format_table(s, title + per).c_str());
      std::fflush(stdout);
    };
    if (profile) profiled(train_step, "training step, batch " + std::to_string(batch), profile_steps);
    opt.zero_grad();

    // ---- sampling (no autograd inside app::sample): 15 Euler steps, CFG 3, cond + uncond in one 2N batch
    model.eval();
    app::SampleOptions so;  // steps 15, cfg 3, Euler, t from 0.994
    auto sample_run = [&](int64_t n) {
      Tensor labels = sample_labels(n, classes);
      Generator sg(seed + 2);
      app::sample(model, labels, sg, so, H, W);
    };
    const int sw = warmup;  // as torch_baseline.py (eager)
    sec = timed([&] { sample_run(small_n); }, dev, sw, sample_iters);
    const std::string small_key = "sample" + std::to_string(small_n);
    res[small_key + "_img_per_s"] = small_n / sec;
    std::printf("%s: %.2f s per run, %.2f img/s\n", small_key.c_str(), sec, small_n / sec);
    std::fflush(stdout);
    if (profile)
      profiled(
          [&] { sample_run(small_n); },
          "sampling " + std::to_string(small_n) + " images x " + std::to_string(so.steps) + " steps, CFG", 1);
    if (sample_batch > 0) {
      sec = timed([&] { sample_run(sample_batch); }, dev, sw, sample_iters);
      res["sample_large_img_per_s"] = sample_batch / sec;
    } else {
      res["sample_large_img_per_s"] = nullptr;
    }

    // ---- report
    std::printf("\n%-8s %18s %18s %18s %18s %18s\n", "mode", "train ms/step", "train img/s", "peak MiB",
                (small_key + " img/s").c_str(), ("sample" + std::to_string(sample_batch) + " img/s").c_str());
    char large[32] = "-";
    if (!res["sample_large_img_per_s"].is_null())
      std::snprintf(large, sizeof large, "%.2f", res["sample_large_img_per_s"].get<double>());
    std::printf("%-8s %18.1f %18.1f %18.0f %18.2f %18s\n", "engine", res["train_ms_per_step"].get<double>(),
                res["train_img_per_s"].get<double>(), res["peak_mem_bytes"].get<double>() / (1 << 20),
                res[small_key + "_img_per_s"].get<double>(), large);
    if (!json_path.empty()) {
      nlohmann::json meta = {{"device", dev.is_cuda() ? "cuda" : "cpu"},
                             {"device_name", device_label(dev, threads)},
                             {"threads", threads},
                             {"cpu_isa", kern::cpu::cpu_isa_name(kern::cpu::cpu_isa())},
                             {"cpu_conv", kern::cpu::cpu_conv_algo_name(kern::cpu::cpu_conv_algo())},
                             {"batch", batch},
                             {"iters", iters},
                             {"warmup", warmup},
                             {"sample_iters", sample_iters},
                             {"sample_batch", sample_batch},
                             {"quick", quick},
                             {"sample_small_images", small_n},
                             {"parameters", model.num_parameters()}};
      meta["precision"] = app::running_precision(dev);  // the float32 matmul precision that ran
      const auto parent = std::filesystem::path(json_path).parent_path();
      std::error_code ec;
      if (!parent.empty()) std::filesystem::create_directories(parent, ec);
      if (ec) throw std::runtime_error("--json: cannot create '" + parent.string() + "': " + ec.message());
      const std::string text = nlohmann::json{{"meta", meta}, {"engine", res}}.dump(2) + "\n";
      st::write_bytes_atomic(json_path, reinterpret_cast<const uint8_t*>(text.data()), text.size());
      std::printf("wrote %s\n", json_path.c_str());
    }
    if (!profile_trace.empty()) {
      prof::write_trace(profile_trace);
      std::printf("wrote %s\n", profile_trace.c_str());
    }
  } catch (const app::UsageError& e) {
    std::fprintf(stderr, "fm_bench: %s\nRun with --help for more information.\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fm_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
