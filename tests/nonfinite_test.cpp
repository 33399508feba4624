// NonFinite.<Op>: every case of the op table with NaN, +inf and -inf injected at several positions
// (first element, inside a SIMD block, middle, scalar tail) of each float input, on the CPU in
// float32 and float64, against the naive float64 references of tests/op_refs.cpp.
// The same check on CUDA is CudaParity.NonFinite<Op> (tests/cuda_parity_test.cpp).
#include <gtest/gtest.h>

#include <cmath>

#include "tests/op_table.h"

namespace engine::test {
namespace {

void check_op(const std::string& op) {
  auto cases = cases_for(op);
  ASSERT_FALSE(cases.empty()) << "no op cases for " << op;
  for (const auto& c : cases) {
    // Model-sized cases are left out: their naive references take minutes; the small cases cover
    // SIMD blocks, scalar tails, several CUDA tiles/blocks (e.g. Attention/lk70, GroupNorm/g4_m300).
    if (!c.gradcheck) continue;
    for (DType dt : {DType::F32, DType::F64}) {
      SCOPED_TRACE(op + "/" + c.variant + (dt == DType::F32 ? " float32" : " float64"));
      for (const std::string& f : nonfinite_check(c, dt, Device::cpu())) ADD_FAILURE() << f;
    }
  }
}

// NonFinite.<Op> for every op of the table (registered from the table).
const bool kRegistered = register_op_tests("NonFinite", "", __FILE__, __LINE__, check_op);

// Every case of the table has a naive reference (its NonFinite test is registered from the table).
TEST(NonFiniteMeta, EveryCaseHasAReference) {
  for (const auto& c : op_cases())
    EXPECT_TRUE(has_naive_ref(c)) << c.op << "/" << c.variant << " has no naive reference";
}

// The references agree with the engine on finite inputs (so a wrong reference cannot pass silently)
// and the check catches a kernel that drops a NaN.
TEST(NonFiniteMeta, ReferencesMatchOnFiniteInputsAndDroppedNaNIsCaught) {
  for (const auto& c : op_cases()) {
    SCOPED_TRACE(c.op + "/" + c.variant);
    std::vector<Tensor> in = make_inputs(c, DType::F64, Device::cpu(), 5);
    std::vector<std::vector<double>> host;
    for (size_t i = 0; i < in.size(); ++i) {
      if (c.inputs[i].kind == InputSpec::Kind::Index) {
        auto v = in[i].to_vector<int64_t>();
        host.emplace_back(v.begin(), v.end());
      } else {
        host.push_back(in[i].to_vector<double>());
      }
    }
    Tensor out = c.fn(in);
    EXPECT_LE(rel_err(out, Tensor::from_vector(naive_ref(c, host), out.shape())), 1e-12);
  }
  // A "kernel" that replaces NaN by 0 (what a max-clamp does) must be reported.
  OpCase c = cases_for("Exp").at(0);
  c.fn = [](const std::vector<Tensor>& t) {
    auto v = t[0].to(Device::cpu()).to(DType::F64).to_vector<double>();
    for (auto& x : v) x = std::isnan(x) ? 0.0 : std::exp(x);
    return Tensor::from_vector(v, t[0].shape()).to(t[0].dtype());
  };
  EXPECT_FALSE(nonfinite_check(c, DType::F32, Device::cpu()).empty());
}

}  // namespace
}  // namespace engine::test
