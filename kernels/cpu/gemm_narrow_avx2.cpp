// Narrow-N float GEMM for AVX2 + FMA (compiled with -mavx2 -mfma, like gemm_avx2.cpp; called only after
// gemm.cpp's run-time check, on AVX2 and AVX-512 CPUs): C (M x N, N <= 16) from A read IN PLACE (no
// packing: the attention's P V with head dim 8 used to pack all of P) and an untransposed B (K x N).
// One row of C is one or two ymm registers (masked at the right edge); 12 or 6 rows at a time, the
// whole K in registers. Every C element is the chain acc = init; acc = fma(alpha * A[i][k], B[k][j], acc) for
// k in order: bitwise the packed microkernels' result (gemm_microkernel.h).
#include <immintrin.h>

#include "kernels/cpu/gemm_detail.h"

namespace kern::cpu::gemm_detail {
namespace {

// Lane mask with the first n (0..8) lanes set.
__m256i lanes(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Rows [i0, i0 + MR) of C. NV vectors per row; the last one masked by `last`. A1: alpha == 1, so A's
// values are broadcast straight from memory (alpha * a == a: the same bits). The loops are fully
// unrolled so that the accumulators stay in registers (a rolled store loop made GCC spill all of them to
// the stack on every k step: 2.5x slower).
template <int MR, int NV, bool TA, bool A1>
inline void rows(const NarrowArgs<float>& a, int64_t i0, __m256i last) {
  __m256 acc[MR][NV];
  float* C = a.C + i0 * a.ldc;
  const int64_t ldc = a.ldc;
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_setzero_ps();  // beta == 0: C is not read
  }
  if (a.beta != 0.0f) {
    const __m256 vb = _mm256_set1_ps(a.beta);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      if (NV == 2) acc[i][0] = _mm256_loadu_ps(C + i * ldc);
      acc[i][NV - 1] = _mm256_maskload_ps(C + i * ldc + 8 * (NV - 1), last);
      if (a.beta != 1.0f) {
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_mul_ps(vb, acc[i][v]);
      }
    }
  }
  const float* A = TA ? a.A + i0 : a.A + i0 * a.lda;
  const int64_t sk = TA ? a.lda : 1, si = TA ? 1 : a.lda;  // A[i][k] = A[i * si + k * sk]
  const float* B = a.B;
  const int64_t ldb = a.ldb, K = a.K;
  const float alpha = a.alpha;
  for (int64_t k = 0; k < K; ++k) {
    __m256 b[NV];
    if (NV == 2) b[0] = _mm256_loadu_ps(B + k * ldb);
    b[NV - 1] = _mm256_maskload_ps(B + k * ldb + 8 * (NV - 1), last);
    const float* ak = A + k * sk;
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      const __m256 ai = A1 ? _mm256_broadcast_ss(ak + i * si) : _mm256_set1_ps(alpha * ak[i * si]);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_fmadd_ps(ai, b[v], acc[i][v]);
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i) {
    if (NV == 2) _mm256_storeu_ps(C + i * ldc, acc[i][0]);
    _mm256_maskstore_ps(C + i * ldc + 8 * (NV - 1), last, acc[i][NV - 1]);
  }
}

// Blocks of MR rows (12 for one vector per row, 6 for two: 12 accumulators, enough independent FMA
// chains to cover the FMA latency), then the leftover rows one row at a time.
template <int NV, bool TA, bool A1>
void run(const NarrowArgs<float>& a) {
  constexpr int MR = NV == 1 ? 12 : 6;
  const __m256i last = lanes(static_cast<int>(a.N - 8 * (NV - 1)));
  int64_t i = a.i0;
  for (; i + MR <= a.i1; i += MR) rows<MR, NV, TA, A1>(a, i, last);
  for (; i + 3 <= a.i1; i += 3) rows<3, NV, TA, A1>(a, i, last);
  for (; i < a.i1; ++i) rows<1, NV, TA, A1>(a, i, last);
}

template <int NV>
void dispatch(const NarrowArgs<float>& a) {
  if (a.alpha == 1.0f)
    a.transA ? run<NV, true, true>(a) : run<NV, false, true>(a);
  else
    a.transA ? run<NV, true, false>(a) : run<NV, false, false>(a);
}

void narrow_f32(const NarrowArgs<float>& a) { a.N <= 8 ? dispatch<1>(a) : dispatch<2>(a); }

}  // namespace

NarrowFn<float> narrow_f32_avx2() { return narrow_f32; }

}  // namespace kern::cpu::gemm_detail
