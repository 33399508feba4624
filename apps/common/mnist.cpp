// IDX file parsing (raw, or gzip via zlib's inflate) and the prefetching BatchLoader.
#include "apps/common/mnist.h"

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>

#include "apps/common/splitmix.h"

namespace engine::app {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kMaxSide = 4096;
constexpr int64_t kMaxBytes = int64_t{4} << 30;
// deflate cannot compress better than about 1032:1, so a gzip file of N bytes holds at most ~1032 N.
constexpr uint64_t kMaxDeflateRatio = 1032;

uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

bool is_gzip(const uint8_t* data, size_t size) { return size >= 2 && data[0] == 0x1f && data[1] == 0x8b; }

// The decompressed bytes of a gzip file held in memory. Concatenated members are read as one stream (as
// gunzip does); anything after the last member that is not another member, and a stream that ends
// before its member does, throw DataError.
class GzipReader {
 public:
  GzipReader(const uint8_t* data, size_t size, std::string what) : data_(data), size_(size), what_(what) {
    if (inflateInit2(&zs_, 16 + MAX_WBITS) != Z_OK) throw DataError(what_ + ": zlib initialisation failed");
  }
  ~GzipReader() { inflateEnd(&zs_); }
  GzipReader(const GzipReader&) = delete;
  GzipReader& operator=(const GzipReader&) = delete;

  // Reads up to `n` bytes; returns the count read (short only at the end of the last member).
  size_t read(uint8_t* dst, size_t n) {
    size_t done = 0;
    while (done < n) {
      if (member_ended_) {
        const size_t left = size_ - pos_;
        if (left == 0) break;
        if (!is_gzip(data_ + pos_, left))
          throw DataError(what_ + ": " + std::to_string(left) +
                          " bytes of junk after the end of the gzip stream");
        inflateReset(&zs_);
        member_ended_ = false;
      }
      const size_t in_avail = std::min<size_t>(size_ - pos_, 1u << 30);
      const size_t out_avail = std::min<size_t>(n - done, 1u << 30);
      zs_.next_in = const_cast<Bytef*>(data_ + pos_);
      zs_.avail_in = static_cast<uInt>(in_avail);
      zs_.next_out = dst + done;
      zs_.avail_out = static_cast<uInt>(out_avail);
      const int r = inflate(&zs_, Z_NO_FLUSH);
      pos_ += in_avail - zs_.avail_in;
      done += out_avail - zs_.avail_out;
      if (r == Z_STREAM_END) {
        member_ended_ = true;
      } else if (r == Z_BUF_ERROR || (r == Z_OK && zs_.avail_in == 0 && zs_.avail_out != 0)) {
        if (pos_ == size_) throw DataError(what_ + ": truncated gzip stream (file ends inside it)");
      } else if (r != Z_OK) {
        throw DataError(what_ + ": corrupt gzip data (" +
                        (zs_.msg ? zs_.msg : "zlib error " + std::to_string(r)) + ")");
      }
    }
    return done;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  std::string what_;
  z_stream zs_{};
  bool member_ended_ = false;
};

// Either raw bytes or a GzipReader over them.
class ByteSource {
 public:
  ByteSource(const uint8_t* data, size_t size, const std::string& what) : data_(data), size_(size) {
    if (is_gzip(data, size)) gz_ = std::make_unique<GzipReader>(data, size, what);
  }
  size_t read(uint8_t* dst, size_t n) {
    if (gz_) return gz_->read(dst, n);
    const size_t k = std::min(n, size_ - pos_);
    if (k) std::memcpy(dst, data_ + pos_, k);
    pos_ += k;
    return k;
  }

 private:
  const uint8_t* data_;
  size_t size_, pos_ = 0;
  std::unique_ptr<GzipReader> gz_;
};

std::vector<uint8_t> read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError("MNIST file '" + path + "': cannot open");
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) throw DataError("MNIST file '" + path + "': cannot stat: " + ec.message());
  if (size > static_cast<uintmax_t>(kMaxBytes) + 16)
    throw DataError("MNIST file '" + path + "': implausibly large (" + std::to_string(size) + " bytes)");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (static_cast<size_t>(in.gcount()) != bytes.size())
    throw DataError("MNIST file '" + path + "': read error");
  return bytes;
}

std::string find_file(const std::string& dir, const std::string& stem) {
  for (const std::string& name : {stem + ".gz", stem}) {
    fs::path p = fs::path(dir) / name;
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  throw DataError("MNIST file '" + (fs::path(dir) / stem).string() + "[.gz]' not found");
}

std::vector<int64_t> read_idx(const std::string& path, uint32_t magic, int ndims,
                              std::vector<uint8_t>& payload) {
  const std::vector<uint8_t> bytes = read_whole_file(path);
  return parse_idx(bytes.data(), bytes.size(), "MNIST file '" + path + "'", magic, ndims, payload);
}

}  // namespace

std::vector<int64_t> parse_idx(const uint8_t* data, size_t size, const std::string& what, uint32_t magic,
                               int ndims, std::vector<uint8_t>& payload) {
  auto fail = [&](const std::string& msg) { return DataError(what + ": " + msg); };
  if (ndims < 1 || ndims > 3) throw fail("internal: unsupported IDX rank " + std::to_string(ndims));
  ByteSource f(data, size, what);
  const bool gz = is_gzip(data, size);
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
  // The declared size must be possible for this file before anything is allocated.
  const uint64_t want = static_cast<uint64_t>(total);
  if (!gz && want != size - hsize)
    throw fail(want > size - hsize ? "truncated: header declares " + std::to_string(want) +
                                         " data bytes but only " + std::to_string(size - hsize) + " present"
                                   : "trailing garbage: header declares " + std::to_string(want) +
                                         " data bytes but the file holds " + std::to_string(size - hsize));
  if (gz && want > kMaxDeflateRatio * size)
    throw fail("header declares " + std::to_string(want) + " data bytes, more than a " +
               std::to_string(size) + "-byte gzip file can hold (truncated?)");
  // Grow as data actually arrives, so even a lying gzip header cannot force one huge allocation.
  payload.clear();
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

MnistSet load_mnist(const std::string& dir, bool train) {
  const std::string prefix = train ? "train" : "t10k";
  const std::string img_path = find_file(dir, prefix + "-images-idx3-ubyte");
  const std::string lbl_path = find_file(dir, prefix + "-labels-idx1-ubyte");
  MnistSet s;
  auto idims = read_idx(img_path, kIdxImagesMagic, 3, s.images);
  auto ldims = read_idx(lbl_path, kIdxLabelsMagic, 1, s.labels);
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
