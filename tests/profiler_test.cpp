// Profiler.*: the op-level profiler (runtime/profiler.h) on CPU: nothing recorded when off, aggregation
// and sorting, nested scopes not double counted, the cost columns against independently counted work,
// the Chrome trace (parsed with nlohmann-json), bad trace paths, and the apps' switches (fm_bench
// --profile / --profile-trace, ENGINE_PROFILE / ENGINE_PROFILE_TRACE).
#include "runtime/profiler.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "core/autograd.h"
#include "core/ops.h"
#include "runtime/error.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace engine;

namespace {

// Every test starts from an idle, empty profiler.
struct Fresh {
  Fresh() {
    prof::stop();
    prof::clear();
  }
  ~Fresh() {
    prof::stop();
    prof::clear();
  }
};

void busy_ms(double ms) {
  const auto until =
      std::chrono::steady_clock::now() + std::chrono::microseconds(static_cast<int64_t>(ms * 1e3));
  while (std::chrono::steady_clock::now() < until) {
  }
}

const prof::Row* find_row(const prof::Summary& s, const std::string& name) {
  for (const prof::Row& r : s.rows)
    if (r.name == name) return &r;
  return nullptr;
}

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("profiler_test_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);  // throws on invalid JSON
}

// conv2d on x (2, 3, 8, 8), w (4, 3, 3, 3), padding 1: FLOPs = 2 * N * K * P * Q * C * R * S.
constexpr double kConvFlops = 2.0 * 2 * 4 * 8 * 8 * 3 * 3 * 3;

Tensor conv_step(bool grad) {
  Tensor x = Tensor::ones({2, 3, 8, 8});
  Tensor w = Tensor::ones({4, 3, 3, 3});
  Tensor b = Tensor::zeros({4});
  x.set_requires_grad(grad);
  w.set_requires_grad(grad);
  b.set_requires_grad(grad);
  Conv2dOptions o;
  o.pad_h = o.pad_w = 1;
  Tensor y = conv2d(x, w, b, o);
  if (grad) sum(y).backward();
  return y;
}

}  // namespace

TEST(Profiler, OffRecordsNothing) {
  Fresh fresh;
  ASSERT_FALSE(prof::enabled());
  conv_step(true);
  { prof::Scope s("manual"); }
  const prof::Summary s = prof::summary();
  EXPECT_TRUE(s.rows.empty());
  EXPECT_EQ(s.wall_ms, 0.0);
  EXPECT_EQ(s.trace_events, 0);
  EXPECT_EQ(s.unrecorded_calls, 0);
}

TEST(Profiler, AggregatesPerNameAndSortsByTime) {
  Fresh fresh;
  prof::start();
  for (int i = 0; i < 2; ++i) {
    prof::Scope s("slow");
    busy_ms(3);
  }
  for (int i = 0; i < 3; ++i) prof::Scope s("fast");
  busy_ms(1);  // outside any op
  prof::stop();
  const prof::Summary s = prof::summary();
  ASSERT_EQ(s.rows.size(), 2u);
  EXPECT_EQ(s.rows[0].name, "slow");
  EXPECT_EQ(s.rows[0].calls, 2);
  EXPECT_GE(s.rows[0].ms, 6.0);
  EXPECT_EQ(s.rows[1].name, "fast");
  EXPECT_EQ(s.rows[1].calls, 3);
  EXPECT_LT(s.rows[1].ms, s.rows[0].ms);
  double pct = 0, ms = 0;
  for (const prof::Row& r : s.rows) pct += r.pct, ms += r.ms;
  EXPECT_LE(pct, 100.0 + 1e-9);
  EXPECT_NEAR(ms, s.ops_ms, 1e-9);
  EXPECT_GE(s.wall_ms, s.ops_ms + 1.0);  // the 1 ms outside ops is wall time, not op time
  // No cost given: the rate columns print "-".
  EXPECT_LT(s.rows[0].flops, 0);
  const std::string table = prof::format_table(s, "unit");
  EXPECT_NE(table.find("profile: unit"), std::string::npos) << table;
  EXPECT_NE(table.find("(outside ops)"), std::string::npos) << table;
  EXPECT_LT(table.find("slow"), table.find("fast")) << table;
}

TEST(Profiler, NestedScopesAreNotDoubleCounted) {
  Fresh fresh;
  prof::start();
  {
    prof::Scope outer("outer");
    busy_ms(2);
    {
      prof::Scope inner("inner");
      busy_ms(2);
    }
  }
  prof::stop();
  const prof::Summary s = prof::summary();
  ASSERT_EQ(s.rows.size(), 1u) << prof::format_table(s, "nested");
  EXPECT_EQ(s.rows[0].name, "outer");
  EXPECT_GE(s.rows[0].ms, 4.0);  // inclusive of the nested scope
  EXPECT_LE(s.rows[0].pct, 100.0 + 1e-9);
  EXPECT_LE(s.ops_ms, s.wall_ms);
}

// The real hooks: forward ops at the dispatch, backward nodes as "<op>.backward" with their kernels nested,
// the cost of the nested kernels summed into the node's row.
TEST(Profiler, RecordsForwardOpsAndBackwardNodesWithTheirWork) {
  Fresh fresh;
  prof::start();
  conv_step(true);
  prof::stop();
  const prof::Summary s = prof::summary();
  const std::string table = prof::format_table(s, "conv");
  const prof::Row* fwd = find_row(s, "conv2d");
  const prof::Row* bwd = find_row(s, "conv2d.backward");
  ASSERT_TRUE(fwd && bwd) << table;
  EXPECT_EQ(fwd->calls, 1);
  EXPECT_EQ(bwd->calls, 1);
  EXPECT_EQ(find_row(s, "conv2d_backward"), nullptr) << "the nested kernel has no row of its own\n" << table;
  EXPECT_DOUBLE_EQ(fwd->flops, kConvFlops);
  EXPECT_DOUBLE_EQ(bwd->flops, 2 * kConvFlops);  // input and weight gradients; bias inside the weight kernel
  // x, w, b, y once each in float32.
  EXPECT_DOUBLE_EQ(fwd->bytes, 4.0 * (2 * 3 * 8 * 8 + 4 * 3 * 3 * 3 + 4 + 2 * 4 * 8 * 8));
  EXPECT_GT(bwd->bytes, 0);
  EXPECT_NE(find_row(s, "accumulate_grad"), nullptr) << table;
  double pct = 0;
  for (const prof::Row& r : s.rows) pct += r.pct;
  EXPECT_LE(pct, 100.0 + 1e-9) << table;
}

TEST(Profiler, IgnoresOtherThreads) {
  Fresh fresh;
  prof::start();
  std::thread([] { prof::Scope s("elsewhere"); }).join();
  { prof::Scope s("here"); }
  prof::stop();
  const prof::Summary s = prof::summary();
  ASSERT_EQ(s.rows.size(), 1u);
  EXPECT_EQ(s.rows[0].name, "here");
  EXPECT_EQ(s.unrecorded_calls, 1);
}

TEST(Profiler, ClearTableKeepsTheTrace) {
  Fresh fresh;
  prof::start({.trace = true});
  { prof::Scope s("first"); }
  prof::stop();
  prof::clear_table();
  EXPECT_TRUE(prof::summary().rows.empty());
  EXPECT_EQ(prof::summary().trace_events, 1);
}

TEST(Profiler, TraceIsChromeJsonWithNestedEvents) {
  Fresh fresh;
  const fs::path dir = temp_dir("trace");
  prof::start({.trace = true});
  conv_step(true);
  prof::stop();
  const fs::path path = dir / "t.json";
  prof::write_trace(path.string());
  const nlohmann::json j = read_json(path);
  ASSERT_TRUE(j.contains("traceEvents") && j["traceEvents"].is_array());
  const nlohmann::json* fwd = nullptr;
  const nlohmann::json* node = nullptr;
  const nlohmann::json* kernel = nullptr;
  int x_events = 0;
  for (const nlohmann::json& e : j["traceEvents"]) {
    if (e.value("ph", "") != "X") continue;
    ++x_events;
    ASSERT_TRUE(e["ts"].is_number() && e["dur"].is_number() && e["pid"].is_number() && e["tid"].is_number())
        << e.dump();
    EXPECT_GE(e["dur"].get<double>(), 0.0);
    const std::string name = e["name"];
    if (name == "conv2d") fwd = &e;
    if (name == "conv2d.backward") node = &e;
    if (name == "conv2d_backward") kernel = &e;
  }
  ASSERT_TRUE(fwd && node && kernel) << j.dump(1);
  EXPECT_EQ((*fwd)["args"]["shapes"], "[2,3,8,8]");
  EXPECT_EQ((*node)["args"]["shapes"], "[2,3,8,8] [4,3,3,3] [4]");  // the node's inputs
  // The kernel lies inside its backward node on the timeline.
  const double nts = (*node)["ts"], ndur = (*node)["dur"], kts = (*kernel)["ts"], kdur = (*kernel)["dur"];
  EXPECT_GE(kts, nts);
  EXPECT_LE(kts + kdur, nts + ndur + 1e-3);
  EXPECT_EQ(x_events, prof::summary().trace_events);
  // Atomic write: no temporary file left next to it.
  int files = 0;
  for (const auto& f : fs::directory_iterator(dir)) files += f.is_regular_file();
  EXPECT_EQ(files, 1);
  fs::remove_all(dir);
}

TEST(Profiler, BadTracePathsAreReportedNotWritten) {
  Fresh fresh;
  const fs::path dir = temp_dir("badtrace");
  EXPECT_NE(prof::check_trace_path((dir / "missing" / "t.json").string()).find("does not exist"),
            std::string::npos);
  EXPECT_NE(prof::check_trace_path(dir.string()).find("is a directory"), std::string::npos);
  EXPECT_NE(prof::check_trace_path("").find("empty"), std::string::npos);
  EXPECT_EQ(prof::check_trace_path((dir / "ok.json").string()), "");
  // No trace recorded: a clear error.
  EXPECT_THROW(prof::write_trace((dir / "t.json").string()), Error);
  prof::start({.trace = true});
  { prof::Scope s("x"); }
  prof::stop();
  try {
    prof::write_trace((dir / "missing" / "t.json").string());
    ADD_FAILURE() << "no error for a missing directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot write trace"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir / "missing"));
  fs::remove_all(dir);
}

// ---- the apps' switches (binaries of this build; the seed-free tiny config keeps them quick)

namespace {
const char* kTinyBenchJson = R"({"sample_size": 28, "in_channels": 2, "out_channels": 1,
  "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
  "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
  "attention_head_dim": 8, "num_classes": 10, "class_emb_size": 1})";

bool have_bench() { return fs::exists(test::bin("fm_bench")); }
#define REQUIRE_BENCH() \
  if (!have_bench()) GTEST_SKIP() << "fm_bench not built in " << ENGINE_BIN_DIR

std::string tiny_bench(const fs::path& dir) {
  std::ofstream(dir / "tiny.json") << kTinyBenchJson;
  return test::bin("fm_bench") + " --device cpu --threads 2 --quick --model-config " +
         (dir / "tiny.json").string();
}
}  // namespace

TEST(Profiler, FmBenchProfilePrintsTablesAndWritesTrace) {
  REQUIRE_BENCH();
  const fs::path dir = temp_dir("bench");
  const fs::path trace = dir / "trace.json";
  const test::RunResult r =
      test::run(tiny_bench(dir) + " --profile --profile-steps 2 --profile-trace " + trace.string());
  ASSERT_TRUE(r.exited && r.code == 0) << r.out;
  const size_t train = r.out.find("profile: training step, batch 8 (2 runs");
  const size_t sample = r.out.find("profile: sampling 10 images x 15 steps");
  ASSERT_NE(train, std::string::npos) << r.out;
  ASSERT_NE(sample, std::string::npos) << r.out;
  const std::string train_table = r.out.substr(train, sample - train);
  EXPECT_NE(train_table.find("\nconv2d "), std::string::npos) << train_table;
  EXPECT_NE(train_table.find("\nconv2d.backward "), std::string::npos) << train_table;
  EXPECT_NE(train_table.find("\nadamw_step "), std::string::npos) << train_table;
  const std::string sample_table = r.out.substr(sample);
  EXPECT_NE(sample_table.find("\nconv2d "), std::string::npos) << sample_table;
  EXPECT_EQ(sample_table.find(".backward"), std::string::npos) << "sampling has no backward\n"
                                                               << sample_table;
  const nlohmann::json j = read_json(trace);
  int convs = 0;
  for (const nlohmann::json& e : j["traceEvents"]) convs += e.value("name", "") == "conv2d" && e["ph"] == "X";
  EXPECT_GT(convs, 0);
  fs::remove_all(dir);
}

TEST(Profiler, FmBenchRejectsABadTracePathBeforeWork) {
  REQUIRE_BENCH();
  const fs::path dir = temp_dir("benchbad");
  const test::RunResult r =
      test::run(tiny_bench(dir) + " --profile-trace " + (dir / "nodir" / "t.json").string());
  EXPECT_TRUE(r.exited && r.code == 2) << r.out;
  EXPECT_NE(r.out.find("--profile-trace"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("train:"), std::string::npos) << "no step may run first\n" << r.out;
  fs::remove_all(dir);
}

TEST(Profiler, EnvironmentSwitchProfilesAnyAppAndChecksItsValues) {
  REQUIRE_BENCH();
  const fs::path dir = temp_dir("env");
  const std::string bench = tiny_bench(dir) + " --iters 1 --sample-iters 1";
  const fs::path trace = dir / "env.json";
  test::RunResult r = test::run("ENGINE_PROFILE_TRACE=" + trace.string() + " " + bench);
  ASSERT_TRUE(r.exited && r.code == 0) << r.out;
  EXPECT_NE(r.out.find("profile: whole run (ENGINE_PROFILE)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nconv2d.backward "), std::string::npos) << r.out;
  EXPECT_GT(read_json(trace)["traceEvents"].size(), 3u);

  r = test::run("ENGINE_PROFILE=yes " + bench);
  EXPECT_TRUE(r.exited && r.code == 2) << r.out;
  EXPECT_NE(r.out.find("ENGINE_PROFILE='yes': must be 0 or 1"), std::string::npos) << r.out;
  r = test::run("ENGINE_PROFILE_TRACE=" + (dir / "nodir" / "t.json").string() + " " + bench);
  EXPECT_TRUE(r.exited && r.code == 2) << r.out;
  EXPECT_NE(r.out.find("ENGINE_PROFILE_TRACE="), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("does not exist"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("fm_bench: device"), std::string::npos) << "checked before any work\n" << r.out;
  r = test::run("ENGINE_PROFILE=0 " + bench);
  EXPECT_TRUE(r.exited && r.code == 0) << r.out;
  EXPECT_EQ(r.out.find("profile:"), std::string::npos) << r.out;
  fs::remove_all(dir);
}
