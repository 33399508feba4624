// Tests for nn/: module registry (names, order, counts, summary, in-place moves), layer initialisation and
// the timestep embedding, AdamW against a scalar transcription of torch.optim.AdamW, and state-dict I/O
// (round trip through core/safetensors, all-mismatches-at-once errors, rename maps, dtypes).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "models/conditional_unet.h"
#include "nn/adamw.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "nn/state_dict.h"
#include "tests/test_util.h"

namespace {

using namespace engine;
namespace fs = std::filesystem;

// A small wrapper config with every block kind (the "tiny" fixture's architecture).
using test::tiny_config;

std::vector<double> values(const Tensor& t) {
  return t.detach().to(Device::cpu()).to(DType::F64).to_vector<double>();
}

class TwoLayer : public nn::Module {
 public:
  explicit TwoLayer(nn::Init& init) {
    first = register_module("first", std::make_shared<nn::Linear>(init, 3, 4));
    list = register_module("list", std::make_shared<nn::ModuleList<nn::Linear>>());
    list->push_back(std::make_shared<nn::Linear>(init, 4, 5, false));
    list->push_back(std::make_shared<nn::Linear>(init, 5, 2));
  }
  std::shared_ptr<nn::Linear> first;
  std::shared_ptr<nn::ModuleList<nn::Linear>> list;
};

TEST(NN, ModuleNamesOrderAndCount) {
  nn::Init init(1);
  TwoLayer m(init);
  std::vector<std::string> names;
  for (auto& [n, t] : m.named_parameters()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"first.weight", "first.bias", "list.0.weight", "list.1.weight",
                                             "list.1.bias"}));
  EXPECT_EQ(m.num_parameters(), 12 + 4 + 20 + 10 + 2);
  for (const Tensor& p : m.parameters()) EXPECT_TRUE(p.requires_grad());
  EXPECT_NE(m.summary().find("total parameters: 48"), std::string::npos) << m.summary();
  EXPECT_EQ(nn::format_thousands(1707307), "1,707,307");
  EXPECT_EQ(nn::format_thousands(999), "999");
  EXPECT_EQ(nn::format_thousands(1000), "1,000");
  m.train(false);
  EXPECT_FALSE(m.list->is_training());
}

TEST(NN, ModuleToKeepsTensorIdentity) {
  nn::Init init(2);
  TwoLayer m(init);
  Tensor w = m.first->weight;  // a handle taken before the move
  const std::vector<double> before = values(w);
  m.to(DType::F64);
  EXPECT_EQ(w.dtype(), DType::F64);
  EXPECT_EQ(m.named_parameters()[0].second.dtype(), DType::F64);
  EXPECT_EQ(values(w), before);
  EXPECT_TRUE(w.requires_grad());
  // Forward still works and gradients reach the moved parameter.
  Tensor x = Tensor::ones({2, 3}, DType::F64);
  sum(m.first->forward(x)).backward();
  ASSERT_TRUE(w.grad().defined());
  EXPECT_EQ(w.grad().dtype(), DType::F64);
}

TEST(NN, InitFollowsTorchDefaults) {
  nn::Init init(3);
  nn::Conv2d conv(init, 4, 6, 3);
  const double bound = 1.0 / std::sqrt(4.0 * 9.0);
  double maxabs = 0;
  for (double v : values(conv.weight)) maxabs = std::max(maxabs, std::abs(v));
  EXPECT_LE(maxabs, bound);
  EXPECT_GT(maxabs, 0.8 * bound);
  for (double v : values(conv.bias)) EXPECT_LE(std::abs(v), bound);
  nn::GroupNorm gn(init, 2, 6, 1e-5);
  for (double v : values(gn.weight)) EXPECT_EQ(v, 1.0);
  for (double v : values(gn.bias)) EXPECT_EQ(v, 0.0);
  // Deterministic from the seed.
  nn::Init a(7), b(7);
  EXPECT_EQ(values(nn::Linear(a, 5, 5).weight), values(nn::Linear(b, 5, 5).weight));
}

TEST(NN, TimestepsMatchDiffusersFormula) {
  for (bool flip : {true, false}) {
    for (double shift : {0.0, 1.0}) {
      nn::Timesteps tp(8, flip, shift);
      Tensor t = Tensor::from_vector<float>({0.0f, 1.5f, 999.9f}, {3});
      std::vector<double> e = values(tp.forward(t, 3, DType::F32, Device::cpu()));
      const std::vector<float> ts = {0.0f, 1.5f, 999.9f};
      for (int b = 0; b < 3; ++b)
        for (int i = 0; i < 4; ++i) {
          const double f = std::exp(-std::log(10000.0) * i / (4 - shift));
          const double s = std::sin(ts[b] * f), c = std::cos(ts[b] * f);
          EXPECT_NEAR(e[b * 8 + i], flip ? c : s, 2e-4);
          EXPECT_NEAR(e[b * 8 + 4 + i], flip ? s : c, 2e-4);
        }
    }
  }
}

// A float64 model gets a float64 sinusoid (the float64 reference fixtures need it exact); float32 keeps
// diffusers' float32 arithmetic, whose argument t * f alone is off by up to ~3e-5 at t = 999.9.
TEST(NN, TimestepsFloat64IsFloat64Throughout) {
  const std::vector<double> ts = {0.0, 1.5, 999.9, 123.456789};
  for (bool flip : {true, false}) {
    for (double shift : {0.0, 1.0}) {
      nn::Timesteps tp(8, flip, shift);
      Tensor t = Tensor::from_vector<double>(ts, {4});
      std::vector<double> e = values(tp.forward(t, 4, DType::F64, Device::cpu()));
      std::vector<double> e32 = values(tp.forward(t, 4, DType::F32, Device::cpu()));
      double max_diff32 = 0;
      for (int b = 0; b < 4; ++b)
        for (int i = 0; i < 4; ++i) {
          const long double f = std::exp(-std::log(10000.0L) * i / (4 - shift));
          const long double arg = static_cast<long double>(ts[b]) * f;
          const double s = static_cast<double>(std::sin(arg)), c = static_cast<double>(std::cos(arg));
          EXPECT_NEAR(e[b * 8 + i], flip ? c : s, 1e-13) << b << " " << i;
          EXPECT_NEAR(e[b * 8 + 4 + i], flip ? s : c, 1e-13) << b << " " << i;
          max_diff32 = std::max(max_diff32, std::abs(e32[b * 8 + i] - (flip ? c : s)));
        }
      EXPECT_GT(max_diff32, 1e-9) << "the float32 path should still round like diffusers' float32";
    }
  }
}

TEST(NN, AttentionMatchesNaiveImplementation) {
  nn::Init init(4, DType::F64);
  nn::Attention attn(init, 8, 2, 4, 2, 1e-5);
  Generator g(5);
  Tensor x = randn({2, 8, 3, 3}, g, DType::F64);
  std::vector<double> y = values(attn.forward(x));
  // Naive: GN -> per-position projections -> per-head softmax attention -> out proj -> residual.
  std::vector<double> xn = values(attn.group_norm->forward(x));  // (2, 8, 9)
  auto W = [](const nn::Linear& l) { return values(l.weight); };
  auto Bv = [](const nn::Linear& l) { return values(l.bias); };
  const auto wq = W(*attn.to_q), wk = W(*attn.to_k), wv = W(*attn.to_v), wo = W((*attn.to_out)[0]);
  const auto bq = Bv(*attn.to_q), bk = Bv(*attn.to_k), bv = Bv(*attn.to_v), bo = Bv((*attn.to_out)[0]);
  const std::vector<double> xv = values(x);
  for (int b = 0; b < 2; ++b) {
    std::vector<double> q(9 * 8), k(9 * 8), v(9 * 8), o(9 * 8, 0.0);
    for (int l = 0; l < 9; ++l)
      for (int j = 0; j < 8; ++j) {
        double sq = bq[j], sk = bk[j], sv = bv[j];
        for (int c = 0; c < 8; ++c) {
          const double h = xn[(b * 8 + c) * 9 + l];
          sq += wq[j * 8 + c] * h, sk += wk[j * 8 + c] * h, sv += wv[j * 8 + c] * h;
        }
        q[l * 8 + j] = sq, k[l * 8 + j] = sk, v[l * 8 + j] = sv;
      }
    for (int hd = 0; hd < 2; ++hd)
      for (int i = 0; i < 9; ++i) {
        std::vector<double> s(9);
        double mx = -1e300, z = 0;
        for (int j = 0; j < 9; ++j) {
          double d = 0;
          for (int e = 0; e < 4; ++e) d += q[i * 8 + hd * 4 + e] * k[j * 8 + hd * 4 + e];
          s[j] = d / 2.0;  // 1/sqrt(4)
          mx = std::max(mx, s[j]);
        }
        for (double& sj : s) z += (sj = std::exp(sj - mx));
        for (int j = 0; j < 9; ++j)
          for (int e = 0; e < 4; ++e) o[i * 8 + hd * 4 + e] += s[j] / z * v[j * 8 + hd * 4 + e];
      }
    for (int c = 0; c < 8; ++c)
      for (int l = 0; l < 9; ++l) {
        double r = bo[c];
        for (int j = 0; j < 8; ++j) r += wo[c * 8 + j] * o[l * 8 + j];
        r += xv[(b * 8 + c) * 9 + l];
        EXPECT_NEAR(y[(b * 8 + c) * 9 + l], r, 1e-12);
      }
  }
}

// torch.optim.AdamW (_single_tensor_adamw, amsgrad=False) transcribed for one scalar.
struct ScalarAdamW {
  double p, m = 0, v = 0;
  int64_t t = 0;
  void step(double g, const nn::AdamWOptions& o) {
    ++t;
    p *= 1 - o.lr * o.weight_decay;
    m = o.beta1 * m + (1 - o.beta1) * g;
    v = o.beta2 * v + (1 - o.beta2) * g * g;
    const double bc1 = 1 - std::pow(o.beta1, double(t)), bc2 = 1 - std::pow(o.beta2, double(t));
    p -= o.lr / bc1 * m / (std::sqrt(v) / std::sqrt(bc2) + o.eps);
  }
};

TEST(NN, AdamWMatchesTorchFormula) {
  nn::AdamWOptions o;
  o.lr = 0.05, o.beta1 = 0.8, o.beta2 = 0.95, o.eps = 1e-6, o.weight_decay = 0.1;
  Tensor a = Tensor::from_vector<double>({1.0, -2.0, 0.5}, {3}).set_requires_grad(true);
  Tensor b = Tensor::from_vector<float>({0.25f, -0.75f}, {2}).set_requires_grad(true);
  Tensor c = Tensor::from_vector<double>({3.0}, {1}).set_requires_grad(true);  // no grad in step 1
  nn::AdamW opt({{"a", a}, {"b", b}, {"c", c}}, o);
  std::vector<ScalarAdamW> ra = {{1.0}, {-2.0}, {0.5}}, rb = {{0.25f}, {-0.75f}}, rc = {{3.0}};
  for (int step = 1; step <= 4; ++step) {
    opt.zero_grad();
    std::vector<double> ga = {0.3 * step, -1.0, 0.01 / step}, gb = {-0.5, 2.0 * step};
    a.set_grad(Tensor::from_vector<double>(ga, {3}));
    b.set_grad(Tensor::from_vector<float>({float(gb[0]), float(gb[1])}, {2}));
    if (step > 1) c.set_grad(Tensor::from_vector<double>({0.7}, {1}));
    opt.step();
    for (int i = 0; i < 3; ++i) ra[i].step(ga[i], o);
    for (int i = 0; i < 2; ++i) rb[i].step(float(gb[i]), o);
    if (step > 1) rc[0].step(0.7, o);
    const auto av = values(a), bv = values(b), cv = values(c);
    for (int i = 0; i < 3; ++i) EXPECT_NEAR(av[i], ra[i].p, 1e-14) << "step " << step;
    for (int i = 0; i < 2; ++i) EXPECT_NEAR(bv[i], rb[i].p, 1e-6) << "step " << step;
    EXPECT_NEAR(cv[0], rc[0].p, 1e-14) << "step " << step;  // skipped at step 1: own step count
  }
  EXPECT_EQ(opt.step_count(), 4);
  EXPECT_EQ(opt.param_steps(), (std::vector<int64_t>{4, 4, 3}));
  EXPECT_NEAR(values(opt.exp_avg()[0])[0], ra[0].m, 1e-14);
  EXPECT_NEAR(values(opt.exp_avg_sq()[2])[0], rc[0].v, 1e-14);

  // State round trip: a fresh optimizer loaded with the state continues identically.
  Tensor a2 = a.detach().clone().set_requires_grad(true);
  nn::AdamW opt2({{"a", a2}}, o);
  opt2.load_state(opt.step_count(), {opt.exp_avg()[0]}, {opt.exp_avg_sq()[0]});
  a.set_grad(Tensor::from_vector<double>({0.1, 0.2, 0.3}, {3}));
  a2.set_grad(Tensor::from_vector<double>({0.1, 0.2, 0.3}, {3}));
  opt.step();
  opt2.step();
  EXPECT_EQ(values(a), values(a2));
}

fs::path temp_file(const std::string& name) {
  std::string tmpl = (fs::temp_directory_path() / "nn_test_XXXXXX").string();
  char* p = ::mkdtemp(tmpl.data());
  if (!p) throw std::runtime_error("mkdtemp failed");
  return fs::path(p) / name;
}

TEST(NN, StateDictRoundTripThroughSafetensors) {
  models::ConditionalUNet a(tiny_config(), 11), b(tiny_config(), 12);
  const fs::path path = temp_file("wrapper.safetensors");
  st::write_file_atomic(path.string(), nn::state_dict_to_st(a.named_parameters()));
  const st::StFile f = st::read_file(path.string());
  ASSERT_EQ(f.tensors.size(), a.named_parameters().size());
  EXPECT_EQ(f.tensors[0].name, "class_emb.weight");
  nn::NamedTensors nb = b.named_parameters();
  EXPECT_NE(values(nb[1].second), values(a.named_parameters()[1].second));
  const nn::LoadReport rep = nn::load_state_dict(nb, f);
  EXPECT_EQ(rep.loaded, static_cast<int64_t>(nb.size()));
  const nn::NamedTensors na = a.named_parameters();
  for (size_t i = 0; i < na.size(); ++i) EXPECT_EQ(values(na[i].second), values(nb[i].second)) << na[i].first;
  fs::remove_all(path.parent_path());
}

TEST(NN, LoadReportsAllMismatchesAtOnce) {
  models::ConditionalUNet m(tiny_config(), 1);
  st::StFile f = nn::state_dict_to_st(m.named_parameters(), "params.");
  // missing: drop conv_out.bias; unexpected: add an extra key; shape: truncate conv_in.bias.
  std::erase_if(f.tensors, [](const st::StTensor& t) { return t.name == "params.model.conv_out.bias"; });
  st::StTensor extra = nn::st_from_tensor("params.model.extra.weight", Tensor::zeros({2}));
  f.tensors.push_back(extra);
  for (auto& t : f.tensors)
    if (t.name == "params.model.conv_in.bias") {
      t.shape = {4};
      t.data.resize(16);
    }
  f.tensors.push_back(
      nn::st_from_tensor("grads.model.conv_in.bias", Tensor::zeros({8})));  // other prefix: ignored
  nn::NamedTensors named = m.named_parameters();
  nn::LoadOptions opt;
  opt.prefix = "params.";
  try {
    nn::load_state_dict(named, f, opt);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("missing key: model.conv_out.bias"), std::string::npos) << msg;
    EXPECT_NE(msg.find("unexpected key: params.model.extra.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("model.conv_in.bias: file (4,) vs model (8,)"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("grads."), std::string::npos) << msg;
  }
}

// The generic loader applies a rename map and knows no model's naming: a UNet file's bare keys are
// unexpected without one (the wrapper's conversions: models/name_conversion.h, NameConversion.*).
TEST(NN, LoadAppliesRenameMapOnly) {
  models::ConditionalUNet a(tiny_config(), 1), b(tiny_config(), 2);
  const st::StFile bare = nn::state_dict_to_st(a.model->named_parameters());
  nn::NamedTensors nb = b.named_parameters();
  EXPECT_THROW(nn::load_state_dict(nb, bare), Error);
  nn::LoadOptions opt;
  for (const auto& t : bare.tensors) opt.rename[t.name] = "model." + t.name;
  opt.allow_missing = {"class_emb.weight"};
  const nn::LoadReport rep = nn::load_state_dict(nb, bare, opt);
  EXPECT_EQ(rep.renamed, static_cast<int64_t>(bare.tensors.size()));
  EXPECT_EQ(rep.kept, std::vector<std::string>{"class_emb.weight"});
  const nn::NamedTensors na = a.named_parameters();
  for (size_t i = 1; i < na.size(); ++i) EXPECT_EQ(values(na[i].second), values(nb[i].second)) << na[i].first;
}

TEST(NN, LoadDtypeMismatch) {
  models::ConditionalUNet a(tiny_config(), 1);                             // float32
  models::ConditionalUNet b(tiny_config(), 2, Device::cpu(), DType::F64);  // float64
  const st::StFile f = nn::state_dict_to_st(a.named_parameters());
  nn::NamedTensors nb = b.named_parameters();
  try {
    nn::load_state_dict(nb, f);
    FAIL() << "expected a dtype mismatch";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("dtype mismatch: class_emb.weight: file F32 vs model float64"), std::string::npos)
        << msg;
    EXPECT_NE(msg.find("allow_dtype_conversion"), std::string::npos) << msg;
  }
  nn::LoadOptions opt;
  opt.allow_dtype_conversion = true;
  const nn::LoadReport rep = nn::load_state_dict(nb, f, opt);
  EXPECT_EQ(rep.converted.size(), nb.size());
  EXPECT_EQ(nb[0].second.dtype(), DType::F64);
  EXPECT_EQ(values(nb[0].second), values(a.named_parameters()[0].second));
}

TEST(NN, TensorFromStRejectsUnsupportedDtype) {
  st::StTensor t;
  t.name = "half";
  t.dtype = st::StDtype::F16;
  t.shape = {2};
  t.data.resize(4);
  try {
    nn::tensor_from_st(t);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("F16"), std::string::npos) << e.what();
  }
}

}  // namespace
