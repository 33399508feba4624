// The pieces of a kernel-benchmark table shared by cpu_kernels_bench and cuda_kernels_bench: one row per
// kernel and shape, its floor from the measured peaks, achieved throughput, and the error against the
// baseline.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

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

// max |a - b| / max |b| (the absolute error when b is all zero; infinity on NaN).
inline double max_rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::fabs(double(a[i]) - double(b[i])));
    den = std::max(den, std::fabs(double(b[i])));
  }
  if (num != num) return INFINITY;
  return den > 0 ? num / den : num;
}

// --filter: an empty filter selects every row.
inline bool selected(const std::string& name, const std::string& filter) {
  return filter.empty() || name.find(filter) != std::string::npos;
}

}  // namespace bench
