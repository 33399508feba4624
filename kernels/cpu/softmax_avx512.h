// Internal: the AVX-512 softmax row kernel of the CPU attention (softmax_avx512.cpp, compiled with
// -mavx512f; call it only when cpu_isa() is Avx512). Not part of the kernel API.
#pragma once
#include <cstdint>

namespace kern::cpu::detail {

// row[j] = exp(row[j] - sub) for j < n (n >= 0); returns sum_j row[j]. Bitwise the AVX2 version in
// attention.cpp: the same lane-wise exp (simd_math.h's polynomial on 16 lanes), the same 8 float partial
// sums fed in the same order (the low then the high half of each 16-lane block), the same masked tail.
double exp_sub_row_f32_avx512(float* row, int64_t n, float sub);

}  // namespace kern::cpu::detail
