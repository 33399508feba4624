// Tests for apps/common/run_flags: the --device/--threads and sampling flags shared by fm_sample, fm_eval
// and fm_classifier (parsing, defaults, range checks, and the UsageErrors of apply_*).
#include "apps/common/run_flags.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "apps/common/cli_checks.h"
#include "runtime/cuda_device.h"

namespace {

using namespace engine;
using namespace engine::app;

// Parses `args` (without the program name) into fresh flags; returns CLI11's exit code (0 = parsed).
int parse(std::vector<std::string> args, SamplingFlags& sf, ComputeFlags& cf) {
  CLI::App app{"test"};
  add_sampling_flags(app, sf, "seed help");
  add_compute_flags(app, cf);
  args.insert(args.begin(), "prog");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    return e.get_exit_code();
  }
  return 0;
}

TEST(RunFlags, DefaultsAndValues) {
  SamplingFlags sf;
  ComputeFlags cf;
  ASSERT_EQ(parse({}, sf, cf), 0);
  EXPECT_EQ(sf.steps, 15);
  EXPECT_EQ(sf.solver, "euler");
  EXPECT_EQ(sf.cfg_scale, 3.0);
  EXPECT_EQ(cf.device, "auto");
  ASSERT_EQ(parse({"--steps", "4", "--solver", "heun", "--cfg-scale", "1.5", "--seed", "7", "--batch", "3",
                   "--device", "cpu", "--threads", "2"},
                  sf, cf),
            0);
  SampleOptions opt;
  apply_sampling_flags(sf, opt);
  EXPECT_EQ(opt.steps, 4);
  EXPECT_EQ(opt.solver, Solver::Heun);
  EXPECT_EQ(opt.cfg_scale, 1.5);
  EXPECT_EQ(opt.max_batch, 3);
  EXPECT_EQ(sf.seed, 7u);
  EXPECT_TRUE(apply_compute_flags(cf).is_cpu());
}

TEST(RunFlags, RangeChecksRejectAtParse) {
  for (const std::vector<std::string>& bad : {std::vector<std::string>{"--steps", "0"},
                                              {"--cfg-scale", "nan"},
                                              {"--batch", "-1"},
                                              {"--threads", "5000"},
                                              {"--seed", "-1"}}) {
    SamplingFlags sf;
    ComputeFlags cf;
    EXPECT_NE(parse(bad, sf, cf), 0) << bad[0] << " " << bad[1];
  }
}

TEST(RunFlags, ApplyThrowsUsageErrors) {
  SamplingFlags sf;
  sf.solver = "rk4";
  SampleOptions opt;
  EXPECT_THROW(apply_sampling_flags(sf, opt), UsageError);
  ComputeFlags cf;
  cf.device = "tpu";
  EXPECT_THROW(apply_compute_flags(cf), UsageError);
  cf.device = "cuda:" + std::to_string(cuda::device_count());  // one past the last GPU
  try {
    apply_compute_flags(cf);
    FAIL() << "expected a UsageError";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("no such CUDA device"), std::string::npos) << e.what();
  }
}

TEST(RunFlags, ParseCommandLineExitStatus) {
  auto status = [](std::vector<std::string> args) {
    CLI::App app{"test"};
    SamplingFlags sf;
    add_sampling_flags(app, sf, "seed help");
    args.insert(args.begin(), "prog");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    return parse_command_line(app, static_cast<int>(argv.size()), argv.data());
  };
  EXPECT_EQ(status({"--steps", "3"}), -1);
  EXPECT_EQ(status({"--help"}), 0);
  EXPECT_EQ(status({"--steps", "0"}), 2);
  EXPECT_EQ(status({"--no-such-flag"}), 2);
}

}  // namespace

TEST(RunFlags, EmaFlagsHaveTheirOwnHelpLinesAndExcludeEachOther) {
  CLI::App app{"test"};
  EmaFlags f;
  add_ema_flags(app, f);
  const std::string help = app.help();
  EXPECT_EQ(help.find("{false}"), std::string::npos) << help;
  EXPECT_NE(help.find("use the raw (non-EMA) weights"), std::string::npos) << help;
  EXPECT_TRUE(use_ema_weights(f, true));
  EXPECT_FALSE(use_ema_weights(f, false));
  f.no_ema = true;
  EXPECT_FALSE(use_ema_weights(f, true));
  EXPECT_NO_THROW(check_ema_flags(f));
  f.ema = true;
  EXPECT_THROW(check_ema_flags(f), UsageError);
  f.no_ema = false;
  EXPECT_TRUE(use_ema_weights(f, false));
}
