// Tests for models/name_conversion: the UNet wrapper's checkpoint key conversions (legacy attention names,
// bare UNet2DModel state dicts with and without class_emb.weight, the "model." prefix) on top of the
// generic loader nn::load_state_dict.
#include "models/name_conversion.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "models/conditional_unet.h"
#include "nn/state_dict.h"
#include "tests/test_util.h"

namespace {

using namespace engine;

using test::tiny_config;

std::vector<double> values(const Tensor& t) { return t.detach().to(DType::F64).to_vector<double>(); }

TEST(NameConversion, LegacyAttentionKey) {
  EXPECT_EQ(models::convert_legacy_attention_key("mid_block.attentions.0.proj_attn.weight"),
            "mid_block.attentions.0.to_out.0.weight");
  EXPECT_EQ(models::convert_legacy_attention_key("model.up_blocks.1.attentions.2.query.bias"),
            "model.up_blocks.1.attentions.2.to_q.bias");
  EXPECT_EQ(models::convert_legacy_attention_key("down_blocks.1.attentions.0.key.weight"),
            "down_blocks.1.attentions.0.to_k.weight");
  EXPECT_EQ(models::convert_legacy_attention_key("down_blocks.1.attentions.0.value.weight"),
            "down_blocks.1.attentions.0.to_v.weight");
  // Not inside an attention block, or the legacy word not in the last-but-one position: unchanged.
  EXPECT_EQ(models::convert_legacy_attention_key("conv_in.query.weight"), "conv_in.query.weight");
  EXPECT_EQ(models::convert_legacy_attention_key("a.attentions.0.query.x.weight"),
            "a.attentions.0.query.x.weight");
}

TEST(NameConversion, LoadsLegacyAttentionKeys) {
  models::ConditionalUNet a(tiny_config(), 1), b(tiny_config(), 2);
  st::StFile f = nn::state_dict_to_st(a.named_parameters());
  int renamed = 0;
  for (auto& t : f.tensors) {
    for (auto [from, to] : {std::pair{".to_q.", ".query."},
                            {".to_k.", ".key."},
                            {".to_v.", ".value."},
                            {".to_out.0.", ".proj_attn."}}) {
      const size_t pos = t.name.find(from);
      if (pos != std::string::npos) {
        t.name = t.name.substr(0, pos) + to + t.name.substr(pos + std::string(from).size());
        ++renamed;
      }
    }
  }
  ASSERT_GT(renamed, 0);
  nn::NamedTensors nb = b.named_parameters();
  models::WrapperKeyReport wr;
  const nn::LoadReport rep = models::load_wrapper_state_dict(nb, f, {}, {}, &wr);
  EXPECT_EQ(wr.renamed_legacy, renamed);
  EXPECT_EQ(rep.renamed, renamed);
  EXPECT_FALSE(wr.bare_unet);
  const nn::NamedTensors na = a.named_parameters();
  for (size_t i = 0; i < na.size(); ++i) EXPECT_EQ(values(na[i].second), values(nb[i].second)) << na[i].first;
  models::WrapperKeyOptions strict;
  strict.accept_legacy_attention = false;
  EXPECT_THROW(models::load_wrapper_state_dict(nb, f, strict), Error);
  EXPECT_THROW(nn::load_state_dict(nb, f), Error);  // the generic loader does not rename
}

TEST(NameConversion, LoadsBareUNetStateDict) {
  models::ConditionalUNet a(tiny_config(), 1), b(tiny_config(), 2);
  const st::StFile f = nn::state_dict_to_st(a.model->named_parameters());  // keys without "model."
  nn::NamedTensors nb = b.named_parameters();
  const std::vector<double> class_emb_before = values(nb[0].second);
  try {
    models::load_wrapper_state_dict(nb, f);
    FAIL() << "expected class_emb.weight to be reported missing";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("missing key: class_emb.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("allow_missing_class_emb"), std::string::npos) << msg;
    EXPECT_NE(msg.find("bare UNet2DModel keys, 'model.' prepended"), std::string::npos) << msg;
  }
  models::WrapperKeyOptions keys;
  keys.allow_missing_class_emb = true;
  models::WrapperKeyReport wr;
  const nn::LoadReport rep = models::load_wrapper_state_dict(nb, f, keys, {}, &wr);
  EXPECT_TRUE(wr.bare_unet);
  EXPECT_EQ(rep.kept, std::vector<std::string>{"class_emb.weight"});
  EXPECT_EQ(values(nb[0].second), class_emb_before);
  const nn::NamedTensors na = a.named_parameters();
  for (size_t i = 1; i < na.size(); ++i) EXPECT_EQ(values(na[i].second), values(nb[i].second)) << na[i].first;
  keys.accept_bare_unet = false;
  EXPECT_THROW(models::load_wrapper_state_dict(nb, f, keys), Error);
}

// A bare UNet file that carries class_emb.weight (a converted Lightning checkpoint): everything loads.
TEST(NameConversion, BareUNetWithClassEmbLoadsAll) {
  models::ConditionalUNet a(tiny_config(), 1), b(tiny_config(), 2);
  st::StFile f = nn::state_dict_to_st(a.model->named_parameters());
  f.tensors.insert(f.tensors.begin(), nn::st_from_tensor("class_emb.weight", a.class_emb->weight));
  nn::NamedTensors nb = b.named_parameters();
  models::WrapperKeyReport wr;
  const nn::LoadReport rep = models::load_wrapper_state_dict(nb, f, {}, {}, &wr);
  EXPECT_TRUE(wr.bare_unet);
  EXPECT_EQ(rep.loaded, static_cast<int64_t>(nb.size()));
  EXPECT_TRUE(rep.kept.empty());
  const nn::NamedTensors na = a.named_parameters();
  for (size_t i = 0; i < na.size(); ++i) EXPECT_EQ(values(na[i].second), values(nb[i].second)) << na[i].first;
}

// A prefix selects the file's keys before conversion ("params." in the reference fixtures).
TEST(NameConversion, PrefixThenBareUNet) {
  models::ConditionalUNet a(tiny_config(), 1), b(tiny_config(), 2);
  const st::StFile f = nn::state_dict_to_st(a.model->named_parameters(), "params.");
  nn::NamedTensors nb = b.named_parameters();
  models::WrapperKeyOptions keys;
  keys.allow_missing_class_emb = true;
  nn::LoadOptions opt;
  opt.prefix = "params.";
  models::WrapperKeyReport wr;
  const nn::LoadReport rep = models::load_wrapper_state_dict(nb, f, keys, opt, &wr);
  EXPECT_TRUE(wr.bare_unet);
  EXPECT_EQ(rep.loaded + 1, static_cast<int64_t>(nb.size()));
}

}  // namespace
