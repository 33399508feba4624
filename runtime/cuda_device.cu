// CUDA device plumbing (see runtime/cuda_device.h): device discovery, the per-device engine stream and
// cuBLAS handle, a size-bucketed caching allocator, and synchronous host<->device copies.
// runtime/cuda_device_stub.cpp is the no-CUDA counterpart of this file.
//
// Process-lifetime state (streams, handles, pools) is deliberately leaked: tensors held in static
// objects may be freed after other statics are destroyed, and tearing CUDA objects down during
// exit races the driver's own shutdown.
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "runtime/cuda_device.h"
#include "runtime/cuda_runtime.h"

namespace engine::cuda {
namespace {

constexpr std::size_t kSmallLimit = std::size_t(1) << 20;  // <= 1 MiB: 512 B buckets
constexpr std::size_t kSmallRound = 512;
constexpr std::size_t kLargeRound = std::size_t(2) << 20;  // > 1 MiB: 2 MiB buckets

std::size_t bucket_size(std::size_t bytes) {
  if (bytes == 0) bytes = 1;  // a unique valid pointer even for empty tensors
  const std::size_t r = bytes <= kSmallLimit ? kSmallRound : kLargeRound;
  return (bytes + r - 1) / r * r;
}

struct DevicePool {
  std::mutex mu;
  std::unordered_map<void*, std::size_t> live;      // pointer -> bucket size
  std::map<std::size_t, std::vector<void*>> cache;  // bucket size -> free blocks
  AllocatorStats stats;
};

struct DeviceState {
  std::once_flag stream_once, blas_once;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  DevicePool pool;
};

int query_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the error state so later calls start clean
    return 0;
  }
  return n;
}

int cached_device_count() {
  static const int n = query_device_count();
  return n;
}

std::vector<std::unique_ptr<DeviceState>>& states() {
  static auto* s = [] {
    auto* v = new std::vector<std::unique_ptr<DeviceState>>();
    const int n = cached_device_count();
    for (int i = 0; i < n; ++i) v->push_back(std::make_unique<DeviceState>());
    return v;
  }();
  return *s;
}

void check_index(int device, const char* fn) {
  const int n = cached_device_count();
  if (device < 0 || device >= n)
    throw Error(std::string("cuda::") + fn + ": device index " + std::to_string(device) + " out of range (" +
                std::to_string(n) + " CUDA device(s) available)");
}

DeviceState& state(int device, const char* fn) {
  check_index(device, fn);
  return *states()[device];
}

// Frees every cached block of `pool` (caller holds pool.mu and has made `device` current).
void release_cached(DevicePool& pool) {
  for (auto& [size, blocks] : pool.cache) {
    for (void* p : blocks) {
      CUDA_CHECK(cudaFree(p));
      pool.stats.cached_bytes -= size;
      ++pool.stats.num_frees;
    }
  }
  pool.cache.clear();
}

std::string mib(std::size_t bytes) {
  std::ostringstream os;
  os.precision(1);
  os << std::fixed << double(bytes) / double(1 << 20) << " MiB";
  return os.str();
}

}  // namespace

// ---- streams and handles

cudaStream_t engine_stream(int device) {
  DeviceState& st = state(device, "engine_stream");
  std::call_once(st.stream_once, [&] {
    DeviceGuard guard(device);
    // Blocking flavour: synchronises with the legacy default stream, so a stray cudaMemcpy elsewhere
    // still observes engine work in order.
    CUDA_CHECK(cudaStreamCreateWithFlags(&st.stream, cudaStreamDefault));
  });
  return st.stream;
}

cudaStream_t engine_stream() { return engine_stream(current_device()); }

cublasHandle_t cublas_handle() {
  const int device = current_device();
  DeviceState& st = state(device, "cublas_handle");
  std::call_once(st.blas_once, [&] {
    cublasHandle_t h = nullptr;
    CUBLAS_CHECK(cublasCreate(&h));
    CUBLAS_CHECK(cublasSetStream(h, engine_stream(device)));
    // Full FP32 (no TF32) so results stay comparable to the CPU reference.
    CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    st.blas = h;
  });
  return st.blas;
}

DeviceGuard::DeviceGuard(int device) {
  CUDA_CHECK(cudaGetDevice(&prev_));
  if (prev_ != device) {
    CUDA_CHECK(cudaSetDevice(device));
    switched_ = true;
  }
}

DeviceGuard::~DeviceGuard() {
  if (switched_) (void)cudaSetDevice(prev_);  // destructors must not throw
}

DeviceScope::DeviceScope(int device) {
  check_index(device, "DeviceScope");
  CUDA_CHECK(cudaGetDevice(&prev_));
  if (prev_ != device) {
    CUDA_CHECK(cudaSetDevice(device));
    switched_ = true;
  }
}

DeviceScope::~DeviceScope() {
  if (switched_) (void)cudaSetDevice(prev_);  // destructors must not throw
}

// ---- discovery

bool built_with_cuda() { return true; }

int device_count() { return cached_device_count(); }

void set_device(int index) {
  check_index(index, "set_device");
  CUDA_CHECK(cudaSetDevice(index));
}

int current_device() {
  if (cached_device_count() == 0) throw Error("cuda::current_device: no CUDA device available");
  int d = 0;
  CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

std::string device_name(int index) {
  check_index(index, "device_name");
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  return prop.name;
}

// ---- caching allocator

void* alloc(std::size_t bytes, int device) {
  DevicePool& pool = state(device, "alloc").pool;
  const std::size_t size = bucket_size(bytes);
  std::lock_guard<std::mutex> lock(pool.mu);
  void* p = nullptr;
  auto it = pool.cache.find(size);
  if (it != pool.cache.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    pool.stats.cached_bytes -= size;
  } else {
    DeviceGuard guard(device);
    cudaError_t err = cudaMalloc(&p, size);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      // Out of memory (or fragmentation by our own cache): give the cache back and retry once.
      CUDA_CHECK(cudaDeviceSynchronize());
      release_cached(pool);
      err = cudaMalloc(&p, size);
      if (err != cudaSuccess) {
        (void)cudaGetLastError();
        throw Error("CUDA out of memory on device " + std::to_string(device) + ": tried to allocate " +
                    std::to_string(bytes) + " bytes (" + mib(size) + " bucket); allocator holds " +
                    mib(pool.stats.current_bytes) + " current, " + mib(pool.stats.peak_bytes) + " peak, " +
                    mib(pool.stats.cached_bytes) + " cached (" + cudaGetErrorString(err) + ")");
      }
    }
    ++pool.stats.num_mallocs;
  }
  pool.live.emplace(p, size);
  pool.stats.current_bytes += size;
  pool.stats.peak_bytes = std::max(pool.stats.peak_bytes, pool.stats.current_bytes);
  return p;
}

void free(void* ptr, int device) {
  if (ptr == nullptr) return;
  DevicePool& pool = state(device, "free").pool;
  std::lock_guard<std::mutex> lock(pool.mu);
  auto it = pool.live.find(ptr);
  if (it == pool.live.end())
    throw Error("cuda::free: pointer was not allocated by the caching allocator of device " +
                std::to_string(device));
  const std::size_t size = it->second;
  pool.live.erase(it);
  pool.stats.current_bytes -= size;
  // Stream-ordered reuse: later work on the engine stream runs after every kernel that used ptr.
  pool.cache[size].push_back(ptr);
  pool.stats.cached_bytes += size;
}

AllocatorStats allocator_stats(int device) {
  DevicePool& pool = state(device, "allocator_stats").pool;
  std::lock_guard<std::mutex> lock(pool.mu);
  return pool.stats;
}

void reset_peak(int device) {
  DevicePool& pool = state(device, "reset_peak").pool;
  std::lock_guard<std::mutex> lock(pool.mu);
  pool.stats.peak_bytes = pool.stats.current_bytes;
}

// ---- copies

void copy_h2d(void* dst, const void* src, std::size_t bytes, int device) {
  if (bytes == 0) return;
  DeviceGuard guard(device);
  cudaStream_t s = engine_stream(device);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
}

void copy_d2h(void* dst, const void* src, std::size_t bytes, int device) {
  if (bytes == 0) return;
  DeviceGuard guard(device);
  cudaStream_t s = engine_stream(device);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
}

void synchronize(int device) {
  DeviceGuard guard(device);
  CUDA_CHECK(cudaStreamSynchronize(engine_stream(device)));
  CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace engine::cuda
