// Shared plumbing for the CUDA backend: error-checking macros, the per-device engine stream and
// cuBLAS handle (implemented in core/cuda_device.cu), a device guard, launch helpers, and (under
// nvcc only) deterministic block reductions. Every CUDA/cuBLAS call goes through CUDA_CHECK /
// CUBLAS_CHECK; every kernel launch is followed by CUDA_CHECK(cudaGetLastError()).
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "core/cuda_device.h"

namespace engine::cuda {

[[noreturn]] inline void throw_cuda_error(const char* file, int line, const char* call, const char* what) {
  throw std::runtime_error(std::string("CUDA error at ") + file + ":" + std::to_string(line) + ": " + call +
                           " failed: " + what);
}

// The engine stream of the current device: one blocking (synchronises with the legacy default
// stream) non-default stream per device, created lazily. All engine work is enqueued on it, so the
// caching allocator may hand a freed block out again without events (stream order).
cudaStream_t engine_stream();
cudaStream_t engine_stream(int device);
// cuBLAS handle of the current device, bound to its engine stream.
cublasHandle_t cublas_handle();

// Restores the previous current device on scope exit; no-op when already on `device`.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
  bool switched_ = false;
};

}  // namespace engine::cuda

#define CUDA_CHECK(call)                                                                                 \
  do {                                                                                                   \
    const cudaError_t engine_cuda_err_ = (call);                                                         \
    if (engine_cuda_err_ != cudaSuccess)                                                                 \
      ::engine::cuda::throw_cuda_error(__FILE__, __LINE__, #call, cudaGetErrorString(engine_cuda_err_)); \
  } while (0)

#define CUBLAS_CHECK(call)                                                                                   \
  do {                                                                                                       \
    const cublasStatus_t engine_cublas_st_ = (call);                                                         \
    if (engine_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                                          \
      ::engine::cuda::throw_cuda_error(__FILE__, __LINE__, #call, cublasGetStatusString(engine_cublas_st_)); \
  } while (0)

// Checks the launch of the kernel just enqueued (configuration errors, no sync).
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

namespace kern::cuda {

using engine::cuda::cublas_handle;
using engine::cuda::engine_stream;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride loop over n elements: enough to fill the GPU, capped so that one
// launch never exceeds the grid limit.
inline unsigned grid_1d(int64_t n, int block, int64_t max_blocks = 65536) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(ceil_div(n, block), max_blocks)));
}

// Device scratch memory from the caching allocator of the current device, released on scope exit.
// Release is safe while kernels using it are still queued: all work is on the engine stream.
class Workspace {
 public:
  explicit Workspace(std::size_t bytes) {
    CUDA_CHECK(cudaGetDevice(&device_));
    ptr_ = engine::cuda::alloc(bytes, device_);
  }
  ~Workspace() { engine::cuda::free(ptr_, device_); }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  int device_ = 0;
};

}  // namespace kern::cuda

#if defined(__CUDACC__)
namespace kern::cuda {

// Sum over a warp (all 32 lanes participate); result valid in every lane. Fixed order.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024, 1-D block); result valid in
// every thread. `scratch` must hold 32 T. Deterministic for a fixed blockDim. Contains
// __syncthreads: every thread of the block must call it.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T r = lane < nwarps ? scratch[lane] : T(0);
    r = warp_sum(r);
    if (lane == 0) scratch[0] = r;
  }
  __syncthreads();
  return scratch[0];
}

}  // namespace kern::cuda
#endif
