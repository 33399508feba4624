// Runs a reference fixture written by tests/reference/make_fixtures.py (real diffusers + PyTorch): builds
// the wrapper from the fixture's config, loads params.*, recomputes pred, loss, grads and the parameters
// after `steps` AdamW steps, and compares each with the stored tensors (relative L2 error per tensor).
#pragma once
#include <string>
#include <vector>

#include "core/dtype.h"

namespace engine::models {

struct FixtureThresholds {
  double pred = 1e-4, loss = 1e-4, grads = 1e-3, after = 1e-4;
};

struct FixtureResult {
  double pred_rel_err = 0, loss_rel_err = 0;
  double grads_max_rel_err = 0, after_max_rel_err = 0;
  std::string grads_worst, after_worst;
  // Tensors whose reference grad is numerically zero (norm <= 1e-6 x the global grad norm: rounding noise,
  // e.g. attention to_k.bias) are excluded from the relative maxima. Instead our grad norm must be
  // <= zero_grad_rel_norm_bound x the global norm, and |after - ref| <= zero_grad_after_bound (2 lr steps).
  int64_t zero_grad_tensors = 0;
  double zero_grad_max_rel_norm = 0, zero_grad_rel_norm_bound = 0;
  double zero_grad_after_max_abs_err = 0, zero_grad_after_bound = 0;
  int64_t num_params = 0, num_tensors = 0;
  int steps = 0;
  std::string dtype;
  bool passed = false;
  std::string failure;  // which checks failed, when !passed
};

// rel_err = ||a - b||_2 / ||b||_2 (||a - b||_2 when ||b|| == 0).
double rel_err(const std::vector<double>& a, const std::vector<double>& b);

// Throws engine::Error (or engine::st::Error) for a missing/malformed fixture or metadata, naming the
// problem. Threshold failures are reported in the result, not thrown.
FixtureResult run_reference_fixture(const std::string& path, Device device = Device::cpu(),
                                    const FixtureThresholds& th = {});

}  // namespace engine::models
