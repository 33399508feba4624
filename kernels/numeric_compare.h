// Error measures between a result and its reference, written once for the tests and the benchmarks
// (header-only; plain arrays, no Tensor). Both are relative to the reference b.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

namespace kern {

// ‖a − b‖₂ / max(‖b‖₂, 1e-30) over n elements, accumulated in double; NaN if a or b holds a
// non-finite value (so a NaN never passes a `<=` check).
template <typename A, typename B>
double rel_err_l2(const A* a, const B* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double x = static_cast<double>(a[i]), y = static_cast<double>(b[i]);
    if (!std::isfinite(x) || !std::isfinite(y)) return std::numeric_limits<double>::quiet_NaN();
    num += (x - y) * (x - y);
    den += y * y;
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}
// Containers (std::vector): +inf when the sizes differ.
template <typename VA, typename VB>
double rel_err_l2(const VA& a, const VB& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  return rel_err_l2(a.data(), b.data(), a.size());
}

// max_i |a_i − b_i| / max(max_i |b_i|, 1e-30) over n elements; +inf if a difference is NaN.
template <typename A, typename B>
double max_rel_err(const A* a, const B* b, size_t n) {
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    if (std::isnan(d)) return std::numeric_limits<double>::infinity();
    num = std::max(num, d);
    den = std::max(den, std::fabs(static_cast<double>(b[i])));
  }
  return num / den;
}
template <typename VA, typename VB>
double max_rel_err(const VA& a, const VB& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  return max_rel_err(a.data(), b.data(), a.size());
}

}  // namespace kern
