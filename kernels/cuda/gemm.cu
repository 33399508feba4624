// Row-major GEMM on cuBLAS (column-major): a row-major C (M, N) is the column-major C^T (N, M), so
// C = op(A) op(B) is computed as C^T = op(B)^T op(A)^T, i.e. cuBLAS with the operands swapped.
#include <climits>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_kernels.h"

namespace kern::cuda {
namespace {

int to_int(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX)
    throw ::engine::Error(std::string("kern::cuda::gemm: ") + what + " = " + std::to_string(v) +
                                " does not fit cuBLAS's 32-bit int");
  return static_cast<int>(v);
}

// C (M, N) with row stride ldc, C = beta * C (beta == 0: C is not read, as in BLAS).
__global__ void scale_matrix_kernel(int64_t M, int64_t N, float beta, float* C, int64_t ldc, int64_t strideC,
                                    int64_t batch) {
  const int64_t total = batch * M * N;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / (M * N), r = (i / N) % M, c = i % N;
    float* p = C + b * strideC + r * ldc + c;
    *p = beta == 0.f ? 0.f : beta * *p;
  }
}

void scale_only(int64_t batch, int64_t M, int64_t N, float beta, float* C, int64_t ldc, int64_t strideC) {
  if (beta == 1.f) return;
  const int64_t total = batch * M * N;
  scale_matrix_kernel<<<grid_1d(total, 256), 256, 0, engine_stream()>>>(M, N, beta, C, ldc, strideC, batch);
  CUDA_CHECK_LAUNCH();
}

cublasOperation_t op(bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }

}  // namespace

void gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.f) return scale_only(1, M, N, beta, C, ldc, 0);
  const int m = to_int(M, "M"), n = to_int(N, "N"), k = to_int(K, "K");
  CUBLAS_CHECK(cublasSgemm(cublas_handle(), op(transB), op(transA), n, m, k, &alpha, B, to_int(ldb, "ldb"), A,
                           to_int(lda, "lda"), &beta, C, to_int(ldc, "ldc")));
}

void gemm_batched(int64_t batch, bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha,
                  const float* A, int64_t lda, int64_t strideA, const float* B, int64_t ldb, int64_t strideB,
                  float beta, float* C, int64_t ldc, int64_t strideC) {
  if (batch == 0 || M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.f) return scale_only(batch, M, N, beta, C, ldc, strideC);
  const int m = to_int(M, "M"), n = to_int(N, "N"), k = to_int(K, "K");
  const int la = to_int(lda, "lda"), lb = to_int(ldb, "ldb"), lc = to_int(ldc, "ldc");
  // Chunks keep every launch's batch count well inside the grid limits of cuBLAS's kernels.
  constexpr int64_t kChunk = 32768;
  for (int64_t b0 = 0; b0 < batch; b0 += kChunk) {
    const int nb = static_cast<int>(std::min(kChunk, batch - b0));
    CUBLAS_CHECK(cublasSgemmStridedBatched(cublas_handle(), op(transB), op(transA), n, m, k, &alpha,
                                           B + b0 * strideB, lb, strideB, A + b0 * strideA, la, strideA,
                                           &beta, C + b0 * strideC, lc, strideC, nb));
  }
}

}  // namespace kern::cuda
