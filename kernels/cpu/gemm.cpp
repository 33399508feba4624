// CPU GEMM: the engine's own packed, register-blocked GEMM (the BLIS loop structure: macro tiles of
// C, K blocks, packed A and B panels, one register microkernel per ISA), chosen at run time by cpuid.
//
// Deterministic by construction. Every C element is computed as
//   acc = (beta == 0 ? 0 : beta == 1 ? C : beta * C);  for k = 0 .. K-1: acc = fma(alpha * A[i][k], B[k][j],
//   acc)
// one correctly rounded fused multiply-add per k, in k order (see gemm_microkernel.h). The result does
// not depend on M, N, the element's position in a tile, the K blocking, the thread count, or the ISA
// (AVX-512, AVX2 or std::fma): a matrix row gives the same bits in a batch of 1 as in a batch of 128, on
// every CPU with a correctly rounded FMA. cpu_gemm_reference below is that definition, written as a
// plain loop, and the tests compare every path against it bit for bit.
#include <omp.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/gemm_a_rows.h"
#include "kernels/cpu/gemm_detail.h"
#ifdef __AVX2__
#include "kernels/cpu/transpose8x8_avx2.h"
#endif
#include "runtime/error.h"

namespace kern::cpu {
namespace {
using namespace gemm_detail;

// Block sizes (elements): the packed A block (MC x KC) stays in L2, a packed B panel (KC x NR) in L1.
// Chosen by measurement on Zen 4 (bench/cpu_kernels_bench); they change speed, never results.
constexpr int64_t kKC = 256;
constexpr int64_t kMC = 240;  // a multiple of every MR (4, 6, 8)
constexpr int64_t kNC = 512;

CpuIsa detect_isa() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  // libgcc's checks include the OS's XSAVE support for the register state (XCR0).
  if (__builtin_cpu_supports("avx512f")) return CpuIsa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuIsa::Avx2;
#endif
  return CpuIsa::Scalar;  // other architectures: the portable std::fma kernel
}

CpuIsa select_isa() {
  const CpuIsa best = detect_isa();
  const char* env = std::getenv("ENGINE_CPU_ISA");
  if (!env || !*env || std::string(env) == "auto") return best;
  const std::string s(env);
  CpuIsa want;
  if (s == "avx512")
    want = CpuIsa::Avx512;
  else if (s == "avx2")
    want = CpuIsa::Avx2;
  else if (s == "scalar")
    want = CpuIsa::Scalar;
  else
    throw engine::Error("ENGINE_CPU_ISA='" + s + "': expected auto, avx512, avx2 or scalar");
  if (static_cast<int>(want) > static_cast<int>(best))
    throw engine::Error("ENGINE_CPU_ISA=" + s + ": this CPU supports at most " + cpu_isa_name(best));
  return want;
}

CpuIsa g_isa_override = CpuIsa::Auto;

bool detect_bf16() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

MatmulPrecision read_precision_env() {
  const char* env = std::getenv("ENGINE_CPU_PRECISION");
  if (!env || !*env) return MatmulPrecision::Fp32;
  const std::string s(env);
  if (s == "fp32") return MatmulPrecision::Fp32;
  if (s == "bf16") return MatmulPrecision::Bf16;
  throw engine::Error("ENGINE_CPU_PRECISION='" + s + "': expected fp32 or bf16");
}

bool g_precision_set = false;
MatmulPrecision g_precision = MatmulPrecision::Fp32;

// The environment is read (and validated) on the first call even under an override, so that
// check_cpu_settings() reports a bad value whatever the overrides.
CpuIsa active_isa() {
  static const CpuIsa isa = select_isa();
  return g_isa_override != CpuIsa::Auto ? g_isa_override : isa;
}

template <typename T>
Microkernel<T> microkernel_for(CpuIsa isa);
#if !defined(__x86_64__)  // the AVX files are not built: detect_isa() never selects them
bool gemm_f32_bf16_avx512(const Bf16GemmArgs&) { return false; }
Microkernel<float> microkernel_f32_avx512() { return microkernel_f32_scalar(); }
Microkernel<double> microkernel_f64_avx512() { return microkernel_f64_scalar(); }
Microkernel<float> microkernel_f32_avx2() { return microkernel_f32_scalar(); }
Microkernel<double> microkernel_f64_avx2() { return microkernel_f64_scalar(); }
#endif
template <>
Microkernel<float> microkernel_for<float>(CpuIsa isa) {
  return isa == CpuIsa::Avx512 ? microkernel_f32_avx512()
         : isa == CpuIsa::Avx2 ? microkernel_f32_avx2()
                               : microkernel_f32_scalar();
}
template <>
Microkernel<double> microkernel_for<double>(CpuIsa isa) {
  return isa == CpuIsa::Avx512 ? microkernel_f64_avx512()
         : isa == CpuIsa::Avx2 ? microkernel_f64_avx2()
                               : microkernel_f64_scalar();
}

// Row-major op(X) with op = transpose if trans: element (r, c).
template <typename T>
struct View {
  const T* p;
  int64_t ld;
  bool trans;
  T at(int64_t r, int64_t c) const { return trans ? p[c * ld + r] : p[r * ld + c]; }
};

// dst[k * P + r] = scale * src[r * ld + k] for r < rows, k < kc: a panel read across `rows` rows. Float
// (AVX2 baseline): 8 x 8 blocks transposed in registers; the rest in blocks of 8 k, so that each row is
// read in cache-line-sized runs while dst is written contiguously. The values are the same either way
// (one multiplication each).
template <typename T>
void transpose_pack(const T* src, int64_t ld, int rows, int64_t kc, T scale, int P, T* dst) {
  int r0 = 0;
#ifdef __AVX2__
  if constexpr (std::is_same_v<T, float>) {
    const __m256 vs = _mm256_set1_ps(scale);
    for (; r0 + 8 <= rows; r0 += 8) {
      int64_t k0 = 0;
      for (; k0 + 8 <= kc; k0 += 8) {
        __m256 r[8];
        for (int i = 0; i < 8; ++i) r[i] = _mm256_mul_ps(vs, _mm256_loadu_ps(src + (r0 + i) * ld + k0));
        detail::transpose8x8(r);
        for (int j = 0; j < 8; ++j) _mm256_storeu_ps(dst + (k0 + j) * P + r0, r[j]);
      }
      for (; k0 < kc; ++k0)
        for (int i = 0; i < 8; ++i) dst[k0 * P + r0 + i] = scale * src[(r0 + i) * ld + k0];
    }
  }
#endif
  constexpr int64_t kB = 8;
  for (int64_t k0 = 0; k0 < kc; k0 += kB) {
    const int64_t k1 = std::min(kc, k0 + kB);
    for (int r = r0; r < rows; ++r) {
      const T* s = src + r * ld;
      for (int64_t k = k0; k < k1; ++k) dst[k * P + r] = scale * s[k];
    }
  }
}

// Ap (kc x MR panels, k-major) <- alpha * op(A)[i0 : i0+mc, k0 : k0+kc], rows past mc zero.
template <typename T>
void pack_a(const View<T>& A, T alpha, int64_t i0, int64_t mc, int64_t k0, int64_t kc, int MR, T* Ap) {
  for (int64_t ir = 0; ir < mc; ir += MR) {
    const int m = static_cast<int>(std::min<int64_t>(MR, mc - ir));
    T* dst = Ap + ir * kc;
    if (!A.trans) {
      transpose_pack(A.p + (i0 + ir) * A.ld + k0, A.ld, m, kc, alpha, MR, dst);
    } else {
      for (int64_t k = 0; k < kc; ++k) {
        const T* src = A.p + (k0 + k) * A.ld + i0 + ir;
        for (int i = 0; i < m; ++i) dst[k * MR + i] = alpha * src[i];
      }
    }
    for (int i = m; i < MR; ++i)
      for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = T(0);
  }
}

// Bp (kc x NR panels, k-major) <- op(B)[k0 : k0+kc, j0 : j0+nc], columns past nc zero.
template <typename T>
void pack_b(const View<T>& B, int64_t k0, int64_t kc, int64_t j0, int64_t nc, int NR, T* Bp) {
  for (int64_t jr = 0; jr < nc; jr += NR) {
    const int n = static_cast<int>(std::min<int64_t>(NR, nc - jr));
    T* dst = Bp + jr * kc;
    if (!B.trans) {
      for (int64_t k = 0; k < kc; ++k) {
        const T* src = B.p + (k0 + k) * B.ld + j0 + jr;
        T* d = dst + k * NR;
        for (int j = 0; j < n; ++j) d[j] = src[j];
        for (int j = n; j < NR; ++j) d[j] = T(0);
      }
    } else {
      transpose_pack(B.p + (j0 + jr) * B.ld + k0, B.ld, n, kc, T(1), NR, dst);
      for (int64_t k = 0; k < kc; ++k)
        for (int j = n; j < NR; ++j) dst[k * NR + j] = T(0);
    }
  }
}

// One macro tile C[i0 : i0+mc, j0 : j0+nc], all K blocks in order, with the caller's packing buffers.
// a_rows: an untransposed A with alpha == 1 is read in place for full-height panels (gemm_a_rows).
template <typename T>
void macro_tile(const Microkernel<T>& uk, const View<T>& A, const View<T>& B, int64_t K, T alpha, T beta,
                T* C, int64_t ldc, int64_t i0, int64_t mc, int64_t j0, int64_t nc, T* Ap, T* Bp,
                bool a_rows) {
  // An untransposed A read in place (gemm_a_rows: the conv weight gradient's images, read once each).
  const bool rows_in_place = a_rows && !A.trans && alpha == T(1) && uk.fn_ar;
  for (int64_t k0 = 0; k0 < K; k0 += kKC) {
    const int64_t kc = std::min(kKC, K - k0);
    const Init init = k0 > 0         ? Init::Load
                      : beta == T(0) ? Init::Zero
                      : beta == T(1) ? Init::Load
                                     : Init::Scale;
    // With uk.direct_b, an untransposed B is read in place for full-width panels (no copy: with the
    // UNet's few output channels, packing B cost a third of the time); otherwise B is packed.
    const int64_t full = B.trans || !uk.direct_b ? 0 : nc / uk.NR * uk.NR;
    if (full < nc) pack_b(B, k0, kc, j0 + full, nc - full, uk.NR, Bp);
    // Likewise a transposed A with alpha == 1 (the Winograd GEMMs, conv backward-data) is read in place
    // for full-height panels: alpha * A == A, so the values are those packing would have written.
    const int64_t full_a = (A.trans && alpha == T(1)) || rows_in_place ? mc / uk.MR * uk.MR : 0;
    if (full_a < mc) pack_a(A, alpha, i0 + full_a, mc - full_a, k0, kc, uk.MR, Ap);
    for (int64_t jr = 0; jr < nc; jr += uk.NR)
      for (int64_t ir = 0; ir < mc; ir += uk.MR) {
        const bool direct = jr < full, direct_a = ir < full_a;
        const T* a_in_place = rows_in_place ? A.p + (i0 + ir) * A.ld + k0 : A.p + k0 * A.ld + i0 + ir;
        MicroArgs<T> a{kc,
                       direct_a ? a_in_place : Ap + (ir - full_a) * kc,
                       direct_a ? A.ld : int64_t(uk.MR),
                       direct ? B.p + k0 * B.ld + j0 + jr : Bp + (jr - full) * kc,
                       direct ? B.ld : int64_t(uk.NR),
                       C + (i0 + ir) * ldc + j0 + jr,
                       ldc,
                       static_cast<int>(std::min<int64_t>(uk.MR, mc - ir)),
                       static_cast<int>(std::min<int64_t>(uk.NR, nc - jr)),
                       init,
                       beta};
        const bool half = a.n <= uk.NR / 2 && uk.half;
        if (direct_a && rows_in_place)
          (half && uk.half_ar ? uk.half_ar : uk.fn_ar)(a);
        else
          (half ? uk.half : uk.fn)(a);
      }
  }
}

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Per-thread packing buffer `slot` of at least n elements, kept between calls (it only grows), so the
// hot path allocates nothing.
template <typename T>
T* scratch(int slot, int64_t n) {
  thread_local std::vector<T> buf[3];  // packed A, packed B, the narrow strip's copied B
  if (static_cast<int64_t>(buf[slot].size()) < n) buf[slot].resize(static_cast<size_t>(n));
  return buf[slot].data();
}

// Narrow N (<= kNarrowN): A read in place, B in place when untransposed (else copied into a K x N
// buffer, small since N is), row blocks over the threads. Same chains, so the same bits as macro_tile.
template <typename T>
void narrow_gemm(NarrowFn<T> fn, const View<T>& A, const View<T>& B, int64_t M, int64_t N, int64_t K, T alpha,
                 T beta, T* C, int64_t ldc, bool parallel) {
  const T* Bp = B.p;
  int64_t ldb = B.ld;
  if (B.trans) {
    T* buf = scratch<T>(1, K * N);
    for (int64_t j = 0; j < N; ++j)
      for (int64_t k = 0; k < K; ++k) buf[k * N + j] = B.p[j * B.ld + k];
    Bp = buf;
    ldb = N;
  }
  constexpr int64_t kRows = 96;  // rows per task: a multiple of the kernel's 12- and 6-row blocks
  const int64_t tasks = (M + kRows - 1) / kRows;
  auto task = [&](int64_t t) {
    fn(NarrowArgs<T>{t * kRows, std::min(M, (t + 1) * kRows), N, K, alpha, A.p, A.ld, A.trans, Bp, ldb, beta,
                     C, ldc});
  };
  if (!parallel || tasks <= 1) {  // no one-thread OpenMP region (see gemm_impl)
    for (int64_t t = 0; t < tasks; ++t) task(t);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tasks; ++t) task(t);
}

}  // namespace

namespace gemm_detail {
TilePlan plan_tiles(int64_t M, int64_t N, int MR, int NR, int nthreads) {
  TilePlan p{};
  p.MR = MR, p.NR = NR;
  p.mpanels = (M + MR - 1) / MR, p.npanels = (N + NR - 1) / NR;
  p.mtiles = std::min(p.mpanels, (M + kMC - 1) / kMC);
  p.ntiles = std::min(p.npanels, (N + kNC - 1) / kNC);
  // Split N unless it has fewer than two panels per thread (7 x 7 conv outputs: 32 + 16 + 1 columns,
  // where a column split would give one thread twice the other's work): then split M.
  const bool n_coarse = p.npanels < 2 * nthreads;
  while (nthreads > 1 && p.tiles() % nthreads != 0) {
    if (!n_coarse && p.ntiles < p.npanels)
      ++p.ntiles;
    else if (p.mtiles < p.mpanels)
      ++p.mtiles;
    else if (p.ntiles < p.npanels)
      ++p.ntiles;
    else
      break;
  }
  p.threads = static_cast<int>(std::min<int64_t>(nthreads, p.tiles()));
  p.mc_max = (p.mpanels + p.mtiles - 1) / p.mtiles * MR;
  p.nc_max = (p.npanels + p.ntiles - 1) / p.ntiles * NR;
  return p;
}
}  // namespace gemm_detail

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Avx512:
      return "avx512";
    case CpuIsa::Avx2:
      return "avx2";
    case CpuIsa::Scalar:
      return "scalar";
    case CpuIsa::Auto:
      return "auto";
  }
  return "?";
}

CpuIsa cpu_isa() { return active_isa(); }

CpuIsa cpu_isa_supported() {
  static const CpuIsa best = detect_isa();
  return best;
}

void set_cpu_isa(CpuIsa isa) {
  if (isa != CpuIsa::Auto && static_cast<int>(isa) > static_cast<int>(cpu_isa_supported()))
    throw engine::Error(std::string("set_cpu_isa: this CPU does not support ") + cpu_isa_name(isa));
  g_isa_override = isa;
}

MatmulPrecision matmul_precision() {
  static const MatmulPrecision env = read_precision_env();  // read even when set: see active_isa
  return g_precision_set ? g_precision : env;
}

void set_matmul_precision(MatmulPrecision p) {
  g_precision = p;
  g_precision_set = true;
}

const char* matmul_precision_name(MatmulPrecision p) { return p == MatmulPrecision::Bf16 ? "bf16" : "fp32"; }

bool cpu_has_bf16() {
  static const bool has = detect_bf16();
  return has;
}

MatmulPrecision matmul_precision_active() {
  return matmul_precision() == MatmulPrecision::Bf16 && cpu_has_bf16() && active_isa() == CpuIsa::Avx512
             ? MatmulPrecision::Bf16
             : MatmulPrecision::Fp32;
}

namespace {

template <typename T>
void gemm_impl(bool transA, bool transB, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
               const T* B, int64_t ldb, T beta, T* C, int64_t ldc, bool a_rows) {
  if (M <= 0 || N <= 0) return;
  const Microkernel<T> uk = microkernel_for<T>(active_isa());
  const View<T> a{A, lda, transA}, b{B, ldb, transB};
  if (K <= 0) {  // C = beta * C; with beta == 0, C is not read (BLAS semantics)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
    return;
  }
  const int nthreads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const bool parallel = nthreads > 1 && static_cast<double>(M) * N * K >= double(1 << 18);
  if constexpr (std::is_same_v<T, float>) {
    if (matmul_precision_active() == MatmulPrecision::Bf16) {
      if (!gemm_f32_bf16_avx512(
              Bf16GemmArgs{transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, parallel, nthreads}))
        throw std::bad_alloc();
      return;
    }
  }
  if (uk.narrow && N <= kNarrowN) {
    narrow_gemm(uk.narrow, a, b, M, N, K, alpha, beta, C, ldc, parallel);
    return;
  }
  // A ragged right edge of at most kNarrowN columns (conv outputs of 14 x 14 = 6 x 32 + 4 columns) goes
  // to the narrow kernel instead of edge tiles that are mostly padding. Each element's chain is the
  // same whichever kernel computes it.
  int64_t n_strip = 0;
  View<T> b_strip = b;
  // With a half-width tile, a remainder of NR/2 + r columns (conv outputs of 7 x 7 = 32 + 16 + 1) gives
  // its r <= kNarrowN columns to the narrow kernel and its last NR/2 to the half tile.
  const int64_t rem = N % uk.NR;
  const bool half_rem = uk.half && rem > uk.NR / 2 && rem - uk.NR / 2 <= kNarrowN;
  if (uk.narrow && rem != 0 && (rem <= kNarrowN || half_rem)) {
    n_strip = rem <= kNarrowN ? rem : rem - uk.NR / 2;
    N -= n_strip;
    b_strip = View<T>{b.trans ? B + N * ldb : B + N, ldb, transB};
    if (b.trans) {  // the narrow kernel reads B untransposed: copy the strip (K x n_strip, small)
      T* buf = scratch<T>(2, K * n_strip);
      for (int64_t j = 0; j < n_strip; ++j)
        for (int64_t k = 0; k < K; ++k) buf[k * n_strip + j] = b_strip.p[j * ldb + k];
      b_strip = View<T>{buf, n_strip, false};
    }
  }
  const TilePlan p = plan_tiles(M, N, uk.MR, uk.NR, parallel ? nthreads : 1);
  const int64_t kc_max = std::min(kKC, K);
  // The narrow strip's rows, in blocks of a multiple of the narrow kernel's 12 rows, one block per thread.
  const int64_t strip_rows = round_up((M + p.threads - 1) / p.threads, 12);
  const int64_t strip_tasks = n_strip > 0 ? (M + strip_rows - 1) / strip_rows : 0;
  auto tile = [&](int64_t t, T* Ap, T* Bp) {
    const int64_t ti = t / p.ntiles, tj = t % p.ntiles;
    const int64_t i0 = p.row_start(ti), i1 = std::min(M, p.row_start(ti + 1));
    const int64_t j0 = p.col_start(tj), j1 = std::min(N, p.col_start(tj + 1));
    if (i1 > i0 && j1 > j0)
      macro_tile(uk, a, b, K, alpha, beta, C, ldc, i0, i1 - i0, j0, j1 - j0, Ap, Bp, a_rows);
  };
  auto strip = [&](int64_t t) {
    uk.narrow(NarrowArgs<T>{t * strip_rows, std::min(M, (t + 1) * strip_rows), n_strip, K, alpha, a.p, a.ld,
                            a.trans, b_strip.p, b_strip.ld, beta, C + N, ldc});
  };
  // One thread (a small problem, or a call from inside a parallel region: the convs' image and chunk
  // loops call gemm thousands of times per training step): plain loops, no OpenMP region. A region with an
  // if(false) clause still builds and frees a one-thread team in libgomp, ~1 us per call.
  if (p.threads <= 1) {
    T* Ap = scratch<T>(0, p.mc_max * kc_max);
    T* Bp = scratch<T>(1, p.nc_max * kc_max);
    for (int64_t t = 0; t < p.tiles(); ++t) tile(t, Ap, Bp);
    for (int64_t t = 0; t < strip_tasks; ++t) strip(t);
    return;
  }
#pragma omp parallel num_threads(p.threads)
  {
    T* Ap = scratch<T>(0, p.mc_max * kc_max);
    T* Bp = scratch<T>(1, p.nc_max * kc_max);
#pragma omp for schedule(static) nowait
    for (int64_t t = 0; t < p.tiles(); ++t) tile(t, Ap, Bp);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < strip_tasks; ++t) strip(t);
  }
}

}  // namespace

template <typename T>
void gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  gemm_impl(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, false);
}

template <typename T>
void gemm_a_rows(bool transB, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                 int64_t ldb, T beta, T* C, int64_t ldc) {
  gemm_impl(false, transB, M, N, K, T(1), A, lda, B, ldb, beta, C, ldc, true);
}

template <typename T>
void gemm_reference(bool transA, bool transB, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                    int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  const View<T> a{A, lda, transA}, b{B, ldb, transB};
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      T acc = beta == T(0) ? T(0) : beta == T(1) ? C[i * ldc + j] : beta * C[i * ldc + j];
      for (int64_t k = 0; k < K; ++k) acc = std::fma(alpha * a.at(i, k), b.at(k, j), acc);
      C[i * ldc + j] = acc;
    }
}

template <typename T>
void gemm_batched(int64_t batch, bool transA, bool transB, int64_t M, int64_t N, int64_t K, T alpha,
                  const T* A, int64_t lda, int64_t strideA, const T* B, int64_t ldb, int64_t strideB, T beta,
                  T* C, int64_t ldc, int64_t strideC) {
  if (batch <= 0) return;
  // Small matrices: batch entries in parallel, each GEMM single-threaded (gemm runs serially inside a
  // parallel region). Large matrices: each GEMM parallelises over its own tiles. Same bits either way.
  const bool small = static_cast<double>(M) * N * K <= double(1 << 22);
  const bool par = small && batch > 1 && omp_get_max_threads() > 1 && !omp_in_parallel();
#pragma omp parallel for schedule(static) if (par)
  for (int64_t i = 0; i < batch; ++i)
    gemm<T>(transA, transB, M, N, K, alpha, A + i * strideA, lda, B + i * strideB, ldb, beta, C + i * strideC,
            ldc);
}

KERN_INSTANTIATE_CPU(gemm)
KERN_INSTANTIATE_CPU(gemm_batched)
template void gemm_a_rows<float>(bool, int64_t, int64_t, int64_t, const float*, int64_t, const float*,
                                 int64_t, float, float*, int64_t);
template void gemm_a_rows<double>(bool, int64_t, int64_t, int64_t, const double*, int64_t, const double*,
                                  int64_t, double, double*, int64_t);
template void gemm_reference<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                                    const float*, int64_t, float, float*, int64_t);
template void gemm_reference<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                                     const double*, int64_t, double, double*, int64_t);

}  // namespace kern::cpu
