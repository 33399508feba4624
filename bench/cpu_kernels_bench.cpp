// cpu_kernels_bench: the engine's CPU kernels at the seed UNet's real shapes, beside a simple OpenBLAS
// baseline and the machine's floor -- the CPU twin of cuda_kernels_bench (same rows, same columns).
//   gemm at the per-image conv, linear and attention shapes  vs cblas_sgemm (ENGINE_CPU_ISA picks our path;
//   ENGINE_CPU_PRECISION=bf16 runs ours in bf16 where the CPU has AVX512_BF16)
//   conv wino F(2,3), F(4,3)  3x3 s1 forward and backward-data by Winograd vs our im2col + GEMM
//   conv (fwd, bwd-data, bwd-filter)  vs im2col over the whole batch + ONE cblas_sgemm (+ col2im /
//   transposes) attention, 8 heads of dim 8 at 196 / 49 tokens  vs the BLAS path: per head cblas_sgemm S =
//   QK^T, softmax,
//        O = PV (backward: recompute P, 4 sgemms, softmax backward), heads split over OpenMP threads
//   group norm (32 groups), silu, AdamW over the 1,707,307 parameters  vs the bandwidth floor only
// Batch --batch (default 16, to keep 2-core runs short; the GPU bench uses 128). Median of --runs after one
// warm-up; a 128 MiB buffer is written before every run so no input stays in cache. Peaks measured here:
// FP32 FLOP/s = a 2048^3 cblas_sgemm with the same threads; bandwidth = an OpenMP copy of 256 MiB
// (read + write). floor = max(FLOPs / peak, minimal bytes / bandwidth). The conv/attention rows also report
// max |ours - baseline| / max |baseline|.
//   OMP_NUM_THREADS=2 build/bin/cpu_kernels_bench [--threads 2] [--batch 16] [--runs 5] [--filter conv]
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "bench/bench_table.h"
#include "bench/op_table_rows.h"
#include "bench/unet_shapes.h"
#include "kernels/cpu/conv2d_winograd.h"
#include "kernels/cpu/cpu_kernels.h"
#include "models/conditional_unet.h"

namespace {

using Vec = std::vector<float>;
using Clock = std::chrono::steady_clock;

bench::Options g_opt;  // defaults: batch 16, 5 runs

Vec randn(int64_t n, float scale = 1.f, unsigned seed = 1) {
  static unsigned counter = 0;
  std::mt19937 rng(seed + 7919 * ++counter);
  std::normal_distribution<float> d(0.f, scale);
  Vec v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

double rel_err(const Vec& a, const Vec& b) { return bench::max_rel_err(a, b); }

// ---------------------------------------------------------------- timing

Vec g_flush(size_t(32) << 20);  // 128 MiB
double median_ms(const std::function<void()>& fn, int runs = -1) {
  if (runs < 0) runs = g_opt.runs;
  fn();  // warm-up
  std::vector<double> ts;
  for (int r = 0; r < runs; ++r) {
    const float fill = float(r);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < g_flush.size(); ++i) g_flush[i] = fill;
    const auto t0 = Clock::now();
    fn();
    ts.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::sort(ts.begin(), ts.end());
  return ts.size() % 2 ? ts[ts.size() / 2] : 0.5 * (ts[ts.size() / 2 - 1] + ts[ts.size() / 2]);
}

using bench::Peaks;
Peaks g_peak;

Peaks measure_peaks() {
  Peaks p;
  const int n = 2048;
  Vec a = randn(int64_t(n) * n), b = randn(int64_t(n) * n), c(size_t(n) * n);
  const double ms = median_ms(
      [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f,
                    c.data(), n);
      },
      3);
  p.flops = 2.0 * n * n * n / (ms * 1e-3);
  const size_t m = size_t(64) << 20;  // 256 MiB of floats
  Vec src(m, 1.f), dst(m);
  const double ms_c = median_ms(
      [&] {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < m; ++i) dst[i] = src[i];
      },
      3);
  p.bw = 2.0 * m * 4 / (ms_c * 1e-3);
  std::printf(
      "measured peak FP32: %.1f GFLOP/s (cblas_sgemm 2048^3, %d threads); bandwidth: %.1f GB/s (256 MiB "
      "copy, read+write)\n\n",
      p.flops * 1e-9, omp_get_max_threads(), p.bw * 1e-9);
  return p;
}

// ---------------------------------------------------------------- the table

using bench::Row;

bench::Printer* g_printer = nullptr;
void print_row(const Row& r) { g_printer->row(r); }

bool selected(const std::string& name) { return bench::selected(name, g_opt.filter); }

// ---------------------------------------------------------------- gemm: ours vs cblas_sgemm

// The Winograd F(2,3) GEMMs as conv2d_winograd.cpp runs them: inside a parallel region (so each GEMM is
// serial), every thread multiplies its chunk's 16 transform points, M[xi] (K_out x TB) = U[xi]^T (stored
// C_in x K_out) @ V[xi] (C_in x TB, row stride TB + 16). TB = the chunk tiles chunk_tiles() picks for
// these channels (1 MiB / (16 (C + K) 4 B), multiple of 32, in [64, 512]). Time per 16 GEMMs of every thread.
void bench_gemm_winograd() {
  struct W {
    const char* name;
    int64_t K, TB, C;  // GEMM M, N, K
  };
  const W cases[] = {
      {"gemm wino 64->64", 64, 128, 64},
      {"gemm wino 32->64", 64, 160, 32},
      {"gemm wino 128->64", 64, 64, 128},
      {"gemm wino 64->32", 32, 160, 64},
  };
  constexpr int kPoints = 16;
  const int nth = omp_get_max_threads();
  for (const W& w : cases) {
    if (!selected(w.name)) continue;
    const int64_t ld = w.TB + 16;
    const int64_t na = kPoints * w.C * w.K, nb = kPoints * w.C * ld, nc = kPoints * w.K * ld;
    const Vec a = randn(nth * na), b = randn(nth * nb);
    Vec c(nth * nc, 0.f), cb(nth * nc, 0.f);
    char shape[96];
    std::snprintf(shape, sizeof shape, "%lldx%lldx%lld A^T x16/thr", (long long)w.K, (long long)w.TB,
                  (long long)w.C);
    Row r{w.name, shape};
    r.flops = 2.0 * w.K * w.TB * w.C * kPoints * nth;
    auto run = [&](bool ours, Vec& out) {
#pragma omp parallel
      {
        const int t = omp_get_thread_num();
        for (int xi = 0; xi < kPoints; ++xi) {
          const float* A = a.data() + t * na + xi * w.C * w.K;
          const float* B = b.data() + t * nb + xi * w.C * ld;
          float* C = out.data() + t * nc + xi * w.K * ld;
          if (ours)
            kern::cpu::gemm<float>(true, false, w.K, w.TB, w.C, 1.f, A, w.K, B, ld, 0.f, C, ld);
          else
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, w.K, w.TB, w.C, 1.f, A, w.K, B, ld, 0.f, C,
                        ld);
        }
      }
    };
    r.ours_ms = median_ms([&] { run(true, c); });
    r.base_ms = median_ms([&] { run(false, cb); });
    r.err = rel_err(c, cb);
    r.note =
        std::string("cblas_sgemm (1 thread each); ours: ") + kern::cpu::cpu_isa_name(kern::cpu::cpu_isa());
    print_row(r);
  }
}

// The GEMMs one image's conv and the attention layer run (per-image im2col shapes at 28x28 / 14x14 / 7x7,
// the linear layers at the batch), ours (deterministic, kernels/cpu/gemm.cpp) against OpenBLAS.
void bench_gemm() {
  struct G {
    const char* name;
    int64_t M, N, K;
    bool ta, tb;
  };
  const int64_t B = g_opt.batch;
  const G cases[] = {
      {"gemm conv fwd 28x28", 32, 784, 288, false, false},
      {"gemm conv fwd 14x14", 64, 196, 576, false, false},
      {"gemm conv fwd 7x7", 64, 49, 1152, false, false},
      {"gemm conv bwd-data", 576, 196, 64, true, false},
      {"gemm conv bwd-filter", 64, 576, 196, false, true},
      {"gemm linear (batch)", B, 256, 256, false, true},
      {"gemm attention QK^T", 196, 196, 8, false, true},
      {"gemm 512^3", 512, 512, 512, false, false},
  };
  for (const G& g : cases) {
    if (!selected(g.name)) continue;
    const Vec a = randn(g.M * g.K), b = randn(g.K * g.N);
    Vec c(g.M * g.N), cb(g.M * g.N);
    const int64_t lda = g.ta ? g.M : g.K, ldb = g.tb ? g.K : g.N;
    char shape[64];
    std::snprintf(shape, sizeof shape, "%lldx%lldx%lld%s%s", (long long)g.M, (long long)g.N, (long long)g.K,
                  g.ta ? " A^T" : "", g.tb ? " B^T" : "");
    Row r{g.name, shape};
    r.flops = 2.0 * g.M * g.N * g.K;
    r.ours_ms = median_ms([&] {
      kern::cpu::gemm<float>(g.ta, g.tb, g.M, g.N, g.K, 1.f, a.data(), lda, b.data(), ldb, 0.f, c.data(),
                             g.N);
    });
    r.base_ms = median_ms([&] {
      cblas_sgemm(CblasRowMajor, g.ta ? CblasTrans : CblasNoTrans, g.tb ? CblasTrans : CblasNoTrans, g.M, g.N,
                  g.K, 1.f, a.data(), lda, b.data(), ldb, 0.f, cb.data(), g.N);
    });
    r.err = rel_err(c, cb);
    r.note = std::string("cblas_sgemm; ours: ") + kern::cpu::cpu_isa_name(kern::cpu::cpu_isa()) + " " +
             kern::cpu::matmul_precision_name(kern::cpu::matmul_precision_active());
    print_row(r);
  }
  bench_gemm_winograd();
}

// ---------------------------------------------------------------- conv: im2col + one sgemm baseline

using bench::ConvCase;
using bench::kConvs;
kern::Conv2dShape conv_shape(const ConvCase& c) { return bench::conv_shape(c, g_opt.batch); }

// x (N, C, H, W) -> cols (C*R*S, N*P*Q)
void im2col(const kern::Conv2dShape& s, const float* x, float* cols) {
  const int64_t NPQ = s.N * s.P * s.Q;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t rs = 0; rs < s.R * s.S; ++rs) {
      const int64_t r = rs / s.S, t = rs % s.S;
      float* row = cols + (c * s.R * s.S + rs) * NPQ;
      for (int64_t n = 0; n < s.N; ++n)
        for (int64_t p = 0; p < s.P; ++p) {
          const int64_t h = p * s.stride_h - s.pad_h + r;
          float* out = row + (n * s.P + p) * s.Q;
          if (h < 0 || h >= s.H) {
            std::fill(out, out + s.Q, 0.f);
            continue;
          }
          const float* in = x + ((n * s.C + c) * s.H + h) * s.W;
          for (int64_t q = 0; q < s.Q; ++q) {
            const int64_t w = q * s.stride_w - s.pad_w + t;
            out[q] = (w >= 0 && w < s.W) ? in[w] : 0.f;
          }
        }
    }
}

// cols (C*R*S, N*P*Q) -> dx (N, C, H, W), summing overlaps (each channel owned by one thread).
void col2im(const kern::Conv2dShape& s, const float* cols, float* dx) {
  const int64_t NPQ = s.N * s.P * s.Q;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < s.C; ++c) {
    for (int64_t n = 0; n < s.N; ++n)
      std::fill(dx + (n * s.C + c) * s.H * s.W, dx + (n * s.C + c + 1) * s.H * s.W, 0.f);
    for (int64_t rs = 0; rs < s.R * s.S; ++rs) {
      const int64_t r = rs / s.S, t = rs % s.S;
      const float* row = cols + (c * s.R * s.S + rs) * NPQ;
      for (int64_t n = 0; n < s.N; ++n)
        for (int64_t p = 0; p < s.P; ++p) {
          const int64_t h = p * s.stride_h - s.pad_h + r;
          if (h < 0 || h >= s.H) continue;
          const float* in = row + (n * s.P + p) * s.Q;
          float* out = dx + ((n * s.C + c) * s.H + h) * s.W;
          for (int64_t q = 0; q < s.Q; ++q) {
            const int64_t w = q * s.stride_w - s.pad_w + t;
            if (w >= 0 && w < s.W) out[w] += in[q];
          }
        }
    }
  }
}

// (N, K, PQ) <-> (K, N*PQ)
void nk_to_kn(int64_t N, int64_t K, int64_t PQ, const float* a, float* b) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) std::memcpy(b + (k * N + n) * PQ, a + (n * K + k) * PQ, PQ * 4);
}

void bench_conv(const ConvCase& c) {
  const kern::Conv2dShape s = conv_shape(c);
  const std::string shape = bench::conv_shape_str(s);
  const int64_t nx = s.N * s.C * s.H * s.W, nw = s.K * s.C * s.R * s.S, ny = s.N * s.K * s.P * s.Q;
  const int64_t CRS = s.C * s.R * s.S, NPQ = s.N * s.P * s.Q, PQ = s.P * s.Q;
  Vec x = randn(nx), w = randn(nw, 0.1f), b = randn(s.K), dy = randn(ny);
  Vec y(ny), dx(nx), dw(nw), db(s.K), ry(ny), rdx(nx), rdw(nw), rdb(s.K), cols(CRS * NPQ), tmp(ny);
  Row f{std::string(c.name) + " fwd", shape}, bd{std::string(c.name) + " bwd-data", shape},
      bw{std::string(c.name) + " bwd-filter", shape};
  f.flops = bd.flops = bw.flops = s.flops();
  f.bytes = 4.0 * (nx + nw + ny), bd.bytes = 4.0 * (ny + nw + nx), bw.bytes = 4.0 * (ny + nx + nw);
  f.ours_ms = median_ms([&] { kern::cpu::conv2d_forward<float>(s, x.data(), w.data(), b.data(), y.data()); });
  bd.ours_ms = median_ms([&] { kern::cpu::conv2d_backward_input<float>(s, dy.data(), w.data(), dx.data()); });
  bw.ours_ms = median_ms(
      [&] { kern::cpu::conv2d_backward_weight<float>(s, dy.data(), x.data(), dw.data(), db.data()); });
  f.base_ms = median_ms([&] {
    im2col(s, x.data(), cols.data());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s.K, NPQ, CRS, 1.f, w.data(), CRS, cols.data(),
                NPQ, 0.f, tmp.data(), NPQ);  // (K, N*PQ)
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t k = 0; k < s.K; ++k) {
        const float* src = tmp.data() + (k * s.N + n) * PQ;
        float* dst = ry.data() + (n * s.K + k) * PQ;
        for (int64_t i = 0; i < PQ; ++i) dst[i] = src[i] + b[k];
      }
  });
  bd.base_ms = median_ms([&] {
    nk_to_kn(s.N, s.K, PQ, dy.data(), tmp.data());  // dY (K, N*PQ)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, CRS, NPQ, s.K, 1.f, w.data(), CRS, tmp.data(), NPQ,
                0.f, cols.data(), NPQ);  // dcols = W^T dY
    col2im(s, cols.data(), rdx.data());
  });
  bw.base_ms = median_ms([&] {
    nk_to_kn(s.N, s.K, PQ, dy.data(), tmp.data());
    im2col(s, x.data(), cols.data());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s.K, CRS, NPQ, 1.f, tmp.data(), NPQ, cols.data(),
                NPQ, 0.f, rdw.data(), CRS);  // dW = dY cols^T
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < s.K; ++k) {
      double acc = 0;
      for (int64_t i = 0; i < NPQ; ++i) acc += tmp[k * NPQ + i];
      rdb[k] = float(acc);
    }
  });
  f.err = rel_err(y, ry), bd.err = rel_err(dx, rdx), bw.err = std::max(rel_err(dw, rdw), rel_err(db, rdb));
  f.note = "im2col + sgemm + bias";
  bd.note = "transpose dY + sgemm + col2im";
  bw.note = "transpose dY + im2col + sgemm";
  print_row(f);
  print_row(bd);
  print_row(bw);
}

// ---------------------------------------------------------------- conv 3x3 s1 forward: Winograd vs im2col
// Rows "<conv> wino F(m,3)": our Winograd with tile m against our own im2col + GEMM (baseline column), and
// its max error relative to that im2col result.
void bench_winograd(const ConvCase& c) {
  const kern::Conv2dShape s = conv_shape(c);
  if (!kern::cpu::winograd_applies(s)) return;
  char shape[64];
  std::snprintf(shape, sizeof shape, "%lldx%lldx%lldx%lld->%lldx%lld", (long long)s.N, (long long)s.C,
                (long long)s.H, (long long)s.W, (long long)s.P, (long long)s.Q);
  const int64_t nx = s.N * s.C * s.H * s.W, nw = s.K * s.C * 9, ny = s.N * s.K * s.P * s.Q;
  Vec x = randn(nx), w = randn(nw, 0.1f), b = randn(s.K), y(ny), ry(ny);
  kern::cpu::set_cpu_conv_algo(kern::cpu::CpuConvAlgo::Im2col);
  const double im2col_ms =
      median_ms([&] { kern::cpu::conv2d_forward<float>(s, x.data(), w.data(), b.data(), ry.data()); });
  kern::cpu::set_cpu_conv_algo(kern::cpu::CpuConvAlgo::Auto);
  for (int m : {2, 4}) {
    Row r{std::string(c.name) + " wino F(" + std::to_string(m) + ",3)", shape};
    r.flops = s.flops();  // the direct convolution's FLOPs (Winograd does fewer multiplications)
    r.bytes = 4.0 * (nx + nw + ny);
    r.ours_ms =
        median_ms([&] { kern::cpu::conv2d_forward_winograd(s, x.data(), w.data(), b.data(), y.data(), m); });
    r.base_ms = im2col_ms;
    r.err = rel_err(y, ry);
    r.note = std::string("our im2col + gemm; gemm ") + kern::cpu::cpu_isa_name(kern::cpu::cpu_isa());
    print_row(r);
  }
  // Backward-data by Winograd vs our im2col backward-data (forced: Auto may itself take Winograd).
  Vec dy = randn(ny), dx(nx), rdx(nx);
  kern::cpu::set_cpu_conv_algo(kern::cpu::CpuConvAlgo::Im2col);
  const double im2col_bd_ms =
      median_ms([&] { kern::cpu::conv2d_backward_input<float>(s, dy.data(), w.data(), rdx.data()); });
  kern::cpu::set_cpu_conv_algo(kern::cpu::CpuConvAlgo::Auto);
  for (int m : {2, 4}) {
    Row bd{std::string(c.name) + " wino bwd-data F(" + std::to_string(m) + ",3)", shape};
    bd.flops = s.flops();
    bd.bytes = 4.0 * (nx + nw + ny);
    bd.base_ms = im2col_bd_ms;
    bd.ours_ms =
        median_ms([&] { kern::cpu::conv2d_backward_input_winograd(s, dy.data(), w.data(), dx.data(), m); });
    bd.err = rel_err(dx, rdx);
    bd.note = "our im2col bwd-data (gemm + col2im)";
    print_row(bd);
  }
}

// ---------------------------------------------------------------- attention: per-head sgemm path

void softmax_row(int64_t L, float* r) {
  float m = -INFINITY, sum = 0;
  for (int64_t j = 0; j < L; ++j) m = std::max(m, r[j]);
  for (int64_t j = 0; j < L; ++j) sum += (r[j] = std::exp(r[j] - m));
  const float inv = 1.f / sum;
  for (int64_t j = 0; j < L; ++j) r[j] *= inv;
}

void bench_attention(int64_t L) {
  const int64_t heads = 8, D = 8, BH = g_opt.batch * heads, n = BH * L * D, LL = L * L, LD = L * D;
  const float scale = 1.f / std::sqrt(float(D));
  char shape[64];
  std::snprintf(shape, sizeof shape, "BH=%lld L=%lld D=%lld", (long long)BH, (long long)L, (long long)D);
  Vec q = randn(n), k = randn(n), v = randn(n), dout = randn(n);
  Vec o(n), lse(BH * L), dq(n), dk(n), dv(n), ro(n), rdq(n), rdk(n), rdv(n);
  const int nt = omp_get_max_threads();
  std::vector<Vec> S(nt, Vec(LL)), dP(nt, Vec(LL));
  auto base_fwd = [&] {
#pragma omp parallel for schedule(static)
    for (int64_t h = 0; h < BH; ++h) {
      float* s = S[omp_get_thread_num()].data();
      const float *qh = q.data() + h * LD, *kh = k.data() + h * LD, *vh = v.data() + h * LD;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, D, scale, qh, D, kh, D, 0.f, s, L);
      for (int64_t i = 0; i < L; ++i) softmax_row(L, s + i * L);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, D, L, 1.f, s, L, vh, D, 0.f,
                  ro.data() + h * LD, D);
    }
  };
  auto base_bwd = [&] {
#pragma omp parallel for schedule(static)
    for (int64_t h = 0; h < BH; ++h) {
      float *s = S[omp_get_thread_num()].data(), *dp = dP[omp_get_thread_num()].data();
      const float *qh = q.data() + h * LD, *kh = k.data() + h * LD, *vh = v.data() + h * LD,
                  *doh = dout.data() + h * LD;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, D, scale, qh, D, kh, D, 0.f, s, L);
      for (int64_t i = 0; i < L; ++i) softmax_row(L, s + i * L);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, D, L, 1.f, s, L, doh, D, 0.f,
                  rdv.data() + h * LD, D);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, D, 1.f, doh, D, vh, D, 0.f, dp, L);
      for (int64_t i = 0; i < L; ++i) {
        float delta = 0;
        for (int64_t j = 0; j < L; ++j) delta += s[i * L + j] * dp[i * L + j];
        for (int64_t j = 0; j < L; ++j) dp[i * L + j] = s[i * L + j] * (dp[i * L + j] - delta);
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, D, L, scale, dp, L, kh, D, 0.f,
                  rdq.data() + h * LD, D);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, D, L, scale, dp, L, qh, D, 0.f,
                  rdk.data() + h * LD, D);
    }
  };
  Row f{"attention fwd", shape}, b{"attention bwd", shape};
  f.flops = 4.0 * BH * LL * D, b.flops = 8.0 * BH * LL * D;
  f.bytes = 4.0 * (4 * n + BH * L), b.bytes = 4.0 * (8 * n + BH * L);
  f.ours_ms = median_ms([&] {
    kern::cpu::attention_forward<float>(BH, L, L, D, scale, q.data(), k.data(), v.data(), o.data(),
                                        lse.data());
  });
  f.base_ms = median_ms(base_fwd);
  b.ours_ms = median_ms([&] {
    kern::cpu::attention_backward<float>(BH, L, L, D, scale, q.data(), k.data(), v.data(), o.data(),
                                         lse.data(), dout.data(), dq.data(), dk.data(), dv.data());
  });
  b.base_ms = median_ms(base_bwd);
  f.err = rel_err(o, ro);
  b.err = std::max({rel_err(dq, rdq), rel_err(dk, rdk), rel_err(dv, rdv)});
  f.note = "per head: sgemm, softmax, sgemm";
  b.note = "per head: recompute P, 4 sgemms, softmax bwd";
  print_row(f);
  print_row(b);
}

// ---------------------------------------------------------------- group norm, silu, AdamW (floor only)

using bench::Act;
using bench::kActs;

void bench_group_norm(const Act& a) {
  const int64_t N = g_opt.batch, C = a.C, HW = a.H * a.H, n = N * C * HW, G = 32;
  const std::string shape = bench::act_shape_str(N, a, G);
  Vec x = randn(n), gamma = randn(C), beta = randn(C), dy = randn(n);
  Vec y(n), mean(N * G), rstd(N * G), dx(n), dgamma(C), dbeta(C);
  Row f{"group_norm fwd", shape}, b{"group_norm bwd", shape};
  f.bytes = 4.0 * 2 * n, b.bytes = 4.0 * 3 * n;
  f.ours_ms = median_ms([&] {
    kern::cpu::group_norm_forward<float>(N, C, HW, G, 1e-5, x.data(), gamma.data(), beta.data(), y.data(),
                                         mean.data(), rstd.data());
  });
  b.ours_ms = median_ms([&] {
    kern::cpu::group_norm_backward<float>(N, C, HW, G, dy.data(), x.data(), mean.data(), rstd.data(),
                                          gamma.data(), dx.data(), dgamma.data(), dbeta.data());
  });
  f.note = b.note = "vs bandwidth floor";
  print_row(f);
  print_row(b);
  // The fused group_norm_silu (the UNet's GroupNorm + SiLU): same traffic, SiLU / SiLU' in registers.
  std::vector<double> stats(2 * N * G);
  Row fs{"group_norm_silu fwd", shape}, bs{"group_norm_silu bwd", shape};
  fs.bytes = 4.0 * 2 * n, bs.bytes = 4.0 * 3 * n;
  fs.ours_ms = median_ms([&] {
    kern::cpu::group_norm_silu_forward<float>(N, C, HW, G, 1e-5, x.data(), gamma.data(), beta.data(),
                                              y.data(), stats.data());
  });
  bs.ours_ms = median_ms([&] {
    kern::cpu::group_norm_silu_backward<float>(N, C, HW, G, dy.data(), x.data(), stats.data(), gamma.data(),
                                               beta.data(), dx.data(), dgamma.data(), dbeta.data());
  });
  fs.note = bs.note = "fused; vs bandwidth floor";
  print_row(fs);
  print_row(bs);
}

void bench_silu(const Act& a) {
  const int64_t n = g_opt.batch * a.C * a.H * a.H;
  const std::string shape = bench::act_shape_str(g_opt.batch, a);
  Vec x = randn(n), dy = randn(n), y(n), dx(n);
  Row f{"silu fwd", shape}, b{"silu bwd", shape};
  f.bytes = 4.0 * 2 * n, b.bytes = 4.0 * 3 * n;
  f.ours_ms = median_ms([&] { kern::cpu::unary<float>(kern::Unary::Silu, n, x.data(), y.data()); });
  b.ours_ms = median_ms([&] { kern::cpu::silu_backward<float>(n, x.data(), dy.data(), dx.data()); });
  f.note = b.note = "vs bandwidth floor";
  print_row(f);
  print_row(b);
}

void bench_adamw() {
  std::vector<int64_t> sizes;
  {
    engine::models::ConditionalUNet model(engine::models::ConditionalConfig::seed(), 0);
    for (const auto& [name, t] : model.named_parameters()) sizes.push_back(t.numel());
  }
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  Vec p = randn(total), g = randn(total), m = randn(total, 0.01f), v = randn(total, 0.01f);
  for (auto& e : v) e *= e;
  std::vector<float*> pp, mp, vp;
  std::vector<const float*> gp;
  int64_t off = 0;
  for (int64_t s : sizes) {
    pp.push_back(p.data() + off), gp.push_back(g.data() + off), mp.push_back(m.data() + off),
        vp.push_back(v.data() + off);
    off += s;
  }
  kern::AdamWParams hp{1e-3, 0.9, 0.999, 1e-8, 0.01, 1};
  char shape[64];
  std::snprintf(shape, sizeof shape, "%zu tensors, %lld values", sizes.size(), (long long)total);
  Row r{"adamw (model params)", shape};
  r.bytes = 4.0 * 7 * total;
  r.note = "vs bandwidth floor";
  r.ours_ms = median_ms([&] {
    kern::cpu::adamw_step<float>(int(sizes.size()), pp.data(), gp.data(), mp.data(), vp.data(), sizes.data(),
                                 hp);
    ++hp.step;
  });
  print_row(r);
}

}  // namespace

int main(int argc, char** argv) {
  const int rc = bench::parse_options(
      argc, argv, bench::kOptBatch | bench::kOptThreads,
      "usage: %s [--threads N] [--batch 16] [--runs 5] [--filter SUBSTR] [--quick]\n"
      "  --filter  gemm, conv, attention, group_norm, silu, adamw or op (substring of the kernel name)\n"
      "  --quick   3 runs (also implied by --benchmark_min_time=..., for gpu_check.sh)\n",
      g_opt);
  if (rc >= 0) return rc;
  if (g_opt.quick) g_opt.runs = std::min(g_opt.runs, 3);
  if (g_opt.threads > 0) {
    omp_set_num_threads(g_opt.threads);
    openblas_set_num_threads(g_opt.threads);
  }
  std::printf(
      "cpu_kernels_bench: batch %lld, %d threads, median of %d runs after 1 warm-up, 128 MiB written "
      "between runs\n",
      (long long)g_opt.batch, omp_get_max_threads(), g_opt.runs);
  g_peak = measure_peaks();
  bench::Printer printer(g_peak, 3, 1);
  g_printer = &printer;
  printer.header();
  bench_gemm();
  bench::run_unet_rows(selected, {bench_conv, bench_attention, bench_group_norm, bench_silu, bench_adamw});
  for (const ConvCase& c : kConvs)
    if (selected(std::string(c.name) + " wino")) bench_winograd(c);
  bench::bench_op_table(engine::Device::cpu(), g_opt.filter, printer,
                        [](const std::function<void()>& fn) { return median_ms(fn); });
  std::printf(
      "\nfloor = max(FLOPs / measured sgemm peak, minimal bytes / measured bandwidth); %%floor = floor / "
      "ours. ours/b < 1: ours faster than the baseline. rel err = max |ours - baseline| / max |baseline|.\n");
  return 0;
}
