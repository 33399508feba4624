// The one declaration of every kernel that has both a CPU and a CUDA implementation (an X-macro list,
// the idea of mlx's NO_GPU(Op) stubs). Each KERN_SIG_<name>(T) is the kernel's parameter list with the
// element type T; KERN_BACKEND_KERNELS(X) names them all. From this list:
//   kernels/cpu/cpu_kernels.h    declares  template <typename T> void name KERN_SIG_name(T);
//   kernels/cuda/cuda_kernels.h  declares  void name KERN_SIG_name(float);
//   kernels/cuda/cuda_stubs.cpp  defines the "built without CUDA" stub of each (KERN_NO_CUDA);
//   kernels/cpu/*.cpp            instantiate it for float and double (KERN_INSTANTIATE_CPU(name)).
// So a parameter list is written here once, plus once in each backend's definition.
// Buffers are raw, contiguous, row-major; CPU pointers are host memory, CUDA pointers device memory.
// CPU kernels run on T = float or double, CUDA kernels on float only.
#pragma once
#include <cstdint>

#include "kernels/kernel_shapes.h"

// (clang-format would write "T * x" in these macros, reading it as a multiplication.)
// clang-format off
// ---- GEMM (row-major), C = alpha * op(A) @ op(B) + beta * C, op = transpose if trans.
// op(A) is (M, K), op(B) is (K, N), C is (M, N). lda/ldb/ldc are row strides. With beta == 0, C is not
// read (BLAS semantics: NaN in C does not propagate).
// CPU: deterministic by construction (kernels/cpu/gemm.cpp): every C element is the FMA chain
//   acc = beta*C (0 if beta == 0); for k = 0..K-1: acc = fma(alpha*A[i][k], B[k][j], acc)
// so it is bitwise the same whatever M, N, thread count or ISA path; equal to gemm_reference.
// CUDA: cuBLAS.
#define KERN_SIG_gemm(T)                                                                                    \
  (bool transA, bool transB, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B, \
   int64_t ldb, T beta, T* C, int64_t ldc)
// Batched: matrices at A + i*strideA etc. for i in [0, batch).
#define KERN_SIG_gemm_batched(T)                                                                      \
  (int64_t batch, bool transA, bool transB, int64_t M, int64_t N, int64_t K, T alpha, const T* A,     \
   int64_t lda, int64_t strideA, const T* B, int64_t ldb, int64_t strideB, T beta, T* C, int64_t ldc, \
   int64_t strideC)

// ---- conv2d (NCHW), shapes in kern::Conv2dShape. b / db may be nullptr (no bias).
#define KERN_SIG_conv2d_forward(T) (const Conv2dShape& s, const T* x, const T* w, const T* b, T* y)
// Overwrites dx.
#define KERN_SIG_conv2d_backward_input(T) (const Conv2dShape& s, const T* dy, const T* w, T* dx)
// Overwrites dw and db.
#define KERN_SIG_conv2d_backward_weight(T) (const Conv2dShape& s, const T* dy, const T* x, T* dw, T* db)

// ---- group_norm: x (N, C, HW) with G groups (C % G == 0). gamma/beta (C) may be nullptr
// (no affine). mean/rstd (N*G) are saved for backward; rstd = 1/sqrt(var + eps), biased var.
#define KERN_SIG_group_norm_forward(T)                                                                       \
  (int64_t N, int64_t C, int64_t HW, int64_t G, double eps, const T* x, const T* gamma, const T* beta, T* y, \
   T* mean, T* rstd)
// dgamma/dbeta may be nullptr when gamma is nullptr. Overwrites dx, dgamma, dbeta.
#define KERN_SIG_group_norm_backward(T)                                                                \
  (int64_t N, int64_t C, int64_t HW, int64_t G, const T* dy, const T* x, const T* mean, const T* rstd, \
   const T* gamma, T* dx, T* dgamma, T* dbeta)

// ---- scaled dot-product attention over BH independent heads.
// q (BH, Lq, D), k (BH, Lk, D), v (BH, Lk, D), o (BH, Lq, D), lse (BH, Lq) = log-sum-exp of the
// scaled scores per query row (saved for backward). Numerically stable softmax. The CPU kernel takes
// lse = nullptr (no backward will run: the log-sum-exp is not computed); CUDA needs lse.
#define KERN_SIG_attention_forward(T)                                                                     \
  (int64_t BH, int64_t Lq, int64_t Lk, int64_t D, double scale, const T* q, const T* k, const T* v, T* o, \
   T* lse)
// Overwrites dq, dk, dv.
#define KERN_SIG_attention_backward(T)                                                              \
  (int64_t BH, int64_t Lq, int64_t Lk, int64_t D, double scale, const T* q, const T* k, const T* v, \
   const T* o, const T* lse, const T* dout, T* dq, T* dk, T* dv)

// ---- elementwise (contiguous, n elements)
#define KERN_SIG_unary(T) (Unary op, int64_t n, const T* x, T* y)
// dx = dy * silu'(x)
#define KERN_SIG_silu_backward(T) (int64_t n, const T* x, const T* dy, T* dx)
// y = alpha * x + beta
#define KERN_SIG_affine(T) (int64_t n, const T* x, double alpha, double beta, T* y)
// y (contiguous, shape out.shape) = a[broadcast] op b[broadcast]; a/b strides describe how each
// input is read for the output's index (0 for broadcast dims). out.stride is ignored.
#define KERN_SIG_binary(T) \
  (Binary op, const Strided& out, const T* a, const Strided& as, const T* b, const Strided& bs, T* y)
#define KERN_SIG_fill(T) (int64_t n, T* y, double value)

// ---- nearest upsample x2: x (NC, H, W) -> y (NC, 2H, 2W); backward sums the 2x2 block.
#define KERN_SIG_upsample_nearest2x_forward(T) (int64_t NC, int64_t H, int64_t W, const T* x, T* y)
#define KERN_SIG_upsample_nearest2x_backward(T) (int64_t NC, int64_t H, int64_t W, const T* dy, T* dx)

// ---- reductions: sum_rows y[r] = sum_c x[r, c]; sum_cols y[c] = sum_r x[r, c] for x (rows, cols).
// The CPU accumulates in double.
#define KERN_SIG_sum_rows(T) (int64_t rows, int64_t cols, const T* x, T* y)
#define KERN_SIG_sum_cols(T) (int64_t rows, int64_t cols, const T* x, T* y)
// out[0] = mean((a - b)^2) over n elements.
#define KERN_SIG_mse_loss_forward(T) (int64_t n, const T* a, const T* b, T* out)

// ---- embedding: idx (n) int64 in [0, num_rows), table (num_rows, dim), y (n, dim).
#define KERN_SIG_embedding_forward(T) (int64_t n, int64_t dim, const int64_t* idx, const T* table, T* y)
// Deterministic (no atomics, fixed order): dtable (num_rows, dim) overwritten with sum of dy rows.
#define KERN_SIG_embedding_backward(T) \
  (int64_t n, int64_t num_rows, int64_t dim, const int64_t* idx, const T* dy, T* dtable)

// ---- AdamW over several tensors at once (torch.optim.AdamW semantics):
// p -= lr*wd*p; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
// p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
// The pointer arrays are HOST arrays (of device pointers on CUDA: one fused launch for all tensors).
#define KERN_SIG_adamw_step(T)                                                                   \
  (int ntensors, T* const* p, const T* const* g, T* const* m, T* const* v, const int64_t* sizes, \
   const AdamWParams& hp)

// ---- counter-based RNG (Philox4x32-10). Element i of the stream (seed, offset) is a pure
// function of (seed, offset + i), identical on CPU and CUDA.
// uniform in [0, 1) (float: 24-bit mantissa); normal via Box-Muller.
#define KERN_SIG_philox_uniform(T) (int64_t n, uint64_t seed, uint64_t offset, T* y)
#define KERN_SIG_philox_normal(T) (int64_t n, uint64_t seed, uint64_t offset, T* y)

// clang-format on

// Every kernel above. A new kernel: its KERN_SIG_ line above, its name here, its two definitions.
#define KERN_BACKEND_KERNELS(X)  \
  X(gemm)                        \
  X(gemm_batched)                \
  X(conv2d_forward)              \
  X(conv2d_backward_input)       \
  X(conv2d_backward_weight)      \
  X(group_norm_forward)          \
  X(group_norm_backward)         \
  X(attention_forward)           \
  X(attention_backward)          \
  X(unary)                       \
  X(silu_backward)               \
  X(affine)                      \
  X(binary)                      \
  X(fill)                        \
  X(upsample_nearest2x_forward)  \
  X(upsample_nearest2x_backward) \
  X(sum_rows)                    \
  X(sum_cols)                    \
  X(mse_loss_forward)            \
  X(embedding_forward)           \
  X(embedding_backward)          \
  X(adamw_step)                  \
  X(philox_uniform)              \
  X(philox_normal)

// Declaration generators (used inside namespace kern::cpu / kern::cuda).
#define KERN_DECLARE_CPU(name) \
  template <typename T>        \
  void name KERN_SIG_##name(T);
#define KERN_DECLARE_CUDA(name) void name KERN_SIG_##name(float);
// Explicit float and double instantiation of a CPU kernel, in the .cpp that defines it.
#define KERN_INSTANTIATE_CPU(name)                  \
  template void name<float> KERN_SIG_##name(float); \
  template void name<double> KERN_SIG_##name(double);
