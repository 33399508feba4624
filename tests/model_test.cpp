// Tests for models/: the seed UNet2D/wrapper (parameter count and state-dict key order against the
// specification), config JSON validation, input checks, and the reference fixtures written by real
// diffusers (tests/reference/*.safetensors), including a plain PyTorch-saved state dict.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "kernels/cpu/conv2d_winograd.h"
#include "models/conditional_unet.h"
#include "models/name_conversion.h"
#include "nn/state_dict.h"
#include "tests/support/reference_fixture.h"

namespace {

using namespace engine;
using nlohmann::json;
namespace fs = std::filesystem;

const fs::path kSource = ENGINE_SOURCE_DIR;
// The golden key list (copied into the repo from the UNet2D spec, section 8; see the file's header).
const fs::path kSeedKeys = kSource / "tests" / "reference" / "seed_keys.txt";

std::vector<double> values(const Tensor& t) {
  return t.detach().to(Device::cpu()).to(DType::F64).to_vector<double>();
}

TEST(Model, SeedParameterCount) {
  models::ConditionalUNet m(models::ConditionalConfig::seed(), 0);
  EXPECT_EQ(m.num_parameters(), 1707307);
  EXPECT_EQ(m.model->num_parameters(), 1707297);
  EXPECT_EQ(m.named_parameters().size(), 319u);
  EXPECT_NE(m.summary().find("total parameters: 1,707,307"), std::string::npos);
}

// configs/seed.json is the one source of the seed config: the library embeds it at build time (so the apps
// run from any directory); the embedded text must be the file's, and seed() must be what it says.
TEST(Model, SeedConfigEmbeddedMatchesFile) {
  std::ifstream in(kSource / "configs" / "seed.json", std::ios::binary);
  ASSERT_TRUE(in) << "cannot open configs/seed.json";
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(std::string(models::seed_config_json()), text) << "rebuild: CMake re-embeds configs/seed.json";
  const json file = json::parse(text);
  const json seed = models::ConditionalConfig::seed().to_json();
  for (const auto& [key, v] : file.items()) {
    if (key[0] == '_') continue;
    ASSERT_TRUE(seed.contains(key)) << key;
    EXPECT_EQ(seed[key], v) << key;
  }
  EXPECT_EQ(models::UNet2DConfig::seed().to_json(), models::ConditionalConfig::seed().unet.to_json());
  EXPECT_EQ(models::UNet2DConfig::seed().block_out_channels, (std::vector<int64_t>{32, 64, 64}));
}

// tests/reference/seed_keys.txt rows: index<TAB>key<TAB>(shape); '#' lines are comments.
TEST(Model, SeedKeyOrderMatchesSpec) {
  models::ConditionalUNet m(models::ConditionalConfig::seed(), 0);
  const nn::NamedTensors named = m.named_parameters();
  std::ifstream in(kSeedKeys);
  ASSERT_TRUE(in) << "cannot open " << kSeedKeys;
  std::vector<std::pair<std::string, std::string>> spec;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t t1 = line.find('\t'), t2 = line.find('\t', t1 + 1);
    ASSERT_TRUE(t1 != std::string::npos && t2 != std::string::npos) << line;
    ASSERT_EQ(std::stoul(line.substr(0, t1)), spec.size()) << line;
    spec.emplace_back(line.substr(t1 + 1, t2 - t1 - 1), line.substr(t2 + 1));
  }
  ASSERT_EQ(spec.size(), 319u);
  ASSERT_EQ(named.size(), spec.size());
  for (size_t i = 0; i < spec.size(); ++i) {
    EXPECT_EQ(named[i].first, spec[i].first) << "row " << i;
    EXPECT_EQ(shape_str(named[i].second.shape()), spec[i].second) << named[i].first;
  }
}

std::string config_error(const json& j) {
  try {
    models::ConditionalConfig::from_json(j);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Model, ConfigJson) {
  const json seed = models::ConditionalConfig::seed().to_json();
  const models::ConditionalConfig back = models::ConditionalConfig::from_json(seed);
  EXPECT_EQ(back.to_json(), seed);
  EXPECT_EQ(back.unet.block_out_channels, (std::vector<int64_t>{32, 64, 64}));

  json j = seed;
  j["_class_name"] = "UNet2DModel";
  j["_diffusers_version"] = "0.30.0";
  j["center_input_sample"] = false;
  j["act_fn"] = "silu";
  j["dropout"] = 0.0;
  EXPECT_EQ(config_error(j), "");

  auto with = [&](const char* key, json v) {
    json k = seed;
    k[key] = v;
    return config_error(k);
  };
  EXPECT_NE(with("bogus_key", 1).find("'bogus_key'"), std::string::npos);
  EXPECT_NE(with("down_block_types", {"DownBlock2D", "CrossAttnDownBlock2D", "AttnDownBlock2D"})
                .find("'down_block_types'"),
            std::string::npos);
  EXPECT_NE(with("up_block_types", {"AttnUpBlock2D", "UpBlock2D"}).find("'up_block_types'"),
            std::string::npos);
  EXPECT_NE(with("norm_num_groups", 24).find("'norm_num_groups'"), std::string::npos);
  EXPECT_NE(with("time_embedding_type", "fourier").find("'time_embedding_type'"), std::string::npos);
  EXPECT_NE(with("center_input_sample", true).find("'center_input_sample'"), std::string::npos);
  EXPECT_NE(with("class_embed_type", "timestep").find("'class_embed_type'"), std::string::npos);
  EXPECT_NE(with("resnet_time_scale_shift", "scale_shift").find("'resnet_time_scale_shift'"),
            std::string::npos);
  EXPECT_NE(with("num_class_embeds", 10).find("'num_class_embeds'"), std::string::npos);
  EXPECT_NE(with("dropout", 0.1).find("'dropout'"), std::string::npos);
  EXPECT_NE(with("layers_per_block", "two").find("'layers_per_block'"), std::string::npos);
  EXPECT_NE(with("out_channels", 2).find("'out_channels'"), std::string::npos);
  EXPECT_NE(with("class_emb_size", 2).find("'in_channels'"), std::string::npos);  // no image channel left
}

TEST(Model, OddSpatialSizeNamesTheSize) {
  models::ConditionalUNet m(models::ConditionalConfig::seed(), 0);
  Tensor x = Tensor::zeros({1, 1, 30, 30});
  Tensor t = Tensor::from_vector<float>({10.0f}, {1});
  Tensor y = Tensor::from_vector<int64_t>({3}, {1});
  try {
    m.forward(x, t, y);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("30x30"), std::string::npos) << e.what();
  }
}

TEST(Model, ForwardShapeAndDropMask) {
  models::ConditionalConfig c = models::ConditionalConfig::seed();
  c.unet.block_out_channels = {32, 32};
  c.unet.down_block_types = {"DownBlock2D", "AttnDownBlock2D"};
  c.unet.up_block_types = {"AttnUpBlock2D", "UpBlock2D"};
  models::ConditionalUNet m(c, 3);
  Generator g(1);
  Tensor x = randn({2, 1, 8, 8}, g);
  Tensor t = Tensor::from_vector<float>({10.0f, 500.0f}, {2});
  Tensor labels = Tensor::from_vector<int64_t>({3, 7}, {2});
  Tensor out = m.forward(x, t, labels);
  EXPECT_EQ(out.shape(), (Shape{2, 1, 8, 8}));
  // Dropping sample 1's class embedding equals feeding it a zero embedding row.
  Tensor drop = Tensor::from_vector<uint8_t>({0, 1}, {2});
  std::vector<double> a = values(m.forward(x, t, labels, drop));
  NoGradGuard ng;
  m.class_emb->weight.fill_(0.0);
  std::vector<double> b = values(m.forward(x, t, labels));
  std::vector<double> full = values(out);
  for (size_t i = 0; i < 64; ++i) EXPECT_EQ(a[i], full[i]);  // sample 0 unchanged
  for (size_t i = 64; i < 128; ++i) EXPECT_EQ(a[i], b[i]);   // sample 1 = zero embedding
}

// Runs `check` once with each float32 3x3 conv algorithm forced (im2col, Winograd), so that the fixtures
// test both whatever ENGINE_CPU_CONV's auto rule picks for their channel counts.
template <typename F>
void for_each_conv_algo(F check) {
  using kern::cpu::CpuConvAlgo;
  for (CpuConvAlgo a : {CpuConvAlgo::Im2col, CpuConvAlgo::Winograd}) {
    SCOPED_TRACE(std::string("ENGINE_CPU_CONV=") + kern::cpu::cpu_conv_algo_name(a));
    kern::cpu::set_cpu_conv_algo(a);
    check();
  }
  kern::cpu::set_cpu_conv_algo(CpuConvAlgo::Auto);
}

void check_fixture(const fs::path& p);
void check_f64_fixture(const fs::path& p);

void run_fixture(const fs::path& p) {
  if (!fs::exists(p)) GTEST_SKIP() << p << " not found";
  for_each_conv_algo([&] { check_fixture(p); });
}

void check_fixture(const fs::path& p) {
  const models::FixtureResult r = models::run_reference_fixture(p.string());
  EXPECT_LE(r.pred_rel_err, 1e-4);
  EXPECT_LE(r.loss_rel_err, 1e-4);
  EXPECT_LE(r.grads_max_rel_err, 1e-3) << r.grads_worst;
  EXPECT_LE(r.after_max_rel_err, 1e-4) << r.after_worst;
  EXPECT_TRUE(r.passed) << r.failure;
}

TEST(Model, ReferenceFixtureTiny) { run_fixture(kSource / "tests/reference/tiny.safetensors"); }
TEST(Model, ReferenceFixtureTinyVariant) {
  run_fixture(kSource / "tests/reference/tiny_variant.safetensors");
}

// Float64-reference fixtures (F64 + torch32.*): (a) the engine in float64 matches PyTorch float64 to 1e-9,
// (b) the engine in float32 is within 2x PyTorch float32's own error + a floor on every tensor
// (tests/support/reference_fixture.h).
void run_f64_fixture(const fs::path& p) {
  if (!fs::exists(p)) GTEST_SKIP() << p << " not found";
  for_each_conv_algo([&] { check_f64_fixture(p); });
}

void check_f64_fixture(const fs::path& p) {
  const models::FixtureResult r = models::run_reference_fixture(p.string());
  ASSERT_TRUE(r.f64_reference);
  // The margin, for the record (docs/apps.md quotes it per conv algorithm).
  std::printf("%s [ENGINE_CPU_CONV=%s]: worst float32 parity ratio %.3f (%s), pass <= 1\n",
              p.filename().string().c_str(), kern::cpu::cpu_conv_algo_name(kern::cpu::cpu_conv_algo()),
              r.parity_worst.ratio, r.parity_worst.name.c_str());
  EXPECT_LE(r.exact_max_err, 1e-9) << r.exact_worst;
  EXPECT_LE(r.pred_rel_err, 1e-9);
  EXPECT_LE(r.after_max_rel_err, 1e-9) << r.after_worst;
  EXPECT_LE(r.parity_worst.ratio, 1.0)
      << r.parity_worst.name << " engine " << r.parity_worst.engine << " torch " << r.parity_worst.torch;
  EXPECT_TRUE(r.passed) << r.failure;
}

TEST(Model, ReferenceFixtureF64Tiny) { run_f64_fixture(kSource / "tests/reference/tiny_f64ref.safetensors"); }
TEST(Model, ReferenceFixtureF64TinyVariant) {
  run_f64_fixture(kSource / "tests/reference/tiny_variant_f64ref.safetensors");
}

// Scales every float64 value of `name` in an st::StFile by (1 + rel).
void scale_tensor(st::StFile& f, const std::string& name, double rel) {
  for (st::StTensor& t : f.tensors)
    if (t.name == name) {
      ASSERT_EQ(t.dtype, st::StDtype::F64) << name;
      auto* d = reinterpret_cast<double*>(t.data.data());
      for (int64_t i = 0; i < t.numel(); ++i) d[i] *= 1.0 + rel;
      return;
    }
  FAIL() << name << " not in the fixture";
}

// Both checks of the float64-reference format can fail, in one run (the test is run under ASan too): a
// 1e-8 change of one reference tensor breaks (a); a PyTorch float32 run whose gradients were exact
// (torch32.grads.* = reference, so the grads floor falls to 1e-6) leaves the engine's float32 gradient
// errors (~1e-6..5e-6) above the bound, which breaks (b).
TEST(Model, ReferenceFixtureF64ChecksCanFail) {
  const fs::path src = kSource / "tests/reference/tiny_variant_f64ref.safetensors";
  if (!fs::exists(src)) GTEST_SKIP() << src << " not found";
  const fs::path tmp = fs::temp_directory_path() / ("f64ref_fail_" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  const st::StFile orig = st::read_file(src.string());
  st::StFile f = orig;
  for (st::StTensor& t : f.tensors)
    if (t.name.rfind("torch32.grads.", 0) == 0) t.data = orig.find(t.name.substr(8))->data;
  scale_tensor(f, "after.model.conv_in.weight", 1e-8);
  const std::string path = (tmp / "broken.safetensors").string();
  st::write_file_atomic(path, f);
  const models::FixtureResult r = models::run_reference_fixture(path);
  fs::remove_all(tmp);
  EXPECT_FALSE(r.passed);
  EXPECT_GT(r.exact_max_err, 1e-9);
  EXPECT_EQ(r.exact_worst, "after.model.conv_in.weight");
  EXPECT_NE(r.failure.find("float64 engine"), std::string::npos) << r.failure;
  EXPECT_GT(r.parity[2].ratio, 1.0);
  EXPECT_EQ(r.grad_noise_floor, 0.0);
  EXPECT_LE(r.parity[3].ratio, 1.0);  // after untouched: still within the bound
  EXPECT_NE(r.failure.find("float32 engine"), std::string::npos) << r.failure;
}

// The large fixtures (seed config, a two-block variant, a medium config) take tens of seconds on 2 cores:
// opt-in with ENGINE_LARGE_FIXTURES=1. They are not committed (tests/reference/large/ is git-ignored).
TEST(Model, ReferenceFixturesLarge) {
  if (!std::getenv("ENGINE_LARGE_FIXTURES")) GTEST_SKIP() << "opt-in: set ENGINE_LARGE_FIXTURES=1 to run";
  struct Large {
    const char* file;
    const char* make_args;  // make_fixtures.py arguments that write it
    bool f64;
  };
  const Large large[] = {
      {"seed_f64ref.safetensors", "--config seed --f64-reference", true},
      {"two_block_f64ref.safetensors", "--config two_block --f64-reference", true},
      {"medium.safetensors", "--config medium", false},
  };
  std::string missing;
  for (const Large& l : large) {
    const fs::path p = kSource / "tests/reference/large" / l.file;
    SCOPED_TRACE(l.file);
    if (!fs::exists(p)) {
      missing += "\n  " + p.string() + ": python tests/reference/make_fixtures.py " + l.make_args +
                 " --out tests/reference/large/" + l.file;
      continue;
    }
    if (l.f64)
      run_f64_fixture(p);
    else
      run_fixture(p);
  }
  if (!missing.empty())
    GTEST_SKIP() << "ENGINE_LARGE_FIXTURES is set, but these fixture files are missing; make each with the "
                    "command after it (needs torch, diffusers, safetensors: see tests/reference/README.md), "
                    "or all of them with `python tests/reference/make_fixtures.py --all`:"
                 << missing;
}

TEST(Model, ReferenceFixtureErrors) {
  EXPECT_THROW(models::run_reference_fixture((kSource / "tests/reference/no_such.safetensors").string()),
               std::exception);
  // A state dict is not a fixture: the error names the missing metadata.
  const fs::path sd = kSource / "tests/reference/tiny_state_dict.safetensors";
  if (!fs::exists(sd)) GTEST_SKIP() << sd << " not found";
  try {
    models::run_reference_fixture(sd.string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("__metadata__"), std::string::npos) << e.what();
  }
}

// A genuine PyTorch-written wrapper state dict (safetensors.torch.save_file, no prefix) loads and reproduces
// the prediction PyTorch computed for the inputs stored in `io_path` (a fixture with inputs.* /
// outputs.pred).
void check_pytorch_state_dict(const fs::path& sd_path, const fs::path& io_path) {
  if (!fs::exists(sd_path) || !fs::exists(io_path))
    GTEST_SKIP() << sd_path << " or " << io_path << " not found";
  const st::StFile sd = st::read_file(sd_path.string());
  const st::StFile fx = st::read_file(io_path.string());
  const auto cfg = models::ConditionalConfig::from_json(json::parse(fx.metadata.at("config")));
  models::ConditionalUNet m(cfg, 123);
  nn::NamedTensors named = m.named_parameters();
  const nn::LoadReport rep = models::load_wrapper_state_dict(named, sd);
  EXPECT_EQ(rep.loaded, static_cast<int64_t>(named.size()));
  auto in = [&](const char* n) { return nn::tensor_from_st(*fx.find(n)); };
  const Tensor x = in("inputs.x"), noise = in("inputs.noise"), sigma = in("inputs.sigma");
  const int64_t B = x.size(0);
  const Tensor s = sigma.reshape({B, 1, 1, 1});
  const Tensor xt = affine(s, -1.0, 1.0) * x + s * noise;
  const double time_scale = std::stod(fx.metadata.at("time_scale"));
  NoGradGuard ng;
  const Tensor pred = m.forward(xt, sigma * time_scale, in("inputs.labels"), in("inputs.drop"));
  EXPECT_LE(models::rel_err(values(pred), values(in("outputs.pred"))), 1e-4);
}

TEST(Model, PytorchStateDictLoads) {
  check_pytorch_state_dict(kSource / "tests/reference/tiny_state_dict.safetensors",
                           kSource / "tests/reference/tiny.safetensors");
}

// The seed wrapper (1,707,307 parameters) saved by PyTorch: opt-in like the other large fixtures.
TEST(Model, PytorchSeedStateDictLoads) {
  if (!std::getenv("ENGINE_LARGE_FIXTURES")) GTEST_SKIP() << "set ENGINE_LARGE_FIXTURES=1 to run";
  check_pytorch_state_dict(kSource / "tests/reference/large/seed_wrapper_state.safetensors",
                           kSource / "tests/reference/large/seed_wrapper_io.safetensors");
}

}  // namespace
