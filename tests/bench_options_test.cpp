// BenchOptions.*: the one command-line parser of cpu_kernels_bench and cuda_kernels_bench
// (bench/bench_table.h): values, flags a benchmark does not take, and bad input (exit code 2, no throw).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "bench/bench_table.h"

namespace {

int parse(std::vector<std::string> args, unsigned flags, bench::Options& o) {
  args.insert(args.begin(), "bench");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return bench::parse_options(static_cast<int>(argv.size()), argv.data(), flags, "usage: %s\n", o);
}

TEST(BenchOptions, ParsesValuesAndFlags) {
  bench::Options o;
  EXPECT_EQ(
      parse({"--runs", "7", "--batch", "32", "--threads", "2", "--filter", "conv", "--benchmark_color=no"},
            bench::kOptBatch | bench::kOptThreads, o),
      -1);
  EXPECT_EQ(o.runs, 7);
  EXPECT_EQ(o.batch, 32);
  EXPECT_EQ(o.threads, 2);
  EXPECT_EQ(o.filter, "conv");
  EXPECT_FALSE(o.quick);
  bench::Options c;
  EXPECT_EQ(parse({"--check", "--warmup", "0", "--cudnn-tf32", "--benchmark_min_time=0.01"},
                  bench::kOptWarmup | bench::kOptCheck | bench::kOptCudnnTf32, c),
            -1);
  EXPECT_TRUE(c.check);
  EXPECT_TRUE(c.cudnn_tf32);
  EXPECT_TRUE(c.quick);  // --benchmark_min_time implies --quick (gpu_check.sh)
  EXPECT_EQ(c.warmup, 0);
}

TEST(BenchOptions, BadInputExitsWithTwo) {
  bench::Options o;
  EXPECT_EQ(parse({"--runs"}, 0, o), 2);                  // missing value
  EXPECT_EQ(parse({"--runs", "abc"}, 0, o), 2);           // not a number
  EXPECT_EQ(parse({"--runs", "0"}, 0, o), 2);             // below the minimum
  EXPECT_EQ(parse({"--runs", "5x"}, 0, o), 2);            // trailing garbage
  EXPECT_EQ(parse({"--frobnicate"}, 0, o), 2);            // unknown
  EXPECT_EQ(parse({"--check"}, bench::kOptBatch, o), 2);  // a flag this benchmark does not take
  EXPECT_EQ(parse({"--batch", "4"}, bench::kOptCheck, o), 2);
  EXPECT_EQ(parse({"--filter"}, 0, o), 2);
  EXPECT_EQ(parse({"--help"}, 0, o), 0);
}

}  // namespace
