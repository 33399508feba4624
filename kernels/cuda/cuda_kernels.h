// CUDA kernel interface: the same contract as kernels/cpu/cpu_kernels.h, float32 only,
// raw device pointers, contiguous row-major buffers, all work enqueued on the current
// device's engine stream (runtime/cuda_device.h). In a build without CUDA these are linked
// from kernels/cuda/cuda_stubs.cpp and throw "built without CUDA".
#pragma once
#include <cstdint>

#include "kernels/kernel_shapes.h"

namespace kern::cuda {

// cuBLAS (row-major wrapper).
void gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm_batched(int64_t batch, bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha,
                  const float* A, int64_t lda, int64_t strideA, const float* B, int64_t ldb, int64_t strideB,
                  float beta, float* C, int64_t ldc, int64_t strideC);

// Hand-written implicit-GEMM conv and its backward passes.
void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* b, float* y);
void conv2d_backward_input(const Conv2dShape& s, const float* dy, const float* w, float* dx);
void conv2d_backward_weight(const Conv2dShape& s, const float* dy, const float* x, float* dw, float* db);

void group_norm_forward(int64_t N, int64_t C, int64_t HW, int64_t G, double eps, const float* x,
                        const float* gamma, const float* beta, float* y, float* mean, float* rstd);
void group_norm_backward(int64_t N, int64_t C, int64_t HW, int64_t G, const float* dy, const float* x,
                         const float* mean, const float* rstd, const float* gamma, float* dx, float* dgamma,
                         float* dbeta);

void attention_forward(int64_t BH, int64_t Lq, int64_t Lk, int64_t D, double scale, const float* q,
                       const float* k, const float* v, float* o, float* lse);
void attention_backward(int64_t BH, int64_t Lq, int64_t Lk, int64_t D, double scale, const float* q,
                        const float* k, const float* v, const float* o, const float* lse, const float* dout,
                        float* dq, float* dk, float* dv);

void unary(Unary op, int64_t n, const float* x, float* y);
void silu_backward(int64_t n, const float* x, const float* dy, float* dx);
void affine(int64_t n, const float* x, double alpha, double beta, float* y);
void binary(Binary op, const Strided& out, const float* a, const Strided& as, const float* b,
            const Strided& bs, float* y);
// Element size in bytes (4 for float, 8 for int64) so the copy serves every dtype.
void copy_strided(int elem_size, const Strided& src_layout, const void* src, const Strided& dst_layout,
                  void* dst);
void fill(int64_t n, float* y, double value);

void upsample_nearest2x_forward(int64_t NC, int64_t H, int64_t W, const float* x, float* y);
void upsample_nearest2x_backward(int64_t NC, int64_t H, int64_t W, const float* dy, float* dx);

void sum_rows(int64_t rows, int64_t cols, const float* x, float* y);
void sum_cols(int64_t rows, int64_t cols, const float* x, float* y);
void mse_loss_forward(int64_t n, const float* a, const float* b, float* out);

void embedding_forward(int64_t n, int64_t dim, const int64_t* idx, const float* table, float* y);
void embedding_backward(int64_t n, int64_t num_rows, int64_t dim, const int64_t* idx, const float* dy,
                        float* dtable);

// Fused multi-tensor AdamW: one launch for all tensors. Pointer arrays are HOST arrays of
// device pointers (the implementation uploads them).
void adamw_step(int ntensors, float* const* p, const float* const* g, float* const* m, float* const* v,
                const int64_t* sizes, const AdamWParams& hp);

void philox_uniform(int64_t n, uint64_t seed, uint64_t offset, float* y);
void philox_normal(int64_t n, uint64_t seed, uint64_t offset, float* y);

}  // namespace kern::cuda
