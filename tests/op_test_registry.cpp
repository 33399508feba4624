// register_op_tests (tests/op_table.h): one GoogleTest per op of the op table, registered with
// ::testing::RegisterTest, so the table alone decides which GradCheck/NonFinite/CudaParity tests exist.
#include <gtest/gtest.h>

#include "tests/op_table.h"

namespace engine::test {

namespace {
// A test whose body is a closure (the factory of ::testing::RegisterTest must return a Test*).
class ClosureTest : public ::testing::Test {
 public:
  explicit ClosureTest(std::function<void()> body) : body_(std::move(body)) {}
  void TestBody() override { body_(); }

 private:
  std::function<void()> body_;
};
}  // namespace

bool register_op_tests(const char* suite, const std::string& prefix, const char* file, int line,
                       std::function<void(const std::string& op)> check) {
  for (const std::string& op : op_names()) {
    const std::string name = prefix + op;
    ::testing::RegisterTest(
        suite, name.c_str(), nullptr, nullptr, file, line,
        [op, check]() -> ::testing::Test* { return new ClosureTest([op, check] { check(op); }); });
  }
  return true;
}

}  // namespace engine::test
