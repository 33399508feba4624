// CPU counter-based RNG: fills buffers from the Philox4x32-10 stream defined in kernels/philox.h.
#include <type_traits>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/philox.h"

namespace kern::cpu {

template <typename T>
void philox_uniform(int64_t n, uint64_t seed, uint64_t offset, T* y) {
#pragma omp parallel for schedule(static) if (n > 16384)
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<T>(philox_uniform01(seed, offset + uint64_t(i)));
}

template <typename T>
void philox_normal(int64_t n, uint64_t seed, uint64_t offset, T* y) {
#pragma omp parallel for schedule(static) if (n > 8192)
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (std::is_same_v<T, float>)
      y[i] = philox_normal_f(seed, offset + uint64_t(i));
    else
      y[i] = philox_normal_d(seed, offset + uint64_t(i));
  }
}

KERN_INSTANTIATE_CPU(philox_uniform)
KERN_INSTANTIATE_CPU(philox_normal)

}  // namespace kern::cpu
