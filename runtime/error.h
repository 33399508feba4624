// engine::Error, the root of every exception the engine throws (tensor ops, kernels, the CUDA runtime,
// safetensors, configs), and ENGINE_CHECK. The bottom layer: depends on nothing, usable from every layer.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace engine {

// Catch this to handle any engine failure; messages are one line and start with the op or subsystem.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

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
