// OpTable.*: the op table's cost model (op_cost, read by the kernel benchmarks) against counts worked
// out by hand, and the UNet cases generated from bench/unet_shapes.h.
#include <gtest/gtest.h>

#include "tests/op_table.h"

namespace engine::test {
namespace {

const OpCase& find_case(const std::string& op, const std::string& variant) {
  for (const OpCase& c : op_cases())
    if (c.op == op && c.variant == variant) return c;
  throw std::runtime_error("no case " + op + "/" + variant);
}

TEST(OpTable, CostModelMatchesHandCounts) {
  // x (2,3,6,5), w (4,3,3,3), b (4) -> y (2,4,6,5) = 240 outputs of 3*3*3 MACs.
  OpCost conv = op_cost(find_case("Conv2d", "3x3_s1_p1_bias"));
  EXPECT_DOUBLE_EQ(conv.flops, 2.0 * 240 * 27);
  EXPECT_DOUBLE_EQ(conv.bytes, 4.0 * (180 + 108 + 4 + 240));
  // (3,4) @ (4,5): 15 outputs of 4 MACs.
  OpCost mm = op_cost(find_case("Matmul", "2d"));
  EXPECT_DOUBLE_EQ(mm.flops, 2.0 * 15 * 4);
  EXPECT_DOUBLE_EQ(mm.bytes, 4.0 * (12 + 20 + 15));
  // q, k, v (1,1,5,4): QK^T (5x5x4) and PV (5x4x5) MACs.
  OpCost att = op_cost(find_case("Attention", "1head"));
  EXPECT_DOUBLE_EQ(att.flops, 2.0 * 5 * 5 * 4 + 2.0 * 5 * 4 * 5);
  EXPECT_DOUBLE_EQ(att.bytes, 4.0 * (20 * 3 + 20));
  // exp of (4,3): one per element.
  OpCost e = op_cost(find_case("Exp", "plain"));
  EXPECT_DOUBLE_EQ(e.flops, 12);
  EXPECT_DOUBLE_EQ(e.bytes, 4.0 * 24);
}

TEST(OpTable, UnetCasesComeFromTheSharedShapes) {
  // 16 conv shapes and 9 activation shapes in bench/unet_shapes.h; the 3x3 stride-2 one at 28x28.
  int convs = 0, norms = 0;
  for (const OpCase& c : op_cases()) {
    if (c.variant.rfind("unet_", 0) != 0) continue;
    EXPECT_FALSE(c.gradcheck) << c.variant << ": model-sized cases are too large for finite differences";
    convs += c.op == "Conv2d";
    norms += c.op == "GroupNorm";
  }
  EXPECT_EQ(convs, 16);
  EXPECT_EQ(norms, 9);
  const OpCase& down = find_case("Conv2d", "unet_down_s2_32_28x28");
  EXPECT_EQ(down.inputs[0].shape, (Shape{4, 32, 28, 28}));
  EXPECT_EQ(down.inputs[1].shape, (Shape{32, 32, 3, 3}));
  std::vector<Tensor> in = make_inputs(down, DType::F32, Device::cpu(), 1);
  EXPECT_EQ(down.fn(in).shape(), (Shape{4, 32, 14, 14}));  // stride 2, padding 1
}

}  // namespace
}  // namespace engine::test
