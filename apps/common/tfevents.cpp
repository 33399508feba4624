// TensorBoard event files: CRC32C, TFRecord framing and the few protobuf fields of Event/Summary we need.
#include "apps/common/tfevents.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace engine::app {
namespace {

std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}

void put_varint(std::string& s, uint64_t v) {
  while (v >= 0x80) {
    s.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  s.push_back(static_cast<char>(v));
}

void put_fixed(std::string& s, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
}

void put_tag(std::string& s, int field, int wire_type) {
  put_varint(s, (static_cast<uint64_t>(field) << 3) | wire_type);
}

void put_bytes(std::string& s, int field, const std::string& bytes) {
  put_tag(s, field, 2);
  put_varint(s, bytes.size());
  s += bytes;
}

double wall_time_now() {
  using namespace std::chrono;
  return duration_cast<duration<double>>(system_clock::now().time_since_epoch()).count();
}

// Event{wall_time = 1 (double), step = 2 (int64)}; the caller appends the oneof field.
std::string event_prefix(int64_t step) {
  std::string ev;
  put_tag(ev, 1, 1);
  double wt = wall_time_now();
  uint64_t bits;
  std::memcpy(&bits, &wt, 8);
  put_fixed(ev, bits, 8);
  if (step != 0) {
    put_tag(ev, 2, 0);
    put_varint(ev, static_cast<uint64_t>(step));  // int64: negative values take 10 bytes, as in protobuf
  }
  return ev;
}

}  // namespace

uint32_t crc32c(const void* data, size_t n) {
  static const std::array<uint32_t, 256> table = make_crc_table();
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

uint32_t masked_crc32c(const void* data, size_t n) {
  uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

EventWriter::EventWriter(const std::string& logdir) {
  std::error_code ec;
  std::filesystem::create_directories(logdir, ec);
  if (ec)
    throw std::runtime_error("EventWriter: cannot create log directory '" + logdir + "': " + ec.message());
  char host[256] = {0};
  if (::gethostname(host, sizeof(host) - 1) != 0 || host[0] == 0) std::strcpy(host, "localhost");
  const auto secs = static_cast<long long>(wall_time_now());
  path_ =
      (std::filesystem::path(logdir) / ("events.out.tfevents." + std::to_string(secs) + "." + host)).string();
  f_ = std::fopen(path_.c_str(), "ab");
  if (!f_) throw std::runtime_error("EventWriter: cannot open '" + path_ + "': " + std::strerror(errno));
  std::string ev = event_prefix(0);
  put_bytes(ev, 3, "brain.Event:2");  // file_version
  write_record(ev);
  flush();
}

EventWriter::~EventWriter() {
  if (f_) std::fclose(f_);
}

void EventWriter::write_record(const std::string& payload) {
  std::string rec;
  put_fixed(rec, payload.size(), 8);
  const uint32_t len_crc = masked_crc32c(rec.data(), 8);
  put_fixed(rec, len_crc, 4);
  rec += payload;
  put_fixed(rec, masked_crc32c(payload.data(), payload.size()), 4);
  if (std::fwrite(rec.data(), 1, rec.size(), f_) != rec.size())
    throw std::runtime_error("EventWriter: write to '" + path_ + "' failed: " + std::strerror(errno));
}

void EventWriter::add_scalar(const std::string& tag, float value, int64_t step) {
  std::string val;
  put_bytes(val, 1, tag);  // Value.tag
  put_tag(val, 2, 5);      // Value.simple_value (float)
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  put_fixed(val, bits, 4);
  std::string summary;
  put_bytes(summary, 1, val);  // Summary.value
  std::string ev = event_prefix(step);
  put_bytes(ev, 5, summary);  // Event.summary
  write_record(ev);
}

void EventWriter::flush() {
  if (f_ && std::fflush(f_) != 0)
    throw std::runtime_error("EventWriter: flush of '" + path_ + "' failed: " + std::strerror(errno));
}

}  // namespace engine::app
