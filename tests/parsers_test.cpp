// Issue 15 item 4: every parser of untrusted input is strict, bounded and never ends in a signal. One
// test per kind of fault (deep nesting, memory, shape overflow, float-to-int, duplicate fields, unused
// bytes, gzip junk), at every entry point the issue names, plus the apps' exit codes on such files.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "apps/common/checkpoint.h"
#include "apps/common/mnist.h"
#include "core/bounded_json.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "core/tensor.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace engine;

namespace {

constexpr int kDeep = 70000;  // the issue's nesting depth (a 140 KB file)
std::string deep(int n = kDeep) { return std::string(n, '[') + std::string(n, ']'); }

std::vector<uint8_t> st_raw(const std::string& header, const std::string& data = "") {
  std::vector<uint8_t> out(8 + header.size() + data.size());
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
  std::copy(header.begin(), header.end(), out.begin() + 8);
  std::copy(data.begin(), data.end(), out.begin() + 8 + static_cast<std::ptrdiff_t>(header.size()));
  return out;
}

// parse() must throw st::Error mentioning `hint`.
void expect_st_error(const std::vector<uint8_t>& b, const std::string& hint) {
  try {
    st::parse(b.data(), b.size(), "x.safetensors");
    ADD_FAILURE() << "accepted; expected an error mentioning '" << hint << "'";
  } catch (const st::Error& e) {
    EXPECT_NE(std::string(e.what()).find(hint), std::string::npos) << e.what();
  }
}

const char* kTiny = R"({"sample_size": 28, "in_channels": 2, "out_channels": 1,
  "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
  "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
  "attention_head_dim": 8, "num_classes": 10, "class_emb_size": 1})";

// kTiny with `key`'s value replaced by (or `key` added with) the raw JSON text `value`.
std::string tiny_with(const std::string& key, const std::string& value) {
  std::string s = kTiny;
  const size_t k = s.find("\"" + key + "\"");
  if (k == std::string::npos) return s.substr(0, s.rfind('}')) + ", \"" + key + "\": " + value + "}";
  const size_t colon = s.find(':', k);
  const size_t end = s.find_first_of(",}", colon);
  if (key == "block_out_channels") return s.substr(0, colon + 2) + value + s.substr(s.find(']', colon) + 1);
  return s.substr(0, colon + 2) + value + s.substr(end);
}

// A minimal training checkpoint whose `config` metadata is `config`.
std::vector<uint8_t> checkpoint_bytes(const std::string& config, const std::string& train_args = "{}") {
  st::StFile f;
  f.metadata = {{"format", app::kCheckpointFormat},
                {"config", config},
                {"step", "1"},
                {"epoch", "0"},
                {"batch_in_epoch", "1"},
                {"rng_seed", "1"},
                {"rng_offset", "0"},
                {"adamw", R"({"lr":0.001,"beta1":0.9,"beta2":0.999,"eps":1e-8,"weight_decay":0})"},
                {"ema_decay", "0"},
                {"train_args", train_args}};
  st::StTensor t;
  t.name = "w";
  t.shape = {1};
  t.data.assign(4, 0);
  f.tensors.push_back(t);
  return st::serialize(f);
}

void expect_checkpoint_error(const std::vector<uint8_t>& b, const std::string& hint) {
  try {
    app::checkpoint_from_st(st::parse(b.data(), b.size(), "c.safetensors"), "c.safetensors");
    ADD_FAILURE() << "accepted; expected an error mentioning '" << hint << "'";
  } catch (const app::CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find(hint), std::string::npos) << e.what();
  }
}

void expect_config_error(const std::string& text, const std::string& hint) {
  try {
    app::parse_model_config(text, "model config 'm.json'");
    ADD_FAILURE() << "accepted; expected an error mentioning '" << hint << "'";
  } catch (const app::CheckpointError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(hint), std::string::npos) << msg;
    EXPECT_NE(msg.find("m.json"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "not one line: " << msg;
    EXPECT_LT(msg.size(), 400u) << msg;
  }
}

long max_rss_kb() {
  struct rusage ru;
  ::getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

}  // namespace

// ---- stack overflow: 70,000 levels of nesting at each entry point the issue names

TEST(ParserLimits, DeepNestingInTensorShapeIsRejected) {
  expect_st_error(st_raw(R"({"a":{"dtype":"F32","shape":)" + deep() + R"(,"data_offsets":[0,0]}})"),
                  "shape contains an array");
  expect_st_error(st_raw(deep()), "not a JSON object");
}

TEST(ParserLimits, DeepNestingInConfigMetadataIsRejected) {
  expect_checkpoint_error(checkpoint_bytes(deep()), "nests deeper than 64");
  expect_checkpoint_error(checkpoint_bytes(tiny_with("block_out_channels", deep())), "nests deeper than 64");
  expect_checkpoint_error(checkpoint_bytes(kTiny, "{\"x\":" + deep() + "}"), "nests deeper than 64");
  // 64 levels are fine as JSON (then rejected by the config schema, not the depth limit).
  EXPECT_NO_THROW(parse_json_bounded(deep(64), "t"));
  EXPECT_THROW(parse_json_bounded(deep(65), "t"), Error);
}

TEST(ParserLimits, DeepNestingInModelConfigIsRejected) {
  expect_config_error(tiny_with("block_out_channels", deep()), "nests deeper than 64");
  expect_config_error(deep(), "nests deeper than 64");
}

// ---- unbounded memory: a 100 MB header must be rejected quickly, without gigabytes of allocations

TEST(ParserLimits, HundredMegabyteHeaderIsRejectedCheaply) {
  const size_t n = 100'000'000 - 64;
  const std::vector<std::string> heads = {"", R"({"a":{"dtype":"U8","shape":)"};
  for (const std::string& head : heads) {
    for (const char* unit : {"[", "[],"}) {
      // Written straight into the file buffer, so the only big allocation before parsing is the input.
      const std::string prefix = head + (head.empty() ? "" : "[");
      std::vector<uint8_t> bytes = st_raw(prefix);
      const size_t start = bytes.size(), ulen = std::strlen(unit);
      bytes.resize(8 + n);
      std::memcpy(bytes.data() + start, unit, ulen);  // then doubled in place: fast in a sanitizer build
      for (size_t len = ulen; start + len < bytes.size(); len *= 2)
        std::memcpy(bytes.data() + start + len, bytes.data() + start,
                    std::min(len, bytes.size() - start - len));
      for (int k = 0; k < 8; ++k) bytes[k] = static_cast<uint8_t>(static_cast<uint64_t>(n) >> (8 * k));
      const long rss0 = max_rss_kb();
      const auto t0 = std::chrono::steady_clock::now();
      EXPECT_THROW(st::parse(bytes.data(), bytes.size(), "big"), st::Error);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      EXPECT_LT(secs, 5.0) << "head '" << head << "' unit '" << unit << "'";
      EXPECT_LT(max_rss_kb() - rss0, 256 * 1024) << "peak RSS grew by more than 256 MB";
    }
  }
}

TEST(ParserLimits, OversizedJsonTextIsRejectedBeforeParsing) {
  const std::string big(kMaxJsonBytes + 1, ' ');
  expect_config_error(big, "exceeds the limit");
}

// ---- signed overflow of shape products

TEST(ParserLimits, ShapeProductOverflowIsAnError) {
  const int64_t big = int64_t{1} << 48;
  EXPECT_THROW(Tensor::empty({0, big, big}), Error);  // strides overflow although numel is 0
  EXPECT_THROW(Tensor::empty({big, big}), Error);
  EXPECT_THROW(numel_of({big, big, 1}), Error);
  EXPECT_EQ(numel_of({big, big, 0}), 0);
  EXPECT_THROW(contiguous_strides({1, big, big}), Error);
  EXPECT_THROW(Tensor::empty({int64_t{1} << 61, 8}, DType::F64), Error);  // byte count overflows

  st::StTensor t;
  t.name = "t";
  t.shape = {big, big};
  EXPECT_THROW(t.numel(), st::Error);
  t.shape = {0, big, big};
  EXPECT_EQ(t.numel(), 0);
  for (const char* shape : {"[0,281474976710656,281474976710656]", "[281474976710656,281474976710656,0]"})
    expect_st_error(
        st_raw(std::string(R"({"a":{"dtype":"F32","shape":)") + shape + R"(,"data_offsets":[0,0]}})"),
        "absurd shape");
}

// ---- float-to-int overflow and other non-integers in configs

TEST(ParserLimits, ConfigIntegersMustBeExactAndInRange) {
  for (const char* v : {"1e300", "-1e300", "3.5", "true", "\"2\"", "null", "[2]", "9223372036854775808",
                        "18446744073709551615", "4294967296"})
    expect_config_error(tiny_with("in_channels", v), "in_channels");
  expect_config_error(tiny_with("layers_per_block", "1e19"), "layers_per_block");
  expect_config_error(std::string(kTiny) + std::string(1, '\0') + "garbage", "NUL byte");
  expect_config_error(tiny_with("block_out_channels", "[8, 1e300]"), "block_out_channels");
  expect_config_error(tiny_with("in_channels", "-1"), "in_channels");
  expect_checkpoint_error(checkpoint_bytes(tiny_with("in_channels", "1e300")), "in_channels");
  // Integral floats as diffusers writes them are fine.
  EXPECT_EQ(app::parse_model_config(tiny_with("in_channels", "2.0"), "m").unet.in_channels, 2);
  // train_args values fm_train converts back to int64/uint64/double.
  expect_checkpoint_error(checkpoint_bytes(kTiny, R"({"batch_size": 1e300})"), "batch_size");
  expect_checkpoint_error(checkpoint_bytes(kTiny, R"({"seed": -1})"), "seed");
  expect_checkpoint_error(checkpoint_bytes(kTiny, R"({"lr": "fast"})"), "lr");
  expect_checkpoint_error(checkpoint_bytes(kTiny, R"({"grad_chunk": 2.5})"), "grad_chunk");
  // A float beyond double range is a JSON error (nlohmann reports the overflow), not infinity.
  expect_checkpoint_error(checkpoint_bytes(kTiny, R"({"lr": 1e400})"), "number overflow");
  expect_config_error(tiny_with("norm_eps", "1e400"), "number overflow");
}

// ---- duplicate fields

TEST(ParserLimits, DuplicateFieldsAreRejected) {
  expect_st_error(
      st_raw(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"data_offsets":[2,4]}})", "abcd"),
      "duplicate field 'data_offsets'");
  expect_st_error(st_raw(R"({"a":{"dtype":"U8","shape":[4],"shape":[2],"data_offsets":[0,2]}})", "ab"),
                  "duplicate field 'shape'");
  expect_st_error(st_raw(R"({"a":{"dtype":"U8","dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "ab"),
                  "duplicate field 'dtype'");
  expect_st_error(st_raw(R"({"__metadata__":{"k":"1","k":"2"}})"), "duplicate __metadata__ key 'k'");
  expect_config_error(std::string(kTiny).substr(0, std::string(kTiny).size() - 1) + R"(, "in_channels": 3})",
                      "duplicate key 'in_channels'");
}

// ---- unused bytes and padding (decisions documented at st::parse, following the reference parser)

TEST(ParserLimits, SafetensorsUnusedBytesAndPadding) {
  const std::string a2 = R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})";
  expect_st_error(st_raw(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                         R"("b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
                         "abcdef"),
                  "2 unused bytes before tensor 'b'");
  expect_st_error(st_raw(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})", "abcd"),
                  "2 unused bytes before tensor 'a'");
  expect_st_error(st_raw(a2, "abXYZ"), "3 trailing bytes");
  expect_st_error(st_raw("{}", "x"), "1 trailing bytes");
  expect_st_error(st_raw(a2 + std::string(3, '\0'), "ab"), "NUL byte");
  expect_st_error(st_raw(a2 + std::string(1, '\0') + "garbage", "ab"), "NUL byte");
  expect_st_error(st_raw(" " + a2, "ab"), "does not start with '{'");
  expect_st_error(st_raw(R"({"":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "ab"),
                  "empty tensor name");
  expect_st_error(st_raw(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"x":1}})", "ab"),
                  "unknown field 'x'");
  // Whitespace padding after the object, as writers produce, is accepted.
  for (const char* pad : {"      ", "\t\n\r "}) {
    const auto ok = st_raw(a2 + pad, "ab");
    EXPECT_NO_THROW(st::parse(ok.data(), ok.size(), "ok")) << "pad '" << pad << "'";
  }
}

// ---- MNIST gzip: junk after the stream, truncation, multiple members

namespace {
std::vector<uint8_t> gz(const std::vector<uint8_t>& raw) {
  uLongf cap = compressBound(raw.size()) + 64;
  std::vector<uint8_t> out(cap);
  z_stream zs{};
  deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  zs.next_in = const_cast<Bytef*>(raw.data());
  zs.avail_in = static_cast<uInt>(raw.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(cap);
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}
std::vector<uint8_t> labels_idx() { return {0, 0, 8, 1, 0, 0, 0, 4, 1, 2, 3, 4}; }
void expect_idx_error(const std::vector<uint8_t>& b, const std::string& hint) {
  std::vector<uint8_t> payload;
  try {
    app::parse_idx(b.data(), b.size(), "MNIST file 'l.gz'", app::kIdxLabelsMagic, 1, payload);
    ADD_FAILURE() << "accepted; expected an error mentioning '" << hint << "'";
  } catch (const app::DataError& e) {
    EXPECT_NE(std::string(e.what()).find(hint), std::string::npos) << e.what();
  }
}
}  // namespace

TEST(ParserLimits, MnistGzipJunkAndTruncationAreRejected) {
  std::vector<uint8_t> payload;
  const auto good = gz(labels_idx());
  EXPECT_EQ(app::parse_idx(good.data(), good.size(), "l", app::kIdxLabelsMagic, 1, payload),
            std::vector<int64_t>{4});
  EXPECT_EQ(payload, (std::vector<uint8_t>{1, 2, 3, 4}));

  auto junk = good;
  for (char c : std::string("junk")) junk.push_back(static_cast<uint8_t>(c));
  expect_idx_error(junk, "4 bytes of junk after the end of the gzip stream");
  auto zeros = good;
  zeros.resize(zeros.size() + 512, 0);
  expect_idx_error(zeros, "512 bytes of junk");
  auto cut = good;
  cut.resize(cut.size() - 5);  // inside the trailer
  expect_idx_error(cut, "truncated gzip stream");
  // The data itself is fine but the stream is cut before its end.
  cut.resize(cut.size() - 10);
  expect_idx_error(cut, "truncated");

  // Two concatenated members are one stream (as for gunzip).
  const auto raw = labels_idx();
  auto two = gz(std::vector<uint8_t>(raw.begin(), raw.begin() + 6));
  const auto second = gz(std::vector<uint8_t>(raw.begin() + 6, raw.end()));
  two.insert(two.end(), second.begin(), second.end());
  payload.clear();
  EXPECT_EQ(app::parse_idx(two.data(), two.size(), "l", app::kIdxLabelsMagic, 1, payload),
            std::vector<int64_t>{4});
  EXPECT_EQ(payload, (std::vector<uint8_t>{1, 2, 3, 4}));

  // The declared size is checked against what the file can hold before allocating.
  auto raw_short = labels_idx();
  raw_short.pop_back();
  expect_idx_error(raw_short, "truncated");
  // 256 images of 28 x 28 declared in a gzip file of a few dozen bytes.
  const std::vector<uint8_t> liar = {0, 0, 8, 3, 0, 0, 1, 0, 0, 0, 0, 28, 0, 0, 0, 28};
  const auto liar_gz = gz(liar);
  std::vector<uint8_t> fresh;
  try {
    app::parse_idx(liar_gz.data(), liar_gz.size(), "i", app::kIdxImagesMagic, 3, fresh);
    ADD_FAILURE() << "accepted";
  } catch (const app::DataError& e) {
    EXPECT_NE(std::string(e.what()).find("can hold"), std::string::npos) << e.what();
  }
  EXPECT_EQ(fresh.capacity(), 0u) << "allocated for a size the file cannot hold";
}

// ---- the apps: exit code 1 or 2 and a one-line message, never a signal

namespace {
using engine::test::bin;
using engine::test::run;
using engine::test::RunResult;
}  // namespace

TEST(ParserApps, DeeplyNestedFilesGiveOneLineErrors) {
  if (!fs::exists(bin("fm_train")) || !fs::exists(bin("fm_sample")))
    GTEST_SKIP() << "fm_train/fm_sample not built in " << ENGINE_BIN_DIR;
  const fs::path dir = fs::temp_directory_path() / ("parsers_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto write = [&](const std::string& name, const std::vector<uint8_t>& b) {
    std::ofstream(dir / name, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), b.size());
    return (dir / name).string();
  };
  const std::string shape = write(
      "shape.safetensors", st_raw(R"({"a":{"dtype":"F32","shape":)" + deep() + R"(,"data_offsets":[0,0]}})"));
  const std::string config = write("config.safetensors", checkpoint_bytes(deep()));
  const std::string channels =
      write("channels.safetensors", checkpoint_bytes(tiny_with("block_out_channels", deep())));
  const std::string json_text = tiny_with("block_out_channels", deep());
  const std::string model = write("model.json", std::vector<uint8_t>(json_text.begin(), json_text.end()));
  const std::string big = tiny_with("in_channels", "1e300");
  const std::string model_big = write("big.json", std::vector<uint8_t>(big.begin(), big.end()));
  const std::string out = (dir / "out").string();
  const std::vector<std::string> cmds = {
      bin("fm_sample") + " --device cpu --checkpoint " + shape,
      bin("fm_sample") + " --device cpu --checkpoint " + config,
      bin("fm_sample") + " --device cpu --checkpoint " + channels,
      bin("fm_train") + " --device cpu --data " + dir.string() + " --out " + out + " --resume " + shape,
      bin("fm_train") + " --device cpu --data " + dir.string() + " --out " + out + " --resume " + config,
      bin("fm_train") + " --device cpu --data " + dir.string() + " --out " + out + " --resume " + channels,
      bin("fm_train") + " --device cpu --data " + dir.string() + " --out " + out + " --model-config " + model,
      bin("fm_train") + " --device cpu --data " + dir.string() + " --out " + out + " --model-config " +
          model_big,
  };
  for (const std::string& cmd : cmds) {
    const RunResult r = run(cmd);
    EXPECT_TRUE(r.exited) << "killed by a signal: " << cmd << "\n" << r.out;
    EXPECT_TRUE(r.code == 1 || r.code == 2) << "exit " << r.code << ": " << cmd << "\n" << r.out;
    std::string msg = r.out;
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    EXPECT_FALSE(msg.empty()) << cmd;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "not one line: " << cmd << "\n" << r.out;
    EXPECT_LT(msg.size(), 500u) << cmd << "\n" << r.out;
  }
  fs::remove_all(dir);
}
