// Minimal TensorBoard event-file writer (scalars only): TFRecord framing with masked CRC32C around
// hand-encoded tensorflow.Event protobufs, so no protobuf/TensorFlow dependency is needed.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace engine::app {

// CRC-32C (Castagnoli), software table implementation.
uint32_t crc32c(const void* data, size_t n);
// TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t masked_crc32c(const void* data, size_t n);

class EventWriter {
 public:
  // Creates `logdir` if needed and opens events.out.tfevents.<unix time>.<hostname> in it; writes the
  // file_version record. Throws std::runtime_error on failure.
  explicit EventWriter(const std::string& logdir);
  ~EventWriter();
  EventWriter(const EventWriter&) = delete;
  EventWriter& operator=(const EventWriter&) = delete;

  void add_scalar(const std::string& tag, float value, int64_t step);
  void flush();
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& payload);

  std::string path_;
  std::FILE* f_ = nullptr;
};

}  // namespace engine::app
