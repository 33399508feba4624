// reference_check: runs a reference fixture (tests/reference/*.safetensors, written by make_fixtures.py
// with real diffusers) through the engine and prints the relative errors of pred, loss, grads and the
// parameters after the fixture's AdamW steps. Exit 0 = within thresholds, 1 = too large, 2 = bad input.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <string>

#include "core/cuda_device.h"
#include "models/reference_fixture.h"

int main(int argc, char** argv) {
  CLI::App app{"Compare the engine's UNet2D wrapper against a diffusers reference fixture"};
  std::string fixture, device_str = "cpu";
  app.add_option("fixture", fixture, "fixture .safetensors file")->required();
  app.add_option("--device", device_str, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  try {
    engine::Device dev = engine::Device::cpu();
    if (device_str == "cuda") {
      if (engine::cuda::device_count() == 0) {
        std::fprintf(stderr, "reference_check: --device cuda requested but no CUDA device is available%s\n",
                     engine::cuda::built_with_cuda() ? "" : " (built without CUDA)");
        return 2;
      }
      dev = engine::Device::cuda(0);
    }
    const engine::models::FixtureResult r = engine::models::run_reference_fixture(fixture, dev);
    std::printf("pred rel_err=%.3e\n", r.pred_rel_err);
    std::printf("loss rel_err=%.3e\n", r.loss_rel_err);
    std::printf("grads max_rel_err=%.3e worst=%s\n", r.grads_max_rel_err, r.grads_worst.c_str());
    std::printf("after max_rel_err=%.3e worst=%s\n", r.after_max_rel_err, r.after_worst.c_str());
    if (r.zero_grad_tensors > 0)
      std::printf(
          "note: %lld tensors have numerically zero reference grads (rounding noise), checked apart: "
          "our |g|/|G| max=%.3e (<= %.0e), after max_abs_err=%.3e (<= %.0e)\n",
          static_cast<long long>(r.zero_grad_tensors), r.zero_grad_max_rel_norm, r.zero_grad_rel_norm_bound,
          r.zero_grad_after_max_abs_err, r.zero_grad_after_bound);
    if (!r.passed) {
      std::printf("FAIL: %s\n", r.failure.c_str());
      return 1;
    }
    std::printf("OK (%s, %lld parameters in %lld tensors, %d AdamW steps, device %s)\n", r.dtype.c_str(),
                static_cast<long long>(r.num_params), static_cast<long long>(r.num_tensors), r.steps,
                dev.str().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "reference_check: %s\n", e.what());
    return 2;
  } catch (...) {
    std::fprintf(stderr, "reference_check: unknown error\n");
    return 2;
  }
}
