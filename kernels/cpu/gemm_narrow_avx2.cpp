// Narrow-N float GEMM for AVX2 + FMA (compiled with -mavx2 -mfma, like gemm_avx2.cpp; called only after
// gemm.cpp's run-time check, on AVX2 and AVX-512 CPUs): C (M x N, N <= 16) from A read IN PLACE (no
// packing: the attention's P V with head dim 8 used to pack all of P) and an untransposed B (K x N).
// One row of C is one or two ymm registers (masked at the right edge); 6 rows at a time, the whole K
// in registers. Every C element is the chain acc = init; acc = fma(alpha * A[i][k], B[k][j], acc) for
// k in order: bitwise the packed microkernels' result (gemm_microkernel.h).
#include <immintrin.h>

#include "kernels/cpu/gemm_detail.h"

namespace kern::cpu::gemm_detail {
namespace {

// Lane mask with the first n (0..8) lanes set.
__m256i lanes(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Rows [i0, i0 + MR) of C. NV vectors per row; the last one masked by `last`.
template <int MR, int NV, bool TA>
inline void rows(const NarrowArgs<float>& a, int64_t i0, __m256i last) {
  __m256 acc[MR][NV];
  float* C = a.C + i0 * a.ldc;
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) {
      const __m256i m = v == NV - 1 ? last : _mm256_set1_epi32(-1);
      if (a.beta == 0.0f) {
        acc[i][v] = _mm256_setzero_ps();  // C is not read
      } else {
        const __m256 c = _mm256_maskload_ps(C + i * a.ldc + 8 * v, m);
        acc[i][v] = a.beta == 1.0f ? c : _mm256_mul_ps(_mm256_set1_ps(a.beta), c);
      }
    }
  const float* A = TA ? a.A + i0 : a.A + i0 * a.lda;
  const int64_t sk = TA ? a.lda : 1, si = TA ? 1 : a.lda;  // A[i][k] = A[i * si + k * sk]
  for (int64_t k = 0; k < a.K; ++k) {
    __m256 b[NV];
    for (int v = 0; v < NV; ++v)
      b[v] =
          v == NV - 1 ? _mm256_maskload_ps(a.B + k * a.ldb + 8 * v, last) : _mm256_loadu_ps(a.B + k * a.ldb);
    const float* ak = A + k * sk;
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m256 ai = _mm256_set1_ps(a.alpha * ak[i * si]);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_fmadd_ps(ai, b[v], acc[i][v]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) {
      if (v == NV - 1)
        _mm256_maskstore_ps(C + i * a.ldc + 8 * v, last, acc[i][v]);
      else
        _mm256_storeu_ps(C + i * a.ldc + 8 * v, acc[i][v]);
    }
}

template <int NV, bool TA>
void run(const NarrowArgs<float>& a) {
  const __m256i last = lanes(static_cast<int>(a.N - 8 * (NV - 1)));
  int64_t i = a.i0;
  for (; i + 6 <= a.i1; i += 6) rows<6, NV, TA>(a, i, last);
  switch (a.i1 - i) {
    case 5:
      rows<5, NV, TA>(a, i, last);
      break;
    case 4:
      rows<4, NV, TA>(a, i, last);
      break;
    case 3:
      rows<3, NV, TA>(a, i, last);
      break;
    case 2:
      rows<2, NV, TA>(a, i, last);
      break;
    case 1:
      rows<1, NV, TA>(a, i, last);
      break;
    default:
      break;
  }
}

void narrow_f32(const NarrowArgs<float>& a) {
  if (a.N <= 8)
    a.transA ? run<1, true>(a) : run<1, false>(a);
  else
    a.transA ? run<2, true>(a) : run<2, false>(a);
}

}  // namespace

NarrowFn<float> narrow_f32_avx2() { return narrow_f32; }

}  // namespace kern::cpu::gemm_detail
