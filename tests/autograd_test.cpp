// Autograd behaviour: shared subexpressions, accumulation, broadcasting, no-grad, views,
// graph release, and the errors a user meets.
#include <gtest/gtest.h>

#include <cmath>

#include "core/ops.h"

namespace engine {
namespace {

Tensor vec(std::vector<double> v) { return Tensor::from_vector(v, {static_cast<int64_t>(v.size())}); }
std::vector<double> vals(const Tensor& t) { return t.to(DType::F64).to_vector<double>(); }

TEST(Autograd, SharedSubexpression) {
  Tensor x = vec({1.0, -2.0, 3.0}).set_requires_grad();
  Tensor y = mul(x, x);               // x used twice in one op
  Tensor z = sum(add(y, mul(y, x)));  // y used twice: z = x^2 + x^3
  z.backward();
  std::vector<double> expect = {2 + 3, -4 + 12, 6 + 27};
  EXPECT_EQ(vals(x.grad()), expect);
}

TEST(Autograd, AccumulatesAcrossBackwardCalls) {
  Tensor x = vec({1.0, 2.0}).set_requires_grad();
  sum(mul(x, 3.0)).backward();
  sum(mul(x, x)).backward();
  EXPECT_EQ(vals(x.grad()), (std::vector<double>{3 + 2, 3 + 4}));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, BroadcastGradientsReduceToInputShape) {
  Tensor a = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3}).set_requires_grad();
  Tensor b = Tensor::from_vector(std::vector<double>{10, 20, 30}, {3}).set_requires_grad();
  Tensor s = Tensor::from_vector(std::vector<double>{2}, {1, 1}).set_requires_grad();
  sum(mul(add(a, b), s)).backward();
  EXPECT_EQ(b.grad().shape(), (Shape{3}));
  EXPECT_EQ(vals(b.grad()), (std::vector<double>{4, 4, 4}));
  EXPECT_EQ(s.grad().shape(), (Shape{1, 1}));
  EXPECT_DOUBLE_EQ(s.grad().item(), 21.0 + 2 * 60.0);  // sum(a) + sum of b over 2 rows
}

TEST(Autograd, NoGradRecordsNothing) {
  Tensor x = vec({1.0}).set_requires_grad();
  Tensor y;
  {
    NoGradGuard ng;
    y = mul(x, 2.0);
  }
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(y.grad_fn(), nullptr);
  EXPECT_THROW(y.backward(), Error);
  EXPECT_TRUE(GradMode::enabled());
}

TEST(Autograd, GradientsFlowThroughViews) {
  Tensor x = Tensor::from_vector(std::vector<double>{0, 1, 2, 3, 4, 5}, {2, 3}).set_requires_grad();
  Tensor v = x.transpose(0, 1).narrow(0, 1, 2);  // (2, 2): columns 1..2 of x
  sum(mul(v, v)).backward();
  EXPECT_EQ(vals(x.grad()), (std::vector<double>{0, 2, 4, 0, 8, 10}));
}

TEST(Autograd, ViewsShareStorage) {
  Tensor x = Tensor::zeros({2, 3}, DType::F64);
  Tensor v = x.narrow(1, 1, 1);
  v.fill_(7.0);
  EXPECT_EQ(vals(x), (std::vector<double>{0, 7, 0, 0, 7, 0}));
  EXPECT_FALSE(x.transpose(0, 1).is_contiguous());
  EXPECT_EQ(x.transpose(0, 1).storage(), x.storage());
}

TEST(Autograd, GraphIsReleasedAfterBackward) {
  Tensor x = vec({1.0, 2.0}).set_requires_grad();
  Tensor y = sum(exp(x));
  y.backward(Tensor(), /*retain_graph=*/true);
  y.backward();  // retained once, so a second pass works
  EXPECT_NEAR(vals(x.grad())[0], 2 * std::exp(1.0), 1e-12);
  try {
    y.backward();
    FAIL() << "a released graph must not run twice";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("retain_graph"), std::string::npos) << e.what();
  }
}

TEST(Autograd, NonScalarNeedsExplicitGradient) {
  Tensor x = vec({1.0, 2.0}).set_requires_grad();
  Tensor y = mul(x, 2.0);
  EXPECT_THROW(y.backward(), Error);
  y.backward(vec({1.0, 10.0}));
  EXPECT_EQ(vals(x.grad()), (std::vector<double>{2, 20}));
}

TEST(Autograd, LeafBackwardAndDetach) {
  Tensor x = vec({3.0}).set_requires_grad();
  Tensor d = x.detach();
  EXPECT_FALSE(d.requires_grad());
  Tensor y = mul(x, d);  // d is a constant
  y.backward(vec({1.0}));
  EXPECT_EQ(vals(x.grad()), (std::vector<double>{3.0}));
}

TEST(Autograd, DeepChainDoesNotOverflowTheStack) {
  Tensor x = vec({1.0}).set_requires_grad();
  Tensor y = x;
  for (int i = 0; i < 20000; ++i) y = add(y, 1e-3);
  sum(y).backward();
  EXPECT_EQ(vals(x.grad()), (std::vector<double>{1.0}));
}

}  // namespace
}  // namespace engine
