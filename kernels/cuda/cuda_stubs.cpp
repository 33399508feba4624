// Linked instead of kernels/cuda/*.cu in a build without CUDA: every kernel throws
// "built without CUDA" so a request for a cuda tensor fails loudly, never silently.
// The stubs are generated from the kernel list (kernels/kernel_list.h), as mlx's NO_GPU(Op) does.
#include <string>

#include "kernels/cuda/cuda_kernels.h"
#include "runtime/error.h"

namespace kern::cuda {
namespace {
[[noreturn]] void no_cuda(const char* fn) {
  throw ::engine::Error(std::string("kern::cuda::") + fn + ": this engine was built without CUDA");
}
}  // namespace

#define KERN_NO_CUDA(name) \
  void name KERN_SIG_##name(float) { no_cuda(#name); }
KERN_BACKEND_KERNELS(KERN_NO_CUDA)
#undef KERN_NO_CUDA

void copy_strided(int elem_size, const Strided& src_layout, const void* src, const Strided& dst_layout,
                  void* dst) {
  no_cuda("copy_strided");
}

}  // namespace kern::cuda
