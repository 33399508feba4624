// NonFinite.<Op>: every case of the op table with NaN, +inf and -inf injected at several positions
// (first element, inside a SIMD block, middle, scalar tail) of each float input, on the CPU in
// float32 and float64, against the naive float64 references of tests/op_refs.cpp.
// The same check on CUDA is CudaParity.NonFinite<Op> (tests/cuda_parity_test.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <set>

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

#define NONFINITE(Op) \
  TEST(NonFinite, Op) { check_op(#Op); }
NONFINITE(Conv2d)
NONFINITE(GroupNorm)
NONFINITE(Linear)
NONFINITE(Matmul)
NONFINITE(Attention)
NONFINITE(Silu)
NONFINITE(Exp)
NONFINITE(Sin)
NONFINITE(Cos)
NONFINITE(Sqrt)
NONFINITE(Square)
NONFINITE(Neg)
NONFINITE(Affine)
NONFINITE(Add)
NONFINITE(Sub)
NONFINITE(Mul)
NONFINITE(Div)
NONFINITE(Embedding)
NONFINITE(Concat)
NONFINITE(Upsample)
NONFINITE(Sum)
NONFINITE(Mean)
NONFINITE(MseLoss)
NONFINITE(Views)

// Every case of the table has a naive reference and a NonFinite test (none added silently).
TEST(NonFiniteMeta, EveryCaseHasAReference) {
  const std::set<std::string> tested = {"Conv2d", "GroupNorm", "Linear", "Matmul", "Attention", "Silu",
                                        "Exp",    "Sin",       "Cos",    "Sqrt",   "Square",    "Neg",
                                        "Affine", "Add",       "Sub",    "Mul",    "Div",       "Embedding",
                                        "Concat", "Upsample",  "Sum",    "Mean",   "MseLoss",   "Views"};
  for (const auto& c : op_cases()) {
    EXPECT_TRUE(has_naive_ref(c)) << c.op << "/" << c.variant << " has no naive reference";
    EXPECT_TRUE(tested.count(c.op)) << c.op << " has no NonFinite test";
  }
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
