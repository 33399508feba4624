// gemm_a_rows: the CPU GEMM with an untransposed A read in place, unpacked (kernels/cpu/gemm.cpp).
#pragma once
#include <cstdint>

namespace kern::cpu {

// C (M x N, row stride ldc) = A @ op(B) + beta * C with A untransposed (M x K, row stride lda), alpha = 1,
// op(B) = B^T (B: N x K) if transB, else B (K x N); T = float or double. Bitwise gemm<T>(false, transB,
// ..., alpha = 1, ...) (the same FMA chain per element, on every ISA and thread count); it only reads the
// full-height panels of A in place instead of packing them: for callers whose A is used once per call
// (the conv weight gradient: one image's dy or im2col rows), where packing it is a third of the work.
// No error cases; M, N <= 0: no-op.
template <typename T>
void gemm_a_rows(bool transB, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                 int64_t ldb, T beta, T* C, int64_t ldc);

}  // namespace kern::cpu
