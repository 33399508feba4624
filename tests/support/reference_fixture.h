// Runs a reference fixture written by tests/reference/make_fixtures.py (real diffusers + PyTorch): builds
// the wrapper from the fixture's config, loads params.*, recomputes pred, loss, grads and the parameters
// after `steps` AdamW steps, and compares each with the stored tensors.
//
// Two fixture formats (tests/reference/README.md):
//  * classic (F32, or F64 without torch32.*): the engine in the fixture's dtype on `device`, relative L2
//    error per tensor against fixed thresholds (FixtureThresholds).
//  * float64 reference (F64 tensors plus torch32.*, PyTorch's float32 results from the same start):
//    (a) the engine in float64 on the CPU must match the float64 reference to `exact` (1e-9);
//    (b) the engine in float32 on `device` must be, per tensor, no further from the float64 reference than
//        ratio_factor x PyTorch's own float32 error + a floor. The floor is ratio_floor, raised
//          - for grads.*, to the median of PyTorch's float32 errors over all gradient tensors (PyTorch's
//            error on one tensor is one draw of float32 rounding noise; a lucky draw must not demand more
//            than the model's typical float32 noise);
//          - for after.*, to 2 lr steps / ||ref|| (AdamW's first steps move an element by about +-lr
//            whatever its gradient's size, so one element whose tiny gradient's sign float32 rounding
//            decides moves by up to 2 lr per step).
//    Error of a tensor: err(a) = ||a - ref||_2 / scale, scale = ||ref||_2, except for gradients whose
//    reference is numerically zero (||ref|| <= 1e-6 x the global reference gradient norm G), where
//    scale = G.
#pragma once
#include <string>
#include <vector>

#include "core/dtype.h"

namespace engine::models {

struct FixtureThresholds {
  // classic format
  double pred = 1e-4, loss = 1e-4, grads = 1e-3, after = 1e-4;
  // float64-reference format
  double exact = 1e-9;        // (a) engine float64 vs reference float64, every tensor
  double ratio_factor = 2.0;  // (b) err(engine f32) <= ratio_factor * err(torch f32) + ratio_floor
  double ratio_floor = 1e-6;
};

// The worst tensor of one group (pred, loss, grads.*, after.*) in check (b).
struct ParityWorst {
  std::string name;
  double engine = 0;  // err(engine float32) against the float64 reference
  double torch = 0;   // err(PyTorch float32) against the float64 reference
  double floor = 0;   // the floor this tensor was judged with (see above)
  double ratio = 0;   // engine / (ratio_factor * torch + floor); <= 1 passes
};

struct FixtureResult {
  // Classic format: errors of the engine (fixture dtype, requested device). Float64-reference format: the
  // engine in float64 on the CPU, as plain relative L2 errors (also folded into exact_max_err).
  double pred_rel_err = 0, loss_rel_err = 0;
  double grads_max_rel_err = 0, after_max_rel_err = 0;
  std::string grads_worst, after_worst;
  // Tensors whose reference grad is numerically zero (norm <= 1e-6 x the global grad norm: rounding noise,
  // e.g. attention to_k.bias) are excluded from the relative maxima. Classic format: our grad norm must be
  // <= zero_grad_rel_norm_bound x the global norm, and |after - ref| <= zero_grad_after_bound (2 lr steps).
  // Float64-reference format: their errors are measured against the global norm instead.
  int64_t zero_grad_tensors = 0;
  double zero_grad_max_rel_norm = 0, zero_grad_rel_norm_bound = 0;
  double zero_grad_after_max_abs_err = 0, zero_grad_after_bound = 0;

  // Float64-reference format only.
  bool f64_reference = false;
  double exact_max_err = 0, exact_bound = 0;  // (a): worst err over pred, loss, grads, after
  std::string exact_worst;
  ParityWorst parity[4];  // (b) per group: pred, loss, grads, after
  ParityWorst parity_worst;
  std::vector<ParityWorst> parity_all;  // (b) for every tensor, in fixture order (pred, loss, grads, after)
  std::vector<double> exact_all;        // (a) err for the same tensors
  double ratio_factor = 0, ratio_floor = 0;
  double grad_noise_floor = 0;  // median PyTorch float32 error over grads.* (the grads floor)
  std::string device32;         // where (b) ran

  int64_t num_params = 0, num_tensors = 0;
  int steps = 0;
  std::string dtype;
  bool passed = false;
  std::string failure;  // which checks failed, when !passed
};

// rel_err = ||a - b||_2 / ||b||_2 (||a - b||_2 when ||b|| == 0; +inf when the sizes differ).
double rel_err(const std::vector<double>& a, const std::vector<double>& b);

// Throws engine::Error (or engine::st::Error) for a missing/malformed fixture or metadata, naming the
// problem. Threshold failures are reported in the result, not thrown. A classic F64 fixture runs on the
// CPU only; a float64-reference fixture runs (a) on the CPU and (b) on `device`.
FixtureResult run_reference_fixture(const std::string& path, Device device = Device::cpu(),
                                    const FixtureThresholds& th = {});

}  // namespace engine::models
