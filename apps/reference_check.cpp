// reference_check: runs a reference fixture (tests/reference/*.safetensors, written by make_fixtures.py
// with real diffusers) through the engine and prints the errors of pred, loss, grads and the parameters
// after the fixture's AdamW steps (see kFooter). Exit 0 = within thresholds, 1 = too large, 2 = bad input.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <string>

#include "apps/common/omp_wait.h"
#include "runtime/cuda_device.h"
#include "tests/support/reference_fixture.h"

namespace {
const char* kFooter = R"(Fixture formats (tests/reference/README.md):
  float64 reference (F64 tensors + torch32.*, PyTorch's float32 results): passes only if both hold
    (a) the engine in float64 on the CPU matches the float64 reference: err <= 1e-9 for pred, loss,
        every grads.* and every after.* tensor;
    (b) the engine in float32 on --device, for every tensor: err(engine) <= 2 x err(PyTorch float32)
        + floor (--ratio-factor). floor = 1e-6 (--ratio-floor), raised for grads.* to the median of
        PyTorch's float32 errors over all gradients (the model's float32 noise), and for after.* to
        2 lr steps / ||ref|| (one element whose AdamW update sign float32 rounding decides). Printed: the
        worst ratio err(engine) / (2 x err(PyTorch) + floor), per group (pred, loss, grads, after); pass <= 1.
    err(a) = ||a - ref||_2 / ||ref||_2 per tensor, against the float64 reference; for a gradient whose
    reference is numerically zero (||ref|| <= 1e-6 x G, G = global reference gradient norm) the
    denominator is G.
  classic (F32, or F64 without torch32.*): relative L2 error per tensor <= 1e-4 (pred, loss, after) and
    1e-3 (grads); numerically zero reference gradients: |g| <= 1e-5 G, |after - ref| <= 2 lr steps.
Exit status: 0 pass, 1 a check failed, 2 bad input or device.)";
}  // namespace

int main(int argc, char** argv) {
  engine::app::apply_omp_wait_default(argv);  // first: before any OpenMP region (docs/apps.md "Threads")
  CLI::App app{"Compare the engine's UNet2D wrapper against a diffusers reference fixture"};
  app.footer(kFooter);
  std::string fixture, device_str = "cpu";
  app.add_option("fixture", fixture, "fixture .safetensors file")->required();
  app.add_option("--device", device_str, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  engine::models::FixtureThresholds th;
  app.add_option(
         "--ratio-factor", th.ratio_factor,
         "float64-reference fixtures, check (b): allowed multiple of PyTorch float32's error (default 2)")
      ->check(CLI::PositiveNumber);
  app.add_option("--ratio-floor", th.ratio_floor, "check (b): additive floor on the error (default 1e-6)")
      ->check(CLI::NonNegativeNumber);
  bool all_tensors = false;
  app.add_flag("--all-tensors", all_tensors,
               "float64-reference fixtures: print (a) and (b) for every tensor, not only the worst");
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
    const engine::models::FixtureResult r = engine::models::run_reference_fixture(fixture, dev, th);
    if (r.f64_reference) {
      if (all_tensors) {
        std::printf("%-70s %10s %10s %10s %10s %7s\n", "tensor", "err(a)", "err(eng32)", "err(pt32)", "floor",
                    "ratio");
        for (size_t i = 0; i < r.parity_all.size(); ++i)
          std::printf("%-70s %10.3e %10.3e %10.3e %10.3e %7.3f\n", r.parity_all[i].name.c_str(),
                      r.exact_all[i], r.parity_all[i].engine, r.parity_all[i].torch, r.parity_all[i].floor,
                      r.parity_all[i].ratio);
      }
      std::printf("(a) float64 engine on cpu vs float64 reference: worst err=%.3e (%s), bound %.0e\n",
                  r.exact_max_err, r.exact_worst.c_str(), r.exact_bound);
      std::printf("    pred %.3e, loss %.3e, grads max %.3e (%s), after max %.3e (%s)\n", r.pred_rel_err,
                  r.loss_rel_err, r.grads_max_rel_err, r.grads_worst.c_str(), r.after_max_rel_err,
                  r.after_worst.c_str());
      std::printf("(b) float32 engine on %s vs PyTorch float32, both against the float64 reference:\n",
                  r.device32.c_str());
      const char* groups[4] = {"pred", "loss", "grads", "after"};
      for (int g = 0; g < 4; ++g)
        std::printf("    %-5s worst ratio=%.3f (%s: engine err %.3e, PyTorch err %.3e, floor %.3e)\n",
                    groups[g], r.parity[g].ratio, r.parity[g].name.c_str(), r.parity[g].engine,
                    r.parity[g].torch, r.parity[g].floor);
      std::printf(
          "    worst ratio=%.3f (%s), pass <= 1: err(engine) <= %g x err(PyTorch) + floor (>= %g; grads: "
          "%.3e)\n",
          r.parity_worst.ratio, r.parity_worst.name.c_str(), r.ratio_factor, r.ratio_floor,
          r.grad_noise_floor);
      if (r.zero_grad_tensors > 0)
        std::printf(
            "note: %lld gradients are numerically zero in the reference; their errors are relative to "
            "the global gradient norm\n",
            static_cast<long long>(r.zero_grad_tensors));
    } else {
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
    }
    if (!r.passed) {
      std::printf("FAIL: %s\n", r.failure.c_str());
      return 1;
    }
    std::printf("OK (%s%s, %lld parameters in %lld tensors, %d AdamW steps, device %s)\n", r.dtype.c_str(),
                r.f64_reference ? " reference + PyTorch float32" : "", static_cast<long long>(r.num_params),
                static_cast<long long>(r.num_tensors), r.steps, dev.str().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "reference_check: %s\n", e.what());
    return 2;
  } catch (...) {
    std::fprintf(stderr, "reference_check: unknown error\n");
    return 2;
  }
}
