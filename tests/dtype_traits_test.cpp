// DTypeTraits.*: the dtype-traits table (core/dtype.h) and the one dispatch helper visit_dtype, checked
// against the C++ types and PyTorch/safetensors names written out here, plus the conversions and
// fills that now dispatch through it (every pair of dtypes).
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <typeinfo>

#include "core/ops.h"
#include "core/safetensors.h"

namespace engine {
namespace {

TEST(DTypeTraits, TableMatchesTheTypes) {
  struct Expect {
    DType t;
    size_t size;
    const char* name;
    const char* st;
    bool floating;
    const std::type_info& type;
  };
  const Expect want[] = {{DType::F32, 4, "float32", "F32", true, typeid(float)},
                         {DType::F64, 8, "float64", "F64", true, typeid(double)},
                         {DType::I64, 8, "int64", "I64", false, typeid(int64_t)},
                         {DType::U8, 1, "uint8", "U8", false, typeid(uint8_t)}};
  ASSERT_EQ(std::size(kDTypeTraits), std::size(want));
  for (const Expect& e : want) {
    SCOPED_TRACE(e.name);
    EXPECT_EQ(dtype_size(e.t), e.size);
    EXPECT_STREQ(dtype_name(e.t), e.name);
    EXPECT_STREQ(dtype_traits(e.t).st_name, e.st);
    EXPECT_EQ(is_floating(e.t), e.floating);
    // visit_dtype calls the lambda with the matching C++ type, and dtype_of maps it back.
    const std::type_info& got =
        visit_dtype(e.t, []<typename T>() -> const std::type_info& { return typeid(T); });
    EXPECT_TRUE(got == e.type) << got.name();
    EXPECT_EQ(visit_dtype(e.t, []<typename T>() { return dtype_of<T>(); }), e.t);
    // The safetensors dtype of the same name has the same size.
    st::StDtype sd;
    ASSERT_TRUE(st::parse_dtype(e.st, &sd));
    EXPECT_EQ(st::dtype_size(sd), e.size);
  }
}

TEST(DTypeTraits, SafetensorsTableCoversEveryName) {
  const std::pair<const char*, size_t> names[] = {{"F32", 4}, {"F64", 8},  {"I64", 8}, {"U8", 1},
                                                  {"F16", 2}, {"BF16", 2}, {"I32", 4}};
  for (const auto& [n, size] : names) {
    st::StDtype d;
    ASSERT_TRUE(st::parse_dtype(n, &d)) << n;
    EXPECT_STREQ(st::dtype_name(d), n);
    EXPECT_EQ(st::dtype_size(d), size) << n;
  }
  st::StDtype d;
  EXPECT_FALSE(st::parse_dtype("F8", &d));
  EXPECT_THROW(st::dtype_size(static_cast<st::StDtype>(99)), std::exception);
}

// Every (from, to) conversion, fill and item() go through visit_dtype: values survive exactly.
TEST(DTypeTraits, ConversionsFillAndItemForEveryPair) {
  const DType all[] = {DType::F32, DType::F64, DType::I64, DType::U8};
  for (DType from : all) {
    Tensor x = Tensor::from_vector(std::vector<double>{0, 1, 7, 200}, {4}).to(from);
    for (DType to : all) {
      SCOPED_TRACE(std::string(dtype_name(from)) + " -> " + dtype_name(to));
      Tensor y = x.to(to);
      EXPECT_EQ(y.dtype(), to);
      EXPECT_EQ(y.to(DType::F64).to_vector<double>(), (std::vector<double>{0, 1, 7, 200}));
    }
    Tensor f = Tensor::zeros({3}, from);
    f.fill_(5);
    EXPECT_EQ(f.to(DType::F64).to_vector<double>(), (std::vector<double>{5, 5, 5}));
    EXPECT_EQ(f.narrow(0, 1, 1).item(), 5.0);
  }
}

}  // namespace
}  // namespace engine
