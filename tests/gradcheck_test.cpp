// GradCheck.<Op>: finite-difference gradient checks in float64 for every op case in the table.
#include <gtest/gtest.h>

#include <set>

#include "tests/op_table.h"

namespace engine::test {
namespace {

// Central differences with eps 1e-6 in float64 are accurate to ~1e-9 relative; a backward
// that is off by 0.1% fails by two orders of magnitude (see GradCheckMeta.WrongBackwardIsCaught).
constexpr double kTol = 1e-6;

void check_op(const std::string& op) {
  auto cases = cases_for(op);
  ASSERT_FALSE(cases.empty()) << "no op cases for " << op;
  int checked = 0;
  for (const auto& c : cases) {
    if (!c.gradcheck) continue;
    SCOPED_TRACE(op + "/" + c.variant);
    GradCheckResult r = gradcheck(c);
    EXPECT_LE(r.max_err, kTol) << "worst: " << r.worst;
    ++checked;
  }
  EXPECT_GT(checked, 0) << op << " has no gradcheck-able case";
}

#define GRADCHECK(Op) \
  TEST(GradCheck, Op) { check_op(#Op); }
GRADCHECK(Conv2d)
GRADCHECK(GroupNorm)
GRADCHECK(Linear)
GRADCHECK(Matmul)
GRADCHECK(Attention)
GRADCHECK(Silu)
GRADCHECK(Exp)
GRADCHECK(Sin)
GRADCHECK(Cos)
GRADCHECK(Sqrt)
GRADCHECK(Square)
GRADCHECK(Neg)
GRADCHECK(Affine)
GRADCHECK(Add)
GRADCHECK(Sub)
GRADCHECK(Mul)
GRADCHECK(Div)
GRADCHECK(Embedding)
GRADCHECK(Concat)
GRADCHECK(Upsample)
GRADCHECK(Sum)
GRADCHECK(Mean)
GRADCHECK(MseLoss)
GRADCHECK(Views)

// Every op in the table has a GradCheck test above (a new op cannot be added silently).
TEST(GradCheckMeta, EveryOpHasATest) {
  const std::set<std::string> tested = {"Conv2d", "GroupNorm", "Linear", "Matmul", "Attention", "Silu",
                                        "Exp",    "Sin",       "Cos",    "Sqrt",   "Square",    "Neg",
                                        "Affine", "Add",       "Sub",    "Mul",    "Div",       "Embedding",
                                        "Concat", "Upsample",  "Sum",    "Mean",   "MseLoss",   "Views"};
  for (const auto& c : op_cases()) EXPECT_TRUE(tested.count(c.op)) << c.op << " has no GradCheck test";
}

// A deliberately wrong backward (silu's gradient scaled by 1.001) must fail the check.
TEST(GradCheckMeta, WrongBackwardIsCaught) {
  OpCase c = cases_for("Silu").at(0);
  auto wrong = [](const std::vector<Tensor>& t) {
    Tensor y;
    {
      NoGradGuard ng;
      y = silu(t[0]);
    }
    if (t[0].requires_grad() && GradMode::enabled()) {
      Tensor x = t[0].detach();
      record("wrong_silu", y, {t[0]}, [x](const Tensor& g) {
        // silu'(x) = s (1 + x (1 - s)), s = sigmoid(x), deliberately scaled by 1.001.
        Tensor s = div(Tensor::ones(x.shape(), x.dtype()), add(exp(neg(x)), 1.0));
        Tensor d = mul(s, add(mul(x, add(neg(s), 1.0)), 1.0));
        return std::vector<Tensor>{mul(mul(g, d), 1.001)};
      });
    }
    return y;
  };
  GradCheckResult good = gradcheck(c);
  GradCheckResult bad = gradcheck_fn(c, wrong);
  EXPECT_LE(good.max_err, kTol);
  EXPECT_GT(bad.max_err, 100 * kTol) << "a 0.1% error in a backward went unnoticed";
}

}  // namespace
}  // namespace engine::test
