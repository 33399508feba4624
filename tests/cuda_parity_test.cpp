// CudaParity.<Op>: every case of the op table run on CUDA (float32) against the CPU backend
// (float32): forward output and the gradient of every input, normalised error and NaN checks.
#include <gtest/gtest.h>

#include <random>

#include "tests/cuda_test_util.h"
#include "tests/op_table.h"

namespace engine::test {
namespace {

constexpr double kTol = 1e-4;  // float32, ‖cuda − cpu‖ / ‖cpu‖

struct RunResult {
  Tensor out;
  std::vector<Tensor> grads;
};

RunResult run_case(const OpCase& c, Device dev) {
  std::vector<Tensor> in = make_inputs(c, DType::F32, dev, 7);
  Tensor out = c.fn(in);
  std::mt19937_64 rng(99);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> r(out.numel());
  for (auto& x : r) x = nd(rng);
  Tensor R = Tensor::from_vector(r, out.shape(), dev);
  sum(mul(out, R)).backward();
  RunResult res{out.detach().to(Device::cpu()), {}};
  for (auto& t : in)
    res.grads.push_back(t.requires_grad() && t.grad().defined() ? t.grad().to(Device::cpu()) : Tensor());
  return res;
}

void check_op(const std::string& op) {
  SKIP_WITHOUT_CUDA();
  for (const auto& c : cases_for(op)) {
    SCOPED_TRACE(op + "/" + c.variant);
    RunResult cpu = run_case(c, Device::cpu());
    RunResult gpu = run_case(c, Device::cuda(0));
    double e = rel_err(gpu.out, cpu.out);
    EXPECT_LE(e, kTol) << "forward";  // NaN fails too
    for (size_t i = 0; i < cpu.grads.size(); ++i) {
      ASSERT_EQ(cpu.grads[i].defined(), gpu.grads[i].defined()) << "input " << i;
      if (!cpu.grads[i].defined()) continue;
      EXPECT_LE(rel_err(gpu.grads[i], cpu.grads[i]), kTol) << "gradient of input " << i;
    }
  }
}

// CudaParity.<Op> for every op of the table (registered from the table).
const bool kRegistered = register_op_tests("CudaParity", "", __FILE__, __LINE__, check_op);

// CudaParity.NonFinite<Op>: NaN, +inf and -inf injected at several positions of every float input
// of every case (tests/nonfinite_check.cpp) on CUDA, against the naive float64 references.
void check_nonfinite(const std::string& op) {
  SKIP_WITHOUT_CUDA();
  for (const auto& c : cases_for(op)) {
    if (!c.gradcheck) continue;  // model-sized: the naive reference takes minutes (see nonfinite_test.cpp)
    SCOPED_TRACE(op + "/" + c.variant);
    for (const std::string& f : nonfinite_check(c, DType::F32, Device::cuda(0))) ADD_FAILURE() << f;
  }
}

const bool kRegisteredNonFinite =
    register_op_tests("CudaParity", "NonFinite", __FILE__, __LINE__, check_nonfinite);

// GroupNorm with the same formulation on both backends: a constant group (1e7, 1x1x4x4) gives beta
// exactly on CUDA too, one element per group gives beta and dx = 0, and large offsets (1e4..1e7)
// agree with the CPU in forward and backward.
TEST(CudaParity, GroupNormNumerics) {
  SKIP_WITHOUT_CUDA();
  for (double v : {1e7, -1e7, 1e4, 0.1}) {
    Tensor x = Tensor::full({1, 1, 4, 4}, v, DType::F32, Device::cuda(0));
    Tensor g = Tensor::full({1}, 1.3, DType::F32, Device::cuda(0)),
           b = Tensor::full({1}, 0.7, DType::F32, Device::cuda(0));
    for (float y : group_norm(x, 1, g, b, 1e-5).to(Device::cpu()).to_vector<float>())
      ASSERT_EQ(y, 0.7f) << "constant group of " << v;
  }
  {
    std::mt19937_64 rng(5);
    std::normal_distribution<float> nd(0.f, 100.f);
    std::vector<float> xv(3 * 8);
    for (auto& e : xv) e = nd(rng);
    Tensor x = Tensor::from_vector(xv, {3, 8, 1}, Device::cuda(0));
    x.set_requires_grad(true);
    Tensor g = Tensor::full({8}, 1.5, DType::F32, Device::cuda(0)),
           b = Tensor::full({8}, -0.25, DType::F32, Device::cuda(0));
    Tensor y = group_norm(x, 8, g, b, 1e-5);
    for (float e : y.detach().to(Device::cpu()).to_vector<float>()) ASSERT_EQ(e, -0.25f);
    sum(mul(y, y)).backward();
    for (float e : x.grad().to(Device::cpu()).to_vector<float>()) ASSERT_EQ(e, 0.0f);
  }
  for (double offset : {1e4, 1e5, 1e6, 1e7}) {
    SCOPED_TRACE(::testing::Message() << "offset " << offset);
    std::mt19937_64 rng(9);
    std::normal_distribution<double> nd(offset, 4.0);
    std::vector<double> xv(2 * 6 * 13);
    for (auto& e : xv) e = nd(rng);
    auto run = [&](Device dev) {
      Tensor x = Tensor::from_vector(xv, {2, 6, 13}).to(DType::F32).to(dev);
      x.set_requires_grad(true);
      Tensor g = Tensor::full({6}, 1.1, DType::F32, dev), b = Tensor::full({6}, 0.3, DType::F32, dev);
      g.set_requires_grad(true);
      Tensor y = group_norm(x, 3, g, b, 1e-5);
      sum(mul(y, add(y, 1.0))).backward();
      return std::vector<Tensor>{y.detach().to(Device::cpu()), x.grad().to(Device::cpu()),
                                 g.grad().to(Device::cpu())};
    };
    auto cpu = run(Device::cpu()), gpu = run(Device::cuda(0));
    EXPECT_LE(rel_err(gpu[0], cpu[0]), 1e-6) << "forward";
    EXPECT_LE(rel_err(gpu[1], cpu[1]), 1e-5) << "dx";
    EXPECT_LE(rel_err(gpu[2], cpu[2]), 1e-5) << "dgamma";
  }
}

// The Philox stream is the same on both devices.
TEST(CudaParity, RandomStreams) {
  SKIP_WITHOUT_CUDA();
  Generator a(42, 10), b(42, 10);
  Tensor c = randn({1000}, a), g = randn({1000}, b, DType::F32, Device::cuda(0));
  EXPECT_LE(rel_err(g, c), 1e-6);
  Tensor cu = rand({1000}, a), gu = rand({1000}, b, DType::F32, Device::cuda(0));
  EXPECT_EQ(cu.to_vector<float>(), gu.to(Device::cpu()).to_vector<float>());
}

TEST(CudaParity, NoCudaGivesClearError) {
  if (cuda::device_count() > 0) GTEST_SKIP() << "a GPU is present; this test covers machines without one";
  try {
    Tensor::zeros({2}, DType::F32, Device::cuda(0));
    FAIL() << "allocating on cuda without a GPU should throw";
  } catch (const std::exception& e) {
    std::string msg = e.what();
    EXPECT_TRUE(msg.find("CUDA") != std::string::npos || msg.find("cuda") != std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace engine::test
