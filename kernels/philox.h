// Header-only Philox4x32-10 counter-based RNG, shared by the CPU (kernels/cpu/rng.cpp) and CUDA kernels
// so that both produce identical streams.
//
// Definition (all functions are pure functions of (seed, index)):
//   philox_word(seed, index):
//     counter = {lo32(index / 4), hi32(index / 4), 0, 0}, key = {lo32(seed), hi32(seed)};
//     block = Philox4x32-10(counter, key) (Random123 / curand constants); returns block[index % 4].
//   philox_uniform01(seed, index) = (philox_word(seed, index) >> 8) * 2^-24, in [0, 1).
//     The same 24-bit value is used for float and double, so CPU float, CPU double and CUDA agree.
//   philox_normal_f / philox_normal_d(seed, index): Box-Muller on the uniform pair
//     u1 = 1 - philox_uniform01(seed, 2*index) in (0, 1], u2 = philox_uniform01(seed, 2*index + 1),
//     z = sqrt(-2 ln u1) * cos(2 pi u2), evaluated in float (normal_f) or double (normal_d).
// Element i of the stream (seed, offset) is the function above at index = offset + i.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define KERN_HD __host__ __device__
#else
#define KERN_HD
#include <cmath>
#endif

namespace kern {

struct PhiloxBlock {
  uint32_t v[4];
};

KERN_HD inline void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// Philox4x32 with 10 rounds: counter c, key k.
KERN_HD inline PhiloxBlock philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                         uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(kM0, c0, hi0, lo0);
    philox_mulhilo(kM1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
    k0 += kW0;
    k1 += kW1;
  }
  return PhiloxBlock{{c0, c1, c2, c3}};
}

KERN_HD inline uint32_t philox_word(uint64_t seed, uint64_t index) {
  const uint64_t ctr = index >> 2;
  const PhiloxBlock b = philox4x32_10(static_cast<uint32_t>(ctr), static_cast<uint32_t>(ctr >> 32), 0u, 0u,
                                      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return b.v[index & 3u];
}

// Uniform in [0, 1) with 24 random bits.
KERN_HD inline float philox_uniform01(uint64_t seed, uint64_t index) {
  return static_cast<float>(philox_word(seed, index) >> 8) * (1.0f / 16777216.0f);
}

// Standard normal (Box-Muller, cosine branch), computed in float.
KERN_HD inline float philox_normal_f(uint64_t seed, uint64_t index) {
  const float u1 = 1.0f - philox_uniform01(seed, 2 * index);  // (0, 1]
  const float u2 = philox_uniform01(seed, 2 * index + 1);
  return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864769f * u2);
}

// Standard normal (Box-Muller, cosine branch), computed in double from the same uniforms.
KERN_HD inline double philox_normal_d(uint64_t seed, uint64_t index) {
  const double u1 = 1.0 - static_cast<double>(philox_uniform01(seed, 2 * index));  // (0, 1]
  const double u2 = static_cast<double>(philox_uniform01(seed, 2 * index + 1));
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925286766559 * u2);
}

}  // namespace kern
