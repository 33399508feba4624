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
#include <iterator>
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

struct Entry {
  std::string name;
  StDtype dtype = StDtype::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

// SAX handler for the header that accepts exactly the safetensors schema and stores only what it needs
// (names, shapes, offsets, metadata strings), so memory stays proportional to the header text and
// nesting is at most 3 levels (top object > tensor entry > shape / data_offsets array). Anything else
// throws Error (prefixed by the caller) as soon as it is seen, before any further input is processed:
//   - the top-level value must be an object; tensor names must be non-empty and unique;
//   - "__metadata__" must be an object of unique string keys with string values;
//   - a tensor entry must be an object with exactly the fields dtype (string), shape (array of
//     non-negative integers) and data_offsets (array of two non-negative integers), each once.
class HeaderHandler : public nlohmann::json_sax<json> {
 public:
  std::map<std::string, std::string> metadata;
  std::vector<Entry> entries;
  bool done = false;

  bool null() override { return scalar("null"); }
  bool boolean(bool b) override { return scalar(b ? "true" : "false"); }
  bool number_integer(number_integer_t v) override {
    if (v >= 0) return number(static_cast<uint64_t>(v), std::to_string(v));
    return scalar(std::to_string(v));
  }
  bool number_unsigned(number_unsigned_t v) override { return number(v, std::to_string(v)); }
  bool number_float(number_float_t, const string_t& text) override { return scalar(text); }
  bool string(string_t& v) override {
    if (state_ == State::Meta) {
      metadata[meta_key_] = std::move(v);
      return true;
    }
    if (state_ == State::Entry && field_ == Field::Dtype) {
      if (!parse_dtype(v, &cur_.dtype)) throw Error(tn() + "unknown dtype '" + shorten(v) + "'");
      return true;
    }
    return scalar("\"" + shorten(v) + "\"");
  }
  bool binary(binary_t&) override { return scalar("binary"); }
  bool start_object(std::size_t) override {
    switch (state_) {
      case State::Start:
        state_ = State::Top;
        return true;
      case State::Top:
        if (key_ == "__metadata__") {
          state_ = State::Meta;
        } else {
          cur_ = Entry{};
          cur_.name = key_;
          seen_fields_ = 0;
          state_ = State::Entry;
        }
        return true;
      default:
        return scalar("an object");
    }
  }
  bool end_object() override {
    switch (state_) {
      case State::Top:
        state_ = State::Done;
        done = true;
        return true;
      case State::Meta:
        meta_keys_.clear();
        state_ = State::Top;
        return true;
      case State::Entry:
        finish_entry();
        state_ = State::Top;
        return true;
      default:
        throw Error("internal: unexpected end of object");
    }
  }
  bool start_array(std::size_t) override {
    if (state_ == State::Entry && field_ == Field::Shape) {
      state_ = State::Shape;
      return true;
    }
    if (state_ == State::Entry && field_ == Field::Offsets) {
      state_ = State::Offsets;
      n_offsets_ = 0;
      return true;
    }
    return scalar("an array");
  }
  bool end_array() override {
    if (state_ == State::Offsets && n_offsets_ != 2)
      throw Error(tn() + "data_offsets is not an array of 2 integers");
    state_ = State::Entry;
    return true;
  }
  bool key(string_t& k) override {
    switch (state_) {
      case State::Top:
        if (k.empty()) throw Error("empty tensor name");
        if (!names_.insert(k).second) throw Error("duplicate tensor name '" + shorten(k) + "' in header");
        key_ = k;
        return true;
      case State::Meta:
        if (!meta_keys_.insert(k).second) throw Error("duplicate __metadata__ key '" + shorten(k) + "'");
        meta_key_ = k;
        return true;
      case State::Entry: {
        if (k == "dtype")
          field_ = Field::Dtype;
        else if (k == "shape")
          field_ = Field::Shape;
        else if (k == "data_offsets")
          field_ = Field::Offsets;
        else
          throw Error(tn() + "unknown field '" + shorten(k) + "' (expected dtype, shape, data_offsets)");
        const unsigned bit = 1u << static_cast<int>(field_);
        if (seen_fields_ & bit) throw Error(tn() + "duplicate field '" + k + "'");
        seen_fields_ |= bit;
        return true;
      }
      default:
        throw Error("internal: unexpected key");
    }
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    std::string msg = e.what();
    if (msg.size() > 200) msg = msg.substr(0, 200) + "...";
    throw Error("header is not valid JSON: " + msg);
  }

 private:
  enum class State { Start, Top, Meta, Entry, Shape, Offsets, Done };
  enum class Field { Dtype, Shape, Offsets };

  static std::string shorten(const std::string& s) { return s.size() > 80 ? s.substr(0, 80) + "..." : s; }
  std::string tn() const { return "tensor '" + shorten(cur_.name) + "': "; }

  // A non-negative integer value.
  bool number(uint64_t v, const std::string& text) {
    if (state_ == State::Shape) {
      if (cur_.shape.size() >= kMaxRank)
        throw Error(tn() + "absurd shape rank (over " + std::to_string(kMaxRank) + " dimensions)");
      if (v > kMaxDim) throw Error(tn() + "absurd shape dimension " + text);
      cur_.shape.push_back(static_cast<int64_t>(v));
      return true;
    }
    if (state_ == State::Offsets) {
      if (n_offsets_ >= 2) throw Error(tn() + "data_offsets is not an array of 2 integers");
      (n_offsets_++ == 0 ? cur_.begin : cur_.end) = v;
      return true;
    }
    return scalar(text);
  }

  // Any value the schema does not allow at this point.
  [[noreturn]] bool scalar(const std::string& text) {
    switch (state_) {
      case State::Start:
        throw Error("header is not a JSON object");
      case State::Top:
        if (key_ == "__metadata__") throw Error("__metadata__ is not a JSON object");
        throw Error("tensor '" + shorten(key_) + "': entry is not a JSON object");
      case State::Meta:
        throw Error("__metadata__ value for '" + shorten(meta_key_) + "' is not a string");
      case State::Entry:
        if (field_ == Field::Dtype) throw Error(tn() + "dtype is not a string");
        if (field_ == Field::Shape) throw Error(tn() + "shape is not an array");
        throw Error(tn() + "data_offsets is not an array of 2 integers");
      case State::Shape:
        if (text == "an array" || text == "an object")
          throw Error(tn() + "shape contains " + text + " (dimensions must be non-negative integers)");
        throw Error(tn() + "shape has a negative or non-integer dimension " + shorten(text));
      case State::Offsets:
        throw Error(tn() + "data_offsets must be non-negative integers, got " + shorten(text));
      default:
        throw Error("unexpected JSON value " + shorten(text));
    }
  }

  void finish_entry() {
    if (!(seen_fields_ & (1u << static_cast<int>(Field::Dtype)))) throw Error(tn() + "missing dtype");
    if (!(seen_fields_ & (1u << static_cast<int>(Field::Shape)))) throw Error(tn() + "missing shape");
    if (!(seen_fields_ & (1u << static_cast<int>(Field::Offsets))))
      throw Error(tn() + "missing data_offsets");
    entries.push_back(std::move(cur_));
  }

  State state_ = State::Start;
  Field field_ = Field::Dtype;
  unsigned seen_fields_ = 0;
  size_t n_offsets_ = 0;
  std::string key_, meta_key_;
  std::set<std::string> names_, meta_keys_;
  Entry cur_;
};

}  // namespace

namespace {
// The safetensors dtype table: one row per StDtype, in enumerator order.
struct StDtypeRow {
  StDtype dtype;
  const char* name;
  size_t size;
};
constexpr StDtypeRow kStDtypes[] = {
    {StDtype::F32, "F32", 4}, {StDtype::F64, "F64", 8},   {StDtype::I64, "I64", 8}, {StDtype::U8, "U8", 1},
    {StDtype::F16, "F16", 2}, {StDtype::BF16, "BF16", 2}, {StDtype::I32, "I32", 4}};
constexpr bool st_table_in_enum_order() {
  for (size_t i = 0; i < std::size(kStDtypes); ++i)
    if (static_cast<size_t>(kStDtypes[i].dtype) != i) return false;
  return true;
}
static_assert(st_table_in_enum_order(), "kStDtypes rows must follow the StDtype enumerators");

const StDtypeRow& st_row(StDtype dt) {
  const auto i = static_cast<size_t>(dt);
  if (i >= std::size(kStDtypes))
    throw Error("safetensors: invalid StDtype value " + std::to_string(static_cast<int>(dt)));
  return kStDtypes[i];
}
}  // namespace

size_t dtype_size(StDtype dt) { return st_row(dt).size; }

const char* dtype_name(StDtype dt) { return st_row(dt).name; }

bool parse_dtype(const std::string& name, StDtype* out) {
  for (const StDtypeRow& r : kStDtypes) {
    if (name == r.name) {
      *out = r.dtype;
      return true;
    }
  }
  return false;
}

int64_t StTensor::numel() const {
  // Zero if any dimension is zero (checked first, so [0, 2^48, 2^48] cannot overflow either).
  for (int64_t d : shape) {
    if (d < 0) throw Error("safetensors: tensor '" + name + "' has a negative dimension");
    if (d == 0) return 0;
  }
  int64_t n = 1;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(n, d, &n))
      throw Error("safetensors: tensor '" + name + "': element count of its shape overflows int64");
  return n;
}

const StTensor* StFile::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

// Format decisions, checked against the reference parser (huggingface/safetensors, tensor.rs):
//  - header length over kMaxHeaderBytes (100 MB): rejected, like the reference;
//  - the header must start with '{' (the reference's InvalidHeaderStart); padding after the JSON object
//    may be JSON whitespace (writers pad with spaces to a multiple of 8), anything else, NUL bytes
//    included, is rejected (serde_json's "trailing characters", which the reference rejects too);
//  - tensor data must tile the data buffer exactly: sorted by offset, each tensor starts where the
//    previous one ended (the first at 0) and the last ends at the end of the file. Gaps, overlaps and
//    trailing bytes are rejected (the reference's InvalidOffset and MetadataIncompleteBuffer); zero-size
//    tensors must sit at the current position too;
//  - duplicate tensor names, duplicate fields within one entry (the reference: serde's duplicate field)
//    and duplicate __metadata__ keys are rejected;
//  - stricter than the reference: an empty tensor name and unknown fields in a tensor entry are
//    rejected (our writer never produces them and no state dict has such a key), and a shape whose
//    non-zero dimensions multiply past int64 is rejected even when another dimension is 0.
// Memory: the header is parsed with a SAX handler that keeps only names, shapes, offsets and metadata
// strings (no JSON DOM), so a hostile header costs a small multiple of its own size and no recursion.
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
  if (n > 0 && (*hbegin == ' ' || *hbegin == '\t' || *hbegin == '\n' || *hbegin == '\r'))
    throw fail("header does not start with '{'");

  // nlohmann's lexer treats a NUL byte as the end of input, so NUL padding (or NUL followed by anything)
  // would pass; no valid JSON text contains one (control characters in strings must be escaped).
  if (n > 0 && std::memchr(hbegin, 0, n) != nullptr)
    throw fail("header contains a NUL byte (only whitespace may pad it)");

  HeaderHandler h;
  try {
    json::sax_parse(hbegin, hend, &h);
  } catch (const Error& e) {
    throw fail(e.what());
  } catch (const json::exception& e) {  // not expected: parse errors go through HeaderHandler
    throw fail(std::string("header is not valid JSON: ") + e.what());
  }
  if (!h.done) throw fail("header is not valid JSON");

  const uint64_t data_size = size - 8 - n;
  const uint8_t* buffer = data + 8 + n;
  StFile out;
  out.metadata = std::move(h.metadata);
  std::vector<Entry>& entries = h.entries;
  for (const Entry& e : entries) {
    const std::string tn = "tensor '" + e.name + "': ";
    if (e.end < e.begin)
      throw fail(tn + "data_offsets end " + std::to_string(e.end) + " < begin " + std::to_string(e.begin));
    if (e.end > data_size)
      throw fail(tn + "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                 "] outside the data buffer of " + std::to_string(data_size) + " bytes (truncated?)");
    // Non-zero dimensions must multiply within int64 (strides of a zero-size tensor use them too).
    uint64_t nonzero = 1, numel = 1;
    for (int64_t d : e.shape) {
      if (d != 0 && (!checked_mul(nonzero, static_cast<uint64_t>(d), &nonzero) ||
                     nonzero > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())))
        throw fail(tn + "absurd shape (element count overflows)");
      numel = d == 0 ? 0 : numel * static_cast<uint64_t>(d);  // <= nonzero, cannot overflow
    }
    uint64_t nbytes;
    if (!checked_mul(numel, dtype_size(e.dtype), &nbytes) || nbytes != e.end - e.begin)
      throw fail(tn + "byte size " + std::to_string(e.end - e.begin) +
                 " does not match shape x dtype size (" + std::to_string(numel) + " elements of " +
                 std::to_string(dtype_size(e.dtype)) + " bytes)");
  }

  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  uint64_t pos = 0;
  const Entry* prev = nullptr;
  for (const auto& e : entries) {
    if (e.begin < pos)
      throw fail("tensors '" + prev->name + "' and '" + e.name + "' have overlapping data_offsets");
    if (e.begin > pos)
      throw fail(std::to_string(e.begin - pos) + " unused bytes before tensor '" + e.name +
                 "' (data_offsets must be contiguous)");
    pos = e.end;
    prev = &e;
  }
  if (pos != data_size)
    throw fail(std::to_string(data_size - pos) + " trailing bytes after the last tensor's data");

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
