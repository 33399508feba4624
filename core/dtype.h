// Element types and devices: the two tags every tensor carries.
#pragma once
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>

namespace engine {

// float32/float64 are the compute types on CPU (float32 only on CUDA); I64 holds indices
// (embedding labels) and U8 masks/bytes.
// The dtype-traits table (the idea of ggml's type_traits): every fact about a dtype is one row of
// ENGINE_DTYPES(X): X(enumerator, C++ type, name, safetensors name, floating). A new type (bf16, f16) is one
// row here; dtype_size, dtype_name, dtype_of<T>, visit_dtype and the safetensors mapping follow from it.
#define ENGINE_DTYPES(X)                 \
  X(F32, float, "float32", "F32", true)  \
  X(F64, double, "float64", "F64", true) \
  X(I64, int64_t, "int64", "I64", false) \
  X(U8, uint8_t, "uint8", "U8", false)

#define ENGINE_DTYPE_ENUM_(e, T, name, st, fl) e,
enum class DType : uint8_t { ENGINE_DTYPES(ENGINE_DTYPE_ENUM_) };
#undef ENGINE_DTYPE_ENUM_

struct DTypeTraits {
  DType dtype;
  std::size_t size;     // bytes per element
  const char* name;     // PyTorch-style name, e.g. "float32"
  const char* st_name;  // safetensors dtype string, e.g. "F32"
  bool floating;        // a compute (floating-point) type
};

#define ENGINE_DTYPE_ROW_(e, T, name, st, fl) {DType::e, sizeof(T), name, st, fl},
inline constexpr DTypeTraits kDTypeTraits[] = {ENGINE_DTYPES(ENGINE_DTYPE_ROW_)};
#undef ENGINE_DTYPE_ROW_
constexpr bool dtype_table_in_enum_order() {
  for (int i = 0; i < static_cast<int>(std::size(kDTypeTraits)); ++i)
    if (static_cast<int>(kDTypeTraits[i].dtype) != i) return false;
  return true;
}
static_assert(dtype_table_in_enum_order(), "kDTypeTraits rows must follow the DType enumerators");

// The row of t (t is always a valid enumerator: DType values come only from the enum).
constexpr const DTypeTraits& dtype_traits(DType t) { return kDTypeTraits[static_cast<int>(t)]; }
inline std::size_t dtype_size(DType t) { return dtype_traits(t).size; }
inline const char* dtype_name(DType t) { return dtype_traits(t).name; }
inline bool is_floating(DType t) { return dtype_traits(t).floating; }

// dtype_of<T>(): the DType of a C++ element type (compile error for any other type).
template <typename T>
constexpr DType dtype_of();
#define ENGINE_DTYPE_OF_(e, T, name, st, fl) \
  template <>                                \
  constexpr DType dtype_of<T>() {            \
    return DType::e;                         \
  }
ENGINE_DTYPES(ENGINE_DTYPE_OF_)
#undef ENGINE_DTYPE_OF_

// The one dtype dispatch: calls f.template operator()<T>() with T the C++ type of t, e.g.
//   visit_dtype(x.dtype(), [&]<typename T>() { kern::cpu::fill<T>(n, x.data<T>(), v); });
// and returns what it returns.
template <typename F>
decltype(auto) visit_dtype(DType t, F&& f) {
  switch (t) {
#define ENGINE_DTYPE_CASE_(e, T, name, st, fl) \
  case DType::e:                               \
    return f.template operator()<T>();
    ENGINE_DTYPES(ENGINE_DTYPE_CASE_)
#undef ENGINE_DTYPE_CASE_
  }
  return f.template operator()<float>();  // unreachable: every enumerator has a case
}

struct Device {
  enum class Kind : uint8_t { CPU, CUDA };
  Kind kind = Kind::CPU;
  int index = 0;

  static Device cpu() { return {Kind::CPU, 0}; }
  static Device cuda(int i = 0) { return {Kind::CUDA, i}; }
  bool is_cpu() const { return kind == Kind::CPU; }
  bool is_cuda() const { return kind == Kind::CUDA; }
  bool operator==(const Device&) const = default;
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
  // "cpu", "cuda", "cuda:N", or "auto" (cuda:0 when a GPU is present, else cpu).
  static Device parse(const std::string& s);
};

}  // namespace engine
