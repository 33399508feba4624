// Device placement of CUDA ops (core/ops/dispatch.h, cuda::DeviceScope): an op whose tensors live on
// different devices fails with a clear error, and every op runs on its tensors' GPU whatever device the
// caller made current, leaving the caller's current device as it was. Skipped without a GPU (the
// multi-GPU case without a second GPU).
#include "runtime/cuda_device.h"

#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "core/ops.h"
#include "cuda_test_util.h"

using namespace engine;

TEST(CudaDevice, MixedDevicesInOneOpFailClearly) {
  SKIP_WITHOUT_CUDA();
  const Tensor a = Tensor::ones({4, 4});
  const Tensor b = Tensor::ones({4, 4}, DType::F32, Device::cuda(0));
  for (auto op : {+[](const Tensor&x, const Tensor&y) { return add(x, y); },
                  +[](const Tensor&x, const Tensor&y) { return matmul(x, y); }}) {
    try {
      op(a, b);
      ADD_FAILURE() << "an op mixing cpu and cuda:0 tensors must throw";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("different devices"), std::string::npos) << m;
      EXPECT_NE(m.find("cuda:0"), std::string::npos) << m;
    }
  }
}

TEST(CudaDevice, OpKeepsTheCallersCurrentDevice) {
  SKIP_WITHOUT_CUDA();
  cuda::set_device(0);
  const Tensor a = Tensor::full({8}, 2.0, DType::F32, Device::cuda(0));
  const Tensor y = mul(add(a, a), 3.0);
  EXPECT_EQ(cuda::current_device(), 0);
  for (float v : y.to(Device::cpu()).to_vector<float>()) EXPECT_EQ(v, 12.0f);
}

TEST(CudaDevice, OpRunsOnTheTensorsGpu) {
  SKIP_WITHOUT_CUDA();
  if (cuda::device_count() < 2) GTEST_SKIP() << "needs two CUDA devices, found " << cuda::device_count();
  cuda::set_device(0);
  const Tensor a = Tensor::full({1 << 16}, 2.0, DType::F32, Device::cuda(1));
  const Tensor w = Tensor::full({16, 16}, 0.5, DType::F32, Device::cuda(1));
  const Tensor y = add(mul(a, a), 1.0);                                            // elementwise on cuda:1
  const Tensor z = matmul(Tensor::ones({4, 16}, DType::F32, Device::cuda(1)), w);  // cuBLAS on cuda:1
  EXPECT_EQ(cuda::current_device(), 0) << "the caller's device must be restored";
  EXPECT_EQ(y.device(), Device::cuda(1));
  for (float v : y.to(Device::cpu()).to_vector<float>()) ASSERT_EQ(v, 5.0f);
  for (float v : z.to(Device::cpu()).to_vector<float>()) ASSERT_EQ(v, 8.0f);
}
