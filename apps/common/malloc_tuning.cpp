// The apps' heap settings: see malloc_tuning.h.
#include "apps/common/malloc_tuning.h"

#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace engine::app {

bool apply_malloc_defaults() {
#if defined(__GLIBC__)
  for (const char* v :
       {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX"})
    if (std::getenv(v)) return false;  // the user's choice
  if (const char* t = std::getenv("GLIBC_TUNABLES"); t && std::strstr(t, "glibc.malloc.")) return false;
  // Setting M_MMAP_THRESHOLD also turns off glibc's dynamic threshold, which never rises above 32 MiB:
  // the UNet's batch-128 activations (25-50 MiB) would otherwise be mmap'ed and unmapped at every op.
  const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1;
  const bool trim_ok = mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max()) == 1;
  return mmap_ok && trim_ok;
#else
  return false;
#endif
}

}  // namespace engine::app
