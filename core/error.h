// Error type (runtime/error.h) and checking helpers. Every error names the op (or subsystem) and, where
// shapes are involved, the shapes: "conv2d: weight (8, 3, 3, 3) expects 3 input channels, got x (2, 4, 8,
// 8)".
#pragma once
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/error.h"  // engine::Error, ENGINE_CHECK

namespace engine {

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  if (s.size() == 1) os << ",";
  os << ")";
  return os.str();
}

}  // namespace engine
