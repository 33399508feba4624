// Every failure the engine reports is an engine::Error (runtime/error.h): safetensors parsing (st::Error),
// op argument checks, op limits such as the attention head dim, configs, the no-CUDA stubs and the
// adamw_step op. Each case catches engine::Error and checks that the message names its source.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "core/ops.h"
#include "core/safetensors.h"
#include "models/unet2d_config.h"
#include "runtime/cuda_device.h"
#include "runtime/error.h"

namespace {

using namespace engine;

// Runs `f`, expects an engine::Error whose message contains `needle`.
template <typename F>
void expect_engine_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one mentioning '" << needle << "'";
  } catch (const engine::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not an engine::Error: " << e.what();
  }
}

TEST(ErrorHierarchy, BadSafetensorsIsEngineError) {
  const std::vector<uint8_t> junk = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
  expect_engine_error([&] { st::parse(junk.data(), junk.size(), "junk.safetensors"); }, "junk.safetensors");
  static_assert(std::is_base_of_v<engine::Error, st::Error>);
}

TEST(ErrorHierarchy, BadShapeToAnOpNamesTheOp) {
  expect_engine_error([] { matmul(Tensor::zeros({2, 3}), Tensor::zeros({4, 5})); }, "matmul");
}

// The head-dim limit is checked at the op, with its name, on every device (not inside a kernel).
TEST(ErrorHierarchy, AttentionHeadDim65IsRejectedAtTheOp) {
  const Tensor q = Tensor::zeros({1, 1, 2, 65});
  expect_engine_error([&] { scaled_dot_product_attention(q, q, q); }, "attention: head dim D = 65");
  const Tensor ok = Tensor::zeros({1, 1, 2, 64});
  EXPECT_EQ(scaled_dot_product_attention(ok, ok, ok).shape(), ok.shape());
}

TEST(ErrorHierarchy, ConfigErrorIsEngineError) {
  expect_engine_error(
      [] {
        models::UNet2DConfig::from_json(nlohmann::json{{"in_channels", 0}});
      },
      "in_channels");
}

TEST(ErrorHierarchy, RuntimeErrorsAreEngineErrors) {
  if (cuda::built_with_cuda()) {
    expect_engine_error([] { cuda::set_device(cuda::device_count() + 7); }, "device index");
  } else {
    expect_engine_error([] { cuda::alloc(16, 0); }, "built without CUDA");
    expect_engine_error([] { Tensor::zeros({2}, DType::F32, Device::cuda(0)); }, "CUDA");
  }
}

TEST(ErrorHierarchy, AdamwStepOpChecksItsGroup) {
  const Tensor p = Tensor::zeros({3}), g = Tensor::zeros({4}), m = Tensor::zeros({3}), v = Tensor::zeros({3});
  expect_engine_error(
      [&] {
        adamw_step({p}, {g}, {m}, {v}, {1e-3, 0.9, 0.999, 1e-8, 0.0, 1});
      },
      "adamw_step");
  expect_engine_error([&] { adamw_step({p}, {}, {m}, {v}, {1e-3, 0.9, 0.999, 1e-8, 0.0, 1}); }, "adamw_step");
  const Tensor pd = Tensor::zeros({3}, DType::F64);
  expect_engine_error(
      [&] {
        adamw_step({p, pd}, {p, pd}, {m, pd}, {v, pd}, {1e-3, 0.9, 0.999, 1e-8, 0.0, 1});
      },
      "dtype mismatch");
}

// The op computes torch.optim.AdamW's update: one step from zero moments, written out by hand.
TEST(ErrorHierarchy, AdamwStepOpMatchesTheFormula) {
  Tensor p = Tensor::from_vector<double>({1.0, -2.0}, {2}), g = Tensor::from_vector<double>({0.5, 0.25}, {2});
  Tensor m = Tensor::zeros({2}, DType::F64), v = Tensor::zeros({2}, DType::F64);
  const double lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
  adamw_step({p}, {g}, {m}, {v}, {lr, b1, b2, eps, wd, 1});
  const std::vector<double> pv = p.to_vector<double>(), mv = m.to_vector<double>();
  const double x0[] = {1.0, -2.0}, g0[] = {0.5, 0.25};
  for (int i = 0; i < 2; ++i) {
    const double mi = (1 - b1) * g0[i], vi = (1 - b2) * g0[i] * g0[i];
    const double mhat = mi / (1 - b1), vhat = vi / (1 - b2);
    const double want = x0[i] * (1 - lr * wd) - lr * mhat / (std::sqrt(vhat) + eps);
    EXPECT_NEAR(pv[i], want, 1e-12) << i;
    EXPECT_NEAR(mv[i], mi, 1e-15) << i;
  }
}

}  // namespace
