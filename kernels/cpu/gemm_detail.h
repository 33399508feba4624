// Internal interface between the GEMM driver (gemm.cpp) and its per-ISA register microkernels
// (gemm_avx512.cpp, gemm_avx2.cpp, gemm_scalar.cpp). Not part of the kernel API: use kern::cpu::gemm.
#pragma once
#include <cstdint>

namespace kern::cpu::gemm_detail {

// How a microkernel starts its accumulators for one K block of one C tile.
enum class Init : int {
  Zero,   // acc = 0               (first K block, beta == 0: C is not read, as in BLAS)
  Load,   // acc = C               (first K block with beta == 1, or a later K block: C holds the partial sum)
  Scale,  // acc = beta * C        (first K block, other beta)
};

// One microkernel call: C (m x n valid of an MR x NR tile, row stride ldc) from the A panel Ap (kc rows
// of MR values, row stride lda: a packed, zero-padded panel with lda = MR and alpha applied, or, for a
// full-height panel of a transposed A with alpha == 1, A itself with its own row stride) and the B panel
// Bp (kc rows of NR values, row stride ldb: a packed, zero-padded panel with ldb = NR, or, for a
// full-width panel of an untransposed B, B itself with its own row stride).
template <typename T>
struct MicroArgs {
  int64_t kc;
  const T* Ap;
  int64_t lda;
  const T* Bp;
  int64_t ldb;
  T* C;
  int64_t ldc;
  int m, n;
  Init init;
  T beta;
};

template <typename T>
using MicroFn = void (*)(const MicroArgs<T>&);

// Narrow-N GEMM (N <= kNarrowN): rows [i0, i1) of C (M x N) = alpha * op(A) @ B + beta * C, with A read
// in place (A[i][k] = transA ? A[k * lda + i] : A[i * lda + k]) and B untransposed (K x N, row stride
// ldb). The whole K in one chain per element, in k order, with the same init rule as Init (beta == 0:
// C not read): bitwise the result of the packed path.
constexpr int64_t kNarrowN = 16;
template <typename T>
struct NarrowArgs {
  int64_t i0, i1, N, K;
  T alpha;
  const T* A;
  int64_t lda;
  bool transA;
  const T* B;
  int64_t ldb;
  T beta;
  T* C;
  int64_t ldc;
};
template <typename T>
using NarrowFn = void (*)(const NarrowArgs<T>&);

// A register tile shape and the function that computes it.
template <typename T>
struct Microkernel {
  int MR, NR;
  MicroFn<T> fn;
  const char* isa;
  // Read an untransposed B in place for full-width panels instead of packing it. Chosen per kernel by
  // measurement (bench/RESULTS.md): it pays for the 32-wide AVX-512 tile, and costs the 16-wide AVX2 one.
  bool direct_b = false;
  // The narrow-N kernel (nullptr: narrow problems take the packed path).
  NarrowFn<T> narrow = nullptr;
  // An MR x NR/2 tile (the same chains), for a right-edge panel at most half full (nullptr: the NR-wide
  // kernel computes it). Its Bp is a packed NR-wide panel, of which it reads the first NR/2 columns.
  MicroFn<T> half = nullptr;
  // fn and half with A read in place row-major (Ap = &A[i][k0], lda = A's row stride; the same chains):
  // gemm_a_rows' full-height panels (nullptr: A is packed).
  MicroFn<T> fn_ar = nullptr, half_ar = nullptr;
};

// Per-ISA microkernels (defined in the file of that ISA; the AVX ones may only be called on CPUs that
// support them: see gemm.cpp's run-time dispatch).
Microkernel<float> microkernel_f32_avx512();
Microkernel<double> microkernel_f64_avx512();
Microkernel<float> microkernel_f32_avx2();
Microkernel<double> microkernel_f64_avx2();
Microkernel<float> microkernel_f32_scalar();
Microkernel<double> microkernel_f64_scalar();
NarrowFn<float> narrow_f32_avx2();  // AVX2 + FMA (also used on AVX-512 CPUs)

// The macro tiles of C (M x N): a grid of mtiles x ntiles blocks of whole MR x NR register tiles, the
// panels shared out evenly (tile sizes differ by at most one panel; at most about kMC x kNC elements
// each). With nthreads > 1 the tile count is made a multiple of the thread count where the panels allow
// (splitting N first, the packed A block being the small one on the UNet's shapes, unless N has fewer
// than two panels per thread), so that the threads of a static schedule get equal work. threads: the
// team size to use (at most the tile count).
struct TilePlan {
  int64_t MR, NR, mpanels, npanels, mtiles, ntiles, mc_max, nc_max;
  int threads;
  int64_t tiles() const { return mtiles * ntiles; }
  int64_t row_start(int64_t i) const {
    return i * mpanels / mtiles * MR;
  }  // tile row i: [start(i), start(i+1))
  int64_t col_start(int64_t j) const { return j * npanels / ntiles * NR; }  // clipped to M, N by the caller
};
TilePlan plan_tiles(int64_t M, int64_t N, int MR, int NR, int nthreads);  // M, N, MR, NR > 0

// The bf16 path of gemm<float> (gemm_bf16_avx512.cpp; only on CPUs with AVX512_BF16): the same problem
// as gemm (M, N, K > 0), with the caller's threading decision (parallel over macro tiles when `parallel`,
// else serial; nthreads = the team size it plans for). Returns false if a packing buffer could not be
// allocated (C is then incomplete).
struct Bf16GemmArgs {
  bool transA, transB;
  int64_t M, N, K;
  float alpha;
  const float* A;
  int64_t lda;
  const float* B;
  int64_t ldb;
  float beta;
  float* C;
  int64_t ldc;
  bool parallel;
  int nthreads;
};
bool gemm_f32_bf16_avx512(const Bf16GemmArgs& g);

}  // namespace kern::cpu::gemm_detail
