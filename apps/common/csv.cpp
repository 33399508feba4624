// CsvWriter implementation (see csv.h).
#include "apps/common/csv.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace engine::app {
namespace {

std::string escape(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string join(const std::vector<std::string>& fields) {
  std::string line;
  for (size_t i = 0; i < fields.size(); ++i) {
    if (i) line += ',';
    line += escape(fields[i]);
  }
  return line;
}

template <typename F>
std::string shortest(F v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

}  // namespace

std::string CsvWriter::to_field(double v) { return shortest(v); }
std::string CsvWriter::to_field(float v) { return shortest(v); }

CsvWriter::CsvWriter(const std::string& path, const std::vector<std::string>& header, bool append)
    : path_(path), ncols_(header.size()) {
  if (header.empty()) throw std::runtime_error("CsvWriter '" + path + "': empty header");
  const std::string header_line = join(header);
  bool write_header = true;
  if (append) {
    std::ifstream in(path);
    std::string first;
    if (in && std::getline(in, first)) {
      if (!first.empty() && first.back() == '\r') first.pop_back();
      if (first != header_line)
        throw std::runtime_error("CsvWriter '" + path + "': existing header '" + first + "' differs from '" +
                                 header_line + "'");
      write_header = false;
    }
  }
  f_ = std::fopen(path.c_str(), append ? "ab" : "wb");
  if (!f_) throw std::runtime_error("CsvWriter: cannot open '" + path + "': " + std::strerror(errno));
  if (write_header) {
    std::fprintf(f_, "%s\n", header_line.c_str());
    std::fflush(f_);
  }
}

CsvWriter::~CsvWriter() {
  if (f_) std::fclose(f_);
}

void CsvWriter::row(const std::vector<std::string>& fields) {
  if (fields.size() != ncols_)
    throw std::runtime_error("CsvWriter '" + path_ + "': row has " + std::to_string(fields.size()) +
                             " fields, header has " + std::to_string(ncols_));
  const std::string line = join(fields) + "\n";
  if (std::fwrite(line.data(), 1, line.size(), f_) != line.size() || std::fflush(f_) != 0)
    throw std::runtime_error("CsvWriter: write to '" + path_ + "' failed: " + std::strerror(errno));
}

}  // namespace engine::app
