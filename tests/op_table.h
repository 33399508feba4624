// One table of op cases (the idea of ggml's test-backend-ops): every differentiable op with
// its variants, described once and run (a) through finite differences in float64 on the CPU
// (GradCheck.*) and (b) on every other device against the CPU backend (CudaParity.*).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/ops.h"

namespace engine::test {

struct InputSpec {
  enum class Kind { Normal, Positive, Index, Mask };
  Shape shape;
  Kind kind = Kind::Normal;
  bool requires_grad = true;  // ignored for Index/Mask inputs
  int64_t index_max = 0;      // Index: values in [0, index_max)
};

struct OpCase {
  std::string op;       // test name suffix, e.g. "Conv2d"
  std::string variant;  // e.g. "3x3_s2_p1_bias"
  std::vector<InputSpec> inputs;
  std::function<Tensor(const std::vector<Tensor>&)> fn;
  bool gradcheck = true;  // false for cases too large for finite differences (model shapes)
};

// Cost of one float32 forward of a case: FLOPs (0 for data-movement ops) and bytes read + written.
struct OpCost {
  double flops = 0, bytes = 0;
};
// The op's cost model (tests/op_table.cpp) applied to the case's input shapes and its output shape
// (found by running the forward once on the CPU, so call it outside static initialisation).
OpCost op_cost(const OpCase& c);

const std::vector<OpCase>& op_cases();
std::vector<OpCase> cases_for(const std::string& op);
// The distinct op names of the table, in table order.
std::vector<std::string> op_names();

// Registers one GoogleTest <suite>.<prefix><Op> per op of the table (GoogleTest's RegisterTest), whose
// body is check(op). Called from a namespace-scope initialiser, so a new op in the table gets its
// GradCheck/NonFinite/CudaParity tests without any hand-kept list. Returns true (for the initialiser).
bool register_op_tests(const char* suite, const std::string& prefix, const char* file, int line,
                       std::function<void(const std::string& op)> check);

// Deterministic inputs for a case in the given dtype/device.
std::vector<Tensor> make_inputs(const OpCase& c, DType dtype, Device device, uint64_t seed);

struct GradCheckResult {
  double max_err = 0;  // max |numeric - analytic| / max(1, max |numeric|), over all inputs
  std::string worst;   // where it happened
};
// Central finite differences (float64) of L = sum(fn(inputs) * R), R a fixed random tensor.
GradCheckResult gradcheck(const OpCase& c, double eps = 1e-6, uint64_t seed = 1);
// Same, with a caller-supplied function in place of c.fn (used to prove a wrong backward is caught).
GradCheckResult gradcheck_fn(const OpCase& c, const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                             double eps = 1e-6, uint64_t seed = 1);

// Naive float64 reference of a case's forward (tests/op_refs.cpp), from flat row-major inputs
// (Index inputs as doubles) to the flat output; PyTorch's NaN/Inf semantics. Throws
// std::invalid_argument for a case without a reference.
std::vector<double> naive_ref(const OpCase& c, const std::vector<std::vector<double>>& inputs);
bool has_naive_ref(const OpCase& c);

// Positions at which NonFinite.* injects NaN/Inf into an input of n elements: the first element,
// the middle of the first 8-lane SIMD block, the middle of the array and the last element (in the
// scalar tail whenever n % 8 != 0).
std::vector<int64_t> nonfinite_positions(int64_t n);

// Runs c's forward on `device` in `dtype` with NaN, +inf and -inf injected at nonfinite_positions()
// of each float input, against naive_ref(); returns one message per failing injection (at most
// max_failures), empty when every output matches (NaN where the reference is NaN, same infinity,
// finite and within 2e-3 (F32) / 1e-9 (F64) relative elsewhere).
std::vector<std::string> nonfinite_check(const OpCase& c, DType dtype, Device device, int max_failures = 20);

// ‖a − b‖₂ / max(‖b‖₂, tiny); NaN if either contains a non-finite value.
double rel_err(const Tensor& a, const Tensor& b);

}  // namespace engine::test
