// In-place updates vs tensors saved for backward: copy_, fill_ and the adamw_step op bump the storage's
// version counter, and backward refuses to use a graph whose inputs changed since the forward pass
// (core/autograd.h states the rule).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"

namespace {

using namespace engine;

std::string backward_error(const Tensor& loss) {
  try {
    loss.backward();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(InplaceVersion, InPlaceOpsBumpTheStorageVersion) {
  Tensor x = Tensor::zeros({4});
  const uint64_t v0 = x.storage()->version();
  x.fill_(1.0);
  EXPECT_EQ(x.storage()->version(), v0 + 1);
  x.narrow(0, 1, 2).copy_(Tensor::ones({2}));  // through a view: the same storage
  EXPECT_EQ(x.storage()->version(), v0 + 2);
  Tensor g = Tensor::ones({4}), m = Tensor::zeros({4}), v = Tensor::zeros({4});
  const uint64_t g0 = g.storage()->version();
  adamw_step({x}, {g}, {m}, {v}, {1e-3, 0.9, 0.999, 1e-8, 0.0, 1});
  EXPECT_EQ(x.storage()->version(), v0 + 3);
  EXPECT_EQ(g.storage()->version(), g0);  // the read-only gradient is untouched
}

// w * x saves both inputs: changing w after the forward pass would give x a gradient from the new w.
TEST(InplaceVersion, BackwardAfterAnInPlaceUpdateOfAnInputThrows) {
  Tensor x = Tensor::from_vector<float>({1, 2, 3}, {3}).set_requires_grad();
  Tensor w = Tensor::from_vector<float>({4, 5, 6}, {3});
  Tensor loss = sum(mul(w, x));
  w.fill_(0.0);
  const std::string err = backward_error(loss);
  EXPECT_NE(err.find("'mul' was modified in place"), std::string::npos) << err;
  // The rule's remedy: the forward pass again after the update.
  Tensor loss2 = sum(mul(w, x));
  EXPECT_EQ(backward_error(loss2), "");
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{0, 0, 0}));
}

// The training loop's order (forward, backward, optimizer step) is fine; a step between forward and
// backward is caught.
TEST(InplaceVersion, OptimizerStepBetweenForwardAndBackwardThrows) {
  Tensor p = Tensor::from_vector<float>({1, -1}, {2}).set_requires_grad();
  Tensor loss = sum(mul(p, p));
  loss.backward();
  Tensor m = Tensor::zeros({2}), v = Tensor::zeros({2});
  {
    NoGradGuard ng;
    adamw_step({p}, {p.grad()}, {m}, {v}, {0.1, 0.9, 0.999, 1e-8, 0.0, 1});
  }
  Tensor loss2 = sum(mul(p, p));
  {
    NoGradGuard ng;
    adamw_step({p}, {p.grad()}, {m}, {v}, {0.1, 0.9, 0.999, 1e-8, 0.0, 2});
  }
  EXPECT_NE(backward_error(loss2).find("modified in place"), std::string::npos);
}

}  // namespace
