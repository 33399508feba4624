// CUDA runtime plumbing for code compiled with the CUDA toolkit (runtime/cuda_device.cu and the CUDA
// kernels): the error-checking macros, the per-device engine stream and cuBLAS handle, and a device guard.
// Every CUDA/cuBLAS call goes through CUDA_CHECK / CUBLAS_CHECK, which throw engine::Error.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "runtime/cuda_device.h"
#include "runtime/error.h"

namespace engine::cuda {

[[noreturn]] inline void throw_cuda_error(const char* file, int line, const char* call, const char* what) {
  throw Error(std::string("CUDA error at ") + file + ":" + std::to_string(line) + ": " + call +
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
