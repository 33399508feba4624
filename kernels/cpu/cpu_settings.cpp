// check_cpu_settings: reads every CPU setting from the environment up front (see cpu_kernels.h), so that
// a bad value is an engine::Error on the calling thread rather than a throw inside an OpenMP region.
#include "kernels/cpu/conv2d_winograd.h"
#include "kernels/cpu/cpu_kernels.h"

namespace kern::cpu {

void check_cpu_settings() {
  // Each getter reads its variable once (a function-local static); a throw leaves it unread, so every
  // later call throws the same error again.
  (void)cpu_isa();
  (void)matmul_precision();
  (void)cpu_conv_algo();
}

}  // namespace kern::cpu
