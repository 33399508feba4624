// Internal: the float32 CPU attention kernel for small head dims (D <= kAttnSmallMaxD), one head per
// call, in three builds of one template (attention_small_impl.h): attention_small_avx512.cpp,
// attention_small_avx2.cpp (x86-64 only, each compiled for its ISA alone) and the portable
// attention_small_scalar.cpp. attention.cpp picks one by cpu_isa() and runs the heads over OpenMP.
// Every build performs the same float operations in the same order on every value, so the three give
// bitwise the same o, lse, dq, dk and dv (see attention_small_impl.h for the operation order).
// Not part of the kernel API.
#pragma once
#include <cstdint>

namespace kern::cpu::detail {

// The largest head dim the small-D kernel takes; larger D (and double) take attention.cpp's GEMM path.
constexpr int64_t kAttnSmallMaxD = 16;

// Floats of per-thread scratch one forward (backward = false) or backward head call needs.
int64_t attn_small_scratch_floats(int64_t Lq, int64_t Lk, int64_t D, bool backward);

// One head: q (Lq, D), k and v (Lk, D), o (Lq, D), lse (Lq); 1 <= D <= kAttnSmallMaxD, Lq, Lk >= 1.
// rq, cq: the row and column strides (in floats) of q, o (and, backward, dout, dq): element (i, d) is at
// i * rq + d * cq; rk, ck: those of k, v (dk, dv). (D, 1) for a contiguous (L, D) head, (H*D, 1) for one
// head of a (B, L, H, D) tensor, (1, L) for one head of a (B, H, D, L) tensor (L = Lq or Lk). Only
// addresses depend on the strides, never the bits.
// o = softmax(scale q k^T) v and lse = the rows' log-sum-exp, with attention.cpp's non-finite semantics
// (a row with a NaN score, a +inf score or only -inf scores gets NaN in o and lse). lse may be null (then
// not computed; o is the same bits). ws: scratch of attn_small_scratch_floats(Lq, Lk, D, false) floats.
using AttnSmallForward = void (*)(int64_t Lq, int64_t Lk, int64_t D, int64_t rq, int64_t cq, int64_t rk,
                                  int64_t ck, float scale, const float* q, const float* k, const float* v,
                                  float* o, float* lse, float* ws);
// One head of the backward: recomputes the probabilities from lse; overwrites dq (Lq, D), dk and dv
// (Lk, D). ws: scratch of attn_small_scratch_floats(Lq, Lk, D, true) floats.
using AttnSmallBackward = void (*)(int64_t Lq, int64_t Lk, int64_t D, int64_t rq, int64_t cq, int64_t rk,
                                   int64_t ck, float scale, const float* q, const float* k, const float* v,
                                   const float* o, const float* lse, const float* dout, float* dq, float* dk,
                                   float* dv, float* ws);

// The softmax's 2^t (t <= 0) of each build, for the tests: y[i] = exp2_nonpos(t[i]) for i < n (n a multiple
// of 16). Degree-5 polynomial on the fraction; max relative error 1.72e-7 for -126 <= t <= 0 (see
// simd_math.h); 0 below -126, NaN for NaN. Bitwise the same on every build.
void attn_small_exp2_scalar(const float* t, float* y, int64_t n);
void attn_small_forward_scalar(int64_t Lq, int64_t Lk, int64_t D, int64_t rq, int64_t cq, int64_t rk,
                               int64_t ck, float scale, const float* q, const float* k, const float* v,
                               float* o, float* lse, float* ws);
void attn_small_backward_scalar(int64_t Lq, int64_t Lk, int64_t D, int64_t rq, int64_t cq, int64_t rk,
                                int64_t ck, float scale, const float* q, const float* k, const float* v,
                                const float* o, const float* lse, const float* dout, float* dq, float* dk,
                                float* dv, float* ws);
#if defined(__x86_64__)
void attn_small_exp2_avx2(const float* t, float* y, int64_t n);
void attn_small_exp2_avx512(const float* t, float* y, int64_t n);
void attn_small_forward_avx2(int64_t Lq, int64_t Lk, int64_t D, int64_t rq, int64_t cq, int64_t rk,
                             int64_t ck, float scale, const float* q, const float* k, const float* v,
                             float* o, float* lse, float* ws);
void attn_small_backward_avx2(int64_t Lq, int64_t Lk, int64_t D, int64_t rq, int64_t cq, int64_t rk,
                              int64_t ck, float scale, const float* q, const float* k, const float* v,
                              const float* o, const float* lse, const float* dout, float* dq, float* dk,
                              float* dv, float* ws);
void attn_small_forward_avx512(int64_t Lq, int64_t Lk, int64_t D, int64_t rq, int64_t cq, int64_t rk,
                               int64_t ck, float scale, const float* q, const float* k, const float* v,
                               float* o, float* lse, float* ws);
void attn_small_backward_avx512(int64_t Lq, int64_t Lk, int64_t D, int64_t rq, int64_t cq, int64_t rk,
                                int64_t ck, float scale, const float* q, const float* k, const float* v,
                                const float* o, const float* lse, const float* dout, float* dq, float* dk,
                                float* dv, float* ws);
#endif

}  // namespace kern::cpu::detail
