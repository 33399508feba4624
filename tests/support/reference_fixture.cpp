// Reference-fixture runner shared by the reference_check CLI and the model tests.
#include "tests/support/reference_fixture.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/bounded_json.h"
#include "core/safetensors.h"
#include "models/conditional_unet.h"
#include "models/name_conversion.h"
#include "nn/adamw.h"
#include "nn/state_dict.h"

namespace engine::models {

namespace {
std::vector<double> host(const Tensor& t) {
  return t.detach().to(Device::cpu()).to(DType::F64).to_vector<double>();
}

const st::StTensor& need(const st::StFile& f, const std::string& name, const std::string& path) {
  const st::StTensor* t = f.find(name);
  if (!t) throw Error("fixture " + path + ": tensor '" + name + "' is missing");
  return *t;
}

nlohmann::json meta_json(const st::StFile& f, const std::string& key, const std::string& path) {
  auto it = f.metadata.find(key);
  if (it == f.metadata.end()) throw Error("fixture " + path + ": __metadata__ key '" + key + "' is missing");
  return parse_json_bounded(it->second, "fixture " + path + ": __metadata__ '" + key + "'");
}

double json_num(const nlohmann::json& j, const std::string& key, const std::string& what) {
  if (!j.contains(key) || !j[key].is_number()) throw Error(what + ": missing or non-numeric '" + key + "'");
  return j[key].get<double>();
}
}  // namespace

double rel_err(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  if (a.size() != b.size()) return INFINITY;
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

namespace {
// The fixture's metadata, validated.
struct Fixture {
  std::string path;
  st::StFile f;
  ConditionalConfig cfg;
  nn::AdamWOptions ao;
  int steps = 0;
  double time_scale = 0;
};

Fixture read_fixture(const std::string& path) {
  Fixture fx;
  fx.path = path;
  fx.f = st::read_file(path);
  const st::StFile& f = fx.f;
  const nlohmann::json cj = meta_json(f, "config", path);
  try {
    fx.cfg = ConditionalConfig::from_json(cj);
  } catch (const Error& e) {
    throw Error("fixture " + path + ": __metadata__ 'config': " + e.what());
  }
  const nlohmann::json aj = meta_json(f, "adamw", path);
  const std::string aw = "fixture " + path + ": __metadata__ 'adamw'";
  fx.ao.lr = json_num(aj, "lr", aw);
  fx.ao.eps = json_num(aj, "eps", aw);
  fx.ao.weight_decay = json_num(aj, "weight_decay", aw);
  if (!aj.contains("betas") || !aj["betas"].is_array() || aj["betas"].size() != 2 ||
      !aj["betas"][0].is_number() || !aj["betas"][1].is_number())
    throw Error(aw + ": 'betas' must be a list of two numbers");
  fx.ao.beta1 = aj["betas"][0].get<double>();
  fx.ao.beta2 = aj["betas"][1].get<double>();
  const nlohmann::json sj = meta_json(f, "steps", path);
  if (!sj.is_number_integer() || sj.get<int64_t>() < 1 || sj.get<int64_t>() > 1000)
    throw Error("fixture " + path + ": __metadata__ 'steps' must be an integer in [1, 1000], got " +
                sj.dump());
  fx.steps = sj.get<int>();
  const nlohmann::json tj = meta_json(f, "time_scale", path);
  if (!tj.is_number()) throw Error("fixture " + path + ": __metadata__ 'time_scale' must be a number");
  fx.time_scale = tj.get<double>();
  return fx;
}

// What the engine computes from the fixture's start: pred, loss, grads and parameters after `steps` AdamW
// steps, as float64 host vectors; grads/after in the model's parameter order (`names`).
struct EngineRun {
  std::vector<std::string> names;
  std::vector<double> pred;
  double loss = 0;
  std::vector<std::vector<double>> grads, after;
  int64_t num_params = 0, num_tensors = 0;
};

// Runs the engine on `device` in the fixture's float dtype, or in float32 when `convert_to_f32` (inputs and
// params are converted; the float64-reference fixtures hold float32-representable starting values, so the
// float32 run starts exactly where PyTorch's float32 run did).
EngineRun run_engine(const Fixture& fx, Device device, bool convert_to_f32) {
  const std::string& path = fx.path;
  const st::StFile& f = fx.f;
  auto load = [&](const char* name) { return nn::tensor_from_st(need(f, name, path), Device::cpu()); };
  Tensor x = load("inputs.x"), noise = load("inputs.noise"), sigma = load("inputs.sigma");
  const Tensor labels = load("inputs.labels").to(device), drop = load("inputs.drop").to(device);
  if (!is_floating(x.dtype())) throw Error("fixture " + path + ": inputs.x must be F32 or F64");
  const DType file_dt = x.dtype();
  const DType dt = convert_to_f32 ? DType::F32 : file_dt;
  if (device.is_cuda() && dt != DType::F32)
    throw Error("fixture " + path + ": float64 fixtures run on the CPU only (CUDA kernels are float32)");
  const int64_t B = x.dim() == 4 ? x.size(0) : -1;
  if (B < 1 || noise.shape() != x.shape() || sigma.shape() != Shape{B} || labels.shape() != Shape{B} ||
      drop.shape() != Shape{B} || noise.dtype() != file_dt || sigma.dtype() != file_dt ||
      labels.dtype() != DType::I64 || drop.dtype() != DType::U8)
    throw Error("fixture " + path + ": inconsistent inputs: x " + shape_str(x.shape()) + ", noise " +
                shape_str(noise.shape()) + ", sigma " + shape_str(sigma.shape()) + ", labels " +
                shape_str(labels.shape()) + " " + dtype_name(labels.dtype()) + ", drop " +
                shape_str(drop.shape()) + " " + dtype_name(drop.dtype()));
  x = x.to(dt).to(device);  // (B, C, H, W)
  noise = noise.to(dt).to(device);
  sigma = sigma.to(dt).to(device);  // (B,)

  ConditionalUNet model(fx.cfg, 0, device, dt);
  nn::NamedTensors named = model.named_parameters();
  nn::LoadOptions lo;
  lo.prefix = "params.";
  lo.allow_dtype_conversion = convert_to_f32;
  load_wrapper_state_dict(named, f, {}, lo);
  EngineRun run;
  run.num_params = model.num_parameters();
  run.num_tensors = static_cast<int64_t>(named.size());
  for (const auto& [n, p] : named) run.names.push_back(n);

  // x_t = (1 - s) x + s noise; timesteps = s * time_scale; target = noise - x
  const Tensor s = sigma.reshape({B, 1, 1, 1});
  const Tensor xt =
      affine(s, -1.0, 1.0) * x + s * noise;  // (B, C, H, W), torch order (1 - s) * x + s * noise
  const Tensor ts = sigma * fx.time_scale;   // (B,)
  const Tensor target = noise - x;
  auto compute = [&](Tensor* pred_out) {
    Tensor pred = model.forward(xt, ts, labels, drop);
    if (pred_out) *pred_out = pred;
    return mse_loss(pred, target);
  };

  Tensor pred;
  Tensor loss = compute(&pred);
  run.pred = host(pred);
  run.loss = loss.item();
  loss.backward();
  for (const auto& [n, p] : named) {
    Tensor g = p.grad();
    run.grads.push_back(g.defined() ? host(g) : std::vector<double>(p.numel(), 0.0));
  }
  nn::AdamW opt(named, fx.ao);
  opt.step();  // the first step uses the gradients just recorded
  for (int k = 1; k < fx.steps; ++k) {
    opt.zero_grad();
    compute(nullptr).backward();
    opt.step();
  }
  for (const auto& [n, p] : named) run.after.push_back(host(p));
  return run;
}

double norm2(const std::vector<double>& a) {
  double s = 0;
  for (double v : a) s += v * v;
  return std::sqrt(s);
}

// ||a - b||_2 / scale (scale 0: absolute); +inf for a size mismatch.
double scaled_err(const std::vector<double>& a, const std::vector<double>& b, double scale) {
  if (a.size() != b.size()) return INFINITY;
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
  return scale > 0 ? std::sqrt(s) / scale : std::sqrt(s);
}

// A reference gradient at most this fraction of the global gradient norm is numerically zero.
constexpr double kZeroGrad = 1e-6;

void check_classic(const Fixture& fx, Device device, const FixtureThresholds& th, FixtureResult& r) {
  const std::string& path = fx.path;
  const st::StFile& f = fx.f;
  const EngineRun run = run_engine(fx, device, false);
  r.num_params = run.num_params;
  r.num_tensors = run.num_tensors;
  r.dtype = dtype_name(nn::tensor_from_st(need(f, "inputs.x", path)).dtype());
  r.pred_rel_err = rel_err(run.pred, host(nn::tensor_from_st(need(f, "outputs.pred", path))));
  r.loss_rel_err = rel_err({run.loss}, host(nn::tensor_from_st(need(f, "outputs.loss", path))));

  // Some reference gradients are mathematically zero and stored as float rounding noise: attention
  // to_k.bias (softmax is invariant to a per-query shift of the scores), and biases/time projections that
  // only add a per-channel constant before a GroupNorm with one channel per group. A tensor whose reference
  // grad norm is below kZeroGrad x the global grad norm counts as numerically zero: instead of a relative
  // error (noise vs noise) we check that our grad is numerically zero too, and because AdamW normalises
  // the noise into O(lr) steps, its `after` values are checked with |diff| <= 2 lr steps.
  constexpr double kZeroGradOurs = 1e-5;
  const size_t n = run.names.size();
  std::vector<std::vector<double>> ref_grads;
  double global_sq = 0;
  for (const std::string& name : run.names) {
    ref_grads.push_back(host(nn::tensor_from_st(need(f, "grads." + name, path))));
    for (double v : ref_grads.back()) global_sq += v * v;
  }
  const double gnorm = std::sqrt(global_sq);
  std::vector<bool> zero_grad(n, false);
  for (size_t i = 0; i < n; ++i) {
    const std::vector<double>& a = run.grads[i];
    const auto& b = ref_grads[i];
    if (a.size() != b.size())
      throw Error("fixture " + path + ": grads." + run.names[i] + " has the wrong size");
    if (norm2(b) <= kZeroGrad * gnorm) {
      zero_grad[i] = true;
      ++r.zero_grad_tensors;
      r.zero_grad_max_rel_norm = std::max(r.zero_grad_max_rel_norm, gnorm > 0 ? norm2(a) / gnorm : 0.0);
      continue;
    }
    const double e = rel_err(a, b);
    if (e > r.grads_max_rel_err || r.grads_worst.empty())
      r.grads_max_rel_err = e, r.grads_worst = run.names[i];
  }
  r.zero_grad_rel_norm_bound = kZeroGradOurs;
  for (size_t i = 0; i < n; ++i) {
    const std::vector<double>& a = run.after[i];
    const std::vector<double> b = host(nn::tensor_from_st(need(f, "after." + run.names[i], path)));
    if (zero_grad[i]) {
      for (size_t k = 0; k < a.size() && k < b.size(); ++k)
        r.zero_grad_after_max_abs_err = std::max(r.zero_grad_after_max_abs_err, std::abs(a[k] - b[k]));
      continue;
    }
    const double e = rel_err(a, b);
    if (e > r.after_max_rel_err || r.after_worst.empty())
      r.after_max_rel_err = e, r.after_worst = run.names[i];
  }
  r.zero_grad_after_bound = 2.0 * fx.ao.lr * r.steps;

  std::ostringstream fail;
  if (!(r.pred_rel_err <= th.pred)) fail << "pred rel_err " << r.pred_rel_err << " > " << th.pred << "; ";
  if (!(r.loss_rel_err <= th.loss)) fail << "loss rel_err " << r.loss_rel_err << " > " << th.loss << "; ";
  if (!(r.grads_max_rel_err <= th.grads))
    fail << "grads max_rel_err " << r.grads_max_rel_err << " > " << th.grads << " (" << r.grads_worst
         << "); ";
  if (!(r.after_max_rel_err <= th.after))
    fail << "after max_rel_err " << r.after_max_rel_err << " > " << th.after << " (" << r.after_worst
         << "); ";
  if (!(r.zero_grad_max_rel_norm <= r.zero_grad_rel_norm_bound))
    fail << "a gradient that is numerically zero in the reference is not here: |g|/|G| = "
         << r.zero_grad_max_rel_norm << " > " << r.zero_grad_rel_norm_bound << "; ";
  if (!(r.zero_grad_after_max_abs_err <= r.zero_grad_after_bound))
    fail << "after (numerically zero grads) max_abs_err " << r.zero_grad_after_max_abs_err << " > "
         << r.zero_grad_after_bound << "; ";
  r.failure = fail.str();
}

// One compared tensor of the float64-reference format.
struct Item {
  int group;  // 0 pred, 1 loss, 2 grads, 3 after
  std::string name;
  const std::vector<double>* e64;
  const std::vector<double>* e32;
};

void check_f64_reference(const Fixture& fx, Device device, const FixtureThresholds& th, FixtureResult& r) {
  const std::string& path = fx.path;
  const st::StFile& f = fx.f;
  for (const char* k : {"inputs.x", "outputs.pred", "outputs.loss"})
    if (need(f, k, path).dtype != st::StDtype::F64)
      throw Error("fixture " + path +
                  ": a float64-reference fixture (it has torch32.*) needs F64 tensors, but '" + k + "' is " +
                  st::dtype_name(need(f, k, path).dtype));
  const EngineRun r64 = run_engine(fx, Device::cpu(), false);
  const EngineRun r32 = run_engine(fx, device, true);
  r.f64_reference = true;
  r.num_params = r64.num_params;
  r.num_tensors = r64.num_tensors;
  r.dtype = "F64";
  r.device32 = device.str();
  r.exact_bound = th.exact;
  r.ratio_factor = th.ratio_factor;
  r.ratio_floor = th.ratio_floor;
  r.zero_grad_after_bound = r.zero_grad_rel_norm_bound = 0;

  const std::vector<double> loss64{r64.loss}, loss32{r32.loss};
  std::vector<Item> items{{0, "outputs.pred", &r64.pred, &r32.pred}, {1, "outputs.loss", &loss64, &loss32}};
  for (size_t i = 0; i < r64.names.size(); ++i)
    items.push_back({2, "grads." + r64.names[i], &r64.grads[i], &r32.grads[i]});
  for (size_t i = 0; i < r64.names.size(); ++i)
    items.push_back({3, "after." + r64.names[i], &r64.after[i], &r32.after[i]});

  double gsq = 0;
  for (const std::string& n : r64.names)
    for (double v : host(nn::tensor_from_st(need(f, "grads." + n, path)))) gsq += v * v;
  const double gnorm = std::sqrt(gsq);

  std::vector<double> floors;  // per item, besides th.ratio_floor
  for (const Item& it : items) {
    const std::vector<double> ref = host(nn::tensor_from_st(need(f, it.name, path)));
    const std::vector<double> t32 = host(nn::tensor_from_st(need(f, "torch32." + it.name, path)));
    if (ref.size() != it.e64->size() || t32.size() != ref.size())
      throw Error("fixture " + path + ": '" + it.name + "' or 'torch32." + it.name + "' has the wrong size");
    double scale = norm2(ref);
    const bool zero_grad = it.group == 2 && scale <= kZeroGrad * gnorm;
    if (zero_grad) scale = gnorm, ++r.zero_grad_tensors;
    // (a) engine float64 vs reference float64
    const double e64 = scaled_err(*it.e64, ref, scale);
    if (e64 > r.exact_max_err || r.exact_worst.empty()) r.exact_max_err = e64, r.exact_worst = it.name;
    const double plain = rel_err(*it.e64, ref);
    if (it.group == 0) r.pred_rel_err = plain;
    if (it.group == 1) r.loss_rel_err = plain;
    if (it.group == 2 && !zero_grad && (plain > r.grads_max_rel_err || r.grads_worst.empty()))
      r.grads_max_rel_err = plain, r.grads_worst = it.name.substr(6);
    if (it.group == 3 && (plain > r.after_max_rel_err || r.after_worst.empty()))
      r.after_max_rel_err = plain, r.after_worst = it.name.substr(6);
    // (b) engine float32 vs PyTorch float32, both against the reference (ratio filled in below)
    r.parity_all.push_back({it.name, scaled_err(*it.e32, ref, scale), scaled_err(t32, ref, scale), 0});
    r.exact_all.push_back(e64);
    // after.*: one element whose first AdamW update sign is decided by float32 rounding moves by up to
    // 2 lr per step; relative to this tensor's norm.
    floors.push_back(it.group == 3 && scale > 0 ? 2.0 * fx.ao.lr * fx.steps / scale : 0.0);
  }
  // grads.*: PyTorch's error on one tensor is a single draw of float32 rounding noise; the floor is that
  // noise's typical size, the median of PyTorch's float32 errors over all gradient tensors.
  std::vector<double> torch_grad_errs;
  for (size_t i = 0; i < items.size(); ++i)
    if (items[i].group == 2) torch_grad_errs.push_back(r.parity_all[i].torch);
  double grad_noise = 0;
  if (!torch_grad_errs.empty()) {
    std::nth_element(torch_grad_errs.begin(), torch_grad_errs.begin() + torch_grad_errs.size() / 2,
                     torch_grad_errs.end());
    grad_noise = torch_grad_errs[torch_grad_errs.size() / 2];
  }
  r.grad_noise_floor = grad_noise;
  for (size_t i = 0; i < items.size(); ++i) {
    ParityWorst& w = r.parity_all[i];
    const int g = items[i].group;
    w.floor = std::max(th.ratio_floor, g == 2 ? grad_noise : floors[i]);
    w.ratio = w.engine / (th.ratio_factor * w.torch + w.floor);
    if (!(w.ratio <= r.parity[g].ratio) || r.parity[g].name.empty()) r.parity[g] = w;
    if (!(w.ratio <= r.parity_worst.ratio) || r.parity_worst.name.empty()) r.parity_worst = w;
  }

  std::ostringstream fail;
  if (!(r.exact_max_err <= th.exact))
    fail << "float64 engine vs float64 reference: err " << r.exact_max_err << " > " << th.exact << " ("
         << r.exact_worst << "); ";
  if (!(r.parity_worst.ratio <= 1.0))
    fail << "float32 engine on " << r.device32 << ": " << r.parity_worst.name << " err "
         << r.parity_worst.engine << " > " << th.ratio_factor << " x PyTorch float32's "
         << r.parity_worst.torch << " + floor " << r.parity_worst.floor << " (ratio " << r.parity_worst.ratio
         << "); ";
  r.failure = fail.str();
}
}  // namespace

FixtureResult run_reference_fixture(const std::string& path, Device device, const FixtureThresholds& th) {
  const Fixture fx = read_fixture(path);
  FixtureResult r;
  r.steps = fx.steps;
  if (fx.f.find("torch32.outputs.pred"))
    check_f64_reference(fx, device, th, r);
  else
    check_classic(fx, device, th, r);
  r.passed = r.failure.empty();
  return r;
}

}  // namespace engine::models
