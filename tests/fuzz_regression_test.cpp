// Runs every file of the fuzz regression corpus (tests/fuzz/corpus/<harness>/) through the same entry
// function its libFuzzer harness calls (tests/fuzz/fuzz_entries.cpp), so the inputs of issue 15 item 4
// and every fuzzer finding stay tested in the normal (GCC) test run. File name prefixes state the
// expected outcome: reject_* must be rejected with the parser's error type, accept_* accepted; any other
// exception fails the test. scripts/make_fuzz_corpus.py writes the corpus.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_entries.h"

namespace fs = std::filesystem;

namespace {

std::vector<uint8_t> read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

class FuzzCorpus : public ::testing::TestWithParam<std::string> {};

TEST_P(FuzzCorpus, EveryFileHasItsExpectedOutcome) {
  const std::string harness = GetParam();
  const engine::fuzz::Entry entry = engine::fuzz::entry_by_name(harness);
  ASSERT_NE(entry, nullptr) << harness;
  const fs::path dir = fs::path(ENGINE_SOURCE_DIR) / "tests" / "fuzz" / "corpus" / harness;
  ASSERT_TRUE(fs::is_directory(dir)) << dir;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  ASSERT_GE(files.size(), 3u) << "corpus " << dir << " is (nearly) empty";
  int accepted = 0, rejected = 0;
  for (const fs::path& p : files) {
    const std::string name = p.filename().string();
    const std::vector<uint8_t> bytes = read_all(p);
    int rc = -1;
    try {
      rc = entry(bytes.data(), bytes.size());
    } catch (const std::exception& e) {
      ADD_FAILURE() << harness << "/" << name << ": unexpected exception: " << e.what();
      continue;
    }
    (rc == 0 ? accepted : rejected)++;
    if (name.rfind("reject_", 0) == 0) {
      EXPECT_EQ(rc, 1) << harness << "/" << name << " was accepted";
    } else if (name.rfind("accept_", 0) == 0) {
      EXPECT_EQ(rc, 0) << harness << "/" << name << " was rejected";
    }
  }
  EXPECT_GT(accepted, 0) << "no valid seed in " << dir;
  EXPECT_GT(rejected, 0);
}

INSTANTIATE_TEST_SUITE_P(Harnesses, FuzzCorpus,
                         ::testing::Values("safetensors", "checkpoint", "model_config", "idx"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
