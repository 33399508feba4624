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
// Forces a path (tests, benchmarks); Auto restores the default. Throws engine::Error if unsupported.
// Not thread-safe: call it outside parallel work.
void set_cpu_isa(CpuIsa isa);

// General strided copy: dst[i] = src[i] for every index i of shape (src.shape == dst.shape).
// T = float, double, int64_t or uint8_t (fill is instantiated for the same four).
template <typename T>
void copy_strided(const Strided& src_layout, const T* src, const Strided& dst_layout, T* dst);
// Casts between float and double (contiguous).
void cast_f32_to_f64(int64_t n, const float* x, double* y);
void cast_f64_to_f32(int64_t n, const double* x, float* y);

}  // namespace kern::cpu
