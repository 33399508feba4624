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

#define CUDA_PARITY(Op) \
  TEST(CudaParity, Op) { check_op(#Op); }
CUDA_PARITY(Conv2d)
CUDA_PARITY(GroupNorm)
CUDA_PARITY(Linear)
CUDA_PARITY(Matmul)
CUDA_PARITY(Attention)
CUDA_PARITY(Silu)
CUDA_PARITY(Exp)
CUDA_PARITY(Sin)
CUDA_PARITY(Cos)
CUDA_PARITY(Sqrt)
CUDA_PARITY(Square)
CUDA_PARITY(Neg)
CUDA_PARITY(Affine)
CUDA_PARITY(Add)
CUDA_PARITY(Sub)
CUDA_PARITY(Mul)
CUDA_PARITY(Div)
CUDA_PARITY(Embedding)
CUDA_PARITY(Concat)
CUDA_PARITY(Upsample)
CUDA_PARITY(Sum)
CUDA_PARITY(Mean)
CUDA_PARITY(MseLoss)
CUDA_PARITY(Views)

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
