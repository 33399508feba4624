// The flow-matching training loop behind fm_train.
#include "apps/common/train_loop.h"

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>

#include "apps/common/csv.h"
#include "apps/common/data_parallel.h"
#include "apps/common/flow_matching.h"
#include "apps/common/image_grid.h"
#include "apps/common/mnist.h"
#include "apps/common/plot.h"
#include "apps/common/progress.h"
#include "apps/common/run_flags.h"
#include "apps/common/splitmix.h"
#include "apps/common/tfevents.h"
#include "core/autograd.h"
#include "nn/adamw.h"

namespace engine::app {

namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kBaseHeader = {"step", "epoch", "loss", "lr", "img_per_s"};

std::vector<std::string> metrics_header() {
  std::vector<std::string> h = kBaseHeader;
  for (int k = 0; k < kSigmaBins; ++k) h.push_back("loss_sigma_" + std::to_string(k));
  return h;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + v[i];
  return s;
}

// Keeps the header and the rows with step <= max_step, so a resumed run does not duplicate the steps an
// interrupted run logged after its last checkpoint. A metrics.csv of an older version (without the
// loss_sigma_* columns) gets the new header and empty sigma fields.
void truncate_metrics(const std::string& path, int64_t max_step) {
  std::ifstream in(path);
  if (!in) return;
  std::string line, out, pad;
  bool header = true;
  while (std::getline(in, line)) {
    if (header) {
      if (line == join(kBaseHeader)) {
        line = join(metrics_header());
        pad = std::string(kSigmaBins, ',');
      }
      out += line + "\n";
      header = false;
      continue;
    }
    if (line.empty()) continue;
    if (std::strtoll(line.c_str(), nullptr, 10) <= max_step) out += line + pad + "\n";
  }
  in.close();
  std::ofstream o(path, std::ios::trunc);
  o << out;
  o.flush();
  if (!o) throw std::runtime_error("cannot rewrite '" + path + "': " + std::strerror(errno));
}

void write_samples(const std::string& path, const models::ConditionalUNet& model, uint64_t seed, int64_t H,
                   int64_t W, const std::string& caption_weights) {
  const int64_t per_class = 8;
  std::vector<int64_t> classes;
  for (int64_t c = 0; c < model.config().num_classes; ++c) classes.push_back(c);
  const std::vector<int64_t> lab = grid_labels(classes, per_class);
  Generator gen(sampling_rng_seed(seed));
  Tensor s = sample(model, Tensor::from_vector<int64_t>(lab, {static_cast<int64_t>(lab.size())}), gen,
                    SampleOptions{}, H, W);  // (N, 1, H, W)
  GridLabels gl;
  gl.caption = std::to_string(SampleOptions{}.steps) + " " + solver_name(SampleOptions{}.solver) +
               " steps, CFG " + CsvWriter::to_field(SampleOptions{}.cfg_scale) + ", seed " +
               std::to_string(seed) + ", " + caption_weights;
  for (int64_t c : classes) gl.row_labels.push_back("class " + std::to_string(c));
  write_grid_png(path, s.data<float>(), s.size(0), H, W, per_class, 2, gl);
}

std::string fmt_loss(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

}  // namespace

uint64_t training_rng_seed(uint64_t seed) { return splitmix64(seed ^ 0x7472616e6eull); }
uint64_t sampling_rng_seed(uint64_t seed) { return splitmix64(seed ^ 0x73616d706cull); }

MetricsLog read_metrics(const std::string& path) {
  MetricsLog m;
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) return m;  // header
  std::vector<std::string> cols;
  {
    std::stringstream hs(line);
    for (std::string f; std::getline(hs, f, ',');) cols.push_back(f);
  }
  int first_bin = -1;
  for (size_t i = 0; i < cols.size(); ++i)
    if (cols[i] == "loss_sigma_0") first_bin = static_cast<int>(i);
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    if (line.back() == ',') f.emplace_back();
    if (f.size() < 3) continue;
    m.steps.push_back(std::strtoll(f[0].c_str(), nullptr, 10));
    m.losses.push_back(std::strtod(f[2].c_str(), nullptr));
    std::vector<double> bins;
    if (first_bin >= 0)
      for (int k = 0; k < kSigmaBins; ++k) {
        const size_t i = static_cast<size_t>(first_bin + k);
        bins.push_back(i < f.size() && !f[i].empty() ? std::strtod(f[i].c_str(), nullptr) : NAN);
      }
    m.sigma_bins.push_back(std::move(bins));
  }
  return m;
}

std::vector<double> read_metrics_losses(const std::string& path) {
  std::vector<double> ys;
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) return ys;  // header
  while (std::getline(in, line)) {
    std::stringstream ss(line);
    std::string field;
    for (int i = 0; i < 3 && std::getline(ss, field, ','); ++i) {
    }
    if (!field.empty()) ys.push_back(std::strtod(field.c_str(), nullptr));
  }
  return ys;
}

TrainResult train(const TrainConfig& cfg, const Checkpoint* resume) {
  using Clock = std::chrono::steady_clock;
  ENGINE_CHECK(cfg.batch_size >= 1, "fm_train", "--batch-size must be >= 1, got ", cfg.batch_size);
  ENGINE_CHECK(cfg.epochs >= 1, "fm_train", "--epochs must be >= 1, got ", cfg.epochs);
  ENGINE_CHECK(cfg.cfg_drop >= 0 && cfg.cfg_drop <= 1, "fm_train", "--cfg-drop must be in [0, 1], got ",
               cfg.cfg_drop);
  ENGINE_CHECK(cfg.model.image_channels() == 1, "fm_train", "MNIST has 1 channel but the model config has ",
               cfg.model.image_channels(), " image channels (in_channels - class_emb_size)");
  ENGINE_CHECK(cfg.model.num_classes >= 10, "fm_train", "MNIST has 10 classes but the model config has ",
               cfg.model.num_classes);
  TrainResult res;
  int64_t ckpt_step = 0;
  dist::Communicator* comm = cfg.comm;
  const bool writer = !comm || comm->rank() == 0;  // the one process that writes files and prints
  const bool say = !cfg.quiet && writer;
  // The plain one-process step unless ranks or chunks are in play (keeps its exact arithmetic).
  const bool data_parallel = (comm && comm->size() > 1) || cfg.grad_chunk > 0;
  const std::unique_ptr<dist::Communicator> local_comm = comm ? nullptr : dist::make_local();
  ENGINE_CHECK(cfg.grad_chunk >= 0, "fm_train", "--grad-chunk must be >= 0, got ", cfg.grad_chunk);

  const MnistSet set = load_mnist(cfg.data_dir, /*train=*/true);
  const int64_t H = set.rows, W = set.cols;

  models::ConditionalUNet model(cfg.model, cfg.seed, cfg.device);
  nn::AdamW opt(model.named_parameters(), nn::AdamWOptions{cfg.lr, 0.9, 0.999, 1e-8, 0.01});
  std::unique_ptr<Ema> ema;
  if (cfg.ema_decay > 0) ema = std::make_unique<Ema>(model, cfg.ema_decay, cfg.device);
  Generator gen(training_rng_seed(cfg.seed));
  TrainingState state;
  state.rng_seed = gen.seed();
  if (resume) {
    load_weights(model, *resume, false);
    load_optimizer(opt, *resume);
    if (ema) {
      if (resume->has_ema())
        load_weights(ema->model(), *resume, true);
      else if (say)
        std::printf("note: %s has no EMA weights; the EMA restarts from the current weights\n",
                    resume->path.c_str());
    }
    state = resume->state;
    gen.set_state(state.rng_seed, state.rng_offset);
    res.checkpoint = resume->path;
    ckpt_step = resume->state.step;
  }
  opt.set_lr(cfg.lr);
  state.adamw = opt.options();
  state.adamw.lr = cfg.lr;
  state.ema_decay = cfg.ema_decay;
  state.train_args = cfg.train_args;

  BatchLoader loader(set, cfg.batch_size, cfg.seed, state.epoch, state.batch_in_epoch, cfg.limit);
  const int64_t bpe = loader.batches_per_epoch();
  const RunLength run = run_length(cfg.epochs, bpe, cfg.max_steps);
  const int64_t total = run.total_steps;
  if (comm && comm->size() > 1) {
    // Every rank must start from the same weights, optimizer state, position and settings, or the ranks
    // would silently diverge (or deadlock when their step counts differ): compare a fingerprint with rank
    // 0's.
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    auto mix = [&h](const void* p, size_t n) {
      for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const uint8_t*>(p)[i]) * 1099511628211ull;
    };
    const std::string settings = std::to_string(cfg.batch_size) + " " + std::to_string(cfg.seed) + " " +
                                 std::to_string(cfg.limit) + " " + std::to_string(cfg.grad_chunk) + " " +
                                 std::to_string(total) + " " + std::to_string(state.step) + " " +
                                 std::to_string(gen.offset()) + " " + CsvWriter::to_field(cfg.lr) + " " +
                                 CsvWriter::to_field(cfg.cfg_drop) + " " +
                                 CsvWriter::to_field(cfg.ema_decay) + " " + cfg.model.to_json().dump();
    mix(settings.data(), settings.size());
    for (const models::ConditionalUNet* m : {&model, ema ? &ema->model() : nullptr})
      for (const Tensor& p : m ? m->parameters() : std::vector<Tensor>{}) {
        const std::vector<float> v = p.to_vector<float>();
        mix(v.data(), v.size() * sizeof(float));
      }
    mix(opt.param_steps().data(), opt.param_steps().size() * sizeof(int64_t));
    for (const auto* moments : {&opt.exp_avg(), &opt.exp_avg_sq()})
      for (const Tensor& t : *moments) {
        if (!t.defined()) continue;
        const std::vector<float> v = t.to_vector<float>();
        mix(v.data(), v.size() * sizeof(float));
      }
    uint64_t h0 = h;
    comm->broadcast(&h0, sizeof h0, 0);
    ENGINE_CHECK(h0 == h, "fm_train",
                 "this rank's starting point (weights, optimizer state, step, data position or settings: "
                 "batch size, seed, limit, grad chunk, run length, lr, cfg drop, EMA decay, model config) "
                 "differs from rank 0's; every rank needs the same flags and the same --resume checkpoint");
  }
  res.step = state.step;
  if (resume && state.step >= total) {
    const std::string limit = run.describe();
    if (writer)
      std::printf(
          "fm_train: nothing to do: %s is at step %lld and this run ends at step %lld (%s); raise "
          "--max-steps "
          "or --epochs to train further\n",
          resume->path.c_str(), static_cast<long long>(state.step), static_cast<long long>(total),
          limit.c_str());
    std::fflush(stdout);
    res.status = TrainResult::Status::NothingToDo;
    return res;
  }

  const std::vector<std::string> stale =
      writer ? remove_stale_temp_files(cfg.out_dir) : std::vector<std::string>{};
  if (!stale.empty()) {
    std::string names;
    for (size_t i = 0; i < stale.size() && i < 3; ++i) names += (i ? ", " : "") + stale[i];
    if (stale.size() > 3) names += ", ...";
    std::fprintf(stderr,
                 "fm_train: removed %zu stale temporary file(s) left in %s by an interrupted write: %s\n",
                 stale.size(), cfg.out_dir.c_str(), names.c_str());
  }
  if (writer) {
    std::error_code ec;
    fs::create_directories(cfg.out_dir, ec);
    if (ec)
      throw std::runtime_error("cannot create the output directory '" + cfg.out_dir + "': " + ec.message());
  }
  const std::string metrics_path = (fs::path(cfg.out_dir) / "metrics.csv").string();
  const std::string ckpt_path = (fs::path(cfg.out_dir) / "checkpoint.safetensors").string();
  if (resume && writer) truncate_metrics(metrics_path, state.step);
  std::unique_ptr<CsvWriter> metrics;
  std::unique_ptr<EventWriter> events;
  if (writer) {
    metrics = std::make_unique<CsvWriter>(metrics_path, metrics_header(), /*append=*/resume != nullptr);
    events = std::make_unique<EventWriter>(cfg.out_dir);
  }
  if (say && comm && comm->size() > 1)
    std::printf("fm_train: data parallel over %d ranks (%s), %s\n", comm->size(), comm->backend().c_str(),
                cfg.grad_chunk > 0 ? ("gradients in chunks of " + std::to_string(cfg.grad_chunk) +
                                      " images summed in chunk order (bitwise equal to one process)")
                                         .c_str()
                                   : "shard gradients summed by allreduce");
  if (say) {
    std::printf(
        "fm_train: %lld parameters, device %s, %lld training images (%lld batches of %lld per epoch)\n",
        static_cast<long long>(model.num_parameters()), device_description(cfg.device).c_str(),
        static_cast<long long>(loader.num_images()), static_cast<long long>(bpe),
        static_cast<long long>(cfg.batch_size));
    std::printf("fm_train: steps %lld -> %lld (the run ends at %s), output in %s\n",
                static_cast<long long>(state.step), static_cast<long long>(total), run.describe().c_str(),
                cfg.out_dir.c_str());
    std::fflush(stdout);
  }
  ProgressBar bar(run, stdout);

  auto last_flush = Clock::now();
  auto save = [&] {
    state.rng_offset = gen.offset();
    if (!writer) {  // rank 0 writes; the others keep the same bookkeeping
      res.checkpoint = ckpt_path;
      ckpt_step = state.step;
      return;
    }
    // Flush the scalars before the checkpoint lands, never after: a run killed between the two then
    // has at least the scalars up to its last checkpoint (flushing after the rename left a window
    // where the checkpoint said step N and the events file ended before N).
    events->flush();
    last_flush = Clock::now();
    try {
      save_checkpoint(ckpt_path, model, ema ? &ema->model() : nullptr, &opt, state);
    } catch (const CheckpointError& e) {
      throw CheckpointError(std::string(e.what()) + "; " +
                            (res.checkpoint.empty()
                                 ? std::string("no earlier checkpoint of this run exists")
                                 : "the previous checkpoint " + res.checkpoint + " (step " +
                                       std::to_string(ckpt_step) + ") was kept"));
    }
    res.checkpoint = ckpt_path;
    ckpt_step = state.step;
  };
  auto samples_model = [&]() -> const models::ConditionalUNet& { return ema ? ema->model() : model; };
  const std::string weights_name = ema ? "EMA weights" : "raw weights";

  std::unique_ptr<CsvWriter> eval_csv;  // created at the first evaluation (the header lists its names)
  auto log_eval = [&]() {
    const auto figures = cfg.evaluate(samples_model());
    std::vector<std::string> header{"step"}, row{std::to_string(state.step)};
    for (const auto& [name, v] : figures) {
      header.push_back(name);
      row.push_back(CsvWriter::to_field(v));
      events->add_scalar("eval/" + name, static_cast<float>(v), state.step);
    }
    if (!eval_csv)
      eval_csv = std::make_unique<CsvWriter>((fs::path(cfg.out_dir) / "eval.csv").string(), header,
                                             resume != nullptr);
    eval_csv->row(row);
  };
  double smoothed = 0, smooth_w = 0, ips_smoothed = 0, time_sum = 0;
  int64_t timed_steps = 0, timed_images = 0;
  bool saved_at_end = false;
  while (state.step < total) {
    if (cfg.before_step) cfg.before_step(state.step + 1);
    const auto t0 = Clock::now();
    Batch b = loader.next();
    const int64_t B = b.size();
    // Every rank draws the noise of the whole global batch and uses its slice (data_parallel_gradients).
    StepDraws d = draw_step(gen, B, 1, H, W, cfg.cfg_drop, cfg.device);
    std::vector<double> per_sample;  // diagnostics only: the loss and gradients do not depend on it
    Tensor loss;
    double lv = 0;
    if (data_parallel) {
      DataParallelStep st = data_parallel_gradients(model, comm ? *comm : *local_comm, b, d, H, W,
                                                    cfg.grad_chunk, cfg.device_reduce);
      lv = st.loss;
      per_sample = std::move(st.per_sample);
    } else {
      Tensor x = Tensor::from_vector<float>(b.x, {B, 1, H, W}, cfg.device);     // (B, 1, H, W)
      Tensor labels = Tensor::from_vector<int64_t>(b.labels, {B}, cfg.device);  // (B,)
      loss = flow_matching_loss(model, x, labels, d, &per_sample);
      lv = loss.item();
    }
    if (cfg.debug_nan_at_step > 0 && state.step + 1 == cfg.debug_nan_at_step)
      lv = std::numeric_limits<double>::quiet_NaN();
    if (!std::isfinite(lv)) {
      if (say) bar.finish();
      res.status = TrainResult::Status::NonFinite;
      res.message = "loss became " + std::string(std::isnan(lv) ? "NaN" : "Inf") + " at step " +
                    std::to_string(state.step + 1) + "; " +
                    (res.checkpoint.empty() ? std::string("no checkpoint had been written yet")
                                            : "last good checkpoint kept at " + res.checkpoint + " (step " +
                                                  std::to_string(ckpt_step) + ")") +
                    " (try a lower --lr)";
      return res;
    }
    if (!data_parallel) {
      opt.zero_grad();
      loss.backward();
    }
    opt.step();
    if (ema) ema->update(model, state.step);
    ++state.step;
    if (b.index_in_epoch + 1 >= bpe) {
      state.epoch = b.epoch + 1;
      state.batch_in_epoch = 0;
    } else {
      state.epoch = b.epoch;
      state.batch_in_epoch = b.index_in_epoch + 1;
    }
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    const double ips = B / std::max(dt, 1e-9);
    ips_smoothed = ips_smoothed == 0 ? ips : 0.9 * ips_smoothed + 0.1 * ips;
    if (!res.steps.empty()) {  // the first step includes warm-up
      time_sum += dt;
      ++timed_steps;
      timed_images += B;
    }
    res.steps.push_back(state.step);
    res.losses.push_back(lv);
    res.step = state.step;
    if (writer) {
      std::vector<std::string> row = {CsvWriter::to_field(state.step), CsvWriter::to_field(b.epoch),
                                      CsvWriter::to_field(lv), CsvWriter::to_field(cfg.lr),
                                      CsvWriter::to_field(ips)};
      const std::vector<double> bins =
          sigma_bin_means(d.sigma.to(Device::cpu()).to_vector<float>(), per_sample, kSigmaBins);
      for (double v : bins) row.push_back(std::isfinite(v) ? CsvWriter::to_field(v) : std::string());
      metrics->row(row);
      events->add_scalar("train_loss", static_cast<float>(lv), state.step);
      if (Clock::now() - last_flush > std::chrono::seconds(10)) {
        events->flush();
        last_flush = Clock::now();
      }
    }
    smoothed = 0.98 * smoothed + 0.02 * lv;
    smooth_w = 0.98 * smooth_w + 0.02;
    if (say) bar.update(state.step, b.epoch, smoothed / smooth_w, ips_smoothed);

    const bool last = state.step == total;
    bool stop = cfg.stop_requested && cfg.stop_requested();
    if (comm && comm->size() > 1) {  // a signal seen by any rank stops all of them after the same step
      double any = stop ? 1 : 0;
      comm->allreduce_sum(&any, 1);
      stop = any > 0;
    }
    if (last || stop || (cfg.checkpoint_every > 0 && state.step % cfg.checkpoint_every == 0)) {
      save();
      saved_at_end = last || stop;
    }
    if (writer && !last && cfg.sample_every > 0 && state.step % cfg.sample_every == 0) {
      const std::string p =
          (fs::path(cfg.out_dir) / ("samples_step" + std::to_string(state.step) + ".png")).string();
      write_samples(p, samples_model(), cfg.seed, H, W, weights_name);
    }
    if (writer && cfg.evaluate && cfg.eval_every > 0 && (last || state.step % cfg.eval_every == 0))
      log_eval();
    if (stop) {
      res.status = TrainResult::Status::Interrupted;
      break;
    }
  }
  if (say) bar.finish();
  if (writer) events->flush();
  if (timed_steps > 0) {
    res.ms_per_step = 1e3 * time_sum / timed_steps;
    res.img_per_s = timed_images / time_sum;
  }
  if (!saved_at_end && !res.steps.empty()) save();
  if (!writer) {
    // rank 0 alone writes plots and sample grids
  } else if (!plots_available()) {
    if (say)
      std::printf(
          "fm_train: note: built without PLplot (or its cairo driver): loss.png and loss_sigma.png "
          "not written; metrics.csv has the data\n");
  } else {
    const MetricsLog log = read_metrics(metrics_path);
    const std::string run_name = fs::path(cfg.out_dir).lexically_normal().string();
    write_loss_plot_png((fs::path(cfg.out_dir) / "loss.png").string(), log.steps, log.losses,
                        "fm_train loss: " + run_name);
    write_sigma_bin_plot_png((fs::path(cfg.out_dir) / "loss_sigma.png").string(), log.steps, log.sigma_bins,
                             "loss per sigma bin: " + run_name);
  }
  if (writer && res.status == TrainResult::Status::Done && cfg.final_samples)
    write_samples((fs::path(cfg.out_dir) / "samples_final.png").string(), samples_model(), cfg.seed, H, W,
                  weights_name);
  if (say) {
    std::printf("fm_train: %s at step %lld (last loss %s",
                res.status == TrainResult::Status::Done ? "done" : "stopped",
                static_cast<long long>(state.step),
                res.losses.empty() ? "-" : fmt_loss(res.losses.back()).c_str());
    if (timed_steps > 0) std::printf(", %.1f ms/step, %.1f img/s", res.ms_per_step, res.img_per_s);
    std::printf("); checkpoint %s\n", res.checkpoint.empty() ? "-" : res.checkpoint.c_str());
    std::fflush(stdout);
  }
  return res;
}

}  // namespace engine::app
