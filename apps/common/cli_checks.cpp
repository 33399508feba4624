// Argument checks shared by the apps (see cli_checks.h).
#include "apps/common/cli_checks.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>

namespace engine::app {

namespace fs = std::filesystem;

namespace {

std::string fmt(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// Throws unless `dir` is an existing, writable directory (access(2), so nothing is created).
void require_writable_dir(const std::string& flag, const std::string& path, const fs::path& dir) {
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (!fs::exists(st))
    throw UsageError(flag + " '" + path + "': directory '" + dir.string() + "' does not exist");
  if (!fs::is_directory(st))
    throw UsageError(flag + " '" + path + "': '" + dir.string() + "' is not a directory");
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw UsageError(flag + " '" + path + "': cannot write to directory '" + dir.string() +
                     "': " + std::strerror(errno));
}

}  // namespace

CLI::Validator number_in(double lo, double hi, bool integer, bool hi_open) {
  const std::string range = "[" + fmt(lo) + ", " + fmt(hi) + (hi_open ? ")" : "]");
  const bool bounded = lo > -std::numeric_limits<double>::max() || hi < std::numeric_limits<double>::max();
  const std::string what = std::string(integer ? "a whole number" : "a finite number") +
                           (bounded ? std::string(" in ") + range : std::string());
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        const char* b = s.c_str();
        char* end = nullptr;
        errno = 0;
        const double v = std::strtod(b, &end);
        if (s.empty() || end == b || *end != '\0') return "must be " + what + ", got '" + s + "'";
        if (!std::isfinite(v) || errno == ERANGE) return "must be " + what + ", got '" + s + "'";
        if (integer && v != std::floor(v)) return "must be " + what + ", got '" + s + "'";
        if (v < lo || v > hi || (hi_open && v >= hi)) return "must be " + what + ", got '" + s + "'";
        return std::string();
      },
      what);
}

void check_output_file(const std::string& flag, const std::string& path, const std::string& ext) {
  if (path.empty()) throw UsageError(flag + ": the path is empty");
  const fs::path p(path);
  std::error_code ec;
  if (fs::is_directory(p, ec))
    throw UsageError(flag + " '" + path + "': is a directory; give a file name" +
                     (ext.empty() ? std::string() : " ending in " + ext));
  if (!ext.empty() && lower(p.extension().string()) != ext)
    throw UsageError(flag + " '" + path + "': the file is written as " + ext.substr(1) +
                     "; give a file name ending in " + ext);
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  require_writable_dir(flag, path, dir);
}

void check_output_dir(const std::string& flag, const std::string& path) {
  if (path.empty()) throw UsageError(flag + ": the path is empty");
  fs::path p(path);
  std::error_code ec;
  if (fs::exists(p, ec)) {
    if (!fs::is_directory(p, ec)) throw UsageError(flag + " '" + path + "': exists and is not a directory");
    require_writable_dir(flag, path, p);
    return;
  }
  // Missing: the nearest existing ancestor must be a writable directory (create_directories makes the rest).
  fs::path a = fs::absolute(p, ec).lexically_normal();
  while (a.has_parent_path() && a != a.parent_path() && !fs::exists(a, ec)) a = a.parent_path();
  if (!fs::is_directory(a, ec))
    throw UsageError(flag + " '" + path + "': '" + a.string() + "' is not a directory");
  require_writable_dir(flag, path, a);
}

}  // namespace engine::app
