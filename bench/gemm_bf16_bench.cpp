// gemm_bf16_bench: our gemm<float> in bf16 mode (MatmulPrecision::Bf16, gemm_bf16_avx512.cpp) against
// our float32 path on the seed UNet's GEMM shapes, in the same process, interleaved, min of N runs.
//   wino  the Winograd F(2,3) transform-domain GEMMs (conv2d_winograd.cpp): M[xi] = U[xi]^T @ V[xi], 16
//         per chunk, every thread its own chunk inside one parallel region (each GEMM serial)
//   wgrad the Winograd weight-gradient GEMMs (conv2d_winograd_wgrad.cpp): dU[xi] (Cc x K) += V[xi] @ D^T,
//         16 per chunk, beta = 1, every thread its own channel block (each GEMM serial)
//   1x1 / linear  one GEMM per call, parallel over the OpenMP threads as gemm plans it
//   conv  the seed UNet's 3x3 stride-1 convs at --batch (default 16): forward + input gradient + weight
//         gradient (Winograd in both modes: the transforms are float32, only the GEMMs change)
// Usage: gemm_bf16_bench [--reps N] [--batch N] [--filter SUBSTRING] [--cpu-time] [--hash]   (threads:
// OMP_NUM_THREADS)
// --hash: also print, per conv row, an FNV-1a hash of the fp32 and of the bf16 results (y, dx, dw, db
// bytes), to check that a change keeps the bits (run before and after, any thread count).
// --cpu-time: time by the process's CPU time (CLOCK_PROCESS_CPUTIME_ID, all threads summed) instead of
// the wall clock: steadier on a shared machine (use it with OMP_NUM_THREADS=1).
// Prints, per shape, the min time of both paths and fp32 / bf16. Needs a CPU with AVX512_BF16 (else the
// bf16 column is the float32 fallback and the tool says so).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "bench/bench_random.h"
#include "bench/unet_shapes.h"
#include "kernels/cpu/cpu_kernels.h"

namespace {

namespace kc = kern::cpu;

struct Shape {
  const char* name;
  int64_t M, N, K;
  bool ta, tb;
  float beta;
  bool per_thread;  // every thread runs its own 16 GEMMs serially (Winograd); else one parallel GEMM
};

// Chunk tiles as conv2d_winograd.cpp / conv2d_winograd_wgrad.cpp choose them at these channels.
const Shape kShapes[] = {
    {"wino 32->32 @28", 32, 256, 32, true, false, 0, true},
    {"wino 64->32 @28", 32, 160, 64, true, false, 0, true},
    {"wino 96->32 @28", 32, 128, 96, true, false, 0, true},
    {"wino 64->64", 64, 128, 64, true, false, 0, true},
    {"wino 128->64", 64, 64, 128, true, false, 0, true},
    {"wino 96->64", 64, 96, 96, true, false, 0, true},
    {"wino 32->64", 64, 160, 32, true, false, 0, true},
    {"wino bwd 64->32", 64, 160, 32, true, false, 0, true},
    {"wino bwd 128->64", 128, 64, 64, true, false, 0, true},
    {"wgrad 32->32 (Cc 16)", 16, 32, 336, false, true, 1, true},
    {"wgrad 64->64 (Cc 32)", 32, 64, 160, false, true, 1, true},
    {"wgrad 128->64 (Cc 64)", 64, 64, 128, false, true, 1, true},
    {"wgrad 96->32 (Cc 48)", 48, 32, 240, false, true, 1, true},
    {"1x1 96->32 @28", 32, 784, 96, false, false, 0, false},
    {"1x1 128->64 @14", 64, 196, 128, false, false, 0, false},
    {"1x1 128->64 @7", 64, 49, 128, false, false, 0, false},
    {"linear b128 256", 128, 256, 256, false, true, 0, false},
    {"512^3", 512, 512, 512, false, false, 0, false},
};

bool g_cpu_time = false;  // --cpu-time

// FNV-1a over the bytes of the given vectors, continuing from h.
uint64_t fnv1a(uint64_t h, const std::vector<float>& v) {
  const auto* p = reinterpret_cast<const unsigned char*>(v.data());
  for (size_t i = 0; i < v.size() * sizeof(float); ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// Milliseconds on the wall clock, or of the process's CPU time under --cpu-time.
double now_ms() {
  if (g_cpu_time) {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
  }
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Min over reps of fn()'s time in fp32 and in bf16 mode, interleaved.
template <class F>
void time_both(int reps, F&& fn, double best[2]) {
  best[0] = best[1] = 1e30;
  for (int r = 0; r < reps; ++r)
    for (int p = 0; p < 2; ++p) {
      kc::set_matmul_precision(p ? kc::MatmulPrecision::Bf16 : kc::MatmulPrecision::Fp32);
      const double t0 = now_ms();
      fn();
      best[p] = std::min(best[p], now_ms() - t0);
    }
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 15;
  int64_t batch = 16;
  std::string filter;
  bool hash = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) {
      reps = std::atoi(argv[++i]);
    } else if (a == "--batch" && i + 1 < argc) {
      batch = std::atoll(argv[++i]);
    } else if (a == "--filter" && i + 1 < argc) {
      filter = argv[++i];
    } else if (a == "--cpu-time") {
      g_cpu_time = true;
    } else if (a == "--hash") {
      hash = true;
    } else {
      std::fprintf(
          stderr,
          "usage: gemm_bf16_bench [--reps N>0] [--batch N>0] [--filter SUBSTRING] [--cpu-time] [--hash]\n");
      return 2;
    }
  }
  if (reps <= 0 || batch <= 0) {
    std::fprintf(stderr, "gemm_bf16_bench: --reps and --batch must be positive\n");
    return 2;
  }
  kc::set_matmul_precision(kc::MatmulPrecision::Bf16);
  const bool bf16 = kc::matmul_precision_active() == kc::MatmulPrecision::Bf16;
  const int nth = omp_get_max_threads();
  std::printf("gemm_bf16_bench: %d thread(s), min of %d (%s); bf16 path: %s\n", nth, reps,
              g_cpu_time ? "process CPU time" : "wall clock",
              bf16 ? "AVX512_BF16" : "NOT available (fp32 fallback)");
  std::printf("%-24s %16s %10s %10s %8s %9s\n", "shape", "MxNxK", "fp32 ms", "bf16 ms", "speedup",
              "bf16 GF/s");
  for (const Shape& s : kShapes) {
    if (!filter.empty() && std::string(s.name).find(filter) == std::string::npos) continue;
    const int copies = s.per_thread ? 16 * nth : 1;
    const int64_t lda = (s.ta ? s.M : s.K) + (s.per_thread && !s.ta ? 16 : 0);  // V's row gap
    const int64_t ldb = s.tb ? s.K + (s.per_thread ? 16 : 0) : s.N + (s.per_thread ? 16 : 0);
    const int64_t ldc = s.per_thread && !s.tb ? s.N + 16 : s.N;
    const int64_t na = (s.ta ? s.K : s.M) * lda, nb = (s.tb ? s.N : s.K) * ldb, nc = s.M * ldc;
    const auto A = bench::random_vec(na * copies, 1), B = bench::random_vec(nb * copies, 2);
    std::vector<float> C(nc * copies, 0.0f);
    auto run = [&] {
      if (s.per_thread) {
#pragma omp parallel
        {
          const int t = omp_get_thread_num();
          for (int xi = 0; xi < 16; ++xi) {
            const int64_t c = t * 16 + xi;
            kc::gemm<float>(s.ta, s.tb, s.M, s.N, s.K, 1.0f, A.data() + c * na, lda, B.data() + c * nb, ldb,
                            s.beta, C.data() + c * nc, ldc);
          }
        }
      } else {
        kc::gemm<float>(s.ta, s.tb, s.M, s.N, s.K, 1.0f, A.data(), lda, B.data(), ldb, s.beta, C.data(), ldc);
      }
    };
    double best[2] = {1e30, 1e30};
    for (int r = 0; r < reps; ++r)
      for (int p = 0; p < 2; ++p) {
        kc::set_matmul_precision(p ? kc::MatmulPrecision::Bf16 : kc::MatmulPrecision::Fp32);
        const double t0 = now_ms();
        run();
        best[p] = std::min(best[p], now_ms() - t0);
      }
    char shape[48];
    std::snprintf(shape, sizeof shape, "%lldx%lldx%lld%s", (long long)s.M, (long long)s.N, (long long)s.K,
                  s.per_thread ? " x16/t" : "");
    const double flops = 2.0 * s.M * s.N * s.K * copies;
    std::printf("%-24s %16s %10.4f %10.4f %7.2fx %9.1f\n", s.name, shape, best[0], best[1], best[0] / best[1],
                flops / best[1] * 1e-6);
  }
  for (const bench::ConvCase& cc : bench::kConvs) {
    const std::string name = std::string("conv ") + cc.name + " @" + std::to_string(cc.H);
    if (cc.R != 3 || cc.stride != 1 || (!filter.empty() && name.find(filter) == std::string::npos)) continue;
    const kern::Conv2dShape s = bench::conv_shape(cc, batch);
    const auto x = bench::random_vec(s.N * s.C * s.H * s.W, 3), w = bench::random_vec(s.K * s.C * 9, 4),
               dy = bench::random_vec(s.N * s.K * s.P * s.Q, 5);
    const std::vector<float> b(s.K, 0.1f);
    std::vector<float> y(dy.size()), dx(x.size()), dw(w.size()), db(s.K);
    double best[2];
    time_both(
        reps,
        [&] {
          kc::conv2d_forward<float>(s, x.data(), w.data(), b.data(), y.data());
          kc::conv2d_backward_input<float>(s, dy.data(), w.data(), dx.data());
          kc::conv2d_backward_weight<float>(s, dy.data(), x.data(), dw.data(), db.data());
        },
        best);
    char shape[48];
    std::snprintf(shape, sizeof shape, "N=%lld fwd+dx+dw", (long long)batch);
    const double flops = 3 * 2.0 * s.N * s.K * s.C * 9 * s.P * s.Q;  // direct-conv FLOPs
    std::printf("%-24s %16s %10.4f %10.4f %7.2fx %9.1f", name.c_str(), shape, best[0], best[1],
                best[0] / best[1], flops / best[1] * 1e-6);
    if (hash) {
      uint64_t h[2];
      for (int p = 0; p < 2; ++p) {
        kc::set_matmul_precision(p ? kc::MatmulPrecision::Bf16 : kc::MatmulPrecision::Fp32);
        kc::conv2d_forward<float>(s, x.data(), w.data(), b.data(), y.data());
        kc::conv2d_backward_input<float>(s, dy.data(), w.data(), dx.data());
        kc::conv2d_backward_weight<float>(s, dy.data(), x.data(), dw.data(), db.data());
        h[p] = fnv1a(fnv1a(fnv1a(fnv1a(14695981039346656037ull, y), dx), dw), db);
      }
      std::printf("  fp32 %016llx bf16 %016llx", (unsigned long long)h[0], (unsigned long long)h[1]);
    }
    std::printf("\n");
  }
  return 0;
}
