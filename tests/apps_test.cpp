// Tests of the flow-matching apps: the library pieces (checkpoint, EMA, samplers, training loop) called
// directly, and the fm_train / fm_sample binaries (ENGINE_BIN_DIR) for CLI behaviour, outputs and exit
// codes. Uses a tiny UNet config on real MNIST (ENGINE_MNIST_DIR); skipped with a reason when missing.
// Apps.* are quick; AppsEndToEnd.* train for a few dozen steps.
#include <gtest/gtest.h>
#include <omp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <string>
#include <vector>

#include "apps/common/checkpoint.h"
#include "apps/common/dist.h"
#include "apps/common/flow_matching.h"
#include "apps/common/plot.h"
#include "apps/common/train_loop.h"
#include "core/autograd.h"
#include "kernels/cpu/cpu_kernels.h"
#include "nn/adamw.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace engine;
using namespace engine::app;

namespace {

const char* kTinyJson = R"({"sample_size": 28, "in_channels": 2, "out_channels": 1,
  "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
  "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
  "attention_head_dim": 8, "num_classes": 10, "class_emb_size": 1})";
// Another shape: wider channels.
const char* kOtherJson = R"({"sample_size": 28, "in_channels": 2, "out_channels": 1,
  "block_out_channels": [8, 8], "layers_per_block": 1, "norm_num_groups": 4,
  "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
  "attention_head_dim": 8, "num_classes": 10, "class_emb_size": 1})";

models::ConditionalConfig tiny() {
  return models::ConditionalConfig::from_json(nlohmann::json::parse(kTinyJson));
}

std::string mnist_dir() { return ENGINE_MNIST_DIR; }
bool have_mnist() { return fs::exists(fs::path(mnist_dir()) / "train-images-idx3-ubyte.gz"); }
using test::bin;
bool have_bins() { return fs::exists(bin("fm_train")) && fs::exists(bin("fm_sample")); }

#define REQUIRE_MNIST() \
  if (!have_mnist()) GTEST_SKIP() << "MNIST not found in " << mnist_dir() << " (set -DMNIST_DIR=...)"
#define REQUIRE_BINS() \
  if (!have_bins()) GTEST_SKIP() << "fm_train/fm_sample not built in " << ENGINE_BIN_DIR

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("apps_test_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

void write_text(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }
std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

using test::run;
using test::RunResult;

// (width, height) from a PNG's IHDR.
std::pair<uint32_t, uint32_t> png_size(const fs::path& p) {
  const std::string s = read_bytes(p);
  if (s.size() < 24 || s.compare(1, 3, "PNG") != 0) return {0, 0};
  auto be = [&](size_t o) {
    return (uint32_t(uint8_t(s[o])) << 24) | (uint32_t(uint8_t(s[o + 1])) << 16) |
           (uint32_t(uint8_t(s[o + 2])) << 8) | uint32_t(uint8_t(s[o + 3]));
  };
  return {be(16), be(20)};
}

// Complete TFRecord records in a TensorBoard events file (the first is the file_version header).
int64_t count_event_records(const fs::path& p) {
  const std::string s = read_bytes(p);
  size_t o = 0;
  int64_t n = 0;
  while (o + 12 <= s.size()) {
    uint64_t len = 0;
    std::memcpy(&len, s.data() + o, 8);
    if (len > s.size() || o + 12 + len + 4 > s.size()) break;
    o += 12 + len + 4;
    ++n;
  }
  return n;
}

fs::path events_file(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) return e.path();
  return {};
}

// Names, sizes and modification times of a directory's files.
std::string listing(const fs::path& dir) {
  std::string out;
  std::vector<fs::path> ps;
  for (const auto& e : fs::directory_iterator(dir)) ps.push_back(e.path());
  std::sort(ps.begin(), ps.end());
  for (const auto& p : ps)
    out += p.filename().string() + " " + std::to_string(fs::is_regular_file(p) ? fs::file_size(p) : 0) + " " +
           std::to_string(fs::last_write_time(p).time_since_epoch().count()) + "\n";
  return out;
}

// A process id that no process has any more.
pid_t dead_pid() {
  const pid_t p = ::fork();
  if (p == 0) ::_exit(0);
  int st = 0;
  ::waitpid(p, &st, 0);
  return p;
}

// Fixes the OpenMP thread count for in-process training (bitwise reproducibility needs a fixed count).
struct ThreadGuard {
  int prev = omp_get_max_threads();
  explicit ThreadGuard(int n) { omp_set_num_threads(n); }
  ~ThreadGuard() { omp_set_num_threads(prev); }
};

TrainConfig quick_config(const fs::path& out) {
  TrainConfig c;
  c.data_dir = mnist_dir();
  c.model = tiny();
  c.batch_size = 16;
  c.limit = 512;
  c.lr = 2e-3;
  c.out_dir = out.string();
  c.checkpoint_every = 0;
  c.sample_every = 0;
  c.final_samples = false;
  c.quiet = true;
  return c;
}

double mean(const std::vector<double>& v, size_t a, size_t b) {
  return std::accumulate(v.begin() + a, v.begin() + b, 0.0) / static_cast<double>(b - a);
}

}  // namespace

// ---------------------------------------------------------------- quick, library level

TEST(Apps, EmaDecayWarmup) {
  EXPECT_DOUBLE_EQ(Ema::decay_at(0.999, 0), 0.1);
  EXPECT_DOUBLE_EQ(Ema::decay_at(0.999, 10), 11.0 / 20.0);
  EXPECT_DOUBLE_EQ(Ema::decay_at(0.999, 100000), 0.999);
}

TEST(Apps, SolverNames) {
  EXPECT_EQ(parse_solver("euler"), Solver::Euler);
  EXPECT_EQ(parse_solver("heun"), Solver::Heun);
  EXPECT_EQ(parse_solver("midpoint"), Solver::Midpoint);
  EXPECT_THROW(parse_solver("rk4"), engine::Error);
  EXPECT_EQ(grid_labels({3, 5}, 2), (std::vector<int64_t>{3, 3, 5, 5}));
}

TEST(Apps, EmaFollowsWeights) {
  models::ConditionalUNet m(tiny(), 1);
  Ema ema(m, 0.5, Device::cpu());
  {
    NoGradGuard ng;
    for (auto& p : m.parameters()) p.fill_(1.0);
  }
  ema.update(m, 1000);  // decay 0.5
  const Tensor e = ema.model().named_parameters()[0].second,
               p0 = models::ConditionalUNet(tiny(), 1).parameters()[0];
  const auto ev = e.to_vector<float>(), pv = p0.to_vector<float>();
  for (size_t i = 0; i < ev.size(); ++i) EXPECT_FLOAT_EQ(ev[i], 0.5f * pv[i] + 0.5f);
}

// The per-sample losses behind metrics.csv's loss_sigma_* columns: their mean is the loss, and asking for
// them changes neither the loss nor the gradients (bitwise).
TEST(Apps, PerSampleLossesAreDiagnosticsOnly) {
  ThreadGuard tg(1);
  auto grads_and_loss = [](bool diag, std::vector<double>* per) {
    models::ConditionalUNet m(tiny(), 3);
    Generator g(11);
    const Tensor x = affine(rand({6, 1, 28, 28}, g), 2.0, -1.0);
    const Tensor labels = Tensor::from_vector<int64_t>({0, 1, 2, 3, 4, 5}, {6});
    const StepDraws d = draw_step(g, 6, 1, 28, 28, 0.1, Device::cpu());
    Tensor loss = flow_matching_loss(m, x, labels, d, diag ? per : nullptr);
    loss.backward();
    std::vector<float> out = {static_cast<float>(loss.item())};
    for (auto& [name, p] : m.named_parameters()) {
      const auto v = p.grad().to_vector<float>();
      out.insert(out.end(), v.begin(), v.end());
    }
    return std::make_pair(loss.item(), out);
  };
  std::vector<double> per;
  const auto with = grads_and_loss(true, &per), without = grads_and_loss(false, nullptr);
  EXPECT_EQ(with.second, without.second);
  ASSERT_EQ(per.size(), 6u);
  EXPECT_NEAR(std::accumulate(per.begin(), per.end(), 0.0) / 6.0, with.first, 1e-5 * with.first);
  for (double v : per) EXPECT_GT(v, 0.0);
}

TEST(Apps, CheckpointRoundTrip) {
  const fs::path dir = temp_dir("roundtrip");
  models::ConditionalUNet m(tiny(), 3);
  nn::AdamW opt(m.named_parameters(), {2e-3});
  Ema ema(m, 0.99, Device::cpu());
  Generator gen(11);
  {  // one real step so weights, moments and EMA differ
    Tensor x = affine(rand({4, 1, 28, 28}, gen), 2.0, -1.0);
    Tensor y = Tensor::from_vector<int64_t>({0, 3, 7, 9}, {4});
    Tensor loss = flow_matching_loss(m, x, y, draw_step(gen, 4, 1, 28, 28, 0.5, Device::cpu()));
    loss.backward();
    opt.step();
    ema.update(m, 0);
  }
  TrainingState s;
  s.step = 1, s.epoch = 2, s.batch_in_epoch = 3, s.rng_seed = 0xFFFFFFFFFFFFFFF1ull,
  s.rng_offset = gen.offset();
  s.adamw = opt.options();
  s.ema_decay = 0.99;
  s.train_args = {{"batch_size", 4}, {"note", "x"}};
  const std::string path = (dir / "c.safetensors").string();
  save_checkpoint(path, m, &ema.model(), &opt, s);

  const Checkpoint c = read_checkpoint(path);
  EXPECT_TRUE(c.training);
  EXPECT_TRUE(c.has_config && c.has_ema() && c.has_optimizer());
  EXPECT_EQ(c.config.to_json(), tiny().to_json());
  EXPECT_EQ(c.state.step, 1);
  EXPECT_EQ(c.state.epoch, 2);
  EXPECT_EQ(c.state.batch_in_epoch, 3);
  EXPECT_EQ(c.state.rng_seed, s.rng_seed);
  EXPECT_EQ(c.state.rng_offset, s.rng_offset);
  EXPECT_EQ(c.state.adamw.lr, 2e-3);
  EXPECT_EQ(c.state.adamw.weight_decay, 0.01);
  EXPECT_EQ(c.state.ema_decay, 0.99);
  EXPECT_EQ(c.state.train_args, s.train_args);

  models::ConditionalUNet m2(tiny(), 99), e2(tiny(), 98);
  nn::AdamW opt2(m2.named_parameters(), {2e-3});
  load_weights(m2, c, false);
  load_weights(e2, c, true);
  load_optimizer(opt2, c);
  EXPECT_EQ(opt2.step_count(), 1);
  auto same = [](const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].to_vector<float>(), b[i].to_vector<float>()) << i;
  };
  same(m.parameters(), m2.parameters());
  same(ema.model().parameters(), e2.parameters());
  same(opt.exp_avg(), opt2.exp_avg());
  same(opt.exp_avg_sq(), opt2.exp_avg_sq());
  // The file is also a plain wrapper state dict for everyone else: the model keys carry no prefix.
  const st::StFile raw = st::read_file(path);
  EXPECT_NE(raw.find("class_emb.weight"), nullptr);
  EXPECT_NE(raw.find("model.conv_in.weight"), nullptr);
  EXPECT_NE(raw.find("ema.model.conv_in.weight"), nullptr);
  EXPECT_NE(raw.find("optim.exp_avg_sq.model.conv_in.weight"), nullptr);
  EXPECT_EQ(raw.metadata.at("format"), kCheckpointFormat);
  fs::remove_all(dir);
}

TEST(Apps, CheckpointBadFiles) {
  const fs::path dir = temp_dir("badckpt");
  models::ConditionalUNet m(tiny(), 3);
  TrainingState s;
  const std::string good = (dir / "good.safetensors").string();
  save_checkpoint(good, m, nullptr, nullptr, s);

  write_text(dir / "garbage.safetensors", "this is not a safetensors file at all");
  try {
    read_checkpoint((dir / "garbage.safetensors").string());
    FAIL() << "garbage accepted";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("garbage.safetensors"), std::string::npos) << e.what();
  }
  const std::string bytes = read_bytes(good);
  write_text(dir / "trunc.safetensors", bytes.substr(0, bytes.size() / 2));
  EXPECT_THROW(read_checkpoint((dir / "trunc.safetensors").string()), CheckpointError);

  const Checkpoint c = read_checkpoint(good);
  models::ConditionalUNet other(models::ConditionalConfig::from_json(nlohmann::json::parse(kOtherJson)), 0);
  try {
    load_weights(other, c, false);
    FAIL() << "other shape accepted";
  } catch (const CheckpointError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("good.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find("shape mismatch"), std::string::npos) << msg;
  }
  EXPECT_THROW(load_weights(m, c, /*use_ema=*/true), CheckpointError);  // no EMA stored
  fs::remove_all(dir);
}

TEST(Apps, SamplerDeterministicAndBatchIndependent) {
  ThreadGuard tg(1);
  models::ConditionalUNet m(tiny(), 5);
  const Tensor labels = Tensor::from_vector<int64_t>({1, 2, 3}, {3});
  SampleOptions o;
  o.steps = 2;
  for (Solver s : {Solver::Euler, Solver::Heun, Solver::Midpoint}) {
    o.solver = s;
    Generator g1(7), g2(7), g3(8);
    o.max_batch = 0;
    const auto a = sample(m, labels, g1, o, 28, 28).to_vector<float>();
    const auto c = sample(m, labels, g3, o, 28, 28).to_vector<float>();
    o.max_batch = 1;
    const auto b = sample(m, labels, g2, o, 28, 28).to_vector<float>();
    ASSERT_EQ(a.size(), 3u * 28 * 28);
    // Bitwise: every op computes a sample's values independently of the others in the batch.
    EXPECT_EQ(a, b) << solver_name(s);
    EXPECT_NE(a, c);
  }
}

TEST(Apps, DownloadScriptVerifies) {
  REQUIRE_MNIST();
  const std::string script = std::string(ENGINE_SOURCE_DIR) + "/scripts/download_mnist.sh";
  RunResult ok = run("bash " + script + " --verify-only " + mnist_dir());
  EXPECT_TRUE(ok.exited && ok.code == 0) << ok.out;
  const fs::path dir = temp_dir("verify");
  for (const char* f :
       {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"})
    fs::create_symlink(fs::path(mnist_dir()) / f, dir / f);
  const std::string labels = read_bytes(fs::path(mnist_dir()) / "t10k-labels-idx1-ubyte.gz");
  write_text(dir / "t10k-labels-idx1-ubyte.gz", labels.substr(0, labels.size() - 10));
  RunResult bad = run("bash " + script + " --verify-only " + dir.string());
  EXPECT_TRUE(bad.exited && bad.code == 1) << bad.out;
  EXPECT_NE(bad.out.find("MISMATCH " + dir.string() + "/t10k-labels-idx1-ubyte.gz"), std::string::npos)
      << bad.out;
  fs::remove_all(dir);
}

// Bad inputs: non-zero exit (1 = runtime error, 2 = usage), no signal, a message naming the problem.
TEST(Apps, CliBadInputs) {
  REQUIRE_BINS();
  REQUIRE_MNIST();
  const fs::path dir = temp_dir("cli");
  const std::string train = bin("fm_train"), samp = bin("fm_sample");
  auto expect_fail = [](const RunResult& r, int code, const std::string& needle) {
    EXPECT_TRUE(r.exited) << "killed by a signal: " << r.out;
    EXPECT_EQ(r.code, code) << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << "missing '" << needle << "' in: " << r.out;
  };
  expect_fail(run(train + " --bogus-flag 3"), 2, "--bogus-flag");
  expect_fail(run(samp + " --checkpoint x --bogus"), 2, "--bogus");
  expect_fail(run(train + " --device tpu --data " + mnist_dir()), 2, "tpu");
  expect_fail(run(train + " --data " + (dir / "nope").string() + " --out " + (dir / "o").string()), 1,
              "not found");
  {  // truncated IDX file
    const fs::path d = dir / "trunc_mnist";
    fs::create_directories(d);
    for (const char* f :
         {"train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"})
      fs::create_symlink(fs::path(mnist_dir()) / f, d / f);
    const std::string img = read_bytes(fs::path(mnist_dir()) / "train-images-idx3-ubyte.gz");
    write_text(d / "train-images-idx3-ubyte.gz", img.substr(0, 100000));
    expect_fail(run(train + " --quiet --data " + d.string() + " --out " + (dir / "o").string()), 1,
                "train-images-idx3-ubyte");
  }
  write_text(dir / "garbage.safetensors", std::string(1000, '\x7f'));
  expect_fail(run(samp + " --device cpu --checkpoint " + (dir / "garbage.safetensors").string()), 1,
              "garbage.safetensors");
  expect_fail(run(samp + " --device cpu --checkpoint " + (dir / "missing.safetensors").string()), 1,
              "missing.safetensors");
  write_text(dir / "tiny.json", kTinyJson);
  expect_fail(
      run(train + " --quiet --data " + mnist_dir() + " --model-config " + (dir / "tiny.json").string() +
          " --limit 64 --batch-size 8 --no-samples --debug-nan-at-step 2 --out " + (dir / "nan").string()),
      1, "loss became NaN at step 2");
  expect_fail(
      run(train + " --quiet --data " + mnist_dir() + " --model-config " + (dir / "tiny.json").string() +
          " --limit 64 --batch-size 8 --no-samples --lr -1 --out " + (dir / "o").string()),
      2, "--lr");
  fs::remove_all(dir);
}

// Every numeric flag of every app rejects NaN, Inf and out-of-range values up front: exit 2, one line naming
// the flag, before any file is read or written.
TEST(Apps, CliRejectsNonFiniteAndOutOfRangeNumbers) {
  REQUIRE_BINS();
  const fs::path dir = temp_dir("numbers");
  const std::string train = bin("fm_train") + " --data " + (dir / "no_data").string() + " --out " +
                            (dir / "o").string(),
                    samp = bin("fm_sample") + " --checkpoint " + (dir / "no.safetensors").string() +
                           " --out " + (dir / "g.png").string(),
                    bench = bin("fm_bench") + " --device cpu";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {samp, "--cfg-scale nan"},    {samp, "--cfg-scale inf"},
      {samp, "--cfg-scale -inf"},   {samp, "--cfg-scale 1e9"},
      {samp, "--steps 0"},          {samp, "--steps 2.5"},
      {samp, "--steps nan"},        {samp, "--per-class 0"},
      {samp, "--batch -1"},         {samp, "--threads -1"},
      {samp, "--seed -1"},          {samp, "--seed nan"},
      {samp, "--classes 1,nan"},    {train, "--lr nan"},
      {train, "--lr inf"},          {train, "--lr -1"},
      {train, "--cfg-drop nan"},    {train, "--cfg-drop 1.5"},
      {train, "--ema-decay nan"},   {train, "--ema-decay 1"},
      {train, "--epochs 0"},        {train, "--batch-size 0"},
      {train, "--max-steps -1"},    {train, "--limit -5"},
      {train, "--seed inf"},        {train, "--checkpoint-every nan"},
      {train, "--sample-every -1"}, {train, "--threads -2"},
      {bench, "--batch 0"},         {bench, "--iters nan"},
      {bench, "--warmup -1"},       {bench, "--sample-batch inf"},
      {bench, "--threads -1"},      {bench, "--seed -3"},
  };
  for (const auto& [app, arg] : cases) {
    const RunResult r = run(app + " " + arg);
    const std::string flag = arg.substr(0, arg.find(' '));
    EXPECT_TRUE(r.exited && r.code == 2) << arg << ": " << r.out;
    EXPECT_NE(r.out.find(flag), std::string::npos) << arg << ": " << r.out;
    EXPECT_NE(r.out.find("must be"), std::string::npos) << arg << ": " << r.out;
  }
  // Nothing was created by any of them.
  EXPECT_FALSE(fs::exists(dir / "o"));
  EXPECT_FALSE(fs::exists(dir / "g.png"));
  fs::remove_all(dir);
}

// Output paths are checked before any work (here: before the checkpoint or the data is even read, so the
// error is the path's, exit 2), with the reason in the message.
TEST(Apps, CliChecksOutputPathsFirst) {
  REQUIRE_BINS();
  const fs::path dir = temp_dir("outpaths");
  write_text(dir / "afile", "x");
  const std::string samp = bin("fm_sample") + " --checkpoint " + (dir / "missing.safetensors").string();
  struct Case {
    std::string cmd, needle;
  };
  const std::vector<Case> cases = {
      {samp + " --out " + (dir / "nodir" / "g.png").string(), "does not exist"},
      {samp + " --out " + dir.string(), "is a directory"},
      {samp + " --out " + (dir / "g.jpg").string(), ".png"},
      {samp + " --out " + (dir / "afile" / "g.png").string(), "is not a directory"},
      {samp + " --out " + (dir / "g.png").string() + " --save-tensor " + (dir / "s.bin").string(),
       ".safetensors"},
      {samp + " --out " + (dir / "g.png").string() + " --save-tensor " +
           (dir / "nodir" / "s.safetensors").string(),
       "does not exist"},
      {bin("fm_train") + " --data " + (dir / "no_data").string() + " --out " + (dir / "afile").string(),
       "is not a directory"},
      {bin("fm_train") + " --data " + (dir / "no_data").string() + " --out " +
           (dir / "afile" / "run").string(),
       "is not a directory"},
      {bin("fm_bench") + " --device cpu --json " + (dir / "r.txt").string(), ".json"},
      {bin("fm_bench") + " --device cpu --json " + (dir / "afile" / "r.json").string(), "is not a directory"},
  };
  for (const Case& c : cases) {
    const RunResult r = run(c.cmd);
    EXPECT_TRUE(r.exited && r.code == 2) << c.cmd << ": " << r.out;
    EXPECT_NE(r.out.find(c.needle), std::string::npos) << c.cmd << ": " << r.out;
  }
  EXPECT_FALSE(fs::exists(dir / "g.png"));
  fs::remove_all(dir);
}

// --help renders every flag readably (CLI11's "--ema,!--no-ema" showed as "--ema,--no-ema{false}").
TEST(Apps, SampleHelpIsReadable) {
  REQUIRE_BINS();
  const RunResult r = run(bin("fm_sample") + " --help");
  EXPECT_TRUE(r.exited && r.code == 0) << r.out;
  EXPECT_EQ(r.out.find("{false}"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--no-ema"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--bare-grid"), std::string::npos) << r.out;
  const RunResult both = run(bin("fm_sample") + " --checkpoint x.safetensors --ema --no-ema");
  EXPECT_TRUE(both.exited && both.code == 2) << both.out;
  EXPECT_NE(both.out.find("--ema and --no-ema exclude each other"), std::string::npos) << both.out;
}

// OpenMP wait policy (docs/apps.md "Threads"): with neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT set, an app
// re-executes itself with OMP_WAIT_POLICY=passive and GOMP_SPINCOUNT=1000 (a bounded spin, then sleep) so
// that libgomp, which reads its environment once when loaded, takes them; a user's setting of either is kept as it is (no re-exec). Observed through libgomp's
// own report of the values it parsed (OMP_DISPLAY_ENV=verbose, printed once per process image).
TEST(Apps, OmpWaitPolicyDefaultAndUserSettings) {
  REQUIRE_BINS();
  // test::run exports OMP_WAIT_POLICY=passive for its children: env -u takes it away again here.
  auto show = [](const std::string& env) {
    return run("env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT OMP_DISPLAY_ENV=verbose " + env + " " +
               bin("fm_sample") + " --help");
  };
  auto count = [](const std::string& out, const std::string& what) {
    size_t n = 0;
    for (size_t at = out.find(what); at != std::string::npos; at = out.find(what, at + 1)) ++n;
    return n;
  };
  const std::string kBlock = "OPENMP DISPLAY ENVIRONMENT BEGIN";
  const RunResult dflt = show("");
  if (dflt.out.find("GOMP_SPINCOUNT") == std::string::npos)
    GTEST_SKIP() << "not libgomp (no GOMP_SPINCOUNT in OMP_DISPLAY_ENV's report): " << dflt.out;
  ASSERT_TRUE(dflt.exited && dflt.code == 0) << dflt.out;
  EXPECT_NE(dflt.out.find("Usage:"), std::string::npos) << dflt.out;
  // Two process images: libgomp's default (300000 spins) first, then the re-executed one: 1000 spins.
  EXPECT_EQ(count(dflt.out, kBlock), 2u) << dflt.out;
  const std::string first = dflt.out.substr(0, dflt.out.rfind(kBlock));
  EXPECT_NE(first.find("GOMP_SPINCOUNT = '300000'"), std::string::npos) << dflt.out;
  const std::string after = dflt.out.substr(dflt.out.rfind(kBlock));
  EXPECT_NE(after.find("GOMP_SPINCOUNT = '1000'"), std::string::npos) << dflt.out;
  EXPECT_NE(after.find("OMP_WAIT_POLICY = 'PASSIVE'"), std::string::npos) << dflt.out;
  // The user's choices are kept, and the app runs once (one report).
  const RunResult active = show("OMP_WAIT_POLICY=active");
  ASSERT_TRUE(active.exited && active.code == 0) << active.out;
  EXPECT_EQ(count(active.out, kBlock), 1u) << active.out;
  EXPECT_NE(active.out.find("OMP_WAIT_POLICY = 'ACTIVE'"), std::string::npos) << active.out;
  const RunResult spin = show("GOMP_SPINCOUNT=1234");
  ASSERT_TRUE(spin.exited && spin.code == 0) << spin.out;
  EXPECT_EQ(count(spin.out, kBlock), 1u) << spin.out;
  EXPECT_NE(spin.out.find("GOMP_SPINCOUNT = '1234'"), std::string::npos) << spin.out;
  const RunResult passive = show("OMP_WAIT_POLICY=passive");
  ASSERT_TRUE(passive.exited && passive.code == 0) << passive.out;
  EXPECT_EQ(count(passive.out, kBlock), 1u) << passive.out;
  EXPECT_NE(passive.out.find("GOMP_SPINCOUNT = '0'"), std::string::npos) << passive.out;
}

// Config and data messages name the real cause.
TEST(Apps, CliNamesTheRealCause) {
  REQUIRE_BINS();
  const fs::path dir = temp_dir("cause");
  // in_channels 3 (out_channels 1, class_emb_size 1): the message names in_channels.
  std::string cfg = kTinyJson;
  cfg.replace(cfg.find("\"in_channels\": 2"), 16, "\"in_channels\": 3");
  write_text(dir / "in3.json", cfg);
  RunResult r = run(bin("fm_train") + " --model-config " + (dir / "in3.json").string() + " --out " +
                    (dir / "o").string());
  EXPECT_TRUE(r.exited && r.code == 1) << r.out;
  EXPECT_NE(r.out.find("'in_channels' (3)"), std::string::npos) << r.out;
  // --data pointing at a file: "not a directory", not "not found".
  write_text(dir / "afile", "x");
  r = run(bin("fm_train") + " --data " + (dir / "afile").string() + " --out " + (dir / "o").string());
  EXPECT_TRUE(r.exited && r.code == 1) << r.out;
  EXPECT_NE(r.out.find("not a directory"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("not found"), std::string::npos) << r.out;
  fs::remove_all(dir);
}

// ---------------------------------------------------------------- training

// The binary tests share one small fm_train run, made on first use.
class AppsEndToEnd : public ::testing::Test {
 protected:
  void SetUp() override { REQUIRE_MNIST(); }
  static void TearDownTestSuite() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  // Skips (no binaries) or fails (the run failed) the calling test unless the shared run exists.
  static bool trained() {
    if (dir_.empty()) {
      dir_ = temp_dir("bins");
      write_text(dir_ / "tiny.json", kTinyJson);
      write_text(dir_ / "other.json", kOtherJson);
      train_run_ = run(
          bin("fm_train") + " --data " + mnist_dir() + " --model-config " + (dir_ / "tiny.json").string() +
          " --device cpu --limit 256 --batch-size 16 --max-steps 4 --sample-every 2 --threads 2 --out " +
          (dir_ / "run").string());
    }
    return train_run_.exited && train_run_.code == 0;
  }
  static std::string ckpt() { return (dir_ / "run" / "checkpoint.safetensors").string(); }
  static inline fs::path dir_;
  static inline RunResult train_run_;
};

#define REQUIRE_TRAINED() \
  REQUIRE_BINS();         \
  ASSERT_TRUE(trained()) << "fm_train failed: " << train_run_.out

TEST_F(AppsEndToEnd, LossFalls) {
  ThreadGuard tg(1);
  const fs::path dir = temp_dir("loss");
  TrainConfig c = quick_config(dir);
  c.max_steps = 50;
  const TrainResult r = train(c);
  ASSERT_EQ(r.status, TrainResult::Status::Done);
  ASSERT_EQ(r.losses.size(), 50u);
  const double first = mean(r.losses, 0, 10), last = mean(r.losses, 40, 50);
  EXPECT_LT(last, 0.75 * first) << "first 10: " << first << ", last 10: " << last;
  for (double l : r.losses) EXPECT_TRUE(std::isfinite(l));
  fs::remove_all(dir);
}

TEST_F(AppsEndToEnd, ResumeIsBitwiseIdentical) {
  ThreadGuard tg(2);
  const fs::path a = temp_dir("resume_a"), b = temp_dir("resume_b");
  TrainConfig ca = quick_config(a);
  ca.limit = 48;  // 3 batches per epoch: the resume point (step 4) lies in the second epoch
  ca.max_steps = 8;
  const TrainResult full = train(ca);
  ASSERT_EQ(full.losses.size(), 8u);

  TrainConfig cb = ca;
  cb.out_dir = b.string();
  cb.max_steps = 4;
  const TrainResult first = train(cb);
  ASSERT_EQ(first.losses.size(), 4u);
  const Checkpoint ck = read_checkpoint((b / "checkpoint.safetensors").string());
  EXPECT_EQ(ck.state.step, 4);
  EXPECT_EQ(ck.state.epoch, 1);
  EXPECT_EQ(ck.state.batch_in_epoch, 1);
  cb.max_steps = 8;
  const TrainResult second = train(cb, &ck);
  ASSERT_EQ(second.losses.size(), 4u);
  EXPECT_EQ(second.steps.front(), 5);
  std::vector<double> joined = first.losses;
  joined.insert(joined.end(), second.losses.begin(), second.losses.end());
  for (size_t i = 0; i < 8; ++i) EXPECT_EQ(joined[i], full.losses[i]) << "step " << i + 1;
  // metrics.csv of the resumed directory holds all 8 steps with the same losses.
  EXPECT_EQ(read_metrics_losses((b / "metrics.csv").string()), full.losses);
  // Final weights and EMA are identical too.
  const Checkpoint fa = read_checkpoint((a / "checkpoint.safetensors").string());
  const Checkpoint fb = read_checkpoint((b / "checkpoint.safetensors").string());
  ASSERT_EQ(fa.weights.tensors.size(), fb.weights.tensors.size());
  for (size_t i = 0; i < fa.weights.tensors.size(); ++i)
    EXPECT_EQ(fa.weights.tensors[i].data, fb.weights.tensors[i].data) << fa.weights.tensors[i].name;
  for (size_t i = 0; i < fa.ema.tensors.size(); ++i)
    EXPECT_EQ(fa.ema.tensors[i].data, fb.ema.tensors[i].data) << fa.ema.tensors[i].name;
  EXPECT_EQ(fa.state.rng_offset, fb.state.rng_offset);
  fs::remove_all(a);
  fs::remove_all(b);
}

// Resuming a run whose metrics.csv predates the loss_sigma_* columns upgrades the header and pads the old
// rows with empty fields (instead of failing on the header mismatch).
TEST_F(AppsEndToEnd, ResumeUpgradesAnOldMetricsHeader) {
  ThreadGuard tg(2);
  const fs::path dir = temp_dir("old_metrics");
  TrainConfig c = quick_config(dir);
  c.limit = 32;
  c.max_steps = 2;
  ASSERT_EQ(train(c).status, TrainResult::Status::Done);
  // Rewrite metrics.csv as the older version wrote it: the first five columns only.
  std::ifstream in(dir / "metrics.csv");
  std::string line, old;
  while (std::getline(in, line)) {
    size_t cut = 0;
    for (int i = 0; i < 5; ++i) cut = line.find(',', cut) + 1;
    old += line.substr(0, cut - 1) + "\n";
  }
  in.close();
  write_text(dir / "metrics.csv", old);
  ASSERT_EQ(old.substr(0, old.find('\n')), "step,epoch,loss,lr,img_per_s");
  const Checkpoint ck = read_checkpoint((dir / "checkpoint.safetensors").string());
  c.max_steps = 3;
  ASSERT_EQ(train(c, &ck).status, TrainResult::Status::Done);
  const MetricsLog log = read_metrics((dir / "metrics.csv").string());
  ASSERT_EQ(log.steps, (std::vector<int64_t>{1, 2, 3}));
  ASSERT_EQ(log.sigma_bins.size(), 3u);
  for (int i = 0; i < 2; ++i)
    for (double v : log.sigma_bins[i]) EXPECT_TRUE(std::isnan(v)) << "old row " << i;
  int filled = 0;
  for (double v : log.sigma_bins[2]) filled += std::isfinite(v);
  EXPECT_GE(filled, 2);
  fs::remove_all(dir);
}

TEST_F(AppsEndToEnd, TrainingIsBitwiseIdenticalForAnyThreadCount) {
  // docs/apps.md, Determinism: no CPU kernel splits a sum across threads, so 1 and 3 threads train the
  // same bits (the conv weight gradient used per-thread partial sums before).
  std::vector<TrainResult> runs;
  std::vector<Checkpoint> ckpts;
  for (int threads : {1, 3}) {
    ThreadGuard tg(threads);
    const fs::path d = temp_dir("threads" + std::to_string(threads));
    TrainConfig c = quick_config(d);
    c.limit = 32;
    c.max_steps = 3;
    runs.push_back(train(c));
    ASSERT_EQ(runs.back().losses.size(), 3u);
    ckpts.push_back(read_checkpoint((d / "checkpoint.safetensors").string()));
    fs::remove_all(d);
  }
  EXPECT_EQ(runs[0].losses, runs[1].losses);
  ASSERT_EQ(ckpts[0].weights.tensors.size(), ckpts[1].weights.tensors.size());
  for (size_t i = 0; i < ckpts[0].weights.tensors.size(); ++i)
    EXPECT_EQ(ckpts[0].weights.tensors[i].data, ckpts[1].weights.tensors[i].data)
        << ckpts[0].weights.tensors[i].name;
}

TEST_F(AppsEndToEnd, TrainWritesAllOutputs) {
  REQUIRE_TRAINED();
  const fs::path run_dir = dir_ / "run";
  for (const char* f : {"metrics.csv", "samples_step2.png", "samples_final.png", "checkpoint.safetensors"})
    EXPECT_TRUE(fs::exists(run_dir / f)) << f;
  for (const char* f : {"loss.png", "loss_sigma.png"})  // drawn with PLplot
    EXPECT_EQ(fs::exists(run_dir / f), plots_available()) << f;
  if (plots_available()) {
    EXPECT_EQ(png_size(run_dir / "loss.png"), std::make_pair(800u, 450u));
    EXPECT_EQ(png_size(run_dir / "loss_sigma.png"), std::make_pair(800u, 450u));
  }
  bool events = false;
  for (const auto& e : fs::directory_iterator(run_dir))
    events |=
        e.path().filename().string().rfind("events.out.tfevents.", 0) == 0 && fs::file_size(e.path()) > 0;
  EXPECT_TRUE(events);
  EXPECT_EQ(read_metrics_losses((run_dir / "metrics.csv").string()).size(), 4u);
  std::ifstream m(run_dir / "metrics.csv");
  std::string header;
  std::getline(m, header);
  EXPECT_EQ(header,
            "step,epoch,loss,lr,img_per_s,loss_sigma_0,loss_sigma_1,loss_sigma_2,loss_sigma_3,loss_sigma_4,"
            "loss_sigma_5,loss_sigma_6,loss_sigma_7,loss_sigma_8,loss_sigma_9");
  // Every row: 15 fields; the 16 samples of a step fall in at least 2 sigma bins; the count-weighted bin
  // means cannot all lie above or all below the step's loss.
  const MetricsLog log = read_metrics((run_dir / "metrics.csv").string());
  ASSERT_EQ(log.sigma_bins.size(), 4u);
  for (size_t i = 0; i < log.sigma_bins.size(); ++i) {
    ASSERT_EQ(log.sigma_bins[i].size(), 10u);
    int filled = 0;
    double lo = INFINITY, hi = -INFINITY;
    for (double v : log.sigma_bins[i])
      if (std::isfinite(v)) ++filled, lo = std::min(lo, v), hi = std::max(hi, v);
    EXPECT_GE(filled, 2) << "row " << i;
    EXPECT_LE(lo, log.losses[i] * (1 + 1e-6)) << "row " << i;
    EXPECT_GE(hi, log.losses[i] * (1 - 1e-6)) << "row " << i;
  }
  // samples grid: 8 columns, 10 rows of 28 px with 2 px padding, plus the class labels and the caption.
  const auto sz = png_size(run_dir / "samples_final.png");
  if (plots_available()) {
    EXPECT_GT(sz.first, 2u + 8 * 30 + 40);
    EXPECT_GT(sz.second, 2u + 10 * 30 + 10);
  } else {  // bare grid + the labels in a sidecar
    EXPECT_EQ(sz, std::make_pair(2u + 8 * 30, 2u + 10 * 30));
    EXPECT_TRUE(fs::exists(run_dir / "samples_final.png.txt"));
  }
  const Checkpoint c = read_checkpoint(ckpt());
  EXPECT_EQ(c.state.step, 4);
  EXPECT_EQ(c.state.train_args.at("batch_size"), 16);
}

// A file the run writes that cannot be written: exit 1 and a message with the path and the OS reason.
TEST_F(AppsEndToEnd, TrainOutputFileErrorsSayWhy) {
  REQUIRE_TRAINED();
  const std::string train = bin("fm_train") + " --quiet --data " + mnist_dir() + " --model-config " +
                            (dir_ / "tiny.json").string() +
                            " --device cpu --limit 32 --batch-size 16 --max-steps 1 --no-samples --out ";
  std::vector<std::string> names = {"metrics.csv", "checkpoint.safetensors"};
  if (plots_available()) names.insert(names.end(), {"loss.png", "loss_sigma.png"});
  for (const std::string& name : names) {
    const fs::path out = dir_ / ("err_" + name);
    fs::create_directories(out / name);  // a directory where the file goes
    const RunResult r = run(train + out.string());
    EXPECT_TRUE(r.exited && r.code == 1) << name << ": " << r.out;
    EXPECT_NE(r.out.find(name), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("Is a directory"), std::string::npos) << name << ": " << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  }
}

TEST_F(AppsEndToEnd, SampleGridAndDeterminism) {
  REQUIRE_TRAINED();
  const std::string base =
      bin("fm_sample") + " --quiet --device cpu --threads 2 --checkpoint " + ckpt() + " --steps 2";
  const fs::path g = dir_ / "grid.png";
  RunResult r = run(base + " --per-class 1 --bare-grid --out " + g.string());
  ASSERT_TRUE(r.exited && r.code == 0) << r.out;
  EXPECT_EQ(png_size(g), std::make_pair(2u + 30, 2u + 10 * 30));  // one row per class
  // Labelled (the default): a label column left of the rows and a caption strip above the grid.
  r = run(base + " --per-class 1 --out " + g.string());
  ASSERT_TRUE(r.exited && r.code == 0) << r.out;
  if (plots_available()) {
    EXPECT_GT(png_size(g).first, 2u + 30 + 40);
    EXPECT_GT(png_size(g).second, 2u + 10 * 30 + 10);
  } else {
    EXPECT_TRUE(fs::exists(g.string() + ".txt"));
  }

  const fs::path t1 = dir_ / "s1.safetensors", t2 = dir_ / "s2.safetensors", t3 = dir_ / "s3.safetensors";
  const std::string sub =
      base + " --classes 3,7 --per-class 2 --bare-grid --out " + (dir_ / "g2.png").string();
  ASSERT_EQ(run(sub + " --seed 5 --save-tensor " + t1.string()).code, 0);
  ASSERT_EQ(run(sub + " --seed 5 --batch 1 --solver euler --save-tensor " + t2.string()).code, 0);
  ASSERT_EQ(run(sub + " --seed 6 --save-tensor " + t3.string()).code, 0);
  EXPECT_EQ(png_size(dir_ / "g2.png"), std::make_pair(2u + 2 * 30, 2u + 2 * 30));
  const st::StFile f1 = st::read_file(t1.string()), f3 = st::read_file(t3.string());
  EXPECT_EQ(read_bytes(t1), read_bytes(t2)) << "same seed must give identical samples";
  // ... by construction, whatever GEMM path the CPU selects (docs/apps.md, Determinism): force each.
  for (const char* isa : {"scalar", "avx2"}) {
    const fs::path t = dir_ / (std::string("s_") + isa + ".safetensors");
    ASSERT_EQ(run(std::string("ENGINE_CPU_ISA=") + isa + " " + sub + " --seed 5 --batch 3 --save-tensor " +
                  t.string())
                  .code,
              0)
        << isa;
    EXPECT_EQ(read_bytes(t1), read_bytes(t)) << "ENGINE_CPU_ISA=" << isa << " changed the samples";
  }
  // ... and whatever the thread count (`sub` runs with --threads 2).
  const fs::path t4 = dir_ / "s4.safetensors";
  std::string sub1 = sub;
  sub1.replace(sub1.find("--threads 2"), 11, "--threads 1");
  ASSERT_EQ(run(sub1 + " --seed 5 --save-tensor " + t4.string()).code, 0);
  EXPECT_EQ(read_bytes(t1), read_bytes(t4)) << "--threads 1 changed the samples";
  ASSERT_NE(f1.find("samples"), nullptr);
  EXPECT_EQ(f1.find("samples")->shape, (std::vector<int64_t>{4, 1, 28, 28}));
  EXPECT_EQ(f1.find("labels")->dtype, st::StDtype::I64);
  EXPECT_NE(f1.find("samples")->data, f3.find("samples")->data) << "another seed must give other samples";

  for (const char* solver : {"heun", "midpoint"}) {
    RunResult s = run(base + " --per-class 1 --classes 0 --solver " + solver + " --no-ema --out " +
                      (dir_ / "h.png").string());
    EXPECT_TRUE(s.exited && s.code == 0) << solver << ": " << s.out;
  }
}

// --precision bf16 (docs/apps.md, Precision): on an AVX512_BF16 CPU the samples differ from fp32 but stay
// close, and are bitwise independent of the thread count; where the bf16 path cannot run (forced
// ENGINE_CPU_ISA=avx2, or a CPU without AVX512_BF16) one notice line and the fp32 samples bit for bit.
// bf16 on CUDA and unknown values are usage errors (exit 2).
TEST_F(AppsEndToEnd, SamplePrecisionBf16) {
  REQUIRE_TRAINED();
  if (kern::cpu::cpu_isa() != kern::cpu::cpu_isa_supported())
    GTEST_SKIP() << "ENGINE_CPU_ISA forces a path below this CPU's; this test sets it for its own sub-run";
  const std::string samp = bin("fm_sample") + " --quiet --checkpoint " + ckpt() +
                           " --steps 2 --classes 3,7 --per-class 2 --seed 5 --bare-grid --out " +
                           (dir_ / "gp.png").string(),
                    sub = samp + " --device cpu";
  auto samples = [&](const std::string& extra, const std::string& name, std::string* out = nullptr,
                     const std::string& env = "") {
    const fs::path t = dir_ / name;
    const RunResult r = run(env + sub + " " + extra + " --save-tensor " + t.string());
    EXPECT_TRUE(r.exited && r.code == 0) << extra << ": " << r.out;
    if (out) *out = r.out;
    const st::StFile f = st::read_file(t.string());
    const std::vector<uint8_t>& d = f.find("samples")->data;
    std::vector<float> v(d.size() / sizeof(float));
    std::memcpy(v.data(), d.data(), d.size());
    return v;
  };
  const std::vector<float> fp32 = samples("--threads 2", "p_fp32.safetensors");
  std::string out;
  const std::vector<float> bf16 = samples("--threads 2 --precision bf16", "p_bf16.safetensors", &out);
  ASSERT_EQ(fp32.size(), bf16.size());
  const bool has_bf16 =
      kern::cpu::cpu_has_bf16() && kern::cpu::cpu_isa_supported() == kern::cpu::CpuIsa::Avx512;
  if (has_bf16) {
    EXPECT_EQ(out.find("note:"), std::string::npos) << out;
    EXPECT_NE(fp32, bf16) << "--precision bf16 gave the fp32 samples: did the bf16 path run?";
    // Samples live in about [-1, 1]. bf16 inputs carry up to 2^-9 relative error per factor (~4e-3 per
    // GEMM output); through the tiny model's ~20 conv/linear layers, 2 Euler steps and CFG scale 3 (the
    // guided prediction 3 cond - 2 uncond amplifies a difference up to 5x) the largest sample difference
    // measured 0.026 on Zen 4. 0.1 (5% of the range) leaves room for another AVX512_BF16 CPU and still
    // catches a broken kernel (a wrong pair layout or a dropped k gives O(1) differences).
    double max_diff = 0;
    for (size_t i = 0; i < fp32.size(); ++i) {
      ASSERT_TRUE(std::isfinite(bf16[i])) << i;
      max_diff = std::max(max_diff, double(std::fabs(bf16[i] - fp32[i])));
    }
    EXPECT_LT(max_diff, 0.1);
    EXPECT_EQ(bf16, samples("--threads 1 --precision bf16", "p_bf16_t1.safetensors"))
        << "--threads 1 changed the bf16 samples";
  } else {
    EXPECT_NE(out.find("note: --precision bf16 needs AVX512_BF16; this CPU lacks it, running fp32"),
              std::string::npos)
        << out;
    EXPECT_EQ(fp32, bf16) << "the fp32 fallback must give the fp32 samples";
  }
  if (kern::cpu::cpu_isa_supported() >= kern::cpu::CpuIsa::Avx2) {
    const std::vector<float> avx2 =
        samples("--threads 2 --precision bf16", "p_avx2.safetensors", &out, "ENGINE_CPU_ISA=avx2 ");
    EXPECT_EQ(out, has_bf16 ? "note: --precision bf16 needs the avx512 GEMM path (ENGINE_CPU_ISA=avx2), "
                              "running fp32\n"
                            : "note: --precision bf16 needs AVX512_BF16; this CPU lacks it, running fp32\n")
        << "one notice line, nothing else (--quiet)";
    EXPECT_EQ(fp32, avx2) << "the fp32 fallback must give the fp32 samples";
  }
  for (const std::string& cmd :
       {samp + " --precision bf16 --device cuda", bin("fm_bench") + " --device cuda --precision bf16 --quick",
        bin("fm_train") + " --device cuda --precision bf16 --data " + mnist_dir() + " --out " +
            (dir_ / "p_train").string()}) {
    const RunResult r = run(cmd);
    EXPECT_TRUE(r.exited && r.code == 2) << cmd << ": " << r.out;
    EXPECT_NE(r.out.find("--precision bf16 is not implemented for CUDA yet (issue 9)"), std::string::npos)
        << cmd << ": " << r.out;
  }
  const RunResult r = run(sub + " --precision fp16");
  EXPECT_TRUE(r.exited && r.code == 2) << r.out;
  EXPECT_NE(r.out.find("--precision"), std::string::npos) << r.out;
}

TEST_F(AppsEndToEnd, SampleRejectsBadCheckpoints) {
  REQUIRE_TRAINED();
  const std::string samp =
      bin("fm_sample") + " --device cpu --steps 1 --per-class 1 --out " + (dir_ / "x.png").string();
  RunResult r = run(samp + " --checkpoint " + ckpt() + " --model-config " + (dir_ / "other.json").string());
  EXPECT_TRUE(r.exited && r.code == 1) << r.out;
  EXPECT_NE(r.out.find("shape mismatch"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(ckpt()), std::string::npos) << r.out;
  // One line (like fm_train's), with the counts, the first few keys and where the config came from.
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  EXPECT_NE(r.out.find("more)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--model-config " + (dir_ / "other.json").string()), std::string::npos) << r.out;

  const std::string bytes = read_bytes(ckpt());
  write_text(dir_ / "trunc.safetensors", bytes.substr(0, bytes.size() - 1000));
  r = run(samp + " --checkpoint " + (dir_ / "trunc.safetensors").string());
  EXPECT_TRUE(r.exited && r.code == 1) << r.out;
  EXPECT_NE(r.out.find("trunc.safetensors"), std::string::npos) << r.out;

  // Resuming with a different batch size is refused.
  r = run(bin("fm_train") + " --quiet --data " + mnist_dir() + " --resume " + ckpt() +
          " --batch-size 8 --out " + (dir_ / "r").string());
  EXPECT_TRUE(r.exited && r.code == 2) << r.out;
  EXPECT_NE(r.out.find("--batch-size"), std::string::npos) << r.out;
}

TEST_F(AppsEndToEnd, ResumeViaCliAndSigint) {
  REQUIRE_TRAINED();
  // CLI resume: inherits the flags from the checkpoint and appends to metrics.csv in the checkpoint's dir.
  const fs::path rd = dir_ / "resume";
  fs::create_directories(rd);
  fs::copy_file(dir_ / "run" / "checkpoint.safetensors", rd / "checkpoint.safetensors");
  RunResult r = run(bin("fm_train") + " --quiet --threads 2 --no-samples --data " + mnist_dir() +
                    " --resume " + (rd / "checkpoint.safetensors").string() + " --max-steps 6");
  ASSERT_TRUE(r.exited && r.code == 0) << r.out;
  EXPECT_EQ(read_checkpoint((rd / "checkpoint.safetensors").string()).state.step, 6);
  EXPECT_EQ(read_metrics_losses((rd / "metrics.csv").string()).size(), 2u);

  // SIGINT: the current step finishes, a checkpoint is saved, exit status 130.
  const fs::path sd = dir_ / "sigint";
  const std::string cmd = "( " + bin("fm_train") + " --quiet --threads 1 --no-samples --data " + mnist_dir() +
                          " --model-config " + (dir_ / "tiny.json").string() +
                          " --limit 256 --batch-size 8 --max-steps 100000 --out " + sd.string() +
                          " & pid=$!; for i in $(seq 600); do "
                          "[ -f " +
                          (sd / "metrics.csv").string() + " ] && [ $(wc -l < " +
                          (sd / "metrics.csv").string() +
                          ") -ge 3 ] && break; sleep 0.1; done; "
                          "kill -INT $pid; wait $pid; echo \"exit=$?\" )";
  r = run(cmd);
  EXPECT_NE(r.out.find("exit=130"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("stopped by SIGINT"), std::string::npos) << r.out;
  const Checkpoint c = read_checkpoint((sd / "checkpoint.safetensors").string());
  EXPECT_GE(c.state.step, 2);
  EXPECT_EQ(static_cast<int64_t>(read_metrics_losses((sd / "metrics.csv").string()).size()), c.state.step);

  // The printed resume command works verbatim: no --data, no MNIST_DIR, from a directory without data/.
  const std::string key = "continue with: ";
  const size_t k = r.out.find(key);
  ASSERT_NE(k, std::string::npos) << r.out;
  const std::string printed = r.out.substr(k + key.size(), r.out.find(')', k) - k - key.size());
  const fs::path cwd = dir_ / "elsewhere";
  fs::create_directories(cwd);
  const int64_t rows = c.state.step + 1;
  const std::string again = "( cd " + cwd.string() + " && env -u MNIST_DIR " + printed +
                            " & pid=$!; for i in $(seq 600); do [ $(wc -l < " +
                            (sd / "metrics.csv").string() + ") -ge " + std::to_string(rows + 2) +
                            " ] && break; sleep 0.1; done; "
                            "kill -INT $pid; wait $pid; echo \"exit=$?\" )";
  const RunResult r2 = run(again);
  EXPECT_NE(r2.out.find("exit=130"), std::string::npos) << printed << ": " << r2.out;
  EXPECT_GE(read_checkpoint((sd / "checkpoint.safetensors").string()).state.step, c.state.step + 2) << r2.out;
}

// Two stop signals microseconds apart (what `timeout` does: the child, then its process group) are one
// stop request: the run still saves its checkpoint and exits 130. (Before the fix in 9a38203 the second
// signal killed the run whenever it arrived after the handler had run for the first.)
TEST_F(AppsEndToEnd, SigintTwiceIsOneStopRequest) {
  REQUIRE_TRAINED();
  const fs::path d1 = dir_ / "sigint_twice";
  const std::string metrics = (d1 / "metrics.csv").string();
  const RunResult r =
      run("( " + bin("fm_train") + " --quiet --threads 1 --no-samples --data " + mnist_dir() +
          " --model-config " + (dir_ / "tiny.json").string() +
          " --limit 256 --batch-size 8 --max-steps 100000 --out " + d1.string() +
          " & pid=$!; for i in $(seq 600); do [ -f " + metrics + " ] && [ $(wc -l < " + metrics +
          ") -ge 3 ] && break; sleep 0.1; done; kill -INT $pid; sleep 0.01; kill -INT $pid; "
          "wait $pid; echo \"exit=$?\" )");
  EXPECT_NE(r.out.find("exit=130"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("stopped by SIGINT"), std::string::npos) << r.out;
  EXPECT_GE(read_checkpoint((d1 / "checkpoint.safetensors").string()).state.step, 2) << r.out;
}

// A bare UNet2DModel state dict (no class_emb.weight, keys without "model."): the error offers the CLI flag
// (not a C++ option), and the flag makes it load with a note.
TEST_F(AppsEndToEnd, SampleBareUnetWeights) {
  REQUIRE_TRAINED();
  const Checkpoint c = read_checkpoint(ckpt());
  st::StFile bare;
  for (const st::StTensor& t : c.weights.tensors)
    if (t.name.rfind("model.", 0) == 0) {
      st::StTensor u = t;
      u.name = t.name.substr(6);
      bare.tensors.push_back(u);
    }
  ASSERT_FALSE(bare.tensors.empty());
  const fs::path f = dir_ / "bare.safetensors";
  st::write_file_atomic(f.string(), bare);
  const std::string samp = bin("fm_sample") +
                           " --device cpu --threads 2 --steps 1 --per-class 1 --model-config " +
                           (dir_ / "tiny.json").string() + " --checkpoint " + f.string() + " --out " +
                           (dir_ / "bare.png").string() + " --bare-grid";
  RunResult r = run(samp);
  EXPECT_TRUE(r.exited && r.code == 1) << r.out;
  EXPECT_NE(r.out.find("--allow-missing-class-emb"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("allow_missing_class_emb"), std::string::npos) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  r = run(samp + " --allow-missing-class-emb");
  EXPECT_TRUE(r.exited && r.code == 0) << r.out;
  EXPECT_NE(r.out.find("class_emb.weight"), std::string::npos) << r.out;
  EXPECT_EQ(png_size(dir_ / "bare.png"), std::make_pair(2u + 30, 2u + 10 * 30));
}

// Resuming a run that has nothing left to do says so in one line, exits 0 and touches no file.
TEST_F(AppsEndToEnd, ResumeNothingToDo) {
  REQUIRE_TRAINED();
  const fs::path rd = dir_ / "nothing";
  fs::create_directories(rd);
  fs::copy_file(dir_ / "run" / "checkpoint.safetensors", rd / "checkpoint.safetensors");
  write_text(rd / "metrics.csv", "step,epoch,loss,lr,img_per_s\n");
  const std::string before = listing(rd);
  for (const std::string extra : {" --max-steps 2", " --max-steps 4", ""}) {  // "": the stored max-steps 4
    const RunResult r = run(bin("fm_train") + " --threads 2 --data " + mnist_dir() + " --resume " +
                            (rd / "checkpoint.safetensors").string() + extra);
    EXPECT_TRUE(r.exited && r.code == 0) << extra << ": " << r.out;
    EXPECT_NE(r.out.find("nothing to do"), std::string::npos) << extra << ": " << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << extra << ": " << r.out;
    EXPECT_EQ(listing(rd), before) << extra;
  }
}

// Temporary files of a killed writer are removed at start (files of a live process are kept).
TEST_F(AppsEndToEnd, ResumeRemovesStaleTempFiles) {
  REQUIRE_TRAINED();
  const fs::path rd = dir_ / "stale";
  fs::create_directories(rd);
  fs::copy_file(dir_ / "run" / "checkpoint.safetensors", rd / "checkpoint.safetensors");
  const std::string dead = ".checkpoint.safetensors.tmp." + std::to_string(dead_pid()) + ".0";
  const std::string live = ".checkpoint.safetensors.tmp." + std::to_string(::getpid()) + ".7";
  write_text(rd / dead, std::string(4096, 'x'));
  write_text(rd / live, "y");
  const RunResult r = run(bin("fm_train") + " --threads 2 --quiet --no-samples --data " + mnist_dir() +
                          " --resume " + (rd / "checkpoint.safetensors").string() + " --max-steps 5");
  EXPECT_TRUE(r.exited && r.code == 0) << r.out;
  EXPECT_FALSE(fs::exists(rd / dead)) << r.out;
  EXPECT_TRUE(fs::exists(rd / live));
  EXPECT_NE(r.out.find("stale temporary"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(dead), std::string::npos) << r.out;
  EXPECT_EQ(read_checkpoint((rd / "checkpoint.safetensors").string()).state.step, 5);
}

// A SIGKILLed run keeps its TensorBoard scalars up to its last checkpoint (flushed there), not just the
// 40-byte header.
TEST_F(AppsEndToEnd, EventsSurviveSigkill) {
  REQUIRE_TRAINED();
  const fs::path kd = dir_ / "killed";
  const std::string metrics = (kd / "metrics.csv").string();
  const std::string cmd =
      "( " + bin("fm_train") + " --quiet --threads 1 --no-samples --data " + mnist_dir() +
      " --model-config " + (dir_ / "tiny.json").string() +
      " --limit 256 --batch-size 8 --checkpoint-every 2 --max-steps 100000 --out " + kd.string() +
      " & pid=$!; for i in $(seq 900); do [ -f " + metrics + " ] && [ $(wc -l < " + metrics +
      ") -ge 6 ] && break; sleep 0.1; done; kill -KILL $pid; wait $pid; echo \"exit=$?\" )";
  const RunResult r = run(cmd);
  EXPECT_NE(r.out.find("exit=137"), std::string::npos) << r.out;
  const Checkpoint c = read_checkpoint((kd / "checkpoint.safetensors").string());
  ASSERT_GE(c.state.step, 4);
  const fs::path ev = events_file(kd);
  ASSERT_FALSE(ev.empty());
  EXPECT_GE(count_event_records(ev), 1 + c.state.step) << fs::file_size(ev) << " bytes";
}

// A failed checkpoint write says whether an earlier checkpoint is still in place.
TEST_F(AppsEndToEnd, FailedSaveNamesTheKeptCheckpoint) {
  REQUIRE_TRAINED();
  ThreadGuard tg(2);
  const fs::path a = temp_dir("savefail_a");
  fs::create_directories(a / "checkpoint.safetensors" / "blocker");  // rename onto a directory fails
  TrainConfig c = quick_config(a);
  c.model = tiny();
  c.batch_size = 16;
  c.limit = 256;
  c.max_steps = 2;
  try {
    train(c);
    ADD_FAILURE() << "the save should fail";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("no earlier checkpoint"), std::string::npos) << e.what();
  }
  const Checkpoint ck = read_checkpoint(ckpt());  // step 4, the shared run's flags
  c.max_steps = 6;
  try {
    train(c, &ck);
    ADD_FAILURE() << "the save should fail";
  } catch (const CheckpointError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("previous checkpoint " + ckpt() + " (step 4) was kept"), std::string::npos) << m;
  }
  fs::remove_all(a);
}

// Without MPI, a distributed run says in one line what is missing and exits 2 (with MPI,
// scripts/test_mpi.sh runs the real thing).
TEST(DistApp, WithoutMpiADistributedRunSaysWhatIsMissing) {
  if (!fs::exists(bin("fm_train"))) GTEST_SKIP() << "fm_train not built in " << ENGINE_BIN_DIR;
  if (dist::built_with_mpi())
    GTEST_SKIP() << "this build has MPI; scripts/test_mpi.sh (ctest Mpi.*) covers it";
  const fs::path dir = temp_dir("dist_nompi");
  for (const std::string& how :
       {std::string("") + bin("fm_train") + " --dist", "OMPI_COMM_WORLD_SIZE=2 " + bin("fm_train")}) {
    const RunResult r = run(how + " --max-steps 1 --out " + (dir / "o").string());
    EXPECT_TRUE(r.exited && r.code == 2) << how << ": " << r.out;
    EXPECT_NE(r.out.find("built without MPI"), std::string::npos) << r.out;
    EXPECT_FALSE(fs::exists(dir / "o")) << "nothing is written";
  }
}
