// Error type and checking helpers. Every error names the op (or subsystem) and, where
// shapes are involved, the shapes: "conv2d: weight (8, 3, 3, 3) expects 3 input channels, got x (2, 4, 8,
// 8)".
#pragma once
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace engine {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  if (s.size() == 1) os << ",";
  os << ")";
  return os.str();
}

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

// ENGINE_CHECK(cond, "op", "message parts", ...): throws engine::Error("op: message").
#define ENGINE_CHECK(cond, op, ...)                                                      \
  do {                                                                                   \
    if (!(cond)) throw ::engine::Error(::engine::detail::concat(op, ": ", __VA_ARGS__)); \
  } while (0)

}  // namespace engine
