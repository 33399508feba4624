// SplitMix64, the 64-bit mixer the apps derive independent RNG seeds with (the training and sampling
// streams in train_loop.cpp, the per-epoch shuffle in mnist.cpp).
#pragma once
#include <cstdint>

namespace engine::app {

// One SplitMix64 output for state x (Steele, Lea & Flood 2014): x plus the golden-ratio increment, then
// the variant-13 finaliser. A bijection on uint64; nearby inputs give unrelated outputs.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace engine::app
