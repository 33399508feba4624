// safetensors parsing/serialisation with strict validation of untrusted input (see safetensors.h).
#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

namespace engine::st {
namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxDim = uint64_t{1} << 48;
constexpr size_t kMaxRank = 64;

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void write_le64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// Multiplies with overflow detection; returns false on overflow.
bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

std::string errno_text() { return std::strerror(errno); }

// Reads a non-negative JSON integer; returns false if `v` is not one.
bool json_uint(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer()) {
    int64_t s = v.get<int64_t>();
    if (s < 0) return false;
    *out = static_cast<uint64_t>(s);
    return true;
  }
  return false;
}

struct Entry {
  std::string name;
  StDtype dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

}  // namespace

size_t dtype_size(StDtype dt) {
  switch (dt) {
    case StDtype::F32:
      return 4;
    case StDtype::F64:
      return 8;
    case StDtype::I64:
      return 8;
    case StDtype::U8:
      return 1;
    case StDtype::F16:
      return 2;
    case StDtype::BF16:
      return 2;
    case StDtype::I32:
      return 4;
  }
  throw Error("safetensors: invalid StDtype value " + std::to_string(static_cast<int>(dt)));
}

const char* dtype_name(StDtype dt) {
  switch (dt) {
    case StDtype::F32:
      return "F32";
    case StDtype::F64:
      return "F64";
    case StDtype::I64:
      return "I64";
    case StDtype::U8:
      return "U8";
    case StDtype::F16:
      return "F16";
    case StDtype::BF16:
      return "BF16";
    case StDtype::I32:
      return "I32";
  }
  throw Error("safetensors: invalid StDtype value " + std::to_string(static_cast<int>(dt)));
}

bool parse_dtype(const std::string& name, StDtype* out) {
  static const std::pair<const char*, StDtype> kNames[] = {
      {"F32", StDtype::F32}, {"F64", StDtype::F64},   {"I64", StDtype::I64}, {"U8", StDtype::U8},
      {"F16", StDtype::F16}, {"BF16", StDtype::BF16}, {"I32", StDtype::I32}};
  for (const auto& [n, d] : kNames) {
    if (name == n) {
      *out = d;
      return true;
    }
  }
  return false;
}

int64_t StTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const StTensor* StFile::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

StFile parse(const uint8_t* data, size_t size, const std::string& what) {
  auto fail = [&](const std::string& msg) { return Error("safetensors '" + what + "': " + msg); };
  if (size < 8)
    throw fail("file is " + std::to_string(size) +
               " bytes, shorter than the 8-byte header length (truncated?)");
  const uint64_t n = read_le64(data);
  if (n > kMaxHeaderBytes)
    throw fail("header length " + std::to_string(n) +
               " exceeds the 100 MB limit (corrupt file or not a safetensors file)");
  if (n > size - 8)
    throw fail("header length " + std::to_string(n) + " is larger than the file (" + std::to_string(size) +
               " bytes; truncated?)");
  const char* hbegin = reinterpret_cast<const char*>(data + 8);
  const char* hend = hbegin + n;

  // nlohmann keeps only the last of duplicated keys, so top-level keys are checked while parsing.
  std::set<std::string> seen;
  std::string duplicate;
  json header;
  try {
    header = json::parse(hbegin, hend, [&](int depth, json::parse_event_t ev, json& parsed) {
      if (ev == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
        const auto& k = parsed.get_ref<const std::string&>();
        if (!seen.insert(k).second && duplicate.empty()) duplicate = k;
      }
      return true;
    });
  } catch (const json::exception& e) {
    throw fail(std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) throw fail("header is not a JSON object");
  if (!duplicate.empty()) throw fail("duplicate tensor name '" + duplicate + "' in header");

  const uint64_t data_size = size - 8 - n;
  const uint8_t* buffer = data + 8 + n;
  StFile out;
  std::vector<Entry> entries;
  for (const auto& [key, val] : header.items()) {
    if (key == "__metadata__") {
      if (!val.is_object()) throw fail("__metadata__ is not a JSON object");
      for (const auto& [mk, mv] : val.items()) {
        if (!mv.is_string()) throw fail("__metadata__ value for '" + mk + "' is not a string");
        out.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    const std::string tn = "tensor '" + key + "': ";
    if (!val.is_object()) throw fail(tn + "entry is not a JSON object");
    auto dt = val.find("dtype");
    auto sh = val.find("shape");
    auto off = val.find("data_offsets");
    if (dt == val.end()) throw fail(tn + "missing dtype");
    if (sh == val.end()) throw fail(tn + "missing shape");
    if (off == val.end()) throw fail(tn + "missing data_offsets");
    Entry e;
    e.name = key;
    if (!dt->is_string()) throw fail(tn + "dtype is not a string");
    if (!parse_dtype(dt->get<std::string>(), &e.dtype))
      throw fail(tn + "unknown dtype '" + dt->get<std::string>() + "'");
    if (!sh->is_array()) throw fail(tn + "shape is not an array");
    if (sh->size() > kMaxRank) throw fail(tn + "absurd shape rank " + std::to_string(sh->size()));
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      uint64_t v;
      if (!json_uint(d, &v)) throw fail(tn + "shape has a negative or non-integer dimension " + d.dump());
      if (v > kMaxDim) throw fail(tn + "absurd shape dimension " + std::to_string(v));
      if (!checked_mul(numel, v, &numel)) throw fail(tn + "absurd shape (element count overflows)");
      e.shape.push_back(static_cast<int64_t>(v));
    }
    if (!off->is_array() || off->size() != 2) throw fail(tn + "data_offsets is not an array of 2 integers");
    if (!json_uint((*off)[0], &e.begin) || !json_uint((*off)[1], &e.end))
      throw fail(tn + "data_offsets must be non-negative integers");
    if (e.end < e.begin)
      throw fail(tn + "data_offsets end " + std::to_string(e.end) + " < begin " + std::to_string(e.begin));
    if (e.end > data_size)
      throw fail(tn + "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                 "] outside the data buffer of " + std::to_string(data_size) + " bytes (truncated?)");
    uint64_t nbytes;
    if (!checked_mul(numel, dtype_size(e.dtype), &nbytes) || nbytes != e.end - e.begin)
      throw fail(tn + "byte size " + std::to_string(e.end - e.begin) +
                 " does not match shape x dtype size (" + std::to_string(numel) + " elements of " +
                 std::to_string(dtype_size(e.dtype)) + " bytes)");
    entries.push_back(std::move(e));
  }

  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.name < b.name;
  });
  uint64_t max_end = 0;
  const Entry* max_owner = nullptr;
  for (const auto& e : entries) {
    if (e.begin == e.end) continue;  // empty tensors occupy no bytes
    if (max_owner && e.begin < max_end)
      throw fail("tensors '" + max_owner->name + "' and '" + e.name + "' have overlapping data_offsets");
    max_end = e.end;
    max_owner = &e;
  }

  out.tensors.reserve(entries.size());
  for (auto& e : entries) {
    StTensor t;
    t.name = std::move(e.name);
    t.dtype = e.dtype;
    t.shape = std::move(e.shape);
    t.data.assign(buffer + e.begin, buffer + e.end);
    out.tensors.push_back(std::move(t));
  }
  return out;
}

StFile read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("safetensors '" + path + "': cannot open: " + errno_text());
  struct stat sb;
  if (::fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    ::close(fd);
    throw Error("safetensors '" + path + "': not a regular file");
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(sb.st_size));
  size_t got = 0;
  while (got < bytes.size()) {
    ssize_t r = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      std::string err = r < 0 ? errno_text() : "unexpected end of file";
      ::close(fd);
      throw Error("safetensors '" + path + "': read failed: " + err);
    }
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  return parse(bytes.data(), bytes.size(), path);
}

std::vector<uint8_t> serialize(const StFile& f) {
  json header = json::object();
  if (!f.metadata.empty()) {
    json meta = json::object();
    for (const auto& [k, v] : f.metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& t : f.tensors) {
    const std::string tn = "safetensors serialize: tensor '" + t.name + "': ";
    if (t.name.empty() || t.name == "__metadata__") throw Error(tn + "invalid tensor name");
    if (!names.insert(t.name).second) throw Error(tn + "duplicate tensor name");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) throw Error(tn + "negative dimension");
      if (!checked_mul(numel, static_cast<uint64_t>(d), &numel)) throw Error(tn + "element count overflows");
    }
    uint64_t nbytes;
    if (!checked_mul(numel, dtype_size(t.dtype), &nbytes) || nbytes != t.data.size())
      throw Error(tn + "data has " + std::to_string(t.data.size()) + " bytes, shape x dtype needs " +
                  std::to_string(numel) + " x " + std::to_string(dtype_size(t.dtype)));
    header[t.name] = {
        {"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string hs;
  try {
    hs = header.dump();
  } catch (const json::exception& e) {
    throw Error(std::string("safetensors serialize: cannot encode header (names must be UTF-8): ") +
                e.what());
  }
  hs.append((8 - hs.size() % 8) % 8, ' ');
  std::vector<uint8_t> out(8 + hs.size() + offset);
  write_le64(out.data(), hs.size());
  std::memcpy(out.data() + 8, hs.data(), hs.size());
  uint8_t* p = out.data() + 8 + hs.size();
  for (const auto& t : f.tensors) {
    if (!t.data.empty()) std::memcpy(p, t.data.data(), t.data.size());
    p += t.data.size();
  }
  return out;
}

void write_bytes_atomic(const std::string& path, const uint8_t* data, size_t size) {
  namespace fs = std::filesystem;
  static std::atomic<uint64_t> counter{0};
  const fs::path target(path);
  fs::path dir = target.parent_path();
  if (dir.empty()) dir = ".";
  std::string tmp_name = ".";  // appended piecewise: GCC 12 warns (-Wrestrict) on the one-expression form
  tmp_name += target.filename().string();
  tmp_name += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
  const fs::path tmp = dir / tmp_name;
  auto fail = [&](const std::string& what) {
    std::string msg = "cannot write '" + path + "': " + what + ": " + errno_text();
    ::unlink(tmp.c_str());
    return Error(msg);
  };
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw Error("cannot write '" + path + "': cannot create temporary file: " + errno_text());
  size_t done = 0;
  while (done < size) {
    ssize_t w = ::write(fd, data + done, size - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int e = errno;
      ::close(fd);
      errno = e;
      throw fail("write failed");
    }
    done += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) {
    int e = errno;
    ::close(fd);
    errno = e;
    throw fail("fsync failed");
  }
  if (::close(fd) != 0) throw fail("close failed");
  if (::rename(tmp.c_str(), path.c_str()) != 0) throw fail("rename failed");
  // Persist the directory entry too; failure here does not invalidate the already-renamed file.
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const std::string& path, const StFile& f) {
  std::vector<uint8_t> bytes = serialize(f);
  write_bytes_atomic(path, bytes.data(), bytes.size());
}

}  // namespace engine::st
