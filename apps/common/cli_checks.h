// Argument checks shared by the apps, run before any heavy work: numeric flags (finite, in range, as CLI11
// validators), output paths (parent directory exists and is writable, the path is not a directory, the
// extension names the format written) and the MNIST directory. Every failure is a UsageError with a
// one-line message naming the flag; the apps map it to exit status 2.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace engine::app {

// A bad command line (exit status 2).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// CLI11 validator: the value must parse as a finite number in [lo, hi] (with hi_open: [lo, hi)); with
// `integer`, also a whole number. NaN and +-Inf are always rejected, e.g. "--cfg-scale: must be a finite
// number, got 'nan'".
CLI::Validator number_in(double lo, double hi, bool integer = false, bool hi_open = false);
// Shorthands: whole numbers in [lo, hi]; finite reals in [lo, hi].
inline CLI::Validator int_in(double lo, double hi = 9.0e15) { return number_in(lo, hi, true); }
inline CLI::Validator finite(double lo = -std::numeric_limits<double>::max(),
                             double hi = std::numeric_limits<double>::max()) {
  return number_in(lo, hi);
}

// Checks an output file before any compute: `path` must not be empty or an existing directory, must end in
// `ext` (e.g. ".png"; case-insensitive; "" = any), and its parent directory (default ".") must exist, be a
// directory and be writable. Throws UsageError "<flag> '<path>': <reason>" (errno text where the OS gave
// one).
void check_output_file(const std::string& flag, const std::string& path, const std::string& ext);

// Checks an output directory before any compute: an existing `path` must be a writable directory; a
// missing one must be creatable (its nearest existing ancestor is a writable directory). Creates nothing.
// Throws UsageError like check_output_file.
void check_output_dir(const std::string& flag, const std::string& path);

}  // namespace engine::app
