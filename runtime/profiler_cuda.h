// Internal to the profiler (runtime/profiler.cpp): CUDA-event timing of top-level ops. A fixed pool of
// kPairs start/stop event pairs on one device (the first one profiled; ops on other devices are timed on
// the host only), used in order 0, 1, ... between two resolves. Implemented in runtime/profiler_cuda.cu;
// a build without CUDA links runtime/profiler_cuda_stub.cpp, where nothing is ever timed on a GPU.
// Nothing here throws (it runs inside destructors): a failing CUDA call marks the pair as not timed.
// COMPILES, UNVERIFIED ON A GPU.
#pragma once

namespace engine::prof::cudaev {

inline constexpr int kPairs = 4096;

// Records pair `id`'s start event on `device`'s engine stream (no sync). False when the op is not
// GPU-timed: built without CUDA, another device than the pool's, or a CUDA error.
bool record_start(int id, int device);
// Records pair `id`'s stop event on the pool device's engine stream (no sync).
void record_stop(int id);
// Waits for the newest stop event (one host sync), then for every pair i < n writes its start's offset from
// the first timed pair's start and its duration, in ms (both -1 for a pair whose events failed).
void elapsed(int n, double* start_ms, double* dur_ms);

}  // namespace engine::prof::cudaev
