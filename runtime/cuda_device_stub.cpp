// Linked instead of runtime/cuda_device.cu in a build without CUDA: no devices, and every
// operation that would need one throws a clear error.
#include <string>

#include "runtime/cuda_device.h"
#include "runtime/error.h"

namespace engine::cuda {
namespace {
[[noreturn]] void no_cuda(const char* what) {
  throw Error(std::string(what) +
              ": this engine was built without CUDA (reconfigure with a CUDA toolkit and "
              "-DENGINE_CUDA=ON to use cuda devices)");
}
}  // namespace

bool built_with_cuda() { return false; }
int device_count() { return 0; }
void set_device(int) { no_cuda("cuda::set_device"); }
int current_device() { no_cuda("cuda::current_device"); }
std::string device_name(int) { no_cuda("cuda::device_name"); }
DeviceScope::DeviceScope(int) { no_cuda("cuda::DeviceScope"); }
DeviceScope::~DeviceScope() = default;
void* alloc(std::size_t, int) { no_cuda("cuda::alloc"); }
void free(void*, int) { no_cuda("cuda::free"); }
AllocatorStats allocator_stats(int) { no_cuda("cuda::allocator_stats"); }
void reset_peak(int) { no_cuda("cuda::reset_peak"); }
void copy_h2d(void*, const void*, std::size_t, int) { no_cuda("cuda::copy_h2d"); }
void copy_d2h(void*, const void*, std::size_t, int) { no_cuda("cuda::copy_d2h"); }
void synchronize(int) { no_cuda("cuda::synchronize"); }

}  // namespace engine::cuda
