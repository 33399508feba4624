// MNIST / Fashion-MNIST IDX reader (raw or gzipped) with strict validation, and a deterministic,
// resumable, prefetching batch loader producing float images normalised to [-1, 1].
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace engine::app {

class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct MnistSet {
  int64_t n = 0, rows = 0, cols = 0;
  std::vector<uint8_t> images;  // n * rows * cols, row-major
  std::vector<uint8_t> labels;  // n, each < 10
};

// Loads {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] from `dir`. Throws DataError naming the file.
MnistSet load_mnist(const std::string& dir, bool train);

inline constexpr uint32_t kIdxImagesMagic = 0x00000803;  // 3 dimensions: count, rows, cols
inline constexpr uint32_t kIdxLabelsMagic = 0x00000801;  // 1 dimension: count

// Parses an IDX file held in memory: raw, or gzip (detected by its magic bytes; concatenated members are
// one stream, as for gunzip). Checks `magic`, reads `ndims` (1..3) big-endian dimensions (all but the
// first in 1..4096, at most 4 GiB in all), fills `payload` with exactly their product of bytes and returns
// the dimensions. Throws DataError("<what>: ...") for a wrong magic, implausible dimensions, a declared
// size the file cannot hold, truncated or corrupt data, and any bytes after the data or after the last
// gzip member. Never allocates more than the declared size, nor more than the file can hold.
std::vector<int64_t> parse_idx(const uint8_t* data, size_t size, const std::string& what, uint32_t magic,
                               int ndims, std::vector<uint8_t>& payload);

// The default MNIST folders, relative to the working directory, in lookup order.
inline constexpr const char* kDefaultMnistDirs[] = {"data/mnist", "../shared/data/mnist"};

// The MNIST directory to use: `flag` (--data) if non-empty, else $MNIST_DIR if set; either must be an
// existing directory (DataError otherwise, naming the source). Else the first of kDefaultMnistDirs that holds
// all four files (raw or .gz); each existing folder skipped for missing files adds a line to `notes` (when
// given). Throws DataError listing every folder tried and why when none qualifies.
std::string resolve_data_dir(const std::string& flag, std::vector<std::string>* notes = nullptr);

// The four MNIST files ("train-images-idx3-ubyte[.gz]", ...) that `dir` holds neither raw nor gzipped.
std::vector<std::string> missing_mnist_files(const std::string& dir);

struct Batch {
  int64_t epoch = 0;
  int64_t index_in_epoch = 0;
  std::vector<float> x;         // size() * rows * cols, values in [-1, 1]
  std::vector<int64_t> labels;  // batch size (the last batch of an epoch may be smaller)
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
};

// Iterates over epochs forever; each epoch visits the first `limit` images (all if limit <= 0) in an order
// that depends only on (seed, epoch), so a loader constructed at (start_epoch, start_batch) yields exactly
// the batches an uninterrupted loader would. The next batch is prepared on a background thread.
// `set` must outlive the loader.
class BatchLoader {
 public:
  BatchLoader(const MnistSet& set, int64_t batch, uint64_t seed, int64_t start_epoch = 0,
              int64_t start_batch = 0, int64_t limit = 0);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  Batch next();
  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  int64_t num_images() const { return n_; }

  // The permutation of image indices used for `epoch` (exposed for tests).
  static std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch);

 private:
  void worker();
  Batch make_batch(int64_t epoch, int64_t index, std::vector<int64_t>& order, int64_t& order_epoch) const;

  const MnistSet& set_;
  const int64_t batch_;
  const uint64_t seed_;
  int64_t n_ = 0;
  int64_t batches_per_epoch_ = 0;
  int64_t next_epoch_ = 0, next_index_ = 0;  // position of the next batch the worker produces

  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<Batch> ready_;
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace engine::app
