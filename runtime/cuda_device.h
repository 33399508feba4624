// The runtime layer (below core/ and the kernels): CUDA device discovery, the caching allocator, the engine
// stream, host<->device copies. Plain C++ interface (no CUDA headers). Implemented in runtime/cuda_device.cu;
// a build without CUDA links runtime/cuda_device_stub.cpp, where device_count() is 0 and everything else
// throws engine::Error "built without CUDA". Every error is an engine::Error (runtime/error.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace engine::cuda {

bool built_with_cuda();
// Number of usable GPUs (0 when built without CUDA or no driver/device).
int device_count();
void set_device(int index);
int current_device();
std::string device_name(int index);

// Makes `device` the current CUDA device for the scope's lifetime and restores the previous one on exit
// (no-op when it already is current). Every op on CUDA tensors runs under one (core/ops/dispatch.h), so
// its kernels launch on the tensors' device and on that device's engine stream, whatever device the
// caller had current. Throws for an index out of range, or (built without CUDA) always.
class DeviceScope {
 public:
  explicit DeviceScope(int device);
  ~DeviceScope();
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int prev_ = -1;
  bool switched_ = false;
};

// Caching allocator: size-bucketed reuse; freed blocks return to a per-device pool, so steady
// state makes no cudaMalloc/cudaFree. Throws a clear out-of-memory error naming the size.
void* alloc(std::size_t bytes, int device);
void free(void* ptr, int device);
struct AllocatorStats {
  std::size_t current_bytes = 0, peak_bytes = 0, cached_bytes = 0;
  int64_t num_mallocs = 0, num_frees = 0;
};
AllocatorStats allocator_stats(int device);
void reset_peak(int device);

// Copies; all synchronous with respect to the host.
void copy_h2d(void* dst, const void* src, std::size_t bytes, int device);
void copy_d2h(void* dst, const void* src, std::size_t bytes, int device);
void synchronize(int device);

}  // namespace engine::cuda
