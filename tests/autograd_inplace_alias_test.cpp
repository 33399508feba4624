// Aliasing cases of the backward's in-place gradient sums (core/autograd.cpp sum_grads): a root gradient
// the caller holds that reaches a leaf twice (directly, x + x, and through views), a gradient that is a
// view of a tensor a node saved (retain_graph = true, backward twice), and the same tensor used twice in
// one op. None of the aliased buffers may change; every gradient must be the plain sum.
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"

namespace engine {
namespace {

std::vector<float> values(const Tensor& t) { return t.contiguous().to_vector<float>(); }

TEST(AutogradInplaceAlias, HeldRootGradientReachingALeafTwiceIsNeverWritten) {
  const std::vector<float> g = {1, 2, 3, 4};
  Tensor x = Tensor::from_vector(std::vector<float>{1, 1, 1, 1}, {4}).set_requires_grad();
  Tensor G = Tensor::from_vector(g, {2, 2});
  Tensor y = add(x.reshape({2, 2}), x.reshape({2, 2}));  // both reshape backwards hand back views of G
  y.backward(G, /*retain_graph=*/true);
  EXPECT_EQ(values(G), g);
  EXPECT_EQ(values(x.grad()), (std::vector<float>{2, 4, 6, 8}));
  y.backward(G, /*retain_graph=*/true);  // x.grad is now summed again: G must stay as it is
  EXPECT_EQ(values(G), g);
  EXPECT_EQ(values(x.grad()), (std::vector<float>{4, 8, 12, 16}));

  Tensor z = Tensor::from_vector(std::vector<float>{5, 6, 7, 8}, {2, 2}).set_requires_grad();
  Tensor G2 = Tensor::from_vector(g, {2, 2});
  add(z, z).backward(G2);  // the same tensor twice in one op
  EXPECT_EQ(values(G2), g);
  EXPECT_EQ(values(z.grad()), (std::vector<float>{2, 4, 6, 8}));
  add(z, z).backward(G2);
  EXPECT_EQ(values(G2), g);
  EXPECT_EQ(values(z.grad()), (std::vector<float>{4, 8, 12, 16}));
}

// y = x, whose backward returns a reshaped view of a tensor the node saved (not the saved handle itself,
// so only the storage is shared).
Tensor view_of_saved_op(const Tensor& x, std::vector<float> saved_values) {
  Tensor y = x.detach().clone();
  Tensor saved = Tensor::from_vector(saved_values, {2, 2});
  const Shape shape = x.shape();
  record("view_of_saved", y, {x},
         [saved, shape](const Tensor&) { return std::vector<Tensor>{saved.reshape(shape)}; });
  return y;
}

TEST(AutogradInplaceAlias, GradientViewingASavedTensorIsNeverWrittenAcrossBackwards) {
  Tensor x = Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, {4}).set_requires_grad();
  Tensor h = mul(x, 1.0);  // a node whose two incoming gradients are summed (not a leaf)
  Tensor a = view_of_saved_op(h, {0.5f, 1.5f, -2.f, 3.f});
  Tensor b = view_of_saved_op(h, {10.f, 20.f, 30.f, 40.f});
  Tensor root = sum(add(a, b));
  root.backward(Tensor(), /*retain_graph=*/true);
  const std::vector<float> once = {10.5f, 21.5f, 28.f, 43.f};
  EXPECT_EQ(values(x.grad()), once);
  x.impl()->grad.reset();
  root.backward(Tensor(), /*retain_graph=*/true);  // the saved tensors must still hold their values
  EXPECT_EQ(values(x.grad()), once);
}

TEST(AutogradInplaceAlias, SameTensorTwiceInMulLeavesTheInputAlone) {
  Tensor x = Tensor::from_vector(std::vector<float>{1, -2, 3}, {3}).set_requires_grad();
  Tensor y = mul(x, x);
  sum(y).backward(Tensor(), /*retain_graph=*/true);
  EXPECT_EQ(values(x), (std::vector<float>{1, -2, 3}));
  EXPECT_EQ(values(x.grad()), (std::vector<float>{2, -4, 6}));
  sum(y).backward();
  EXPECT_EQ(values(x), (std::vector<float>{1, -2, 3}));
  EXPECT_EQ(values(x.grad()), (std::vector<float>{4, -8, 12}));
}

}  // namespace
}  // namespace engine
