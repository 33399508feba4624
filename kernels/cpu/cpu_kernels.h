// CPU kernel interface: raw-pointer, contiguous, row-major kernels, templated on
// T = float or double (explicitly instantiated for both in the .cpp files).
// Every function here is the CPU reference that the CUDA kernels are tested against.
// Parallelised with OpenMP; GEMMs use the engine's own packed GEMM (gemm.cpp), chosen by cpuid at run time.
// The kernels shared with CUDA (gemm, conv2d_*, group_norm_*, attention_*, elementwise, reductions,
// embedding, adamw_step, philox_*) are declared once, with their contracts, in kernels/kernel_list.h;
// this header generates their CPU declarations and adds the CPU-only kernels.
#pragma once
#include <cstdint>

#include "kernels/kernel_list.h"

namespace kern::cpu {

// template <typename T> void gemm(...), conv2d_forward(...), ...: see kernels/kernel_list.h.
KERN_BACKEND_KERNELS(KERN_DECLARE_CPU)

// The definition gemm must equal bit for bit: the plain triple loop with std::fma (slow; for tests).
template <typename T>
void gemm_reference(bool transA, bool transB, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                    int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// ---- attention on heads in place (CPU only, float, 1 <= D <= 16, Lq, Lk >= 1: the small-D kernel).
// q, o, dout, dq: contiguous (B, Lq, H, D); k, v, dk, dv: contiguous (B, Lk, H, D), i.e. the memory behind
// a (B, H, L, D) view with strides (L*H*D, D, H*D, 1); lse: contiguous (B, H, Lq). Same semantics and
// bitwise the same o, lse, dq, dk, dv as attention_forward / attention_backward on the contiguous
// (B*H, L, D) copies, on every ISA path and thread count. Throws std::invalid_argument outside the domain.
// attention_blhd_supported: whether (Lq, Lk, D) is in that domain. The forwards take lse = nullptr (no
// log-sum-exp computed: for a forward no backward follows); o is the same bits either way.
bool attention_blhd_supported(int64_t Lq, int64_t Lk, int64_t D);
void attention_forward_blhd(int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D, double scale,
                            const float* q, const float* k, const float* v, float* o, float* lse);
// Overwrites dq, dk, dv.
void attention_backward_blhd(int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D, double scale,
                             const float* q, const float* k, const float* v, const float* o, const float* lse,
                             const float* dout, float* dq, float* dk, float* dv);
// The same on (B, H, D, L) memory (the channel-major layout: a head's rows are its columns): q, o, dout, dq
// contiguous (B, H, D, Lq), k, v, dk, dv contiguous (B, H, D, Lk), i.e. the memory behind a (B, H, L, D)
// view with strides (H*D*L, D*L, 1, L); lse contiguous (B, H, Lq). Bitwise the blhd and contiguous results.
void attention_forward_bhdl(int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D, double scale,
                            const float* q, const float* k, const float* v, float* o, float* lse);
void attention_backward_bhdl(int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D, double scale,
                             const float* q, const float* k, const float* v, const float* o, const float* lse,
                             const float* dout, float* dq, float* dk, float* dv);

// ---- conv2d forward with an additive epilogue (CPU only; the CUDA op composes conv2d_forward with adds).
// y (N, K, P, Q) = conv(x, w) + b[k] + t[n, k] + r[n, k, p, q] for b (K), t (N, K), r (N, K, P, Q), each
// contiguous and nullable (absent terms are not added; r must not alias y). The terms are summed first,
// e = b[k] + t[n, k], then e + r; im2col prefills y with that and gemm (beta = 1) continues each element's
// FMA chain from it, Winograd adds (A^T M A + e) + r in its output transform. Same algorithm choice and
// determinism as conv2d_forward (bitwise independent of thread count, batch size and ISA path), which is
// this with t = r = nullptr.
template <typename T>
void conv2d_forward_fused(const Conv2dShape& s, const T* x, const T* w, const T* b, const T* t, const T* r,
                          T* y);

// ---- conv2d weight gradient with the epilogue's sample-bias gradient (CPU only): conv2d_backward_weight
// (dw (K, C, R, S) from dy (N, K, P, Q) and x (N, C, H, W); db (K) when not nullptr), plus, when dt is not
// nullptr, dt (N, K) = dy summed over (P, Q), from the same pass over dy as db: one float64 chain per
// (n, k) over the pixels in order, rounded once, i.e. the bits of sum(dy, {2, 3}) (kernels/cpu/reduce.cpp
// sum_rows). Bitwise independent of the thread count.
template <typename T>
void conv2d_backward_weight_fused(const Conv2dShape& s, const T* dy, const T* x, T* dw, T* db, T* dt);

// ---- group_norm_silu (CPU only): y = silu(group_norm(x)) over x (N, C, HW), G groups, in one kernel.
// gamma/beta (C) may be nullptr (no affine). stats (N*G*2, double) receives each group's mean and rstd
// in double, which the backward needs to recompute gn(x) exactly (nothing else is saved besides x).
// Bitwise the same y as group_norm_forward followed by unary(Silu) (kernels/cpu/group_norm.cpp).
template <typename T>
void group_norm_silu_forward(int64_t N, int64_t C, int64_t HW, int64_t G, double eps, const T* x,
                             const T* gamma, const T* beta, T* y, double* stats);
// dy: gradient w.r.t. y. Overwrites dx, dgamma, dbeta (the last two may be nullptr when gamma is).
// Bitwise the same as silu_backward followed by group_norm_backward with the T-rounded mean/rstd.
template <typename T>
void group_norm_silu_backward(int64_t N, int64_t C, int64_t HW, int64_t G, const T* dy, const T* x,
                              const double* stats, const T* gamma, const T* beta, T* dx, T* dgamma, T* dbeta);

// ---- group_norm_silu over a channel concatenation that is never materialised (CPU only): x = cat([x0
// (N, C0, HW), x1 (N, C - C0, HW)], dim 1), 0 <= C0 <= C; y (N, C, HW) and stats as group_norm_silu_forward;
// the backward writes dx in the same two blocks, dx0 (N, C0, HW) and dx1 (N, C - C0, HW). Bitwise the
// same as the two functions above on the concatenated x (a group that straddles the blocks is copied into
// a scratch span for its statistics, the rest is read in place). x1 / dx1 are not read when C0 == C.
template <typename T>
void group_norm_silu_forward_cat(int64_t N, int64_t C0, int64_t C, int64_t HW, int64_t G, double eps,
                                 const T* x0, const T* x1, const T* gamma, const T* beta, T* y,
                                 double* stats);
template <typename T>
void group_norm_silu_backward_cat(int64_t N, int64_t C0, int64_t C, int64_t HW, int64_t G, const T* dy,
                                  const T* x0, const T* x1, const double* stats, const T* gamma,
                                  const T* beta, T* dx0, T* dx1, T* dgamma, T* dbeta);

// ---- run-time ISA dispatch of the CPU hot kernels (GEMM microkernels).
// Ordered: a larger value needs more of the CPU. Auto = the best the CPU supports.
enum class CpuIsa : int { Auto = -1, Scalar = 0, Avx2 = 1, Avx512 = 2 };
// "avx512", "avx2", "scalar" or "auto".
const char* cpu_isa_name(CpuIsa isa);
// The path in use: ENGINE_CPU_ISA=auto|avx512|avx2|scalar if set (read once; an unknown or unsupported
// value throws engine::Error), else the best this CPU supports (cpuid + OS register-state support).
CpuIsa cpu_isa();
// The best ISA this CPU supports.
CpuIsa cpu_isa_supported();
// Reads the CPU settings from the environment now (ENGINE_CPU_ISA, ENGINE_CPU_PRECISION, ENGINE_CPU_CONV;
// each once per process), so that an invalid value throws engine::Error here, on the calling thread,
// instead of at its first use, which may be inside an OpenMP region (where a throw ends the process).
// Every CPU op calls it first (engine::detail::dispatch_float); after the first success it costs three
// initialised-static checks. kernels/cpu/cpu_settings.cpp.
void check_cpu_settings();
// Forces a path (tests, benchmarks); Auto restores the default. Throws engine::Error if unsupported.
// Not thread-safe: call it outside parallel work.
void set_cpu_isa(CpuIsa isa);

// ---- float32 matmul precision (the analogue of torch.set_float32_matmul_precision).
// Fp32: gemm<float> is the FMA-chain definition above (gemm_reference), bitwise on every ISA.
// Bf16: gemm<float> rounds alpha * op(A) and op(B) to bf16 (8-bit significand, round to nearest even, NaN
//   stays NaN, denormals flush to zero) and accumulates their exact products in float32 with vdpbf16ps
//   (kernels/cpu/gemm_bf16_avx512.cpp): |C - C_exact(rounded inputs)| <= ~K * 2^-24 * sum|a'||b'|, and the
//   input rounding adds up to 2^-8 relative per factor vs the float32 definition. Bitwise independent of
//   the thread count, M, N and the batch size on a given machine, but NOT equal to the Fp32 result.
//   Every float32 GEMM caller (conv2d im2col / Winograd, linear, attention with head dim > 16) inherits
//   it; float64 never. (Float attention with head dim <= 16 runs its own float32 kernel, attention_small.h.)
// It runs only where cpu_has_bf16() and cpu_isa() is Avx512 (ENGINE_CPU_ISA=avx2 or scalar turn it
// off); elsewhere gemm<float> silently runs Fp32 (apps print a notice: see matmul_precision_active()).
enum class MatmulPrecision : int { Fp32 = 0, Bf16 = 1 };
// "fp32" or "bf16".
const char* matmul_precision_name(MatmulPrecision p);
// The requested precision: the last set_matmul_precision, else ENGINE_CPU_PRECISION=fp32|bf16 (read once;
// another value throws engine::Error), else Fp32.
MatmulPrecision matmul_precision();
// Requests a precision process-wide. Not thread-safe: call it outside parallel work.
void set_matmul_precision(MatmulPrecision p);
// Whether this CPU (and OS) supports AVX512F/BW/VL and AVX512_BF16 (cpuid).
bool cpu_has_bf16();
// The precision gemm<float> actually runs at now: Bf16 only when requested, cpu_has_bf16() and
// cpu_isa() == Avx512; otherwise Fp32.
MatmulPrecision matmul_precision_active();

// General strided copy: dst[i] = src[i] for every index i of shape (src.shape == dst.shape).
// T = float, double, int64_t or uint8_t (fill is instantiated for the same four).
template <typename T>
void copy_strided(const Strided& src_layout, const T* src, const Strided& dst_layout, T* dst);
// Casts between float and double (contiguous).
void cast_f32_to_f64(int64_t n, const float* x, double* y);
void cast_f64_to_f32(int64_t n, const double* x, float* y);

}  // namespace kern::cpu
