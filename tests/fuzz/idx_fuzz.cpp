// libFuzzer harness: idx parser (the checks live in fuzz_entries.cpp, shared with the regression test).
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/fuzz_entries.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  engine::fuzz::idx_entry(data, size);
  return 0;
}
