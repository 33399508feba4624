// CPU benchmark of the conv2d kernels (forward, backward-input, backward-weight) at every conv shape
// of the seed UNet (bench/unet_shapes.h), batch 128 (and the attention projections' forward at the
// sampling batch 160). Prints GFLOP/s per case (Google Benchmark counters).
//   OMP_NUM_THREADS=2 build/bin/conv2d_bench [--benchmark_filter=32to32_28x28]
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "bench/bench_random.h"
#include "bench/unet_shapes.h"
#include "kernels/cpu/cpu_kernels.h"

namespace {

constexpr int64_t kBatch = 128;

// UNet convs that bench/unet_shapes.h's kConvs (shared with the kernel benchmarks) leaves out: conv_in,
// conv_out, the shortcuts it lists under another row and the attention projections; and one non-UNet case.
constexpr bench::ConvCase kExtraConvs[] = {
    {"conv_in 2->32", 2, 32, 28, 3, 1, 1},    // conv_in (noisy image + class channel)
    {"conv_out 32->1", 32, 1, 28, 3, 1, 1},   // conv_out
    {"conv1x1 64->32", 64, 32, 28, 1, 1, 0},  // up_blocks.2 resnets.1/2 shortcut
    {"conv1x1 32->64", 32, 64, 14, 1, 1, 0},  // down_blocks.1 resnets.0 shortcut
    // The attention blocks' to_q / to_k / to_v / to_out (nn::Attention's channel_linear: 1x1 convs), 4 per
    // block: 5 blocks at 14x14 and 6 at 7x7 per step (20 + 24 calls, with to_out's residual epilogue).
    {"attn proj 64->64", 64, 64, 14, 1, 1, 0},
    {"attn proj 64->64", 64, 64, 7, 1, 1, 0},
    // Not in the UNet: a 1x1 projection to a few channels (a segmentation or latent head), whose weight
    // gradient's threads split x's rows (the smaller side, K, has <= 16 channels).
    {"conv1x1 256->4", 256, 4, 28, 1, 1, 0},
};

enum class Pass { Forward, BackwardInput, BackwardWeight };

void BM_Conv(benchmark::State& state, bench::ConvCase c, Pass pass, int64_t batch) {
  const kern::Conv2dShape s = bench::conv_shape(c, batch);
  auto x = bench::random_vec(s.N * s.C * s.H * s.W, 1), w = bench::random_vec(s.K * s.C * s.R * s.S, 2),
       b = bench::random_vec(s.K, 3);
  auto y = bench::random_vec(s.N * s.K * s.P * s.Q, 4);
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

void register_case(const bench::ConvCase& c) {
  const std::string id = bench::conv_id(c);
  benchmark::RegisterBenchmark(("conv2d_fwd/" + id).c_str(), BM_Conv, c, Pass::Forward, kBatch)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark(("conv2d_bwd_input/" + id).c_str(), BM_Conv, c, Pass::BackwardInput, kBatch)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark(("conv2d_bwd_weight/" + id).c_str(), BM_Conv, c, Pass::BackwardWeight, kBatch)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
}

// The sampling batch: 80 images with CFG run the UNet forward on 2 x 80 (the attention projections'
// forward only; rows conv2d_fwd/attn_proj_64to64_<side>_b160).
constexpr int64_t kSampleBatch = 160;

int register_all() {
  for (const bench::ConvCase& c : bench::kConvs) register_case(c);
  for (const bench::ConvCase& c : kExtraConvs) register_case(c);
  for (const bench::ConvCase& c : kExtraConvs)
    if (std::string(c.name).rfind("attn proj", 0) == 0)
      benchmark::RegisterBenchmark(("conv2d_fwd/" + bench::conv_id(c) + "_b160").c_str(), BM_Conv, c,
                                   Pass::Forward, kSampleBatch)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
  return 0;
}
const int registered = register_all();

}  // namespace

BENCHMARK_MAIN();
