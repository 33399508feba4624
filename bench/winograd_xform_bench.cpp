// CPU benchmark of the Winograd input and output tile transforms alone (conv2d_winograd_simd.h), on the
// UNet's Winograd conv shapes, batch 128, one thread, chunk by chunk as conv2d_winograd.cpp runs them
// (chunk sizes from the same rule). Reports ns per tile per channel. The ISA path follows ENGINE_CPU_ISA
// (avx512 or avx2; the portable path has no entry point here and is skipped with a message).
//   OMP_NUM_THREADS=1 build/bin/winograd_xform_bench [--benchmark_filter=in/F23]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/bench_random.h"
#include "kernels/cpu/conv2d_winograd_simd.h"
#include "kernels/cpu/cpu_kernels.h"

namespace {

// The batch: 128, or WINOGRAD_XFORM_BATCH (a small batch keeps x and y in cache: the transforms' own cost).
int64_t batch() {
  const char* e = std::getenv("WINOGRAD_XFORM_BATCH");
  return e && *e ? std::max<int64_t>(1, std::atoll(e)) : 128;
}

struct XformCase {
  int64_t C, K, H;
};
// The UNet's convs that take Winograd (C * K >= 1024), by (C, K, side).
constexpr XformCase kCases[] = {{32, 32, 28},  {64, 64, 28}, {96, 32, 28}, {64, 64, 14},
                                {128, 64, 14}, {64, 64, 7},  {128, 64, 7}};

// conv2d_winograd.cpp's chunk rule (tiles per chunk, a multiple of 32 in [64, 512]).
int64_t chunk_tiles(int a, int64_t C, int64_t K) {
  const int64_t per_tile = int64_t(a) * a * (C + K) * 4;
  return std::clamp<int64_t>((int64_t(1) << 20) / per_tile / 32 * 32, 64, 512);
}

void BM_Xform(benchmark::State& state, XformCase c, int m, bool input) {
  const kern::cpu::CpuIsa isa = kern::cpu::cpu_isa();
  if (isa == kern::cpu::CpuIsa::Scalar) {
    state.SkipWithError("the portable path has no SIMD transform entry point");
    return;
  }
  const int a = m + 2;
  const int64_t kBatch = batch();
  const kern::Conv2dShape s = kern::conv2d_shape(kBatch, c.C, c.H, c.H, c.K, 3, 3, 1, 1, 1, 1);
  const int64_t T = kBatch * ((c.H + m - 1) / m) * ((c.H + m - 1) / m);
  const int64_t TB = chunk_tiles(a, c.C, c.K), ld = TB + 20;  // conv2d_winograd.cpp's ld
  auto x = bench::random_vec(s.N * s.C * s.H * s.W, 1), y = bench::random_vec(s.N * s.K * s.H * s.W, 2);
  auto V = bench::random_vec(a * a * s.C * ld, 3), M = bench::random_vec(a * a * s.K * ld, 4),
       b = bench::random_vec(s.K, 5);
  for (auto _ : state) {
    for (int64_t t0 = 0; t0 < T; t0 += TB) {
      const int64_t nt = std::min(TB, T - t0);
      if (input) {
        if (isa == kern::cpu::CpuIsa::Avx512)
          kern::cpu::detail::winograd_input_avx512(m, s, x.data(), t0, nt, V.data(), ld);
        else
          kern::cpu::detail::winograd_input_avx2(m, s, x.data(), t0, nt, V.data(), ld);
      } else {
        if (isa == kern::cpu::CpuIsa::Avx512)
          kern::cpu::detail::winograd_output_avx512(m, s, M.data(), ld, t0, nt, b.data(), {}, y.data());
        else
          kern::cpu::detail::winograd_output_avx2(m, s, M.data(), ld, t0, nt, b.data(), {}, y.data());
      }
    }
    benchmark::ClobberMemory();
  }
  const double per = static_cast<double>(T) * (input ? c.C : c.K);
  state.counters["ns/tile/ch"] = benchmark::Counter(
      per * 1e-9, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.SetLabel(kern::cpu::cpu_isa_name(isa));
}

int register_all() {
  for (int m : {2, 4})
    for (bool input : {true, false})
      for (const XformCase& c : kCases) {
        const std::string id = std::string(input ? "in" : "out") + "/F" + (m == 2 ? "23" : "43") + "/" +
                               std::to_string(c.C) + "to" + std::to_string(c.K) + "_" + std::to_string(c.H);
        benchmark::RegisterBenchmark(id.c_str(), BM_Xform, c, m, input)->Unit(benchmark::kMicrosecond);
      }
  return 0;
}
const int registered = register_all();

}  // namespace

BENCHMARK_MAIN();
