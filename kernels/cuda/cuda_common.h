// Shared helpers of the CUDA kernels: launch helpers, a scratch workspace, and (under nvcc only)
// deterministic block reductions. The device, stream, cuBLAS handle, allocator and CUDA_CHECK come from the
// runtime layer below (runtime/cuda_runtime.h); every kernel launch is followed by CUDA_CHECK_LAUNCH().
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/cuda_device.h"
#include "runtime/cuda_runtime.h"
#include "runtime/error.h"

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
