// The backward engine sums a node's (or a leaf's) incoming gradients in place when one of them is held by
// nothing else (core/autograd.cpp sum_grads): no new buffer, the same bits as add(), and a gradient that a
// user or a saved value still holds is never written.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>

#include "core/autograd.h"
#include "core/ops.h"

namespace engine {
namespace {

// A custom op y = x (shape of x) whose backward hands back `grad` (made by make_grad at backward time)
// and records where it lives; `seen` receives the data pointer and values of the gradient it is given.
struct Probe {
  const void* returned = nullptr;      // data pointer of the gradient this op returned
  const void* received = nullptr;      // data pointer of the gradient this op was given
  std::vector<float> received_values;  // and its values
  Tensor keep;                         // when set by the test: a handle the test keeps on the returned grad
  bool hold = false;
};

Tensor probe_op(const Tensor& x, std::shared_ptr<Probe> p, std::vector<float> grad_values) {
  Tensor y = x.detach().clone();
  record("probe", y, {x}, [p, grad_values, shape = x.shape()](const Tensor& g) {
    p->received = g.raw_data();
    p->received_values = g.contiguous().to_vector<float>();
    Tensor out = Tensor::from_vector(grad_values, shape);
    p->returned = out.raw_data();
    if (p->hold) p->keep = out;
    return std::vector<Tensor>{out};
  });
  return y;
}

// root = p1(h) + p2(h) seen through two probes; h = probe(x). The gradient that reaches h is the sum of
// the probes' two gradients.
struct FanIn {
  std::shared_ptr<Probe> h = std::make_shared<Probe>(), p1 = std::make_shared<Probe>(),
                         p2 = std::make_shared<Probe>();
  Tensor x = Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, {4}).set_requires_grad();
  void run(bool hold_p1) {
    p1->hold = hold_p1;
    Tensor hh = probe_op(x, h, {0.5f, 0.25f, -1.f, 8.f});
    Tensor a = probe_op(hh, p1, {0.1f, 0.2f, 0.3f, 1e8f});
    Tensor b = probe_op(hh, p2, {0.7f, -0.2f, 1e-8f, 1.f});
    sum(add(a, b)).backward();
  }
};

std::vector<float> bitwise_sum(std::vector<float> a, const std::vector<float>& b) {
  for (size_t i = 0; i < a.size(); ++i) a[i] = a[i] + b[i];
  return a;
}

TEST(AutogradInplaceSum, NodeGradientsSumIntoAnExclusiveBuffer) {
  FanIn f;
  f.run(/*hold_p1=*/false);
  // The sum landed in one of the two returned buffers: no third buffer was allocated for it.
  EXPECT_TRUE(f.h->received == f.p1->returned || f.h->received == f.p2->returned);
  const std::vector<float> expect = bitwise_sum({0.1f, 0.2f, 0.3f, 1e8f}, {0.7f, -0.2f, 1e-8f, 1.f});
  ASSERT_EQ(f.h->received_values.size(), expect.size());
  EXPECT_EQ(std::memcmp(f.h->received_values.data(), expect.data(), expect.size() * sizeof(float)), 0);
}

TEST(AutogradInplaceSum, AHeldGradientIsNeverWritten) {
  FanIn f;
  f.run(/*hold_p1=*/true);  // the test keeps a handle on p1's gradient: it must keep its values
  ASSERT_TRUE(f.p1->keep.defined());
  EXPECT_EQ(f.p1->keep.to_vector<float>(), (std::vector<float>{0.1f, 0.2f, 0.3f, 1e8f}));
  EXPECT_NE(f.h->received, f.p1->returned);
  const std::vector<float> expect = bitwise_sum({0.1f, 0.2f, 0.3f, 1e8f}, {0.7f, -0.2f, 1e-8f, 1.f});
  EXPECT_EQ(std::memcmp(f.h->received_values.data(), expect.data(), expect.size() * sizeof(float)), 0);
}

TEST(AutogradInplaceSum, LeafGradSumsInPlaceUnlessTheUserHoldsIt) {
  Tensor x = Tensor::from_vector(std::vector<float>{1, 2, 3}, {3}).set_requires_grad();
  sum(mul(x, 3.0)).backward();
  const void* first = x.impl()->grad->storage->data();
  sum(mul(x, 5.0)).backward();  // nobody holds x.grad(): summed into the same buffer
  EXPECT_EQ(x.impl()->grad->storage->data(), first);
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{8, 8, 8}));

  Tensor held = x.grad();  // the user holds it now: the next sum must not change what `held` shows
  sum(mul(x, 2.0)).backward();
  EXPECT_EQ(held.to_vector<float>(), (std::vector<float>{8, 8, 8}));
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{10, 10, 10}));
  Tensor view = x.grad().reshape({3, 1});  // a view shares the storage: no in-place sum either
  held = Tensor();
  sum(mul(x, 1.0)).backward();
  EXPECT_EQ(view.to_vector<float>(), (std::vector<float>{10, 10, 10}));
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{11, 11, 11}));
}

}  // namespace
}  // namespace engine
