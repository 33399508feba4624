// fm_eval reference cache: FNV-1a keys over the inputs, raw-double binary entries, atomic writes.
#include "apps/common/eval_cache.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

namespace engine::app {

namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'F', 'M', 'E', 'V', 'R', 'E', 'F', '1'};

struct Fnv {
  uint64_t h = 1469598103934665603ull;
  void bytes(const void* p, size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  }
  void str(const std::string& s) {
    u64(s.size());
    bytes(s.data(), s.size());
  }
  void u64(uint64_t v) { bytes(&v, sizeof v); }
  // Hashes the file's contents; returns false when it cannot be opened.
  bool file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return false;
    std::vector<char> buf(1 << 20);
    while (f) {
      f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      bytes(buf.data(), static_cast<size_t>(f.gcount()));
    }
    return true;
  }
};

// Fixed probe images (smooth patterns in [-1, 1]) whose classifier features fingerprint the computation.
std::vector<float> probe_images(int64_t count) {
  constexpr int64_t P = models::MnistClassifier::kImageSize * models::MnistClassifier::kImageSize;
  std::vector<float> img(static_cast<size_t>(count * P));
  for (int64_t k = 0; k < count; ++k)
    for (int64_t p = 0; p < P; ++p) {
      const double y = static_cast<double>(p / 28) / 27.0, x = static_cast<double>(p % 28) / 27.0;
      img[static_cast<size_t>(k * P + p)] =
          static_cast<float>(std::sin(3.0 * (k + 1) * x + 2.0 * y * y) * std::cos(2.5 * (k + 2) * y - x));
    }
  return img;
}

template <typename T>
void put(std::string& out, const T& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

template <typename T>
bool get(const std::string& in, size_t& pos, T& v) {
  if (in.size() - pos < sizeof v) return false;
  std::memcpy(&v, in.data() + pos, sizeof v);
  pos += sizeof v;
  return true;
}

bool get_doubles(const std::string& in, size_t& pos, std::vector<double>& v, uint64_t count) {
  if (count > (in.size() - pos) / sizeof(double)) return false;
  v.resize(static_cast<size_t>(count));
  std::memcpy(v.data(), in.data() + pos, count * sizeof(double));
  pos += count * sizeof(double);
  return true;
}

}  // namespace

std::string default_eval_cache_dir() {
  if (const char* e = std::getenv("FM_EVAL_CACHE"); e && *e) return e;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/engine-fm_eval";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/engine-fm_eval";
  return "";
}

std::string reference_key(const models::MnistClassifier& model, const std::string& classifier_path,
                          const std::string& data_dir, int64_t n, uint64_t seed) {
  Fnv h;
  h.str("fm_eval reference v1");
  if (!h.file(classifier_path)) throw std::runtime_error("cannot read classifier '" + classifier_path + "'");
  for (const char* base : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                           "t10k-labels-idx1-ubyte"})
    for (const std::string suffix : {"", ".gz"}) {
      const std::string name = std::string(base) + suffix;
      h.str(name);
      h.u64(h.file(data_dir + "/" + name) ? 1 : 0);
    }
  h.u64(static_cast<uint64_t>(n));
  h.u64(seed);
  const std::vector<float> probe = probe_images(4);
  const Classified c = classify(model, probe.data(), 4);
  h.bytes(c.features.v.data(), c.features.v.size() * sizeof(double));
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h.h));
  return hex;
}

std::string reference_cache_path(const std::string& dir, const std::string& key) {
  return dir + "/reference-" + key + ".bin";
}

std::optional<EvalReference> load_cached_reference(const std::string& dir, const std::string& key,
                                                   int64_t n) {
  std::ifstream f(reference_cache_path(dir, key), std::ios::binary);
  if (!f) return std::nullopt;
  const std::string in((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  size_t pos = 0;
  char magic[8];
  if (in.size() < sizeof magic || std::memcmp(in.data(), kMagic, sizeof magic) != 0) return std::nullopt;
  pos = sizeof magic;
  uint64_t klen = 0;
  if (!get(in, pos, klen) || klen != key.size() || in.size() - pos < klen) return std::nullopt;
  if (in.compare(pos, klen, key) != 0) return std::nullopt;
  pos += klen;
  EvalReference r;
  int64_t d = 0, rows = 0;
  if (!get(in, pos, r.n) || r.n != n || !get(in, pos, r.test_accuracy) || !get(in, pos, r.fd_floor) ||
      !get(in, pos, d) || d <= 0 || d > 4096 || !get(in, pos, rows) || rows != n)
    return std::nullopt;
  r.test.cov = Matrix(d, d);
  r.test_subset = Matrix(rows, d);
  if (!get_doubles(in, pos, r.test.mu, static_cast<uint64_t>(d)) ||
      !get_doubles(in, pos, r.test.cov.v, static_cast<uint64_t>(d * d)) ||
      !get_doubles(in, pos, r.test_subset.v, static_cast<uint64_t>(rows * d)) || pos != in.size())
    return std::nullopt;
  return r;
}

bool save_cached_reference(const std::string& dir, const std::string& key, const EvalReference& ref) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return false;
  std::string out(kMagic, sizeof kMagic);
  put(out, static_cast<uint64_t>(key.size()));
  out += key;
  const int64_t d = static_cast<int64_t>(ref.test.mu.size());
  put(out, ref.n);
  put(out, ref.test_accuracy);
  put(out, ref.fd_floor);
  put(out, d);
  put(out, ref.test_subset.rows);
  out.append(reinterpret_cast<const char*>(ref.test.mu.data()), ref.test.mu.size() * sizeof(double));
  out.append(reinterpret_cast<const char*>(ref.test.cov.v.data()), ref.test.cov.v.size() * sizeof(double));
  out.append(reinterpret_cast<const char*>(ref.test_subset.v.data()),
             ref.test_subset.v.size() * sizeof(double));
  const std::string path = reference_cache_path(dir, key);
  const std::string tmp = path + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return false;
    f.write(out.data(), static_cast<std::streamsize>(out.size()));
    f.close();
    if (!f) {
      fs::remove(tmp, ec);
      return false;
    }
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return false;
  }
  return true;
}

}  // namespace engine::app
