// GradCheck.<Op>: finite-difference gradient checks in float64 for every op case in the table.
#include <gtest/gtest.h>

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

// GradCheck.<Op> for every op of the table (registered from the table: a new op cannot be left out).
const bool kRegistered = register_op_tests("GradCheck", "", __FILE__, __LINE__, check_op);

// The registration from the table works: GradCheck holds exactly one test per op of the table, so a new op
// gets its gradient check without any list to update.
TEST(GradCheckMeta, OneTestPerOpOfTheTable) {
  std::vector<std::string> registered;
  const ::testing::UnitTest& ut = *::testing::UnitTest::GetInstance();
  for (int i = 0; i < ut.total_test_suite_count(); ++i) {
    const ::testing::TestSuite& s = *ut.GetTestSuite(i);
    if (std::string(s.name()) != "GradCheck") continue;
    for (int j = 0; j < s.total_test_count(); ++j) registered.push_back(s.GetTestInfo(j)->name());
  }
  EXPECT_EQ(registered, op_names());
  EXPECT_GE(registered.size(), 24u);  // the 24 ops the table held when registration replaced the lists
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
