// The AVX-512 (16 lanes where a tile row fills them, else 8) Winograd tile transforms
// (conv2d_winograd_simd.h). This file alone is compiled with -mavx512f -ffp-contract=off; conv2d_winograd.cpp
// calls it only when cpu_isa() allows.
#include "kernels/cpu/conv2d_winograd_simd.h"
#include "kernels/cpu/conv2d_winograd_simd_impl.h"

namespace kern::cpu::detail {

void winograd_input_avx512(int tile, const Conv2dShape& s, const float* x, int64_t t0, int64_t nt, float* V,
                           int64_t ld) {
  const bool w = use16(s, tile);
  if (tile == 4)
    w ? input_tiles<F43v, 16>(s, x, t0, nt, V, ld) : input_tiles<F43v, 8>(s, x, t0, nt, V, ld);
  else
    w ? input_tiles<F23v, 16>(s, x, t0, nt, V, ld) : input_tiles<F23v, 8>(s, x, t0, nt, V, ld);
}

void winograd_output_avx512(int tile, const Conv2dShape& s, const float* M, int64_t ld, int64_t t0,
                            int64_t nt, const float* b, const WinogradAdd& add, float* y) {
  const bool w = use16(s, tile);
  if (tile == 4)
    w ? output_tiles<F43v, 16>(s, M, ld, t0, nt, b, add, y)
      : output_tiles<F43v, 8>(s, M, ld, t0, nt, b, add, y);
  else
    w ? output_tiles<F23v, 16>(s, M, ld, t0, nt, b, add, y)
      : output_tiles<F23v, 8>(s, M, ld, t0, nt, b, add, y);
}

}  // namespace kern::cpu::detail
