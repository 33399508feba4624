// Embedding lookup and its deterministic backward. Backward: the positions 0..n-1 are stably
// radix-sorted by their (validated) row index with CUB, each table row finds its range of the sorted
// positions by binary search, and one thread per (row, dim column) sums the matching dy rows in
// increasing position order: the same order as the CPU kernel, no atomics.
#include <climits>
#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_kernels.h"

namespace kern::cuda {
namespace {

constexpr int kThreads = 256;

// y (n, dim) = table[idx]; an index outside [0, num_rows) yields NaN rather than an out-of-bounds read.
__global__ void embedding_forward_kernel(int64_t n, int64_t dim, int64_t num_rows,
                                         const int64_t* __restrict__ idx, const float* __restrict__ table,
                                         float* __restrict__ y) {
  const int64_t total = n * dim;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / dim, d = e % dim;
    const int64_t r = idx[i];
    y[e] = (r >= 0 && r < num_rows) ? table[r * dim + d] : __int_as_float(0x7fc00000);
  }
}

// keys[i] = idx[i] (or num_rows for an invalid index, sorted past every real row), vals[i] = i.
__global__ void embedding_keys_kernel(int n, int64_t num_rows, const int64_t* __restrict__ idx,
                                      uint32_t* __restrict__ keys, int32_t* __restrict__ vals) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const int64_t r = idx[i];
    keys[i] = static_cast<uint32_t>((r >= 0 && r < num_rows) ? r : num_rows);
    vals[i] = i;
  }
}

// start[r] = first sorted position whose key >= r, for r in [0, num_rows].
__global__ void embedding_ranges_kernel(int n, int64_t num_rows, const uint32_t* __restrict__ keys,
                                        int32_t* __restrict__ start) {
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r <= num_rows;
       r += int64_t(gridDim.x) * blockDim.x) {
    int lo = 0, hi = n;
    while (lo < hi) {
      const int mid = lo + (hi - lo) / 2;
      if (int64_t(keys[mid]) < r)
        lo = mid + 1;
      else
        hi = mid;
    }
    start[r] = lo;
  }
}

// dtable[r, d] = sum over sorted positions k in [start[r], start[r+1]) of dy[pos[k], d].
// grid (num_rows, ceil(dim / blockDim.x)).
__global__ void embedding_accumulate_kernel(int64_t dim, const int32_t* __restrict__ start,
                                            const int32_t* __restrict__ pos, const float* __restrict__ dy,
                                            float* __restrict__ dtable) {
  const int64_t r = blockIdx.x;
  const int64_t d = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (d >= dim) return;
  float s = 0.f;
  for (int k = start[r]; k < start[r + 1]; ++k) s += dy[int64_t(pos[k]) * dim + d];
  dtable[r * dim + d] = s;
}

}  // namespace

void embedding_forward(int64_t n, int64_t dim, const int64_t* idx, const float* table, float* y) {
  if (n <= 0 || dim <= 0) return;
  // The table's row count is not part of this interface: only negative indices can be caught here.
  embedding_forward_kernel<<<grid_1d(n * dim, kThreads), kThreads, 0, engine_stream()>>>(n, dim, INT64_MAX,
                                                                                         idx, table, y);
  CUDA_CHECK_LAUNCH();
}

void embedding_backward(int64_t n, int64_t num_rows, int64_t dim, const int64_t* idx, const float* dy,
                        float* dtable) {
  if (num_rows <= 0 || dim <= 0) return;
  if (n <= 0) {
    CUDA_CHECK(cudaMemsetAsync(dtable, 0, num_rows * dim * sizeof(float), engine_stream()));
    return;
  }
  if (n >= INT_MAX || num_rows >= UINT32_MAX || num_rows >= INT_MAX)
    throw ::engine::Error("kern::cuda::embedding_backward: too many indices or rows");
  if (ceil_div(dim, kThreads) > 65535)
    throw ::engine::Error("kern::cuda::embedding_backward: dim too large");
  const int ni = static_cast<int>(n);
  cudaStream_t stream = engine_stream();

  // Keys only need the bits of num_rows (the largest key).
  int end_bit = 1;
  while (end_bit < 32 && (uint64_t(1) << end_bit) <= uint64_t(num_rows)) ++end_bit;

  Workspace keys_in(n * sizeof(uint32_t)), keys_out(n * sizeof(uint32_t));
  Workspace vals_in(n * sizeof(int32_t)), vals_out(n * sizeof(int32_t));
  Workspace start((num_rows + 1) * sizeof(int32_t));
  embedding_keys_kernel<<<grid_1d(n, kThreads), kThreads, 0, stream>>>(
      ni, num_rows, idx, keys_in.as<uint32_t>(), vals_in.as<int32_t>());
  CUDA_CHECK_LAUNCH();
  std::size_t temp_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in.as<uint32_t>(),
                                             keys_out.as<uint32_t>(), vals_in.as<int32_t>(),
                                             vals_out.as<int32_t>(), ni, 0, end_bit, stream));
  Workspace temp(std::max<std::size_t>(temp_bytes, 1));
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.get(), temp_bytes, keys_in.as<uint32_t>(),
                                             keys_out.as<uint32_t>(), vals_in.as<int32_t>(),
                                             vals_out.as<int32_t>(), ni, 0, end_bit, stream));
  CUDA_CHECK_LAUNCH();
  embedding_ranges_kernel<<<grid_1d(num_rows + 1, kThreads), kThreads, 0, stream>>>(
      ni, num_rows, keys_out.as<uint32_t>(), start.as<int32_t>());
  CUDA_CHECK_LAUNCH();
  const dim3 grid(static_cast<unsigned>(num_rows), static_cast<unsigned>(ceil_div(dim, kThreads)));
  embedding_accumulate_kernel<<<grid, kThreads, 0, stream>>>(dim, start.as<int32_t>(), vals_out.as<int32_t>(),
                                                             dy, dtable);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kern::cuda
