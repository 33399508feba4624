// CUDA-event timing for the op profiler (runtime/profiler_cuda.h): a cudaEvent pair on the engine stream
// around each top-level op, read back with cudaEventElapsedTime when the profiler resolves (one
// cudaEventSynchronize on the newest stop event). No call here throws: errors mark the pair untimed.
// COMPILES, UNVERIFIED ON A GPU (no GPU was available when this was written).
#include <cuda_runtime.h>

#include "runtime/cuda_runtime.h"
#include "runtime/profiler_cuda.h"

namespace engine::prof::cudaev {
namespace {
int g_device = -1;  // the pool's device: the first one profiled
cudaEvent_t g_start[kPairs] = {}, g_stop[kPairs] = {};
bool g_ok[kPairs] = {};

// Makes g_device current for the scope (restores the previous device), without throwing.
struct OnPoolDevice {
  int prev = -1;
  bool ok = false;
  OnPoolDevice() {
    if (cudaGetDevice(&prev) != cudaSuccess) return;
    ok = prev == g_device || cudaSetDevice(g_device) == cudaSuccess;
  }
  ~OnPoolDevice() {
    if (ok && prev != g_device) cudaSetDevice(prev);
  }
};
}  // namespace

bool record_start(int id, int device) {
  if (id < 0 || id >= kPairs) return false;
  if (g_device < 0) g_device = device;
  if (device != g_device) return false;
  g_ok[id] = false;
  OnPoolDevice on;
  if (!on.ok) return false;
  if (!g_start[id] && (cudaEventCreate(&g_start[id]) != cudaSuccess)) return (g_start[id] = nullptr, false);
  if (!g_stop[id] && (cudaEventCreate(&g_stop[id]) != cudaSuccess)) return (g_stop[id] = nullptr, false);
  cudaStream_t s = nullptr;
  try {
    s = cuda::engine_stream(g_device);
  } catch (...) {
    return false;
  }
  g_ok[id] = cudaEventRecord(g_start[id], s) == cudaSuccess;
  return g_ok[id];
}

void record_stop(int id) {
  if (id < 0 || id >= kPairs || !g_ok[id]) return;
  OnPoolDevice on;
  cudaStream_t s = nullptr;
  try {
    s = cuda::engine_stream(g_device);
  } catch (...) {
    g_ok[id] = false;
    return;
  }
  g_ok[id] = on.ok && cudaEventRecord(g_stop[id], s) == cudaSuccess;
}

void elapsed(int n, double* start_ms, double* dur_ms) {
  for (int i = 0; i < n; ++i) start_ms[i] = dur_ms[i] = -1.0;
  if (n <= 0 || n > kPairs) return;
  OnPoolDevice on;
  if (!on.ok) return;
  int last = n - 1;
  while (last >= 0 && !g_ok[last]) --last;
  if (last < 0 || cudaEventSynchronize(g_stop[last]) != cudaSuccess) return;
  int first = 0;
  while (first < n && !g_ok[first]) ++first;
  for (int i = first; i < n; ++i) {
    if (!g_ok[i]) continue;
    float off = 0.0f, dur = 0.0f;
    if (cudaEventElapsedTime(&off, g_start[first], g_start[i]) != cudaSuccess) continue;
    if (cudaEventElapsedTime(&dur, g_start[i], g_stop[i]) != cudaSuccess) continue;
    start_ms[i] = off;
    dur_ms[i] = dur;
  }
}

}  // namespace engine::prof::cudaev
