// The apps' default OpenMP wait policy: see omp_wait.h.
#include "apps/common/omp_wait.h"

#include <unistd.h>

#include <cstdlib>

namespace engine::app {

void apply_omp_wait_default(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;  // the user's choice
  if (setenv("OMP_WAIT_POLICY", kDefaultOmpWaitPolicy, /*overwrite=*/0) != 0) return;
  if (setenv("GOMP_SPINCOUNT", kDefaultGompSpinCount, /*overwrite=*/0) != 0) return;
  if (argv && argv[0]) execv("/proc/self/exe", argv);  // returns only on failure
}

}  // namespace engine::app
