// The pieces of a kernel-benchmark table shared by cpu_kernels_bench and cuda_kernels_bench: one row per
// kernel and shape, its floor from the measured peaks, achieved throughput, and the error against the
// baseline; one command-line parser (parse_options) and one table printer (Printer) for both.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "kernels/numeric_compare.h"

namespace bench {

// Measured machine peaks.
struct Peaks {
  double flops = 0;  // FLOP/s
  double bw = 0;     // bytes/s
};

struct Row {
  Row(std::string k, std::string s) : kernel(std::move(k)), shape(std::move(s)) {}
  std::string kernel, shape;
  double ours_ms = NAN, base_ms = NAN;
  double flops = 0, bytes = 0;  // flops > 0: compute-bound row (GFLOP/s), else bytes (GB/s)
  double err = NAN;             // max relative error against the baseline, when checked
  std::string note;
};

// Lower bound on the time: max(FLOPs / peak FLOP/s, bytes / peak bandwidth), in ms.
inline double floor_ms(const Row& r, const Peaks& p) {
  return 1e3 * std::max(r.flops / p.flops, r.bytes / p.bw);
}

// "123.4 GFLOP/s" or "56.7 GB/s" for our time, with `decimals` digits.
inline std::string achieved(const Row& r, int decimals) {
  char buf[32];
  if (r.flops > 0)
    std::snprintf(buf, sizeof buf, "%.*f GFLOP/s", decimals, r.flops / (r.ours_ms * 1e-3) * 1e-9);
  else
    std::snprintf(buf, sizeof buf, "%.*f GB/s", decimals, r.bytes / (r.ours_ms * 1e-3) * 1e-9);
  return buf;
}

// max |a - b| / max |b| (infinity on NaN): kernels/numeric_compare.h.
using kern::max_rel_err;

// --filter: an empty filter selects every row.
inline bool selected(const std::string& name, const std::string& filter) {
  return filter.empty() || name.find(filter) != std::string::npos;
}

// ---- command line

// The options of both kernel benchmarks. A benchmark sets its defaults before parse_options.
struct Options {
  int64_t batch = 16;
  int runs = 5, warmup = 1, threads = 0;
  bool quick = false, check = false, cudnn_tf32 = false;
  std::string filter;
};
// Flags a benchmark accepts besides --runs N, --filter SUBSTR, --quick and --help (--benchmark_min_time=...
// implies --quick, other --benchmark_* flags are ignored: scripts/gpu_check.sh passes them).
enum OptionFlag : unsigned {
  kOptBatch = 1u,      // --batch N
  kOptThreads = 2u,    // --threads N
  kOptWarmup = 4u,     // --warmup N
  kOptCheck = 8u,      // --check
  kOptCudnnTf32 = 16u  // --cudnn-tf32
};

// Parses argv[1..] into opt. Returns -1 to go on, or the exit code: 0 after --help (usage on stdout),
// 2 after an unknown flag, a missing or non-numeric value (a one-line error and the usage on stderr).
inline int parse_options(int argc, char** argv, unsigned flags, const char* usage, Options& opt) {
  auto fail = [&](const std::string& why) {
    std::fprintf(stderr, "%s: %s\n", argv[0], why.c_str());
    std::fprintf(stderr, usage, argv[0]);
    return 2;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto number = [&](long long lo, long long* out) {
      if (i + 1 >= argc) return false;
      char* end = nullptr;
      const long long v = std::strtoll(argv[i + 1], &end, 10);
      if (end == argv[i + 1] || *end != '\0' || v < lo || v > (1ll << 30)) return false;
      *out = v, ++i;
      return true;
    };
    long long v = 0;
    if (a == "--help" || a == "-h") {
      std::printf(usage, argv[0]);
      return 0;
    } else if (a == "--runs" || (a == "--batch" && (flags & kOptBatch)) ||
               (a == "--threads" && (flags & kOptThreads)) || (a == "--warmup" && (flags & kOptWarmup))) {
      if (!number(a == "--runs" || a == "--batch" ? 1 : 0, &v))
        return fail("bad or missing value after " + a);
      if (a == "--runs") opt.runs = static_cast<int>(v);
      if (a == "--batch") opt.batch = v;
      if (a == "--threads") opt.threads = static_cast<int>(v);
      if (a == "--warmup") opt.warmup = static_cast<int>(v);
    } else if (a == "--filter") {
      if (i + 1 >= argc) return fail("missing value after --filter");
      opt.filter = argv[++i];
    } else if (a == "--quick" || a.rfind("--benchmark_min_time", 0) == 0) {
      opt.quick = true;
    } else if (a == "--check" && (flags & kOptCheck)) {
      opt.check = true;
    } else if (a == "--cudnn-tf32" && (flags & kOptCudnnTf32)) {
      opt.cudnn_tf32 = true;
    } else if (a.rfind("--benchmark_", 0) != 0) {
      return fail("unknown option " + a);
    }
  }
  return -1;
}

// ---- the table

// Prints the header and the rows of a kernel table: ours, baseline, ours/baseline, achieved throughput,
// floor, %floor and the relative error. With a tolerance (check mode) each error is judged ok/FAIL and
// counted; checked() == 0 after a check run means nothing was compared.
class Printer {
 public:
  // ms_decimals: digits of the times; rate_decimals: of the achieved GFLOP/s or GB/s; tol: NaN = the
  // error is shown but not judged.
  Printer(Peaks peaks, int ms_decimals, int rate_decimals, double tol = NAN)
      : peaks_(peaks), ms_decimals_(ms_decimals), rate_decimals_(rate_decimals), tol_(tol) {}

  void header() const {
    std::printf("%-26s %-30s %9s %9s %7s %13s %9s %7s %9s%s  %s\n", "kernel", "shape", "ours ms", "base ms",
                "ours/b", "achieved", "floor ms", "%floor", "rel err", std::isnan(tol_) ? "" : "     ",
                "baseline");
  }

  void row(const Row& r) {
    const double fl = floor_ms(r, peaks_);
    char base[32] = "-", ratio[32] = "-", err[32] = "-", verdict[8] = "";
    if (!std::isnan(r.base_ms)) {
      std::snprintf(base, sizeof base, "%.*f", ms_decimals_, r.base_ms);
      std::snprintf(ratio, sizeof ratio, "%.2f", r.ours_ms / r.base_ms);
    }
    if (!std::isnan(r.err)) std::snprintf(err, sizeof err, "%.1e", r.err);
    if (!std::isnan(tol_)) {
      std::snprintf(verdict, sizeof verdict, "     ");
      if (!std::isnan(r.err)) {
        const bool ok = r.err <= tol_;
        ++checked_;
        failed_ = failed_ || !ok;
        std::snprintf(verdict, sizeof verdict, " %-4s", ok ? "ok" : "FAIL");
      }
    }
    std::printf("%-26s %-30s %9.*f %9s %7s %13s %9.*f %6.0f%% %9s%s  %s\n", r.kernel.c_str(), r.shape.c_str(),
                ms_decimals_, r.ours_ms, base, ratio, achieved(r, rate_decimals_).c_str(), ms_decimals_, fl,
                100.0 * fl / r.ours_ms, err, verdict, r.note.c_str());
    std::fflush(stdout);
  }

  int64_t checked() const { return checked_; }
  bool failed() const { return failed_; }

 private:
  Peaks peaks_;
  int ms_decimals_, rate_decimals_;
  double tol_;
  int64_t checked_ = 0;
  bool failed_ = false;
};

}  // namespace bench
