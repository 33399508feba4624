// The bf16 GEMM with its A operand packed once and reused (kernels/cpu/gemm_bf16_avx512.cpp): for
// callers that multiply one fixed matrix by many B blocks, such as the Winograd forward's transformed
// weights U[xi] against every chunk's V[xi]. gemm<float> in bf16 mode re-rounds and re-packs A on every
// call; these functions round it once. The results are bitwise those of gemm<float> in bf16 mode (the same
// bf16 words in the same vdpbf16ps order per C element). Only on x86-64 builds, and only to be called
// where matmul_precision_active() == MatmulPrecision::Bf16 (a CPU with AVX512_BF16).
#pragma once
#include <cstdint>

namespace kern::cpu::gemm_detail {

// Words (uint32: a bf16 k-pair each) that bf16_pack_a needs for an M x K operand: round_up(M, 8) * ceil(K/2).
int64_t bf16_packed_a_words(int64_t M, int64_t K);

// Ap (bf16_packed_a_words(M, K) words) <- alpha * op(A) rounded to bf16 and laid out in k-pairs, op(A) M x K
// (row-major A with row stride lda, transposed if transA): exactly the words gemm<float> packs in bf16 mode.
void bf16_pack_a(bool transA, int64_t M, int64_t K, float alpha, const float* A, int64_t lda, uint32_t* Ap);

// C (M x N, row stride ldc) = op(A) @ op(B) + beta * C, serial (the calling thread only), with op(A) taken
// from Ap (bf16_pack_a of the same M, K, alpha) and op(B) (K x N, transposed if transB) rounded to bf16 as
// gemm<float> in bf16 mode does: bitwise its result. M, N, K > 0. Returns false if the packing buffer
// could not be allocated (C is then not written).
bool gemm_bf16_packed_a(int64_t M, int64_t N, int64_t K, const uint32_t* Ap, bool transB, const float* B,
                        int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace kern::cpu::gemm_detail
