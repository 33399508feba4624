// Internal: AVX-512 versions of group_norm_loops.h's float loops (group_norm_avx512.cpp, compiled with
// -mavx512f; call them only when cpu_isa() is Avx512). Each is bitwise its AVX2/portable counterpart in
// group_norm_loops.h: the sums keep element i in partial sum i % 8 (one zmm of 8 doubles is exactly the
// AVX2 code's two ymm halves; gn_shifted_sums: i % 16, two zmm), zero the dead tail lanes, and combine
// the partial sums in the same order; the elementwise loops do the same operations lane by lane. Not
// kernel API.
#pragma once
#include <array>
#include <cstdint>

namespace kern::cpu::detail {

// sum_i (x_i - K)
double gn_sum_shifted_avx512(const float* x, int64_t n, double K);
// {sum_i (x_i - K), sum_i (x_i - K)^2}: partial sums i % 16 (group_norm_loops.h's shifted_sums)
std::array<double, 2> gn_shifted_sums_avx512(const float* x, int64_t n, double K);
// sum_i (x_i - mu)^2 as fma(d, d, acc)
double gn_sum_sq_dev_avx512(const float* x, int64_t n, double mu);
// {sum dy_i, sum fma(dy_i, x_i - K), sum (x_i - K)}
std::array<double, 3> gn_backward_sums_avx512(const float* x, const float* dy, int64_t n, double K);
// y_i = fmaf((x_i - mh) - ml, a, b) (the float affine of group_norm_loops.h)
void gn_affine_avx512(const float* x, int64_t n, float mh, float ml, float a, float b, float* y);
// dx_i = float(rs * fma(-xhat, m2, fma(gm, double(dy_i), -m1))), xhat = (double(x_i) - mu) * rs
void gn_dx_avx512(const float* x, const float* dy, int64_t n, double mu, double rs, double gm, double m1,
                  double m2, float* dx);

// gn_shifted_sums_avx512 of two groups of n floats at once: out[0] of (xa, Ka), out[1] of (xb, Kb), bitwise
// (each keeps its own partial sums in the same order); the two sets of accumulator chains run in parallel
// where one group's chains are latency-bound (one add/fma chain step per 16 floats).
void gn_shifted_sums2_avx512(const float* xa, const float* xb, int64_t n, double Ka, double Kb,
                             std::array<double, 2>* out);

// The fused group_norm_silu loops (16 floats per step; the same bits as gn_affine_avx512 followed by
// silu_span.h's SiLU, silu_math.h on 16 lanes):
// y_i = silu(v_i), v_i = fmaf((x_i - mh) - ml, a, b)
void gn_affine_silu_avx512(const float* x, int64_t n, float mh, float ml, float a, float b, float* y);
// dv_i = dy_i * silu'(v_i) (v_i as above) written to dv, and gn_backward_sums_avx512(x, dv, n, K).
std::array<double, 3> gn_silu_dv_sums_avx512(const float* x, const float* dy, int64_t n, float mh, float ml,
                                             float a, float b, double K, float* dv);

}  // namespace kern::cpu::detail
