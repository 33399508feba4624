// Tensor basics: factories, views, contiguous copies, conversions, printing and errors.
#include <gtest/gtest.h>

#include "core/ops.h"

namespace engine {
namespace {

TEST(Tensor, FactoriesAndMetadata) {
  Tensor t = Tensor::full({2, 3}, 1.5);
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_EQ(t.strides(), (Shape{3, 1}));
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.dtype(), DType::F32);
  EXPECT_TRUE(t.device().is_cpu());
  EXPECT_EQ(t.to_vector<float>(), std::vector<float>(6, 1.5f));
  EXPECT_EQ(Tensor::scalar(2.0).dim(), 0);
  EXPECT_DOUBLE_EQ(Tensor::scalar(2.0).item(), 2.0);
}

TEST(Tensor, PermuteThenContiguousReordersData) {
  Tensor t = Tensor::from_vector(std::vector<float>{0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor p = t.permute({1, 0});
  EXPECT_FALSE(p.is_contiguous());
  EXPECT_EQ(p.contiguous().to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(p.to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  Tensor e = Tensor::from_vector(std::vector<float>{1, 2}, {2, 1}).expand({2, 3});
  EXPECT_EQ(e.strides()[1], 0);
  EXPECT_EQ(e.contiguous().to_vector<float>(), (std::vector<float>{1, 1, 1, 2, 2, 2}));
  EXPECT_EQ(t.reshape({3, -1}).shape(), (Shape{3, 2}));
}

TEST(Tensor, DtypeConversionRoundTrip) {
  Tensor t = Tensor::from_vector(std::vector<double>{0.1, -2.5}, {2});
  Tensor f = t.to(DType::F32);
  EXPECT_EQ(f.dtype(), DType::F32);
  EXPECT_FLOAT_EQ(f.to_vector<float>()[0], 0.1f);
  EXPECT_EQ(Tensor::from_vector(std::vector<int64_t>{3, 4}, {2}).to(DType::F64).to_vector<double>(),
            (std::vector<double>{3, 4}));
}

TEST(Tensor, ErrorsNameOpAndShapes) {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4, 3});
  try {
    add(a, b);
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("add"), std::string::npos) << m;
    EXPECT_NE(m.find("(2, 3)"), std::string::npos) << m;
    EXPECT_NE(m.find("(4, 3)"), std::string::npos) << m;
  }
  try {
    conv2d(Tensor::zeros({1, 3, 8, 8}), Tensor::zeros({4, 2, 3, 3}), Tensor(), {});
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("conv2d"), std::string::npos) << m;
    EXPECT_NE(m.find("(4, 2, 3, 3)"), std::string::npos) << m;
  }
  EXPECT_THROW(a.reshape({4, 2}), Error);
  EXPECT_THROW(a.narrow(1, 2, 2), Error);
  EXPECT_THROW(matmul(a, a), Error);
  EXPECT_THROW(embedding(Tensor::from_vector(std::vector<int64_t>{5}, {1}), Tensor::zeros({3, 2})), Error);
  EXPECT_THROW(Tensor().shape(), Error);
  EXPECT_THROW(Device::parse("tpu"), Error);
  EXPECT_THROW(group_norm(Tensor::zeros({1, 6, 2}), 4, Tensor(), Tensor(), 1e-5), Error);
}

TEST(Tensor, PrintingShowsDtypeDeviceShapeValues) {
  std::string s = Tensor::from_vector(std::vector<float>{1, 2}, {2}).str();
  EXPECT_NE(s.find("float32"), std::string::npos);
  EXPECT_NE(s.find("cpu"), std::string::npos);
  EXPECT_NE(s.find("(2,)"), std::string::npos);
  EXPECT_NE(s.find("[1, 2]"), std::string::npos);
}

TEST(Tensor, DeviceParsing) {
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  EXPECT_EQ(Device::parse("cuda:1"), Device::cuda(1));
  EXPECT_THROW(Device::parse("cuda:x"), Error);
}

TEST(Tensor, RandomStreamsAreDeterministic) {
  Generator g1(5), g2(5);
  Tensor a = randn({100}, g1), b = randn({100}, g2);
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
  Tensor c = randn({100}, g1);
  EXPECT_NE(a.to_vector<float>(), c.to_vector<float>());
  // float64 draws use the same stream positions as float32.
  Generator g3(5);
  Tensor d = randn({100}, g3, DType::F64);
  EXPECT_NEAR(d.to_vector<double>()[3], a.to_vector<float>()[3], 1e-5);
}

}  // namespace
}  // namespace engine
