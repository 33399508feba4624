// Tests for apps/common: MNIST IDX reader + BatchLoader, PNG writers, TensorBoard events, progress, CSV.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <tuple>

#include "apps/common/csv.h"
#include "apps/common/flow_matching.h"
#include "apps/common/image_grid.h"
#include "apps/common/malloc_tuning.h"
#include "apps/common/mnist.h"
#include "apps/common/plot.h"
#include "apps/common/progress.h"
#include "apps/common/splitmix.h"
#include "apps/common/tfevents.h"

#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#if __has_include(<stb/stb_image.h>)
#include <stb/stb_image.h>
#else
#include <stb_image.h>
#endif
#pragma GCC diagnostic pop

#ifndef ENGINE_MNIST_DIR
#error "ENGINE_MNIST_DIR is defined by tests/CMakeLists.txt (-DMNIST_DIR=...)"
#endif

namespace {

using namespace engine::app;
namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "appcommon_test_XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void put_be32(std::vector<uint8_t>& v, uint32_t x) {
  for (int i = 3; i >= 0; --i) v.push_back(static_cast<uint8_t>(x >> (8 * i)));
}

// IDX bytes: images (magic 0x803, n, rows, cols) with image i filled with value (i * 7) % 256.
std::vector<uint8_t> idx_images(uint32_t n, uint32_t rows, uint32_t cols, uint32_t magic = 0x803) {
  std::vector<uint8_t> v;
  put_be32(v, magic);
  put_be32(v, n);
  put_be32(v, rows);
  put_be32(v, cols);
  for (uint32_t i = 0; i < n; ++i)
    for (uint32_t k = 0; k < rows * cols; ++k) v.push_back(static_cast<uint8_t>((i * 7 + k) % 256));
  return v;
}

std::vector<uint8_t> idx_labels(uint32_t n, uint32_t magic = 0x801) {
  std::vector<uint8_t> v;
  put_be32(v, magic);
  put_be32(v, n);
  for (uint32_t i = 0; i < n; ++i) v.push_back(static_cast<uint8_t>(i % 10));
  return v;
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes, bool gz) {
  if (gz) {
    gzFile f = gzopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    if (!bytes.empty()) {
      ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), int(bytes.size()));
    }
    gzclose(f);
  } else {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
}

void write_set(const TempDir& d, const std::string& prefix, const std::vector<uint8_t>& images,
               const std::vector<uint8_t>& labels, bool gz) {
  const std::string sfx = gz ? ".gz" : "";
  write_file(d.file(prefix + "-images-idx3-ubyte" + sfx), images, gz);
  write_file(d.file(prefix + "-labels-idx1-ubyte" + sfx), labels, gz);
}

// Expects load_mnist to throw DataError mentioning `file` and `hint`.
void expect_data_error(const TempDir& d, bool train, const std::string& file, const std::string& hint) {
  try {
    load_mnist(d.path().string(), train);
    ADD_FAILURE() << "expected DataError (" << hint << ")";
  } catch (const DataError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(file), std::string::npos) << msg;
    EXPECT_NE(msg.find(hint), std::string::npos) << msg;
  }
}

MnistSet synthetic_set(int64_t n, int64_t rows, int64_t cols) {
  MnistSet s;
  s.n = n;
  s.rows = rows;
  s.cols = cols;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < rows * cols; ++k)
      s.images.push_back(static_cast<uint8_t>(k == 0 ? i : (i + k) % 256));
    s.labels.push_back(static_cast<uint8_t>(i % 10));
  }
  return s;
}

// Image index encoded in pixel 0 of each image of a synthetic_set batch.
std::vector<int64_t> batch_ids(const Batch& b, int64_t pix) {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < b.size(); ++i) ids.push_back(std::lround((b.x[i * pix] + 1.0f) * 127.5f));
  return ids;
}

uint32_t be32_at(const std::vector<uint8_t>& v, size_t off) {
  return (uint32_t{v[off]} << 24) | (uint32_t{v[off + 1]} << 16) | (uint32_t{v[off + 2]} << 8) | v[off + 3];
}

void check_png_header(const std::vector<uint8_t>& png, uint32_t w, uint32_t h, uint8_t color_type) {
  ASSERT_GE(png.size(), 33u);
  const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  EXPECT_EQ(std::memcmp(png.data(), sig, 8), 0);
  EXPECT_EQ(std::memcmp(png.data() + 12, "IHDR", 4), 0);
  EXPECT_EQ(be32_at(png, 16), w);
  EXPECT_EQ(be32_at(png, 20), h);
  EXPECT_EQ(png[24], 8);  // bit depth
  EXPECT_EQ(png[25], color_type);
}

}  // namespace

// ---------------------------------------------------------------- MNIST

TEST(AppCommon, MnistRealFiles) {
  const std::string dir = ENGINE_MNIST_DIR;
  if (!fs::exists(fs::path(dir) / "train-images-idx3-ubyte.gz") &&
      !fs::exists(fs::path(dir) / "train-images-idx3-ubyte"))
    GTEST_SKIP() << "MNIST not found in " << dir
                 << " (set -DMNIST_DIR=...; scripts/download_mnist.sh fetches it)";
  for (bool train : {true, false}) {
    MnistSet s = load_mnist(dir, train);
    const int64_t n = train ? 60000 : 10000;
    EXPECT_EQ(s.n, n);
    EXPECT_EQ(s.rows, 28);
    EXPECT_EQ(s.cols, 28);
    ASSERT_EQ(s.images.size(), static_cast<size_t>(n * 28 * 28));
    ASSERT_EQ(s.labels.size(), static_cast<size_t>(n));
    int64_t hist[10] = {0};
    for (uint8_t l : s.labels) hist[l]++;
    for (int c = 0; c < 10; ++c) {  // MNIST and Fashion-MNIST classes are all 8.9%..11.3% of the data
      EXPECT_GT(hist[c], n * 8 / 100) << "class " << c;
      EXPECT_LT(hist[c], n * 12 / 100) << "class " << c;
    }
    double mean = 0;
    for (uint8_t p : s.images) mean += p;
    mean /= double(s.images.size());
    EXPECT_GT(mean, 20.0);  // MNIST ~33, Fashion-MNIST ~73
    EXPECT_LT(mean, 100.0);
  }
}

TEST(AppCommon, MnistSyntheticRawAndGzip) {
  for (bool gz : {false, true}) {
    TempDir d;
    write_set(d, "t10k", idx_images(12, 3, 5), idx_labels(12), gz);
    MnistSet s = load_mnist(d.path().string(), false);
    EXPECT_EQ(s.n, 12);
    EXPECT_EQ(s.rows, 3);
    EXPECT_EQ(s.cols, 5);
    ASSERT_EQ(s.images.size(), 12u * 15u);
    EXPECT_EQ(s.images[15 * 2 + 1], (2 * 7 + 1) % 256);
    EXPECT_EQ(s.labels[11], 1);
    expect_data_error(d, true, "train-images-idx3-ubyte", "not found");
  }
}

TEST(AppCommon, MnistTruncated) {
  auto images = idx_images(12, 3, 5);
  auto labels = idx_labels(12);
  for (bool gz : {false, true}) {
    TempDir d;
    write_set(d, "train", std::vector<uint8_t>(images.begin(), images.end() - 7), labels, gz);
    expect_data_error(d, true, "train-images-idx3-ubyte", "truncated");
    write_set(d, "train", std::vector<uint8_t>(images.begin(), images.begin() + 10), labels, gz);
    expect_data_error(d, true, "train-images-idx3-ubyte", "truncated");
    write_set(d, "train", images, std::vector<uint8_t>(labels.begin(), labels.end() - 1), gz);
    expect_data_error(d, true, "train-labels-idx1-ubyte", "truncated");
  }
  // A truncated gzip stream (not just truncated content).
  TempDir d;
  write_set(d, "train", images, labels, true);
  auto gzbytes = read_bytes(d.file("train-images-idx3-ubyte.gz"));
  gzbytes.resize(gzbytes.size() / 2);
  write_file(d.file("train-images-idx3-ubyte.gz"), gzbytes, false);
  expect_data_error(d, true, "train-images-idx3-ubyte", "");
}

TEST(AppCommon, MnistWrongMagic) {
  TempDir d;
  write_set(d, "train", idx_images(4, 2, 2, 0x801), idx_labels(4), false);
  expect_data_error(d, true, "train-images-idx3-ubyte", "magic");
  write_set(d, "train", idx_images(4, 2, 2), idx_labels(4, 0x803), false);
  expect_data_error(d, true, "train-labels-idx1-ubyte", "magic");
}

TEST(AppCommon, MnistCountMismatchGarbageAndBadLabels) {
  TempDir d;
  write_set(d, "train", idx_images(5, 2, 2), idx_labels(6), true);
  expect_data_error(d, true, "train-images-idx3-ubyte", "count");

  auto images = idx_images(5, 2, 2);
  images.push_back(0);
  write_set(d, "train", images, idx_labels(5), true);
  expect_data_error(d, true, "train-images-idx3-ubyte", "trailing garbage");

  auto labels = idx_labels(5);
  labels.back() = 10;
  write_set(d, "train", idx_images(5, 2, 2), labels, true);
  expect_data_error(d, true, "train-labels-idx1-ubyte", "label 10");

  // Absurd dimensions from a corrupt header must be rejected without allocating.
  auto huge = idx_images(0, 2, 2);
  huge[4] = huge[5] = huge[6] = huge[7] = 0xff;  // n = 4294967295
  write_set(d, "train", huge, idx_labels(5), true);
  expect_data_error(d, true, "train-images-idx3-ubyte", "");
  auto wide = idx_images(1, 2, 2);
  wide[8] = 0x7f;  // rows = 0x7f000002
  write_set(d, "train", wide, idx_labels(1), true);
  expect_data_error(d, true, "train-images-idx3-ubyte", "dimension");
}

TEST(AppCommon, ResolveDataDirSkipsIncompleteDefaultFolders) {
  // An empty data/mnist (a failed download) must not hide a complete ../shared/data/mnist.
  TempDir d;
  const fs::path repo = fs::path(d.path()) / "repo", shared = fs::path(d.path()) / "shared/data/mnist";
  fs::create_directories(repo / "data/mnist");
  fs::create_directories(shared);
  for (const char* f : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte",
                        "t10k-labels-idx1-ubyte.gz"})
    std::ofstream(shared / f) << "x";
  const fs::path old_cwd = fs::current_path();
  const char* old_env = std::getenv("MNIST_DIR");
  const std::string saved = old_env ? old_env : "";
  ::unsetenv("MNIST_DIR");
  fs::current_path(repo);
  std::vector<std::string> notes;
  std::string got, err;
  try {
    got = resolve_data_dir("", &notes);
  } catch (const std::exception& e) {
    err = e.what();
  }
  // Nothing usable at all: the error lists every folder tried and why.
  fs::remove_all(shared);
  try {
    resolve_data_dir("");
  } catch (const DataError& e) {
    err += std::string("|") + e.what();
  }
  fs::current_path(old_cwd);
  if (old_env) ::setenv("MNIST_DIR", saved.c_str(), 1);
  EXPECT_EQ(got, "../shared/data/mnist") << err;
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("data/mnist"), std::string::npos) << notes[0];
  EXPECT_NE(notes[0].find("missing 4 of the 4 files"), std::string::npos) << notes[0];
  EXPECT_NE(err.find("tried data/mnist (missing 4 of the 4 files"), std::string::npos) << err;
  EXPECT_NE(err.find("../shared/data/mnist (not found)"), std::string::npos) << err;
  EXPECT_EQ(missing_mnist_files(repo.string()).size(), 4u);
}

TEST(AppCommon, ResolveDataDir) {
  TempDir d;
  EXPECT_EQ(resolve_data_dir(d.path().string()), d.path().string());
  try {
    resolve_data_dir(d.file("nope"));
    ADD_FAILURE();
  } catch (const DataError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("nope"), std::string::npos);
    EXPECT_NE(msg.find("MNIST_DIR"), std::string::npos);
    EXPECT_NE(msg.find("--data"), std::string::npos);
  }
  {  // a file where the directory should be: say so, not "not found"
    std::ofstream(d.file("afile")) << "x";
    try {
      resolve_data_dir(d.file("afile"));
      ADD_FAILURE();
    } catch (const DataError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("not a directory"), std::string::npos) << msg;
      EXPECT_EQ(msg.find("not found"), std::string::npos) << msg;
    }
  }
  const char* old = std::getenv("MNIST_DIR");
  std::string saved = old ? old : "";
  ::setenv("MNIST_DIR", d.path().string().c_str(), 1);
  EXPECT_EQ(resolve_data_dir(""), d.path().string());
  if (old)
    ::setenv("MNIST_DIR", saved.c_str(), 1);
  else
    ::unsetenv("MNIST_DIR");
}

// ---------------------------------------------------------------- BatchLoader

TEST(AppCommon, BatchLoaderEpochsArePermutationsWithPartialLastBatch) {
  MnistSet s = synthetic_set(103, 4, 5);
  BatchLoader loader(s, 10, 42);
  ASSERT_EQ(loader.batches_per_epoch(), 11);
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    std::set<int64_t> seen;
    for (int64_t b = 0; b < 11; ++b) {
      Batch batch = loader.next();
      EXPECT_EQ(batch.epoch, epoch);
      EXPECT_EQ(batch.index_in_epoch, b);
      ASSERT_EQ(batch.size(), b < 10 ? 10 : 3);
      ASSERT_EQ(batch.x.size(), static_cast<size_t>(batch.size() * 20));
      for (float v : batch.x) {
        ASSERT_GE(v, -1.0f);
        ASSERT_LE(v, 1.0f);
      }
      auto ids = batch_ids(batch, 20);
      for (int64_t i = 0; i < batch.size(); ++i) {
        const int64_t id = ids[i];
        seen.insert(id);
        EXPECT_EQ(batch.labels[i], id % 10);
        // Normalisation x/255*2-1 of every pixel.
        for (int64_t k = 1; k < 20; ++k)
          EXPECT_NEAR(batch.x[i * 20 + k], ((id + k) % 256) / 255.0f * 2.0f - 1.0f, 1e-6f);
      }
    }
    EXPECT_EQ(seen.size(), 103u);
  }
}

TEST(AppCommon, BatchLoaderDeterministicAndResumable) {
  MnistSet s = synthetic_set(57, 2, 3);
  std::vector<std::vector<int64_t>> a_ids;
  std::vector<std::pair<int64_t, int64_t>> a_pos;
  {
    BatchLoader a(s, 8, 7);
    for (int i = 0; i < 30; ++i) {
      Batch b = a.next();
      a_ids.push_back(batch_ids(b, 6));
      a_pos.emplace_back(b.epoch, b.index_in_epoch);
    }
  }
  {
    BatchLoader same(s, 8, 7);
    for (int i = 0; i < 30; ++i) EXPECT_EQ(batch_ids(same.next(), 6), a_ids[i]) << i;
  }
  {
    BatchLoader other(s, 8, 8);
    int differing = 0;
    for (int i = 0; i < 8; ++i) differing += batch_ids(other.next(), 6) != a_ids[i];
    EXPECT_GT(differing, 0);
  }
  // Epoch orders differ between epochs.
  EXPECT_NE(BatchLoader::epoch_order(57, 7, 0), BatchLoader::epoch_order(57, 7, 1));
  // Resume at (epoch 1, batch 3): 8 batches per epoch, so this continues at uninterrupted batch 11.
  {
    BatchLoader r(s, 8, 7, 1, 3);
    for (int i = 11; i < 30; ++i) {
      Batch b = r.next();
      EXPECT_EQ(std::make_pair(b.epoch, b.index_in_epoch), a_pos[i]);
      EXPECT_EQ(batch_ids(b, 6), a_ids[i]) << i;
    }
  }
  // A start_batch past the end of an epoch rolls over.
  {
    BatchLoader r(s, 8, 7, 0, 11);
    Batch b = r.next();
    EXPECT_EQ(b.epoch, 1);
    EXPECT_EQ(b.index_in_epoch, 3);
    EXPECT_EQ(batch_ids(b, 6), a_ids[11]);
  }
}

TEST(AppCommon, BatchLoaderLimitAndShutdown) {
  MnistSet s = synthetic_set(50, 2, 2);
  BatchLoader l(s, 10, 1, 0, 0, 25);
  EXPECT_EQ(l.num_images(), 25);
  EXPECT_EQ(l.batches_per_epoch(), 3);
  std::set<int64_t> seen;
  for (int i = 0; i < 3; ++i)
    for (int64_t id : batch_ids(l.next(), 4)) seen.insert(id);
  EXPECT_EQ(seen.size(), 25u);
  EXPECT_LT(*seen.rbegin(), 25);
  // Destroying loaders whose worker is blocked on a full slot (or still starting) must not hang.
  for (int i = 0; i < 20; ++i) BatchLoader tmp(s, 7, i);
  EXPECT_THROW(BatchLoader(s, 0, 1), std::invalid_argument);
}

// ---------------------------------------------------------------- PNG

namespace {

// Decodes a PNG written by the apps (RGB); w, h, channels from the file.
std::vector<uint8_t> load_rgb(const std::string& path, int& w, int& h) {
  auto png = read_bytes(path);
  int c = 0;
  uint8_t* pix = stbi_load_from_memory(png.data(), int(png.size()), &w, &h, &c, 3);
  if (!pix) return {};
  std::vector<uint8_t> out(pix, pix + size_t(w) * h * 3);
  stbi_image_free(pix);
  return out;
}

// RGB pixels p (3 bytes) in the rectangle [x0, x1) x [y0, y1) for which is(p) holds.
template <typename Pred>
int64_t count_pixels(const std::vector<uint8_t>& rgb, int w, int x0, int y0, int x1, int y1, Pred is) {
  int64_t n = 0;
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) n += is(&rgb[(size_t(y) * w + x) * 3]);
  return n;
}
// Pixels in the rectangle that are neither white nor gray-ish: drawn in colour.
int64_t coloured(const std::vector<uint8_t>& rgb, int w, int x0, int y0, int x1, int y1) {
  return count_pixels(rgb, w, x0, y0, x1, y1, [](const uint8_t* p) {
    return std::max({p[0], p[1], p[2]}) - std::min({p[0], p[1], p[2]}) > 40;
  });
}
// Dark pixels (text, axes) in the rectangle.
int64_t dark(const std::vector<uint8_t>& rgb, int w, int x0, int y0, int x1, int y1) {
  return count_pixels(rgb, w, x0, y0, x1, y1,
                      [](const uint8_t* p) { return p[0] < 100 && p[1] < 100 && p[2] < 100; });
}

}  // namespace

TEST(AppCommon, GridPng) {
  TempDir d;
  const int64_t n = 5, h = 4, w = 5;
  std::vector<float> imgs(n * h * w);
  for (size_t i = 0; i < imgs.size(); ++i) imgs[i] = -1.5f + 3.0f * float(i % 7) / 6.0f;  // includes clipping
  imgs[0] = -1.0f;
  imgs[1] = 1.0f;
  imgs[2] = 0.0f;
  imgs[3] = NAN;
  const std::string path = d.file("grid.png");
  write_grid_png(path, imgs.data(), n, h, w, 3);
  auto png = read_bytes(path);
  // 3 columns, 2 rows, pad 2: W = 2 + 3 * (5 + 2), H = 2 + 2 * (4 + 2).
  check_png_header(png, 23, 14, 0);
  int W, H, C;
  uint8_t* pix = stbi_load_from_memory(png.data(), int(png.size()), &W, &H, &C, 1);
  ASSERT_NE(pix, nullptr);
  EXPECT_EQ(W, 23);
  EXPECT_EQ(H, 14);
  EXPECT_EQ(pix[0], 0);                      // padding
  EXPECT_EQ(pix[2 * W + 2], 0);              // -1
  EXPECT_EQ(pix[2 * W + 3], 255);            // 1
  EXPECT_EQ(pix[2 * W + 4], 128);            // 0
  EXPECT_EQ(pix[2 * W + 5], 0);              // NaN
  EXPECT_EQ(pix[(2 + 6) * W + 2 + 7], [&] {  // image 4 (row 1, col 1), pixel 0
    float v = std::clamp(imgs[4 * h * w], -1.0f, 1.0f);
    return static_cast<uint8_t>(std::lround((v + 1.0f) * 127.5f));
  }());
  stbi_image_free(pix);
  // No temp files left behind.
  int files = 0;
  for (const auto& e : fs::directory_iterator(d.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
  EXPECT_THROW(write_grid_png(d.file("no/such/dir.png"), imgs.data(), n, h, w, 3), std::runtime_error);
  EXPECT_THROW(write_grid_png(path, imgs.data(), 0, h, w, 3), std::runtime_error);
}

TEST(AppCommon, LabelledGridPng) {
  if (!plots_available()) GTEST_SKIP() << "built without PLplot (-DENGINE_PLOTS=OFF or not installed)";
  TempDir d;
  const int64_t n = 20, h = 28, w = 28;      // 2 rows of 10, MNIST-sized cells
  std::vector<float> imgs(n * h * w, 1.0f);  // all white cells
  GridLabels labels{"15 euler steps, CFG 3, seed 0, EMA weights", {"class 3", "class 7"}};
  write_grid_png(d.file("g.png"), imgs.data(), n, h, w, 10, 2, labels);
  int W = 0, H = 0;
  const std::vector<uint8_t> rgb = load_rgb(d.file("g.png"), W, H);
  ASSERT_FALSE(rgb.empty());
  const int grid_w = 2 + 10 * 30, grid_h = 2 + 2 * 30;
  ASSERT_GT(W, grid_w);  // a label column on the left
  ASSERT_GT(H, grid_h);  // a caption strip on top
  check_png_header(read_bytes(d.file("g.png")), W, H, 2);
  const int lx = W - grid_w, ty = H - grid_h;  // the grid sits in the bottom-right corner
  // Cells unchanged: the first pixel of each cell is white, the padding black.
  EXPECT_EQ(rgb[((ty + 2) * W + lx + 2) * 3], 255);
  EXPECT_EQ(rgb[((ty + 0) * W + lx + 0) * 3], 0);
  EXPECT_EQ(rgb[((ty + 32) * W + lx + 32 + 30 * 9) * 3], 255);  // row 1, col 9
  // Text: dark pixels left of each row and in the caption strip, none in the blank label area between rows.
  EXPECT_GT(dark(rgb, W, 0, ty + 2, lx, ty + 30), 20);   // "class 3"
  EXPECT_GT(dark(rgb, W, 0, ty + 32, lx, ty + 60), 20);  // "class 7"
  EXPECT_GT(dark(rgb, W, 0, 0, W, ty), 60);              // caption
  // A bare grid (no labels) stays exactly the grid, grayscale.
  write_grid_png(d.file("bare.png"), imgs.data(), n, h, w, 10, 2);
  check_png_header(read_bytes(d.file("bare.png")), grid_w, grid_h, 0);
}

// Without PLplot a labelled grid is written bare with a text sidecar (the other branch of LabelledGridPng).
TEST(AppCommon, LabelledGridWithoutPlplotHasSidecar) {
  if (plots_available()) GTEST_SKIP() << "this build has PLplot: LabelledGridPng covers it";
  TempDir d;
  std::vector<float> imgs(4 * 28 * 28, 0.0f);
  write_grid_png(d.file("g.png"), imgs.data(), 4, 28, 28, 2, 2, GridLabels{"cap", {"class 1", "class 2"}});
  check_png_header(read_bytes(d.file("g.png")), 2 + 2 * 30, 2 + 2 * 30, 0);
  std::ifstream t(d.file("g.png.txt"));
  std::stringstream ss;
  ss << t.rdbuf();
  EXPECT_EQ(ss.str(), "cap\nrow 1: class 1\nrow 2: class 2\n");
}

TEST(AppCommon, LossPlotPngHasAxesLabelsTitleAndCurves) {
  if (!plots_available()) GTEST_SKIP() << "built without PLplot (-DENGINE_PLOTS=OFF or not installed)";
  TempDir d;
  std::vector<int64_t> steps;
  std::vector<double> ys;
  for (int i = 0; i < 1000; ++i) {
    steps.push_back(i + 1);
    ys.push_back(1.0 / (1 + i * 0.01) + 0.05 * std::sin(i * 1.7) + 0.06);
  }
  ys[10] = NAN;
  ys[20] = INFINITY;
  write_loss_plot_png(d.file("loss.png"), steps, ys, "fm_train loss: runs/x");
  check_png_header(read_bytes(d.file("loss.png")), 800, 450, 2);
  int w = 0, h = 0;
  const std::vector<uint8_t> rgb = load_rgb(d.file("loss.png"), w, h);
  ASSERT_EQ(w, 800);
  ASSERT_EQ(h, 450);
  // The plot area (viewport 0.11..0.97 x 0.10..0.87 of the image) holds the blue curves; the margins hold
  // dark text: the title above, the tick labels and "step" below, the y label on the left.
  EXPECT_GT(coloured(rgb, w, 100, 60, 770, 390), 2000);
  EXPECT_GT(dark(rgb, w, 200, 0, 600, 55), 50);    // title
  EXPECT_GT(dark(rgb, w, 80, 395, 780, 450), 50);  // x tick labels and "step"
  EXPECT_GT(dark(rgb, w, 0, 60, 85, 390), 50);     // y tick labels and label
  // Degenerate inputs still give a plot with axes.
  write_loss_plot_png(d.file("one.png"), {1}, {3.0}, "one");
  check_png_header(read_bytes(d.file("one.png")), 800, 450, 2);
  write_loss_plot_png(d.file("empty.png"), {}, {}, "empty");
  check_png_header(read_bytes(d.file("empty.png")), 800, 450, 2);
  write_loss_plot_png(d.file("neg.png"), {1, 2, 3}, {-1.0, 0.0, 2.0}, "not log");
  check_png_header(read_bytes(d.file("neg.png")), 800, 450, 2);
  // Errors carry the OS reason.
  try {
    write_loss_plot_png(d.file("no/such/dir.png"), steps, ys, "x");
    ADD_FAILURE();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos) << e.what();
  }
}

TEST(AppCommon, SigmaBinPlotPng) {
  if (!plots_available()) GTEST_SKIP() << "built without PLplot (-DENGINE_PLOTS=OFF or not installed)";
  TempDir d;
  std::vector<int64_t> steps;
  std::vector<std::vector<double>> bins;
  for (int i = 0; i < 40; ++i) {
    steps.push_back(i + 1);
    std::vector<double> row;
    for (int k = 0; k < kSigmaBins; ++k) row.push_back(k == 3 && i % 2 ? NAN : (1.0 + k) / (1.0 + 0.1 * i));
    bins.push_back(row);
  }
  write_sigma_bin_plot_png(d.file("loss_sigma.png"), steps, bins, "loss per sigma bin: runs/x");
  check_png_header(read_bytes(d.file("loss_sigma.png")), 800, 450, 2);
  int w = 0, h = 0;
  const std::vector<uint8_t> rgb = load_rgb(d.file("loss_sigma.png"), w, h);
  ASSERT_EQ(w, 800);
  EXPECT_GT(coloured(rgb, w, 100, 60, 770, 390), 1000);
  EXPECT_GT(dark(rgb, w, 200, 0, 600, 55), 50);
  write_sigma_bin_plot_png(d.file("none.png"), {}, {}, "empty");
  check_png_header(read_bytes(d.file("none.png")), 800, 450, 2);
}

TEST(AppCommon, SigmaBinMeans) {
  // Bins of width 0.0988 over [0.006, 0.994]: 0.01 -> bin 0, 0.5 -> bin 5 (0.494/0.0988 = 5.0), 0.99 ->
  // bin 9.
  const std::vector<double> m =
      sigma_bin_means({0.01f, 0.02f, 0.5f, 0.99f, 2.0f}, {1.0, 3.0, 5.0, 7.0, 9.0}, 10);
  ASSERT_EQ(m.size(), 10u);
  EXPECT_EQ(m[0], 2.0);
  EXPECT_EQ(m[5], 5.0);
  EXPECT_EQ(m[9], 8.0);  // 0.99 and the clamped 2.0
  for (int k : {1, 2, 3, 4, 6, 7, 8}) EXPECT_TRUE(std::isnan(m[k])) << k;
  EXPECT_THROW(sigma_bin_means({0.1f}, {}, 10), engine::Error);
}

// ---------------------------------------------------------------- TensorBoard events

namespace {

struct Field {
  int number, wire;
  uint64_t u = 0;     // varint / fixed64 / fixed32 value
  std::string bytes;  // length-delimited payload
};

uint64_t get_varint(const std::string& s, size_t& pos) {
  uint64_t v = 0;
  for (int shift = 0; pos < s.size() && shift < 64; shift += 7) {
    uint8_t b = static_cast<uint8_t>(s[pos++]);
    v |= uint64_t(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
  throw std::runtime_error("bad varint");
}

std::vector<Field> decode_proto(const std::string& s) {
  std::vector<Field> out;
  size_t pos = 0;
  while (pos < s.size()) {
    uint64_t key = get_varint(s, pos);
    Field f;
    f.number = static_cast<int>(key >> 3);
    f.wire = static_cast<int>(key & 7);
    if (f.wire == 0) {
      f.u = get_varint(s, pos);
    } else if (f.wire == 1 || f.wire == 5) {
      int nb = f.wire == 1 ? 8 : 4;
      if (pos + nb > s.size()) throw std::runtime_error("truncated fixed");
      for (int i = 0; i < nb; ++i) f.u |= uint64_t(uint8_t(s[pos + i])) << (8 * i);
      pos += nb;
    } else if (f.wire == 2) {
      uint64_t len = get_varint(s, pos);
      if (pos + len > s.size()) throw std::runtime_error("truncated bytes");
      f.bytes = s.substr(pos, len);
      pos += len;
    } else {
      throw std::runtime_error("unexpected wire type");
    }
    out.push_back(f);
  }
  return out;
}

const Field* field(const std::vector<Field>& fs, int number) {
  for (const auto& f : fs)
    if (f.number == number) return &f;
  return nullptr;
}

}  // namespace

TEST(AppCommon, Crc32c) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
  const uint32_t c = crc32c("abc", 3);
  EXPECT_EQ(masked_crc32c("abc", 3), ((c >> 15) | (c << 17)) + 0xa282ead8u);
}

TEST(AppCommon, TfEventsRoundTrip) {
  TempDir d;
  const std::string logdir = d.file("tb/run1");
  std::string path;
  const std::vector<std::tuple<std::string, float, int64_t>> written = {
      {"loss", 0.5f, 1}, {"loss", 0.25f, 2}, {"lr", 1e-4f, 2}, {"train/grad_norm", -3.75f, 123456789012LL}};
  {
    EventWriter w(logdir);
    path = w.path();
    for (const auto& [tag, v, step] : written) w.add_scalar(tag, v, step);
    w.flush();
  }
  EXPECT_NE(fs::path(path).filename().string().rfind("events.out.tfevents.", 0), std::string::npos);
  EXPECT_EQ(fs::path(path).parent_path(), fs::path(logdir));
  const std::string data = read_text(path);

  std::vector<std::string> records;
  size_t pos = 0;
  while (pos < data.size()) {
    ASSERT_LE(pos + 12, data.size());
    uint64_t len = 0;
    for (int i = 0; i < 8; ++i) len |= uint64_t(uint8_t(data[pos + i])) << (8 * i);
    uint32_t len_crc = 0, data_crc = 0;
    for (int i = 0; i < 4; ++i) len_crc |= uint32_t(uint8_t(data[pos + 8 + i])) << (8 * i);
    EXPECT_EQ(len_crc, masked_crc32c(data.data() + pos, 8));
    ASSERT_LE(pos + 12 + len + 4, data.size());
    const std::string payload = data.substr(pos + 12, len);
    for (int i = 0; i < 4; ++i) data_crc |= uint32_t(uint8_t(data[pos + 12 + len + i])) << (8 * i);
    EXPECT_EQ(data_crc, masked_crc32c(payload.data(), payload.size()));
    records.push_back(payload);
    pos += 12 + len + 4;
  }
  ASSERT_EQ(records.size(), written.size() + 1);

  auto first = decode_proto(records[0]);
  ASSERT_NE(field(first, 1), nullptr);
  EXPECT_EQ(field(first, 1)->wire, 1);
  double wall;
  std::memcpy(&wall, &field(first, 1)->u, 8);
  EXPECT_GT(wall, 1.6e9);
  ASSERT_NE(field(first, 3), nullptr);
  EXPECT_EQ(field(first, 3)->bytes, "brain.Event:2");

  for (size_t i = 0; i < written.size(); ++i) {
    auto ev = decode_proto(records[i + 1]);
    ASSERT_NE(field(ev, 1), nullptr);
    ASSERT_NE(field(ev, 2), nullptr);
    EXPECT_EQ(field(ev, 2)->wire, 0);
    EXPECT_EQ(static_cast<int64_t>(field(ev, 2)->u), std::get<2>(written[i]));
    ASSERT_NE(field(ev, 5), nullptr);
    auto summary = decode_proto(field(ev, 5)->bytes);
    ASSERT_EQ(summary.size(), 1u);
    EXPECT_EQ(summary[0].number, 1);
    auto value = decode_proto(summary[0].bytes);
    ASSERT_NE(field(value, 1), nullptr);
    EXPECT_EQ(field(value, 1)->bytes, std::get<0>(written[i]));
    ASSERT_NE(field(value, 2), nullptr);
    EXPECT_EQ(field(value, 2)->wire, 5);
    float v;
    uint32_t bits = static_cast<uint32_t>(field(value, 2)->u);
    std::memcpy(&v, &bits, 4);
    EXPECT_EQ(v, std::get<1>(written[i]));
  }
}

// ---------------------------------------------------------------- progress

TEST(AppCommon, RunLengthPicksTheLimitThatEndsTheRun) {
  // --max-steps 300 with 1875 batches per epoch (MNIST at batch 32): the run ends at 300, in epoch 1.
  RunLength r = run_length(10, 1875, 300);
  EXPECT_EQ(r.total_steps, 300);
  EXPECT_TRUE(r.by_max_steps);
  EXPECT_EQ(r.describe(), "--max-steps 300");
  // --max-steps beyond the epochs: the epochs end it.
  r = run_length(2, 100, 1000);
  EXPECT_EQ(r.total_steps, 200);
  EXPECT_FALSE(r.by_max_steps);
  EXPECT_EQ(r.describe(), "--epochs 2 x 100 batches");
  r = run_length(3, 7, 0);
  EXPECT_EQ(r.total_steps, 21);
  EXPECT_FALSE(r.by_max_steps);
  EXPECT_EQ(run_length(1, 5, 5).total_steps, 5);
  EXPECT_THROW(run_length(0, 5, 0), std::invalid_argument);
  EXPECT_THROW(run_length(1, 0, 0), std::invalid_argument);
  EXPECT_THROW(run_length(1, 5, -1), std::invalid_argument);
}

TEST(AppCommon, ProgressRender) {
  // One overall bar to the run's limit (--max-steps 300), with the epoch out of --epochs as context.
  ProgressBar p(run_length(10, 1875, 300), stdout, 0);
  EXPECT_EQ(p.render(120, 0, 0.1234, 1520, 133),
            "step 120/300 [########............]  40% epoch 1/10 loss 0.1234 1520 img/s ETA 02:13");
  EXPECT_EQ(p.render(300, 0, 0.1, 50, 0),
            "step 300/300 [####################] 100% epoch 1/10 loss 0.1000 50 img/s ETA 00:00");
  ProgressBar q(run_length(10, 469, 0), stdout, 0);
  EXPECT_NE(
      q.render(2 * 469 + 5, 2, 1.0, 0, NAN).find("step 943/4690 [####................]  20% epoch 3/10"),
      std::string::npos)
      << q.render(2 * 469 + 5, 2, 1.0, 0, NAN);
  EXPECT_NE(q.render(0, 0, 1.0, 0, NAN).find("ETA --:--"), std::string::npos);
  EXPECT_NE(q.render(10, 0, 1.0, 0, 3 * 3600 + 61).find("ETA 3:01:01"), std::string::npos);
}

TEST(AppCommon, ProgressPlainAndTtyModes) {
  {
    std::FILE* f = std::tmpfile();
    ASSERT_NE(f, nullptr);
    ProgressBar p(run_length(2, 10, 10), f, 0, 1e9, 3);
    for (int64_t s = 1; s <= 10; ++s) p.update(s, 0, 0.5, 100);
    p.finish();
    std::rewind(f);
    std::string text;
    char buf[512];
    while (std::fgets(buf, sizeof(buf), f)) text += buf;
    std::fclose(f);
    EXPECT_EQ(text.find('\r'), std::string::npos);
    // Steps 1 (first), 4, 7, 10 (the run's last step).
    int lines = 0;
    for (char c : text) lines += c == '\n';
    EXPECT_EQ(lines, 4) << text;
    EXPECT_NE(text.find("step 10/10 [####################] 100% epoch 1/2 loss 0.5000 100 img/s ETA 00:00"),
              std::string::npos)
        << text;
  }
  {
    std::FILE* f = std::tmpfile();
    ASSERT_NE(f, nullptr);
    ProgressBar p(run_length(1, 5, 0), f, 1);
    p.update(1, 0, 1.0, 10);
    p.update(5, 0, 0.9, 10);
    p.finish();
    std::rewind(f);
    std::string text;
    char buf[512];
    while (std::fgets(buf, sizeof(buf), f)) text += buf;
    std::fclose(f);
    EXPECT_EQ(text[0], '\r');
    EXPECT_EQ(text.back(), '\n');
    EXPECT_NE(text.find("step 5/5 [####################] 100% epoch 1/1 loss 0.9000"), std::string::npos)
        << text;
  }
}

// ---------------------------------------------------------------- CSV

TEST(AppCommon, CsvWriterAndAppend) {
  TempDir d;
  const std::string path = d.file("metrics.csv");
  {
    CsvWriter w(path, {"step", "loss", "note"});
    w.write(1, 0.5, "plain");
    w.write(int64_t{2}, 0.25f, "with,comma \"q\"");
    // Flushed per row: visible before the writer closes.
    EXPECT_EQ(read_text(path), "step,loss,note\n1,0.5,plain\n2,0.25,\"with,comma \"\"q\"\"\"\n");
    EXPECT_THROW(w.row({"1", "2"}), std::runtime_error);
  }
  {
    CsvWriter w(path, {"step", "loss", "note"}, true);
    w.row({"3", "0.125", ""});
  }
  EXPECT_EQ(read_text(path), "step,loss,note\n1,0.5,plain\n2,0.25,\"with,comma \"\"q\"\"\"\n3,0.125,\n");
  EXPECT_THROW(CsvWriter(path, {"a", "b"}, true), std::runtime_error);
  {
    CsvWriter w(d.file("new.csv"), {"a"}, true);  // append to a new file writes the header
    w.write(std::string("x"));
  }
  EXPECT_EQ(read_text(d.file("new.csv")), "a\nx\n");
  {
    CsvWriter w(path, {"a"});  // truncating mode
  }
  EXPECT_EQ(read_text(path), "a\n");
  EXPECT_EQ(CsvWriter::to_field(0.1), "0.1");
  EXPECT_EQ(CsvWriter::to_field(NAN), "nan");
}

// Open failures carry the OS's reason, not just "cannot open".
TEST(AppCommon, WriterErrorsCarryTheReason) {
  TempDir d;
  try {
    CsvWriter w(d.file("missing_dir/metrics.csv"), {"a"});
    ADD_FAILURE() << "opening in a missing directory must throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos) << e.what();
  }
}

// The first three outputs of the reference SplitMix64 generator (Vigna's splitmix64.c) seeded with 0: the
// state advances by the golden-ratio increment before each output, as splitmix64() does to its argument.
TEST(SplitMix64, MatchesTheReferenceGenerator) {
  constexpr uint64_t kGamma = 0x9e3779b97f4a7c15ull;
  EXPECT_EQ(engine::app::splitmix64(0), 0xe220a8397b1dcdafull);
  EXPECT_EQ(engine::app::splitmix64(kGamma), 0x6e789e6aa1b965f4ull);
  EXPECT_EQ(engine::app::splitmix64(2 * kGamma), 0x06c45d188009454full);
}

// apply_malloc_defaults: a freed 64 MiB block is reused without page faults (glibc's default mmaps a block
// that size, unmaps it at free and faults every page in again at the next allocation); a user's malloc
// tunable turns it off.
TEST(MallocDefaults, FreedTensorMemoryIsReusedWithoutPageFaults) {
#if !defined(__GLIBC__) || defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "needs glibc's malloc (not available without glibc or under AddressSanitizer)";
#else
  const char* saved = std::getenv("MALLOC_ARENA_MAX");
  const std::string saved_value = saved ? saved : "";
  ASSERT_EQ(setenv("MALLOC_ARENA_MAX", "8", 1), 0);
  EXPECT_FALSE(engine::app::apply_malloc_defaults());  // the user's setting wins
  if (saved)
    setenv("MALLOC_ARENA_MAX", saved_value.c_str(), 1);
  else
    unsetenv("MALLOC_ARENA_MAX");
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") || std::getenv("MALLOC_TRIM_THRESHOLD_") ||
      std::getenv("MALLOC_TOP_PAD_") || std::getenv("MALLOC_ARENA_MAX"))
    GTEST_SKIP() << "the environment sets a malloc tunable";
  ASSERT_TRUE(engine::app::apply_malloc_defaults());
  constexpr size_t kBytes = size_t(64) << 20;
  auto faults_touching = [&] {
    rusage before{}, after{};
    getrusage(RUSAGE_SELF, &before);
    auto* p = static_cast<volatile char*>(std::malloc(kBytes));
    for (size_t i = 0; i < kBytes; i += 4096) p[i] = 1;
    getrusage(RUSAGE_SELF, &after);
    std::free(const_cast<char*>(p));
    return after.ru_minflt - before.ru_minflt;
  };
  const long first = faults_touching();   // new memory: one fault per page (or per huge page)
  const long second = faults_touching();  // the same block again, from the heap
  EXPECT_GT(first, 0);
  EXPECT_LT(second, 64) << "first touch " << first << " faults";
#endif
}
