// KernelGeometry.*: the conv output-size formula, the Strided helpers and the error measures written once
// in kernels/kernel_shapes.h and kernels/numeric_compare.h, against values worked out by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/kernel_shapes.h"
#include "kernels/numeric_compare.h"

namespace {

TEST(KernelGeometry, ConvOutSizeMatchesPyTorch) {
  // torch.nn.Conv2d output sides: floor((in + 2p - k) / s) + 1.
  EXPECT_EQ(kern::conv_out_size(28, 3, 1, 1), 28);
  EXPECT_EQ(kern::conv_out_size(28, 3, 2, 1), 14);
  EXPECT_EQ(kern::conv_out_size(7, 3, 2, 1), 4);
  EXPECT_EQ(kern::conv_out_size(9, 5, 2, 2), 5);
  EXPECT_EQ(kern::conv_out_size(7, 3, 1, 0), 5);
  EXPECT_EQ(kern::conv_out_size(6, 3, 2, 1), 3);
  const kern::Conv2dShape s = kern::conv2d_shape(2, 3, 9, 7, 4, 5, 3, 2, 1, 2, 0);
  EXPECT_EQ(s.N, 2);
  EXPECT_EQ(s.C, 3);
  EXPECT_EQ(s.K, 4);
  EXPECT_EQ(s.stride_h, 2);
  EXPECT_EQ(s.stride_w, 1);
  EXPECT_EQ(s.pad_h, 2);
  EXPECT_EQ(s.pad_w, 0);
  EXPECT_EQ(s.P, 5);  // (9 + 4 - 5) / 2 + 1
  EXPECT_EQ(s.Q, 5);  // (7 + 0 - 3) / 1 + 1
}

TEST(KernelGeometry, StridedNumelAndContiguity) {
  const kern::Strided shape{3, {2, 1, 4}, {4, 4, 1}};
  EXPECT_EQ(kern::numel(shape), 8);
  EXPECT_EQ(kern::numel(kern::Strided{0, {}, {}}), 1);           // a scalar
  EXPECT_EQ(kern::numel(kern::Strided{2, {3, 0}, {0, 1}}), 0);   // an empty dim
  EXPECT_TRUE(kern::is_contiguous(shape, shape));                // row-major
  EXPECT_TRUE(kern::is_contiguous(shape, {3, {}, {4, 77, 1}}));  // extent-1 dim: any stride
  EXPECT_FALSE(kern::is_contiguous(shape, {3, {}, {0, 4, 1}}));  // broadcast over dim 0
  EXPECT_FALSE(kern::is_contiguous(shape, {3, {}, {1, 4, 2}}));  // transposed
  EXPECT_FALSE(kern::is_contiguous(shape, {3, {}, {8, 4, 1}}));  // a gap between rows
}

TEST(KernelGeometry, RelativeErrors) {
  const std::vector<double> b = {3, 4}, a = {3, 5};
  EXPECT_DOUBLE_EQ(kern::rel_err_l2(a, b), 1.0 / 5.0);   // |(0, 1)| / |(3, 4)|
  EXPECT_DOUBLE_EQ(kern::max_rel_err(a, b), 1.0 / 4.0);  // max |diff| / max |b|
  EXPECT_DOUBLE_EQ(kern::rel_err_l2(b, b), 0.0);
  EXPECT_TRUE(std::isnan(kern::rel_err_l2(std::vector<float>{NAN, 1}, std::vector<float>{1, 1})));
  EXPECT_TRUE(std::isnan(kern::rel_err_l2(std::vector<float>{1, 1}, std::vector<float>{INFINITY, 1})));
  EXPECT_TRUE(std::isinf(kern::max_rel_err(std::vector<float>{NAN, 1}, std::vector<float>{1, 1})));
  EXPECT_TRUE(std::isinf(kern::rel_err_l2(std::vector<double>{1}, std::vector<double>{1, 2})));
  EXPECT_TRUE(std::isinf(kern::max_rel_err(std::vector<double>{1}, std::vector<double>{1, 2})));
  // An all-zero reference: the error is measured against 1e-30, so any difference fails a tolerance.
  EXPECT_GT(kern::rel_err_l2(std::vector<double>{1e-20}, std::vector<double>{0}), 1e9);
  // float inputs against a double reference (the numerics tests' use).
  EXPECT_DOUBLE_EQ(kern::max_rel_err(std::vector<float>{1.5f, 2.f}, std::vector<double>{1.0, 2.0}), 0.25);
}

}  // namespace
