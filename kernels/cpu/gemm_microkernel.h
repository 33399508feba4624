// The GEMM register microkernel, written once over a SIMD "vector traits" type V and compiled once per
// ISA (gemm_avx512.cpp, gemm_avx2.cpp, gemm_scalar.cpp, each with its own compiler flags).
//
// Invariant (what makes the GEMM deterministic): for every C element, the kernel performs exactly
//   acc = init; for k in [0, kc): acc = fma(Ap[k][i], Bp[k][j], acc)
// with one correctly rounded fused multiply-add per k, in k order, one accumulator per element.
// A lane of an AVX-512 or AVX2 FMA and std::fma round identically, so every ISA gives the same bits.
//
// Everything here has internal linkage (anonymous namespace): each ISA file gets its own copy, so the
// linker can never substitute an AVX-512 instantiation into a file compiled for AVX2.
#pragma once
#include <cstdint>

#include "kernels/cpu/gemm_detail.h"

namespace kern::cpu::gemm_detail {
namespace {

// C tile (MR x NR, row stride ldc) += Ap (kc x MR, row stride lda) * Bp (kc x NR, row stride ldb), all
// rows and columns valid. init: how the accumulators start (see gemm_detail.h). AR: A is read in place
// row-major instead (A[i][k] = Ap[i * lda + k]: an untransposed A, alpha == 1); the values broadcast and
// the FMA sequence are the same, only their addresses differ.
template <class V, int MR, int NV, bool AR = false>
inline void microkernel_full(int64_t kc, const typename V::T* __restrict Ap, int64_t lda,
                             const typename V::T* __restrict Bp, int64_t ldb, typename V::T* __restrict C,
                             int64_t ldc, Init init, typename V::T beta) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::W;
  R acc[MR][NV];
  if (init == Init::Zero) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();
  } else if (init == Init::Load) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = V::load(C + i * ldc + v * W);
  } else {
    const R b = V::broadcast(beta);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = V::mul(b, V::load(C + i * ldc + v * W));
  }
  for (int64_t k = 0; k < kc; ++k) {
    R b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = V::load(Bp + k * ldb + v * W);
    const T* a = AR ? Ap + k : Ap + k * lda;
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const R ai = V::broadcast(AR ? a[i * lda] : a[i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(ai, b[v], acc[i][v]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) V::store(C + i * ldc + v * W, acc[i][v]);
}

// Same for an edge tile with only m <= MR rows and n <= NR columns valid: the valid part of C goes
// through a full-size local tile, so every valid element sees the exact same operation sequence.
template <class V, int MR, int NV, bool AR = false>
inline void microkernel(const MicroArgs<typename V::T>& a) {
  using T = typename V::T;
  constexpr int NR = NV * V::W;
  if (a.m == MR && a.n == NR) {
    microkernel_full<V, MR, NV, AR>(a.kc, a.Ap, a.lda, a.Bp, a.ldb, a.C, a.ldc, a.init, a.beta);
    return;
  }
  alignas(64) T tile[MR * NR];
  for (int i = 0; i < MR * NR; ++i) tile[i] = T(0);
  if (a.init != Init::Zero)
    for (int i = 0; i < a.m; ++i)
      for (int j = 0; j < a.n; ++j) tile[i * NR + j] = a.C[i * a.ldc + j];
  microkernel_full<V, MR, NV, AR>(a.kc, a.Ap, a.lda, a.Bp, a.ldb, tile, NR, a.init, a.beta);
  for (int i = 0; i < a.m; ++i)
    for (int j = 0; j < a.n; ++j) a.C[i * a.ldc + j] = tile[i * NR + j];
}

}  // namespace
}  // namespace kern::cpu::gemm_detail
