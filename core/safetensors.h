// Reader/writer for the safetensors checkpoint format (HuggingFace): an 8-byte little-endian header length,
// a JSON header describing each tensor, then one raw data buffer. Works on raw bytes only (no Tensor
// dependency) and validates untrusted files thoroughly: malformed input throws engine::st::Error, never
// crashes and never triggers allocations larger than the input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/error.h"

namespace engine::st {

// Malformed or unreadable safetensors data; an engine::Error like every engine failure.
class Error : public ::engine::Error {
 public:
  using ::engine::Error::Error;
};

enum class StDtype { F32, F64, I64, U8, F16, BF16, I32 };

size_t dtype_size(StDtype dt);
const char* dtype_name(StDtype dt);  // "F32", "BF16", ...
// Returns false for unknown names.
bool parse_dtype(const std::string& name, StDtype* out);

struct StTensor {
  std::string name;
  StDtype dtype = StDtype::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;  // little-endian, row-major; size == numel(shape) * dtype_size(dtype)

  // Product of the shape (0 if any dimension is 0); throws Error on a negative dimension or int64 overflow.
  int64_t numel() const;
};

struct StFile {
  std::map<std::string, std::string> metadata;
  std::vector<StTensor> tensors;  // in file offset order after parse(); written in this order by serialize()

  const StTensor* find(const std::string& name) const;
};

// Largest accepted JSON header (the reference implementation uses the same limit).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

StFile read_file(const std::string& path);
// `what` names the input in error messages (usually the file path). Strict (see the format decisions at
// its definition): the header must be one JSON object with exactly the safetensors schema, padded only
// with whitespace; tensor data must tile the data buffer exactly (no gaps, overlaps or trailing bytes);
// duplicate names/fields/metadata keys and empty names are rejected. Throws Error, one line.
StFile parse(const uint8_t* data, size_t size, const std::string& what);
// Throws Error if a tensor's data size does not match its shape/dtype, or names are duplicated/empty.
std::vector<uint8_t> serialize(const StFile& f);
// Writes to a temporary file in the same directory, fsyncs it and renames it over `path`, so readers see
// either the old or the new complete file.
void write_file_atomic(const std::string& path, const StFile& f);
// The same atomic-replace procedure for arbitrary bytes (also used for PNGs etc.).
void write_bytes_atomic(const std::string& path, const uint8_t* data, size_t size);

}  // namespace engine::st
