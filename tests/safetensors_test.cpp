// Tests for core/safetensors: round trips, atomic writes, and rejection of corrupt/hostile files.
#include "core/safetensors.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace engine::st;
namespace fs = std::filesystem;

fs::path make_temp_dir() {
  std::string tmpl = (fs::temp_directory_path() / "st_test_XXXXXX").string();
  char* p = ::mkdtemp(tmpl.data());
  if (!p) throw std::runtime_error("mkdtemp failed");
  return fs::path(p);
}

// A file built from a raw header string and data buffer (no validation), for corruption tests.
std::vector<uint8_t> raw_file(const std::string& header, const std::vector<uint8_t>& data,
                              uint64_t hlen = ~0ull) {
  if (hlen == ~0ull) hlen = header.size();
  std::vector<uint8_t> out(8);
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(hlen >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

StTensor make_tensor(const std::string& name, StDtype dt, std::vector<int64_t> shape, uint8_t fill_seed) {
  StTensor t;
  t.name = name;
  t.dtype = dt;
  t.shape = std::move(shape);
  int64_t n = 1;
  for (auto d : t.shape) n *= d;
  t.data.resize(static_cast<size_t>(n) * dtype_size(dt));
  for (size_t i = 0; i < t.data.size(); ++i) t.data[i] = static_cast<uint8_t>(i * 31 + fill_seed);
  return t;
}

StFile sample_file() {
  StFile f;
  f.metadata["format"] = "pt";
  f.metadata["note"] = "unicode \xc3\xa9 and \"quotes\"";
  f.tensors.push_back(make_tensor("w.f32", StDtype::F32, {3, 4}, 1));
  f.tensors.push_back(make_tensor("a.f64", StDtype::F64, {5}, 2));
  f.tensors.push_back(make_tensor("i64", StDtype::I64, {2, 1, 2}, 3));
  f.tensors.push_back(make_tensor("u8", StDtype::U8, {7}, 4));
  f.tensors.push_back(make_tensor("half", StDtype::F16, {3}, 5));
  f.tensors.push_back(make_tensor("bf", StDtype::BF16, {2, 2}, 6));
  f.tensors.push_back(make_tensor("i32", StDtype::I32, {1}, 7));
  f.tensors.push_back(make_tensor("scalar", StDtype::F32, {}, 8));
  f.tensors.push_back(make_tensor("empty", StDtype::F32, {0, 3}, 9));
  return f;
}

// Expects parse() to throw Error whose message contains `hint`.
void expect_error(const std::vector<uint8_t>& bytes, const std::string& hint) {
  try {
    parse(bytes.data(), bytes.size(), "test.safetensors");
    ADD_FAILURE() << "expected an Error containing '" << hint << "'";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(hint), std::string::npos) << "message: " << msg;
    EXPECT_NE(msg.find("test.safetensors"), std::string::npos) << "message should name the file: " << msg;
  }
}

const std::vector<uint8_t> kData16(16, 0);

}  // namespace

TEST(Safetensors, DtypeSizesAndNames) {
  EXPECT_EQ(dtype_size(StDtype::F32), 4u);
  EXPECT_EQ(dtype_size(StDtype::F64), 8u);
  EXPECT_EQ(dtype_size(StDtype::I64), 8u);
  EXPECT_EQ(dtype_size(StDtype::U8), 1u);
  EXPECT_EQ(dtype_size(StDtype::F16), 2u);
  EXPECT_EQ(dtype_size(StDtype::BF16), 2u);
  EXPECT_EQ(dtype_size(StDtype::I32), 4u);
  for (auto dt :
       {StDtype::F32, StDtype::F64, StDtype::I64, StDtype::U8, StDtype::F16, StDtype::BF16, StDtype::I32}) {
    StDtype back;
    ASSERT_TRUE(parse_dtype(dtype_name(dt), &back));
    EXPECT_EQ(back, dt);
  }
  StDtype d;
  EXPECT_FALSE(parse_dtype("F8_E4M3", &d));
}

TEST(Safetensors, RoundTripAllDtypesAndMetadata) {
  StFile f = sample_file();
  std::vector<uint8_t> bytes = serialize(f);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | bytes[i];
  EXPECT_EQ(hlen % 8, 0u) << "header must be padded to a multiple of 8";

  StFile g = parse(bytes.data(), bytes.size(), "mem");
  EXPECT_EQ(g.metadata, f.metadata);
  ASSERT_EQ(g.tensors.size(), f.tensors.size());
  // Written contiguously in the given order, so file offset order == input order (the empty tensor sorts
  // with its zero-length range at the end).
  for (size_t i = 0; i < f.tensors.size(); ++i) {
    const StTensor* t = g.find(f.tensors[i].name);
    ASSERT_NE(t, nullptr) << f.tensors[i].name;
    EXPECT_EQ(t->dtype, f.tensors[i].dtype);
    EXPECT_EQ(t->shape, f.tensors[i].shape);
    EXPECT_EQ(t->data, f.tensors[i].data);
    EXPECT_EQ(g.tensors[i].name, f.tensors[i].name);
  }
  EXPECT_EQ(g.find("nope"), nullptr);
  EXPECT_EQ(g.find("scalar")->numel(), 1);
  EXPECT_EQ(g.find("empty")->numel(), 0);
  // Re-serialising a parsed file is byte-identical.
  EXPECT_EQ(serialize(g), bytes);
}

TEST(Safetensors, AcceptsHandWrittenHeaderWithTrailingSpaces) {
  std::string h = R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},)"
                  R"("a":{"dtype":"U8","shape":[2,4],"data_offsets":[0,8]}, "__metadata__":{}})";
  h += "      ";
  std::vector<uint8_t> data(16);
  for (int i = 0; i < 16; ++i) data[i] = static_cast<uint8_t>(i);
  auto bytes = raw_file(h, data);
  StFile f = parse(bytes.data(), bytes.size(), "x");
  ASSERT_EQ(f.tensors.size(), 2u);
  EXPECT_EQ(f.tensors[0].name, "a");  // offset order, not JSON order
  EXPECT_EQ(f.tensors[1].name, "b");
  EXPECT_EQ(f.tensors[1].data[0], 8);
  EXPECT_TRUE(f.metadata.empty());
}

TEST(Safetensors, AtomicWriteLeavesNoTempFile) {
  fs::path dir = make_temp_dir();
  std::string path = (dir / "model.safetensors").string();
  StFile f = sample_file();
  write_file_atomic(path, f);
  f.tensors[0].data[0] ^= 0xff;
  write_file_atomic(path, f);  // overwrite
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  ASSERT_EQ(names.size(), 1u);
  EXPECT_EQ(names[0], "model.safetensors");
  StFile g = read_file(path);
  EXPECT_EQ(g.find("w.f32")->data, f.tensors[0].data);
  EXPECT_EQ(g.metadata, f.metadata);

  EXPECT_THROW(write_file_atomic((dir / "no_such_dir" / "x.safetensors").string(), f), Error);
  fs::remove_all(dir);
}

TEST(Safetensors, ReadFileErrors) {
  fs::path dir = make_temp_dir();
  try {
    read_file((dir / "missing.safetensors").string());
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.safetensors"), std::string::npos);
  }
  EXPECT_THROW(read_file(dir.string()), Error);  // a directory
  fs::remove_all(dir);
}

TEST(Safetensors, SerializeRejectsInconsistentTensors) {
  StFile f;
  f.tensors.push_back(make_tensor("x", StDtype::F32, {2}, 0));
  f.tensors[0].data.pop_back();
  EXPECT_THROW(serialize(f), Error);
  f.tensors[0] = make_tensor("x", StDtype::F32, {2}, 0);
  f.tensors.push_back(make_tensor("x", StDtype::F32, {2}, 0));
  EXPECT_THROW(serialize(f), Error);  // duplicate
  f.tensors.pop_back();
  f.tensors[0].shape = {-2};
  EXPECT_THROW(serialize(f), Error);
}

TEST(Safetensors, RejectsTooShortFile) {
  expect_error({}, "shorter than the 8-byte");
  expect_error({1, 0, 0}, "shorter than the 8-byte");
}

TEST(Safetensors, RejectsTruncation) {
  auto bytes = serialize(sample_file());
  for (size_t cut : {size_t{0}, size_t{4}, size_t{8}, size_t{9}, size_t{40}, bytes.size() / 2,
                     bytes.size() - 9, bytes.size() - 1}) {
    std::vector<uint8_t> t(bytes.begin(), bytes.begin() + cut);
    EXPECT_THROW(parse(t.data(), t.size(), "t"), Error) << "cut at " << cut;
  }
  std::vector<uint8_t> t(bytes.begin(), bytes.end() - 1);
  expect_error(t, "outside the data buffer");
  std::vector<uint8_t> t2(bytes.begin(), bytes.begin() + 20);
  expect_error(t2, "larger than the file");
}

TEST(Safetensors, RejectsHugeHeaderLength) {
  auto bytes = serialize(sample_file());
  for (int i = 0; i < 8; ++i) bytes[i] = 0xff;
  expect_error(bytes, "100 MB");
  bytes[7] = 0;
  bytes[6] = 0;
  bytes[5] = 0;
  bytes[4] = 0;
  bytes[3] = 0x04;  // 0x04ffffff ~ 84 MB: under the limit but beyond the file
  expect_error(bytes, "larger than the file");
}

TEST(Safetensors, RejectsBadJson) {
  expect_error(raw_file("{\"a\": {\"dtype\": ", kData16), "not valid JSON");
  expect_error(raw_file("\x01\x02garbage\xff", kData16), "not valid JSON");
  expect_error(raw_file("", kData16), "not valid JSON");
  expect_error(raw_file("[1, 2, 3]", kData16), "not a JSON object");
  expect_error(raw_file("{\"a\": 3}", kData16), "not a JSON object");
}

TEST(Safetensors, RejectsMissingFields) {
  expect_error(raw_file(R"({"a":{"shape":[4],"data_offsets":[0,16]}})", kData16), "missing dtype");
  expect_error(raw_file(R"({"a":{"dtype":"F32","data_offsets":[0,16]}})", kData16), "missing shape");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[4]}})", kData16), "missing data_offsets");
  expect_error(raw_file(R"({"a":{"dtype":5,"shape":[4],"data_offsets":[0,16]}})", kData16), "dtype");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":4,"data_offsets":[0,16]}})", kData16), "shape");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0]}})", kData16), "data_offsets");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,"16"]}})", kData16),
               "data_offsets");
}

TEST(Safetensors, RejectsUnknownDtype) {
  expect_error(raw_file(R"({"a":{"dtype":"F33","shape":[4],"data_offsets":[0,16]}})", kData16),
               "unknown dtype");
}

TEST(Safetensors, RejectsBadShapes) {
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", kData16), "negative");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,16]}})", kData16),
               "non-integer");
  expect_error(
      raw_file(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}})", kData16),
      "absurd");
  expect_error(
      raw_file(R"({"a":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,16]}})", kData16),
      "absurd");
}

TEST(Safetensors, RejectsBadOffsets) {
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[16,8]}})", kData16), "< begin");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", kData16),
               "outside the data buffer");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[-1,15]}})", kData16),
               "non-negative");
  expect_error(raw_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,)"
                        R"(18446744073709551615]}})",
                        kData16),
               "outside the data buffer");
}

TEST(Safetensors, RejectsWrongByteSize) {
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", kData16), "byte size");
  expect_error(raw_file(R"({"a":{"dtype":"F64","shape":[4],"data_offsets":[0,16]}})", kData16), "byte size");
}

TEST(Safetensors, RejectsOverlap) {
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                        kData16),
               "overlapping");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                        R"("b":{"dtype":"U8","shape":[1],"data_offsets":[5,6]}})",
                        kData16),
               "overlapping");
  // A zero-length tensor must sit at a tensor boundary, as the reference parser requires (its offsets
  // are contiguous): inside another tensor's bytes it is rejected, at the end accepted.
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                        R"("b":{"dtype":"U8","shape":[0],"data_offsets":[5,5]}})",
                        kData16),
               "overlapping");
  auto ok = raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                     R"("b":{"dtype":"U8","shape":[0],"data_offsets":[16,16]}})",
                     kData16);
  EXPECT_NO_THROW(parse(ok.data(), ok.size(), "ok"));
}

TEST(Safetensors, RejectsDuplicateNames) {
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                        kData16),
               "duplicate");
  // Nested objects may reuse key names.
  auto ok = raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                     R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                     kData16);
  EXPECT_NO_THROW(parse(ok.data(), ok.size(), "ok"));
}

TEST(Safetensors, RejectsNonStringMetadata) {
  expect_error(raw_file(R"({"__metadata__":{"epoch":3}})", {}), "not a string");
  expect_error(raw_file(R"({"__metadata__":["x"]})", {}), "__metadata__");
}

TEST(Safetensors, FuzzTruncateAndMutateNeverCrashes) {
  const auto base = serialize(sample_file());
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | base[i];
  std::mt19937_64 rng(12345);
  int parsed = 0, rejected = 0;
  for (int iter = 0; iter < 500; ++iter) {
    std::vector<uint8_t> b = base;
    switch (iter % 5) {
      case 0:  // truncate
        b.resize(rng() % b.size());
        break;
      case 1:  // random bytes anywhere
        for (int k = 0, n = 1 + static_cast<int>(rng() % 8); k < n; ++k) b[rng() % b.size()] = uint8_t(rng());
        break;
      case 2:  // random bytes in the JSON header
        for (int k = 0, n = 1 + static_cast<int>(rng() % 4); k < n; ++k)
          b[8 + rng() % hlen] = static_cast<uint8_t>(rng());
        break;
      case 3:  // digits in the header replaced by other digits (shapes/offsets go wrong but stay JSON)
        for (int k = 0; k < 3; ++k) {
          size_t pos = 8 + rng() % hlen;
          if (b[pos] >= '0' && b[pos] <= '9') b[pos] = static_cast<uint8_t>('0' + rng() % 10);
        }
        break;
      case 4:  // corrupt the header length, then maybe truncate
        b[rng() % 8] = static_cast<uint8_t>(rng());
        if (rng() % 2) b.resize(rng() % b.size());
        break;
    }
    try {
      StFile f = parse(b.data(), b.size(), "fuzz");
      for (const auto& t : f.tensors) {
        EXPECT_GE(t.numel(), 0);
        EXPECT_EQ(t.data.size(), static_cast<size_t>(t.numel()) * dtype_size(t.dtype));
      }
      ++parsed;
    } catch (const Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 100);
  EXPECT_GT(parsed, 0);
}
