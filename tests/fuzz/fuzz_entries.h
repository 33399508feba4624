// Entry points shared by the libFuzzer harnesses (tests/fuzz/*_fuzz.cpp, clang only) and the regression
// GoogleTest over tests/fuzz/corpus (tests/fuzz_regression_test.cpp, every compiler). Each feeds one
// untrusted input to one parser and returns 0 if the parser accepted it, 1 if it rejected it with its
// documented error type. Anything else (another exception, a failed consistency check on an accepted
// result: std::logic_error) escapes, and a sanitizer finding or crash is a bug by definition.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace engine::fuzz {

// core/safetensors parse(); an accepted file must re-serialize and re-parse to the same tensors, and its
// tensors must convert to engine Tensors (nn::tensor_from_st) or be rejected with engine::Error.
int safetensors_entry(const uint8_t* data, size_t size);
// A safetensors file read as a training checkpoint / weights file (app::checkpoint_from_st).
int checkpoint_entry(const uint8_t* data, size_t size);
// A --model-config JSON file (app::parse_model_config); accepted configs must round-trip via to_json.
int model_config_entry(const uint8_t* data, size_t size);
// An IDX file (raw or gzip) parsed both as images (3 dims) and as labels (1 dim) (app::parse_idx).
int idx_entry(const uint8_t* data, size_t size);

// The entry for a harness name ("safetensors", "checkpoint", "model_config", "idx"); null if unknown.
using Entry = int (*)(const uint8_t*, size_t);
Entry entry_by_name(const std::string& name);

}  // namespace engine::fuzz
