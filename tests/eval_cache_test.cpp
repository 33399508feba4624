// Tests of fm_eval's reference cache (apps/common/eval_cache.h): the key changes with the classifier
// weights, the MNIST files, n and the seed; entries round-trip bit for bit; damaged or foreign entries are
// misses; an unwritable directory is reported, not fatal. The fm_eval side (hit == miss bitwise, the
// timing line) is in EvalApp.ScoresASamplesFileOfRealImages (eval_test.cpp).
#include "apps/common/eval_cache.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "apps/common/mnist.h"
#include "apps/common/sample_eval.h"
#include "models/mnist_classifier.h"

using namespace engine;
using namespace engine::app;
namespace fs = std::filesystem;

namespace {

const std::string kWeights = std::string(ENGINE_SOURCE_DIR) + "/models/weights/mnist_classifier.safetensors";
const char* kMnistFiles[] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};

bool have_mnist() { return fs::exists(fs::path(ENGINE_MNIST_DIR) / kMnistFiles[0]); }

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("eval_cache_test_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

// A small made-up reference (no MNIST needed) with awkward values: negative zero, subnormals, NaN-free.
EvalReference fake_reference(int64_t n, int64_t d) {
  EvalReference r;
  r.n = n;
  r.test_accuracy = 0.9931;
  r.fd_floor = 0.1 + 1e-17;
  r.test.mu.resize(static_cast<size_t>(d));
  r.test.cov = Matrix(d, d);
  r.test_subset = Matrix(n, d);
  for (int64_t i = 0; i < d; ++i) r.test.mu[i] = i == 0 ? -0.0 : 1.0 / (i + 3);
  for (size_t i = 0; i < r.test.cov.v.size(); ++i) r.test.cov.v[i] = i == 1 ? 4e-320 : std::sin(double(i));
  for (size_t i = 0; i < r.test_subset.v.size(); ++i) r.test_subset.v[i] = std::cos(0.7 * double(i));
  return r;
}

}  // namespace

TEST(EvalCache, EntriesRoundTripBitwiseAndDamagedEntriesMiss) {
  const fs::path dir = temp_dir("roundtrip");
  const EvalReference ref = fake_reference(12, 5);
  ASSERT_TRUE(save_cached_reference((dir / "sub").string(), "00112233aabbccdd", ref));  // creates dirs
  const auto got = load_cached_reference((dir / "sub").string(), "00112233aabbccdd", 12);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->n, 12);
  EXPECT_EQ(std::memcmp(&got->test_accuracy, &ref.test_accuracy, sizeof(double)), 0);
  EXPECT_EQ(std::memcmp(&got->fd_floor, &ref.fd_floor, sizeof(double)), 0);
  EXPECT_TRUE(same_bits(got->test.mu, ref.test.mu));
  EXPECT_TRUE(std::signbit(got->test.mu[0]));
  EXPECT_TRUE(same_bits(got->test.cov.v, ref.test.cov.v));
  EXPECT_EQ(got->test_subset.rows, 12);
  EXPECT_EQ(got->test_subset.cols, 5);
  EXPECT_TRUE(same_bits(got->test_subset.v, ref.test_subset.v));
  // Another key or n: a miss.
  EXPECT_FALSE(load_cached_reference((dir / "sub").string(), "00112233aabbccde", 12).has_value());
  EXPECT_FALSE(load_cached_reference((dir / "sub").string(), "00112233aabbccdd", 13).has_value());
  // A file under another key's name (renamed), a truncated file, trailing bytes, garbage: misses.
  const std::string path = reference_cache_path((dir / "sub").string(), "00112233aabbccdd");
  const std::string other = reference_cache_path((dir / "sub").string(), "ffffffffffffffff");
  fs::copy_file(path, other);
  EXPECT_FALSE(load_cached_reference((dir / "sub").string(), "ffffffffffffffff", 12).has_value());
  const auto size = fs::file_size(path);
  fs::resize_file(path, size - 8);
  EXPECT_FALSE(load_cached_reference((dir / "sub").string(), "00112233aabbccdd", 12).has_value());
  fs::resize_file(path, 3);
  EXPECT_FALSE(load_cached_reference((dir / "sub").string(), "00112233aabbccdd", 12).has_value());
  ASSERT_TRUE(save_cached_reference((dir / "sub").string(), "00112233aabbccdd", ref));  // overwritten
  {
    std::ofstream f(path, std::ios::binary | std::ios::app);
    f << "x";
  }
  EXPECT_FALSE(load_cached_reference((dir / "sub").string(), "00112233aabbccdd", 12).has_value());
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << "garbage that is long enough to hold a header and more bytes";
  }
  EXPECT_FALSE(load_cached_reference((dir / "sub").string(), "00112233aabbccdd", 12).has_value());
  // A directory that cannot exist (below a regular file): false, no exception, nothing left behind.
  EXPECT_FALSE(save_cached_reference((dir / "sub" / "reference-ffffffffffffffff.bin" / "x").string(),
                                     "00112233aabbccdd", ref));
  fs::remove_all(dir);
}

TEST(EvalCache, KeyChangesWithWeightsMnistSampleCountAndSeed) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not found in " << ENGINE_MNIST_DIR << " (set -DMNIST_DIR=...)";
  models::MnistClassifier clf;
  models::load_classifier(clf, kWeights);
  clf.eval();
  const std::string mnist = ENGINE_MNIST_DIR;
  const std::string k0 = reference_key(clf, kWeights, mnist, 1000, 0);
  EXPECT_EQ(k0.size(), 16u);
  EXPECT_EQ(reference_key(clf, kWeights, mnist, 1000, 0), k0);  // deterministic
  EXPECT_NE(reference_key(clf, kWeights, mnist, 999, 0), k0);
  EXPECT_NE(reference_key(clf, kWeights, mnist, 1000, 1), k0);

  const fs::path dir = temp_dir("key");
  // Other weights: the last float of the file nudged (still a valid file, loaded into a second model).
  const std::string w2 = (dir / "w2.safetensors").string();
  fs::copy_file(kWeights, w2);
  {
    std::fstream f(w2, std::ios::binary | std::ios::in | std::ios::out);
    f.seekg(-1, std::ios::end);
    char c = 0;
    f.get(c);
    f.seekp(-1, std::ios::end);
    f.put(static_cast<char>(c ^ 0x01));
  }
  models::MnistClassifier clf2;
  models::load_classifier(clf2, w2);
  clf2.eval();
  EXPECT_NE(reference_key(clf2, w2, mnist, 1000, 0), k0);
  // The same bytes under another path: the same key (the path is not part of it).
  const std::string w3 = (dir / "w3.safetensors").string();
  fs::copy_file(kWeights, w3);
  EXPECT_EQ(reference_key(clf, w3, mnist, 1000, 0), k0);

  // Another MNIST directory with one changed byte in the test labels' file: another key.
  const fs::path m2 = dir / "mnist";
  fs::create_directories(m2);
  for (const char* f : kMnistFiles) fs::copy_file(fs::path(mnist) / f, m2 / f);
  EXPECT_EQ(reference_key(clf, kWeights, m2.string(), 1000, 0), k0);  // identical copy: same key
  {
    std::fstream f(m2 / kMnistFiles[3], std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(20);
    f.put('\x7f');
  }
  EXPECT_NE(reference_key(clf, kWeights, m2.string(), 1000, 0), k0);
  fs::remove_all(dir);
}
