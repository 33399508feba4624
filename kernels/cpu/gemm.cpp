// CPU GEMM kernels: thin row-major wrappers over OpenBLAS cblas_{s,d}gemm, plus a batched variant.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <type_traits>

#include "kernels/cpu/cpu_kernels.h"

namespace kern::cpu {

template <typename T>
void gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // C = beta * C (BLAS would reject lda = 0 here)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
    return;
  }
  const CBLAS_TRANSPOSE ta = transA ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = transB ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(CblasRowMajor, ta, tb, (blasint)M, (blasint)N, (blasint)K, alpha, A, (blasint)lda, B,
                (blasint)ldb, beta, C, (blasint)ldc);
  } else {
    cblas_dgemm(CblasRowMajor, ta, tb, (blasint)M, (blasint)N, (blasint)K, alpha, A, (blasint)lda, B,
                (blasint)ldb, beta, C, (blasint)ldc);
  }
}

template <typename T>
void gemm_batched(int64_t batch, bool transA, bool transB, int64_t M, int64_t N, int64_t K, T alpha,
                  const T* A, int64_t lda, int64_t strideA, const T* B, int64_t ldb, int64_t strideB, T beta,
                  T* C, int64_t ldc, int64_t strideC) {
  if (batch <= 0) return;
  // Small matrices: one single-threaded GEMM per batch entry, batch entries in parallel (OpenBLAS runs
  // serially inside an OpenMP parallel region). Large matrices: let OpenBLAS parallelise each GEMM.
  const bool small = static_cast<double>(M) * N * K <= double(1 << 22);
  const bool par = small && batch > 1 && omp_get_max_threads() > 1 && !omp_in_parallel();
#pragma omp parallel for schedule(static) if (par)
  for (int64_t i = 0; i < batch; ++i)
    gemm<T>(transA, transB, M, N, K, alpha, A + i * strideA, lda, B + i * strideB, ldb, beta, C + i * strideC,
            ldc);
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                          int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);
template void gemm_batched<float>(int64_t, bool, bool, int64_t, int64_t, int64_t, float, const float*,
                                  int64_t, int64_t, const float*, int64_t, int64_t, float, float*, int64_t,
                                  int64_t);
template void gemm_batched<double>(int64_t, bool, bool, int64_t, int64_t, int64_t, double, const double*,
                                   int64_t, int64_t, const double*, int64_t, int64_t, double, double*,
                                   int64_t, int64_t);

}  // namespace kern::cpu
