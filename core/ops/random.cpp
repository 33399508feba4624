// Random tensors from the counter-based Philox stream: the same (seed, offset) gives the
// same numbers on CPU and CUDA, so runs reproduce across devices.
#include "core/ops.h"
#include "core/ops/dispatch.h"

namespace engine {

Tensor randn(const Shape& shape, Generator& gen, DType dtype, Device device) {
  Tensor y = Tensor::empty(shape, dtype, device);
  const int64_t n = y.numel();
  // Two stream positions per element (Box-Muller pairs), so draws never overlap.
  const uint64_t off = gen.advance(2 * static_cast<uint64_t>(n));
  if (n > 0)
    detail::dispatch_float(
        y, "randn", [&]<typename T, bool Cuda>() { KERN(philox_normal, n, gen.seed(), off, y.data<T>()); });
  return y;
}

Tensor rand(const Shape& shape, Generator& gen, DType dtype, Device device) {
  Tensor y = Tensor::empty(shape, dtype, device);
  const int64_t n = y.numel();
  const uint64_t off = gen.advance(2 * static_cast<uint64_t>(n));
  if (n > 0)
    detail::dispatch_float(
        y, "rand", [&]<typename T, bool Cuda>() { KERN(philox_uniform, n, gen.seed(), off, y.data<T>()); });
  return y;
}

}  // namespace engine
