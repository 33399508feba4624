// Storage allocation on CPU (aligned) and CUDA (through the caching allocator), and Device::parse.
#include "core/storage.h"

#include <cstdlib>
#include <new>

#include "core/error.h"
#include "runtime/cuda_device.h"

namespace engine {

std::shared_ptr<Storage> Storage::allocate(std::size_t bytes, Device device) {
  std::size_t n = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
  void* p = nullptr;
  if (device.is_cpu()) {
    p = std::aligned_alloc(64, n);
    if (!p) throw Error(detail::concat("allocate: out of host memory allocating ", bytes, " bytes"));
  } else {
    p = cuda::alloc(n, device.index);
  }
  return std::shared_ptr<Storage>(new Storage(p, bytes, device));
}

Storage::~Storage() {
  if (device_.is_cpu()) {
    std::free(data_);
  } else {
    try {
      cuda::free(data_, device_.index);
    } catch (...) {
      // Destructors must not throw; a failing free at shutdown is not recoverable anyway.
    }
  }
}

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s == "auto") return cuda::device_count() > 0 ? cuda(0) : cpu();
  if (s == "cuda") return cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    try {
      std::size_t pos = 0;
      int i = std::stoi(s.substr(5), &pos);
      if (pos == s.size() - 5 && i >= 0) return cuda(i);
    } catch (...) {
    }
  }
  throw Error("device: unknown device '" + s + "' (expected cpu, cuda, cuda:N or auto)");
}

}  // namespace engine
