// Tiny CSV log writer (e.g. metrics.csv): header once, one flushed row per call, append mode for resume.
#pragma once

#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

namespace engine::app {

class CsvWriter {
 public:
  // append=false truncates. append=true keeps existing rows and writes the header only if the file is empty
  // or new; an existing header that differs from `header` throws std::runtime_error.
  CsvWriter(const std::string& path, const std::vector<std::string>& header, bool append = false);
  ~CsvWriter();
  CsvWriter(const CsvWriter&) = delete;
  CsvWriter& operator=(const CsvWriter&) = delete;

  // Fields are quoted when needed; the count must equal the header's.
  void row(const std::vector<std::string>& fields);

  // Convenience: numbers are formatted with the shortest round-trip representation.
  template <typename... Ts>
  void write(const Ts&... values) {
    row({to_field(values)...});
  }

  static std::string to_field(const std::string& s) { return s; }
  static std::string to_field(const char* s) { return s; }
  static std::string to_field(double v);
  static std::string to_field(float v);
  template <typename T, typename = std::enable_if_t<std::is_integral_v<T>>>
  static std::string to_field(T v) {
    return std::to_string(v);
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  size_t ncols_;
  std::FILE* f_ = nullptr;
};

}  // namespace engine::app
