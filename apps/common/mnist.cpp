// IDX file parsing (via zlib, which reads gzip and raw files alike) and the prefetching BatchLoader.
#include "apps/common/mnist.h"

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>

namespace engine::app {
namespace {

namespace fs = std::filesystem;

constexpr uint32_t kImagesMagic = 0x00000803;
constexpr uint32_t kLabelsMagic = 0x00000801;
constexpr int64_t kMaxSide = 4096;
constexpr int64_t kMaxBytes = int64_t{4} << 30;

uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path) {
    f_ = gzopen(path.c_str(), "rb");
    if (!f_) throw DataError("MNIST file '" + path + "': cannot open");
    gzbuffer(f_, 1 << 17);
  }
  ~GzFile() {
    if (f_) gzclose(f_);
  }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  // Reads up to `n` bytes; returns the count read (short only at end of file).
  size_t read(uint8_t* dst, size_t n) {
    size_t done = 0;
    while (done < n) {
      unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - done, 1u << 30));
      int r = gzread(f_, dst + done, chunk);
      if (r < 0) {
        int errnum = 0;
        const char* msg = gzerror(f_, &errnum);
        throw DataError("MNIST file '" + path_ +
                        "': read error (corrupt or truncated gzip?): " + (msg ? msg : "unknown"));
      }
      if (r == 0) break;
      done += static_cast<size_t>(r);
    }
    return done;
  }

 private:
  std::string path_;
  gzFile f_ = nullptr;
};

std::string find_file(const std::string& dir, const std::string& stem) {
  for (const std::string& name : {stem + ".gz", stem}) {
    fs::path p = fs::path(dir) / name;
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  throw DataError("MNIST file '" + (fs::path(dir) / stem).string() + "[.gz]' not found");
}

// Reads an IDX file whose header has `ndims` dimensions; returns the dims and fills `payload` with exactly
// product(dims) bytes, rejecting truncated files and trailing garbage.
std::vector<int64_t> read_idx(const std::string& path, uint32_t magic, int ndims,
                              std::vector<uint8_t>& payload) {
  GzFile f(path);
  auto fail = [&](const std::string& msg) { return DataError("MNIST file '" + path + "': " + msg); };
  uint8_t header[16];
  const size_t hsize = 4 + 4 * static_cast<size_t>(ndims);
  if (f.read(header, hsize) != hsize) throw fail("truncated header");
  uint32_t m = be32(header);
  if (m != magic) {
    char buf[96];
    std::snprintf(buf, sizeof(buf), "bad magic number 0x%08x (expected 0x%08x)", m, magic);
    throw fail(buf);
  }
  std::vector<int64_t> dims;
  int64_t total = 1;
  for (int i = 0; i < ndims; ++i) {
    int64_t d = be32(header + 4 + 4 * i);
    if (i > 0 && (d <= 0 || d > kMaxSide)) throw fail("implausible dimension " + std::to_string(d));
    dims.push_back(d);
    total *= d;  // count < 2^32 and sides <= 4096 keep this far from overflow
  }
  if (total > kMaxBytes)
    throw fail("implausibly large (" + std::to_string(total) + " bytes of data declared)");
  // Grow as data actually arrives so a lying header cannot force a huge allocation.
  payload.clear();
  const size_t want = static_cast<size_t>(total);
  size_t have = 0;
  while (have < want) {
    size_t chunk = std::min<size_t>(want - have, size_t{8} << 20);
    payload.resize(have + chunk);
    size_t got = f.read(payload.data() + have, chunk);
    have += got;
    if (got < chunk) {
      throw fail("truncated: header declares " + std::to_string(want) + " data bytes but only " +
                 std::to_string(have) + " present");
    }
  }
  uint8_t extra;
  if (f.read(&extra, 1) != 0) throw fail("trailing garbage after " + std::to_string(want) + " data bytes");
  return dims;
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

MnistSet load_mnist(const std::string& dir, bool train) {
  const std::string prefix = train ? "train" : "t10k";
  const std::string img_path = find_file(dir, prefix + "-images-idx3-ubyte");
  const std::string lbl_path = find_file(dir, prefix + "-labels-idx1-ubyte");
  MnistSet s;
  auto idims = read_idx(img_path, kImagesMagic, 3, s.images);
  auto ldims = read_idx(lbl_path, kLabelsMagic, 1, s.labels);
  if (idims[0] != ldims[0])
    throw DataError("MNIST files '" + img_path + "' and '" + lbl_path + "': image count " +
                    std::to_string(idims[0]) + " != label count " + std::to_string(ldims[0]));
  if (idims[0] == 0) throw DataError("MNIST file '" + img_path + "': contains no images");
  for (size_t i = 0; i < s.labels.size(); ++i)
    if (s.labels[i] >= 10)
      throw DataError("MNIST file '" + lbl_path + "': label " + std::to_string(s.labels[i]) + " at index " +
                      std::to_string(i) + " is not in 0..9");
  s.n = idims[0];
  s.rows = idims[1];
  s.cols = idims[2];
  return s;
}

std::vector<std::string> missing_mnist_files(const std::string& dir) {
  std::vector<std::string> missing;
  for (const char* stem : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                           "t10k-labels-idx1-ubyte"}) {
    std::error_code ec;
    const fs::path p = fs::path(dir) / stem;
    if (!fs::is_regular_file(p, ec) && !fs::is_regular_file(fs::path(p.string() + ".gz"), ec))
      missing.push_back(std::string(stem) + "[.gz]");
  }
  return missing;
}

std::string resolve_data_dir(const std::string& flag, std::vector<std::string>* notes) {
  auto check_explicit = [](const std::string& dir, const std::string& source) {
    std::error_code ec;
    if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
      throw DataError(
          "MNIST path '" + dir + "' (" + source +
          ") is a file, not a directory; pass the directory holding the four IDX files (--data DIR)");
    if (!fs::is_directory(dir, ec))
      throw DataError("MNIST directory '" + dir + "' (" + source +
                      ") not found; pass --data DIR or set MNIST_DIR; scripts/download_mnist.sh fetches it");
    return dir;
  };
  if (!flag.empty()) return check_explicit(flag, "--data");
  const char* env = std::getenv("MNIST_DIR");
  if (env && *env) return check_explicit(env, "$MNIST_DIR");
  // The defaults: the first folder that holds all four files wins, so an empty or partial data/mnist (a
  // failed download) does not hide a complete sibling checkout's data.
  std::string tried;
  for (const char* dir : kDefaultMnistDirs) {
    std::error_code ec;
    std::string why;
    if (!fs::is_directory(dir, ec)) {
      why = "not found";
    } else {
      const std::vector<std::string> missing = missing_mnist_files(dir);
      if (missing.empty()) return dir;
      why = "missing " + std::to_string(missing.size()) + " of the 4 files, e.g. " + missing[0];
      if (notes) notes->push_back("skipping MNIST directory '" + std::string(dir) + "': " + why);
    }
    tried += std::string(tried.empty() ? "" : "; ") + dir + " (" + why + ")";
  }
  throw DataError("no MNIST directory found; tried " + tried +
                  ". Pass --data DIR or set MNIST_DIR; scripts/download_mnist.sh data/mnist fetches it");
}

std::vector<int64_t> BatchLoader::epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  // Hand-written Fisher-Yates (std::shuffle's output is implementation-defined), so orders are identical
  // across standard libraries. The modulo bias is < n / 2^64, negligible.
  std::mt19937_64 rng(splitmix64(seed) ^ splitmix64(static_cast<uint64_t>(epoch) + 0x5851f42d4c957f2dull));
  for (int64_t i = n - 1; i > 0; --i) {
    int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

BatchLoader::BatchLoader(const MnistSet& set, int64_t batch, uint64_t seed, int64_t start_epoch,
                         int64_t start_batch, int64_t limit)
    : set_(set), batch_(batch), seed_(seed) {
  if (batch <= 0) throw std::invalid_argument("BatchLoader: batch size must be positive");
  if (set.n <= 0 || static_cast<int64_t>(set.labels.size()) != set.n ||
      static_cast<int64_t>(set.images.size()) != set.n * set.rows * set.cols)
    throw std::invalid_argument("BatchLoader: empty or inconsistent MnistSet");
  if (start_epoch < 0 || start_batch < 0)
    throw std::invalid_argument("BatchLoader: negative resume position");
  n_ = limit > 0 ? std::min(limit, set.n) : set.n;
  batches_per_epoch_ = (n_ + batch - 1) / batch;
  next_epoch_ = start_epoch + start_batch / batches_per_epoch_;
  next_index_ = start_batch % batches_per_epoch_;
  thread_ = std::thread([this] { worker(); });
}

BatchLoader::~BatchLoader() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Batch BatchLoader::make_batch(int64_t epoch, int64_t index, std::vector<int64_t>& order,
                              int64_t& order_epoch) const {
  if (order_epoch != epoch) {
    order = epoch_order(n_, seed_, epoch);
    order_epoch = epoch;
  }
  const int64_t begin = index * batch_;
  const int64_t count = std::min(batch_, n_ - begin);
  const int64_t pix = set_.rows * set_.cols;
  Batch b;
  b.epoch = epoch;
  b.index_in_epoch = index;
  b.x.resize(static_cast<size_t>(count * pix));
  b.labels.resize(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    const int64_t src = order[static_cast<size_t>(begin + i)];
    const uint8_t* img = set_.images.data() + src * pix;
    float* dst = b.x.data() + i * pix;
    for (int64_t k = 0; k < pix; ++k) dst[k] = static_cast<float>(img[k]) * (2.0f / 255.0f) - 1.0f;
    b.labels[static_cast<size_t>(i)] = set_.labels[static_cast<size_t>(src)];
  }
  return b;
}

void BatchLoader::worker() {
  std::vector<int64_t> order;
  int64_t order_epoch = -1;
  try {
    for (;;) {
      Batch b = make_batch(next_epoch_, next_index_, order, order_epoch);
      if (++next_index_ == batches_per_epoch_) {
        next_index_ = 0;
        ++next_epoch_;
      }
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [this] { return stop_ || !ready_.has_value(); });
      if (stop_) return;
      ready_ = std::move(b);
      cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lk(mu_);
    error_ = std::current_exception();
    cv_.notify_all();
  }
}

Batch BatchLoader::next() {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [this] { return ready_.has_value() || error_ != nullptr; });
  if (!ready_ && error_) std::rethrow_exception(error_);
  Batch b = std::move(*ready_);
  ready_.reset();
  cv_.notify_all();
  return b;
}

}  // namespace engine::app
