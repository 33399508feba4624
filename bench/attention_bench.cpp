// The CPU small-head attention at the UNet's shapes and layout, per call: 8 heads of D = 8 per image in the
// (B, H, D, L) layout of nn::Attention, L = 196 (14x14) and 49 (7x7); forward with lse (training), forward
// without lse (sampling, no grad) and backward. Prints ms per call (min of --reps), GFLOP/s (forward
// 4 L^2 D per head: Q K^T and P V; backward 10 L^2 D: the recomputed scores, dP, dV, dK, dQ; the exps are
// not counted) and an FNV-1a hash of the outputs' bits, so that two builds, ISA paths
// (ENGINE_CPU_ISA) or thread counts (OMP_NUM_THREADS) can be compared for bitwise equality.
// Usage: attention_bench [--batch B] [--reps N] [--L L] [--cpu]  (defaults 128, 20, both 196 and 49; --cpu:
// process CPU time instead of wall time).
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "bench/bench_random.h"
#include "kernels/cpu/cpu_kernels.h"

namespace {

uint64_t fnv(const std::vector<float>& x, uint64_t h = 1469598103934665603ull) {
  for (float f : x) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    for (int b = 0; b < 4; ++b) h = (h ^ ((u >> (8 * b)) & 0xff)) * 1099511628211ull;
  }
  return h;
}

double cpu_ms() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

// Min over reps of the wall time (with --cpu: of the process CPU time, which a descheduled run does not
// inflate; for 1 thread on a shared machine).
bool g_cpu = false;
template <class F>
double min_ms(int reps, F&& f) {
  f();  // warm-up
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = cpu_ms();
    f();
    const double ms =
        g_cpu ? cpu_ms() - c0
              : std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    best = ms < best ? ms : best;
  }
  return best;
}

void run(int64_t B, int64_t L, int reps) {
  namespace kc = kern::cpu;
  const int64_t H = 8, D = 8, n = B * H * D * L;
  const double scale = 1.0 / std::sqrt(double(D));
  const std::vector<float> q = bench::random_vec(n, 1), k = bench::random_vec(n, 2),
                           v = bench::random_vec(n, 3), g = bench::random_vec(n, 4);
  std::vector<float> o(n), o2(n), lse(B * H * L), dq(n), dk(n), dv(n);
  const double heads = double(B * H), fl_f = heads * 4.0 * L * L * D, fl_b = heads * 10.0 * L * L * D;
  const double tf = min_ms(reps, [&] {
    kc::attention_forward_bhdl(B, H, L, L, D, scale, q.data(), k.data(), v.data(), o.data(), lse.data());
  });
  const double tn = min_ms(reps, [&] {
    kc::attention_forward_bhdl(B, H, L, L, D, scale, q.data(), k.data(), v.data(), o2.data(), nullptr);
  });
  const double tb = min_ms(reps, [&] {
    kc::attention_backward_bhdl(B, H, L, L, D, scale, q.data(), k.data(), v.data(), o.data(), lse.data(),
                                g.data(), dq.data(), dk.data(), dv.data());
  });
  std::printf(
      "L=%3lld B=%lld  fwd %8.3f ms %6.1f GF/s  fwd-nolse %8.3f ms %6.1f GF/s  bwd %8.3f ms %6.1f GF/s"
      "  hash fwd %016llx bwd %016llx\n",
      (long long)L, (long long)B, tf, fl_f / tf * 1e-6, tn, fl_f / tn * 1e-6, tb, fl_b / tb * 1e-6,
      (unsigned long long)fnv(o2, fnv(lse, fnv(o))), (unsigned long long)fnv(dv, fnv(dk, fnv(dq))));
}

}  // namespace

int main(int argc, char** argv) {
  int64_t B = 128, L = 0;
  int reps = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--cpu") {
      g_cpu = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "attention_bench: %s needs a value\n", a.c_str());
      return 2;
    }
    const long long x = std::atoll(argv[++i]);
    if (x < 1) {
      std::fprintf(stderr, "attention_bench: %s needs a positive integer\n", a.c_str());
      return 2;
    }
    if (a == "--batch") {
      B = x;
    } else if (a == "--reps") {
      reps = static_cast<int>(x);
    } else if (a == "--L") {
      L = x;
    } else {
      std::fprintf(stderr, "usage: attention_bench [--batch B] [--reps N] [--L L] [--cpu]\n");
      return 2;
    }
  }
  std::printf("attention_bench: ISA %s, %d threads, H = 8, D = 8, (B, H, D, L) layout, %s ms\n",
              kern::cpu::cpu_isa_name(kern::cpu::cpu_isa()), omp_get_max_threads(), g_cpu ? "CPU" : "wall");
  if (L > 0) {
    run(B, L, reps);
  } else {
    run(B, 196, reps);
    run(B, 49, reps);
  }
  return 0;
}
