// CPU benchmark of the conv2d kernels (forward, backward-input, backward-weight) at the
// UNet's shapes, batch 128. Prints GFLOP/s per case (Google Benchmark counters).
//   OMP_NUM_THREADS=2 build/bin/conv2d_bench [--benchmark_filter=32to32]
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"

namespace {

struct Case {
  const char* name;
  int64_t C, K, H, R, stride, pad;
};
constexpr Case kCases[] = {
    {"32to32_28x28", 32, 32, 28, 3, 1, 1},     {"64to64_14x14", 64, 64, 14, 3, 1, 1},
    {"128to64_7x7", 128, 64, 7, 3, 1, 1},      {"96to64_28x28", 96, 64, 28, 3, 1, 1},
    {"down_s2_32_28x28", 32, 32, 28, 3, 2, 1}, {"shortcut1x1_128to64_14x14", 128, 64, 14, 1, 1, 0},
};
constexpr int64_t kBatch = 128;

kern::Conv2dShape shape_of(const Case& c) {
  kern::Conv2dShape s{};
  s.N = kBatch, s.C = c.C, s.H = c.H, s.W = c.H, s.K = c.K, s.R = c.R, s.S = c.R;
  s.stride_h = s.stride_w = c.stride, s.pad_h = s.pad_w = c.pad;
  s.P = (s.H + 2 * s.pad_h - s.R) / s.stride_h + 1;
  s.Q = (s.W + 2 * s.pad_w - s.S) / s.stride_w + 1;
  return s;
}

std::vector<float> random_vec(int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

enum class Pass { Forward, BackwardInput, BackwardWeight };

void BM_Conv(benchmark::State& state, Case c, Pass pass) {
  const kern::Conv2dShape s = shape_of(c);
  auto x = random_vec(s.N * s.C * s.H * s.W, 1), w = random_vec(s.K * s.C * s.R * s.S, 2),
       b = random_vec(s.K, 3);
  auto y = random_vec(s.N * s.K * s.P * s.Q, 4);
  std::vector<float> dx(x.size()), dw(w.size()), db(b.size());
  for (auto _ : state) {
    switch (pass) {
      case Pass::Forward:
        kern::cpu::conv2d_forward<float>(s, x.data(), w.data(), b.data(), y.data());
        break;
      case Pass::BackwardInput:
        kern::cpu::conv2d_backward_input<float>(s, y.data(), w.data(), dx.data());
        break;
      case Pass::BackwardWeight:
        kern::cpu::conv2d_backward_weight<float>(s, y.data(), x.data(), dw.data(), db.data());
        break;
    }
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(s.flops() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

int register_all() {
  for (const Case& c : kCases) {
    benchmark::RegisterBenchmark((std::string("conv2d_fwd/") + c.name).c_str(), BM_Conv, c, Pass::Forward)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark((std::string("conv2d_bwd_input/") + c.name).c_str(), BM_Conv, c,
                                 Pass::BackwardInput)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark((std::string("conv2d_bwd_weight/") + c.name).c_str(), BM_Conv, c,
                                 Pass::BackwardWeight)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  return 0;
}
const int registered = register_all();

}  // namespace

BENCHMARK_MAIN();
