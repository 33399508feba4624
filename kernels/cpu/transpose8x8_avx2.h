// Internal: an in-register transpose of an 8 x 8 float block with AVX2 (unpack, shuffle, 128-bit lane
// permute: 24 shuffles), shared by gemm.cpp's transposing pack and the Winograd weight gradient's
// tile-major stores. Include only from code compiled with AVX2 enabled. Internal linkage (anonymous
// namespace): no copy compiled for one ISA can be picked by the linker for another caller.
#pragma once
#include <immintrin.h>

namespace kern::cpu::detail {
namespace {

// r[i] holds row i on entry, column i on exit.
inline void transpose8x8(__m256 (&r)[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int h = 0; h < 8; h += 4) {
    u[h + 0] = _mm256_shuffle_ps(t[h + 0], t[h + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[h + 1] = _mm256_shuffle_ps(t[h + 0], t[h + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

}  // namespace
}  // namespace kern::cpu::detail
