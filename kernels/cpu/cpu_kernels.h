// CPU kernel interface: raw-pointer, contiguous, row-major kernels, templated on
// T = float or double (explicitly instantiated for both in the .cpp files).
// Every function here is the CPU reference that the CUDA kernels are tested against.
// Parallelised with OpenMP; GEMMs use the engine's own packed GEMM (gemm.cpp), chosen by cpuid at run time.
#pragma once
#include <cstdint>

#include "kernels/kernel_shapes.h"

namespace kern::cpu {

// ---- GEMM (row-major), C = alpha * op(A) @ op(B) + beta * C, op = transpose if trans.
// op(A) is (M, K), op(B) is (K, N), C is (M, N). lda/ldb/ldc are row strides. With beta == 0, C is not
// read (BLAS semantics: NaN in C does not propagate).
// Deterministic by construction (kernels/cpu/gemm.cpp): every C element is the FMA chain
//   acc = beta*C (0 if beta == 0); for k = 0..K-1: acc = fma(alpha*A[i][k], B[k][j], acc)
// so it is bitwise the same whatever M, N, thread count or ISA path; equal to gemm_reference.
template <typename T>
void gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc);
// Batched: matrices at A + i*strideA etc. for i in [0, batch).
template <typename T>
void gemm_batched(int64_t batch, bool transA, bool transB, int64_t M, int64_t N, int64_t K, T alpha,
                  const T* A, int64_t lda, int64_t strideA, const T* B, int64_t ldb, int64_t strideB, T beta,
                  T* C, int64_t ldc, int64_t strideC);
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

// ---- conv2d (NCHW). b / db may be nullptr (no bias).
template <typename T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* w, const T* b, T* y);
template <typename T>
void conv2d_backward_input(const Conv2dShape& s, const T* dy, const T* w, T* dx);  // overwrites dx
template <typename T>
void conv2d_backward_weight(const Conv2dShape& s, const T* dy, const T* x, T* dw, T* db);  // overwrites

// ---- group_norm: x (N, C, HW) with G groups (C % G == 0). gamma/beta (C) may be nullptr
// (no affine). mean/rstd (N*G) are saved for backward; rstd = 1/sqrt(var + eps), biased var.
template <typename T>
void group_norm_forward(int64_t N, int64_t C, int64_t HW, int64_t G, double eps, const T* x, const T* gamma,
                        const T* beta, T* y, T* mean, T* rstd);
// dgamma/dbeta may be nullptr when gamma is nullptr. Overwrites dx, dgamma, dbeta.
template <typename T>
void group_norm_backward(int64_t N, int64_t C, int64_t HW, int64_t G, const T* dy, const T* x, const T* mean,
                         const T* rstd, const T* gamma, T* dx, T* dgamma, T* dbeta);

// ---- scaled dot-product attention over BH independent heads.
// q (BH, Lq, D), k (BH, Lk, D), v (BH, Lk, D), o (BH, Lq, D), lse (BH, Lq) = log-sum-exp of the
// scaled scores per query row (saved for backward). Numerically stable softmax.
template <typename T>
void attention_forward(int64_t BH, int64_t Lq, int64_t Lk, int64_t D, double scale, const T* q, const T* k,
                       const T* v, T* o, T* lse);
// Overwrites dq, dk, dv.
template <typename T>
void attention_backward(int64_t BH, int64_t Lq, int64_t Lk, int64_t D, double scale, const T* q, const T* k,
                        const T* v, const T* o, const T* lse, const T* dout, T* dq, T* dk, T* dv);

// ---- elementwise
template <typename T>
void unary(Unary op, int64_t n, const T* x, T* y);
// dx = dy * silu'(x)
template <typename T>
void silu_backward(int64_t n, const T* x, const T* dy, T* dx);
// y = alpha * x + beta
template <typename T>
void affine(int64_t n, const T* x, double alpha, double beta, T* y);
// y (contiguous, shape out.shape) = a[broadcast] op b[broadcast]; a/b strides describe how each
// input is read for the output's index (0 for broadcast dims). out.stride is ignored.
template <typename T>
void binary(Binary op, const Strided& out, const T* a, const Strided& as, const T* b, const Strided& bs,
            T* y);
// General strided copy: dst[i] = src[i] for every index i of shape (src.shape == dst.shape).
template <typename T>
void copy_strided(const Strided& src_layout, const T* src, const Strided& dst_layout, T* dst);
template <typename T>
void fill(int64_t n, T* y, double value);
// Casts between float and double (contiguous).
void cast_f32_to_f64(int64_t n, const float* x, double* y);
void cast_f64_to_f32(int64_t n, const double* x, float* y);

// ---- nearest upsample x2: x (NC, H, W) -> y (NC, 2H, 2W); backward sums the 2x2 block.
template <typename T>
void upsample_nearest2x_forward(int64_t NC, int64_t H, int64_t W, const T* x, T* y);
template <typename T>
void upsample_nearest2x_backward(int64_t NC, int64_t H, int64_t W, const T* dy, T* dx);

// ---- reductions: y[r] = sum_c x[r, c] for x (rows, cols). Accumulates in double.
template <typename T>
void sum_rows(int64_t rows, int64_t cols, const T* x, T* y);
// y[c] = sum_r x[r, c] for x (rows, cols).
template <typename T>
void sum_cols(int64_t rows, int64_t cols, const T* x, T* y);
// out[0] = mean((a - b)^2) over n elements.
template <typename T>
void mse_loss_forward(int64_t n, const T* a, const T* b, T* out);

// ---- embedding: idx (n) int64 in [0, num_rows), table (num_rows, dim), y (n, dim).
template <typename T>
void embedding_forward(int64_t n, int64_t dim, const int64_t* idx, const T* table, T* y);
// Deterministic (no atomics, fixed order): dtable (num_rows, dim) overwritten with sum of dy rows.
template <typename T>
void embedding_backward(int64_t n, int64_t num_rows, int64_t dim, const int64_t* idx, const T* dy, T* dtable);

// ---- AdamW over several tensors at once (torch.optim.AdamW semantics):
// p -= lr*wd*p; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
// p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
template <typename T>
void adamw_step(int ntensors, T* const* p, const T* const* g, T* const* m, T* const* v, const int64_t* sizes,
                const AdamWParams& hp);

// ---- counter-based RNG (Philox4x32-10). Element i of the stream (seed, offset) is a pure
// function of (seed, offset + i), identical on CPU and CUDA.
// uniform in [0, 1) (float: 24-bit mantissa); normal via Box-Muller.
template <typename T>
void philox_uniform(int64_t n, uint64_t seed, uint64_t offset, T* y);
template <typename T>
void philox_normal(int64_t n, uint64_t seed, uint64_t offset, T* y);

}  // namespace kern::cpu
