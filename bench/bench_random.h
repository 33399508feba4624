// Reproducible benchmark inputs: n floats drawn from N(0, 1) by std::mt19937(seed), shared by the conv,
// Winograd-transform and bf16-GEMM benchmarks so that their rows use the same data for the same seed.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace bench {

// n standard-normal floats from std::mt19937(seed) and std::normal_distribution<float>.
inline std::vector<float> random_vec(int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace bench
