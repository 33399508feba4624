// The op-table rows of both kernel benchmarks: every model-shaped case of the op table
// (tests/op_table.h, the cases built from bench/unet_shapes.h and too large for finite differences),
// run through the op layer on the benchmark's device, forward alone and forward + backward, with the
// case's FLOP and byte counts (op_cost). The same cases GradCheck/NonFinite/CudaParity test.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "bench/bench_table.h"
#include "core/autograd.h"
#include "tests/op_table.h"

namespace bench {

// median_ms(fn): the benchmark's timer (host clock on the CPU, CUDA events on the engine stream).
inline void bench_op_table(engine::Device device, const std::string& filter, Printer& printer,
                           const std::function<double(const std::function<void()>&)>& median_ms) {
  using namespace engine;
  for (const test::OpCase& c : test::op_cases()) {
    if (c.gradcheck) continue;  // small correctness cases: nothing to measure
    const std::string fwd_name = "op " + c.op + " fwd", bwd_name = "op " + c.op + " fwd+bwd";
    const bool fwd = selected(fwd_name + " " + c.variant, filter),
               both = selected(bwd_name + " " + c.variant, filter);
    if (!fwd && !both) continue;
    const test::OpCost cost = test::op_cost(c);
    // Below 2 FLOP per byte the row is bandwidth-bound: show GB/s (bench::Row reads flops > 0 as
    // compute-bound).
    const double flops = cost.flops > 2 * cost.bytes ? cost.flops : 0;
    std::vector<Tensor> in = test::make_inputs(c, DType::F32, device, 3);
    if (fwd) {
      Row r{fwd_name, c.variant};
      r.flops = flops, r.bytes = cost.bytes;
      r.note = "op layer, tests/op_table.cpp";
      r.ours_ms = median_ms([&] {
        NoGradGuard no_grad;
        c.fn(in);
      });
      printer.row(r);
    }
    if (both) {
      Row r{bwd_name, c.variant};
      // Backward reads the forward's inputs and output gradient and computes about twice its FLOPs.
      r.flops = 3 * flops, r.bytes = 3 * cost.bytes;
      r.note = "op layer, tests/op_table.cpp";
      r.ours_ms = median_ms([&] {
        for (Tensor& t : in) t.zero_grad();
        sum(c.fn(in)).backward();
      });
      printer.row(r);
    }
  }
}

}  // namespace bench
