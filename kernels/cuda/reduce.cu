// Deterministic reductions: row sums, column sums and the MSE loss. Like the CPU kernels they
// accumulate in double; every launch shape (and so every summation order) is a pure function of the
// problem size, partial results go to a workspace and are combined in a fixed order, no atomics.
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_kernels.h"

namespace kern::cuda {
namespace {

constexpr int kThreads = 256;

// y[r] = sum_c x[r, c]: one warp per row (short rows).
__global__ void sum_rows_warp_kernel(int64_t rows, int64_t cols, const float* __restrict__ x,
                                     float* __restrict__ y) {
  const int lane = threadIdx.x & 31;
  const int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (r >= rows) return;  // whole warp leaves together
  const float* xr = x + r * cols;
  double s = 0.0;
  for (int64_t c = lane; c < cols; c += 32) s += xr[c];
  s = warp_sum(s);
  if (lane == 0) y[r] = static_cast<float>(s);
}

// y[r] = sum_c x[r, c]: one block per row (long rows).
__global__ void sum_rows_block_kernel(int64_t cols, const float* __restrict__ x, float* __restrict__ y) {
  __shared__ double scratch[32];
  const float* xr = x + int64_t(blockIdx.x) * cols;
  double s = 0.0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) s += xr[c];
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) y[blockIdx.x] = static_cast<float>(s);
}

// Column sums over a chunk of rows. Block (32, 8): threadIdx.x picks the column, threadIdx.y strides
// the chunk's rows; the 8 row-partials are then added in order. Writes y (one chunk) or ws (chunk z).
constexpr int kColTile = 32, kRowLanes = 8;
__global__ void sum_cols_chunk_kernel(int64_t rows, int64_t cols, int64_t rows_per_chunk,
                                      const float* __restrict__ x, float* __restrict__ y,
                                      double* __restrict__ ws) {
  __shared__ double part[kRowLanes][kColTile + 1];
  const int64_t c = int64_t(blockIdx.x) * kColTile + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = min(rows, r0 + rows_per_chunk);
  double s = 0.0;
  if (c < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowLanes) s += x[r * cols + c];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    double t = 0.0;
#pragma unroll
    for (int k = 0; k < kRowLanes; ++k) t += part[k][threadIdx.x];
    if (ws)
      ws[int64_t(blockIdx.y) * cols + c] = t;
    else
      y[c] = static_cast<float>(t);
  }
}

// y[c] = sum_z ws[z, c], z in order.
__global__ void sum_chunks_kernel(int64_t chunks, int64_t cols, const double* __restrict__ ws,
                                  float* __restrict__ y) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < cols;
       c += int64_t(gridDim.x) * blockDim.x) {
    double t = 0.0;
    for (int64_t z = 0; z < chunks; ++z) t += ws[z * cols + c];
    y[c] = static_cast<float>(t);
  }
}

// partial[b] = sum over block b's grid-stride share of (a - b)^2.
__global__ void mse_partial_kernel(int64_t n, const float* __restrict__ a, const float* __restrict__ b,
                                   double* __restrict__ partial) {
  __shared__ double scratch[32];
  double s = 0.0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const double d = double(a[i]) - double(b[i]);
    s += d * d;
  }
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void mse_final_kernel(int64_t nparts, int64_t n, const double* __restrict__ partial,
                                 float* __restrict__ out) {
  __shared__ double scratch[32];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < nparts; i += blockDim.x) s += partial[i];
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) out[0] = static_cast<float>(n > 0 ? s / double(n) : 0.0);
}

}  // namespace

void sum_rows(int64_t rows, int64_t cols, const float* x, float* y) {
  if (rows <= 0) return;
  if (cols <= 0) {
    CUDA_CHECK(cudaMemsetAsync(y, 0, rows * sizeof(float), engine_stream()));
    return;
  }
  if (cols <= 1024 || rows > (int64_t(1) << 31) - 1) {
    sum_rows_warp_kernel<<<static_cast<unsigned>(ceil_div(rows * 32, kThreads)), kThreads, 0,
                           engine_stream()>>>(rows, cols, x, y);
  } else {
    sum_rows_block_kernel<<<static_cast<unsigned>(rows), kThreads, 0, engine_stream()>>>(cols, x, y);
  }
  CUDA_CHECK_LAUNCH();
}

void sum_cols(int64_t rows, int64_t cols, const float* x, float* y) {
  if (cols <= 0) return;
  if (rows <= 0) {
    CUDA_CHECK(cudaMemsetAsync(y, 0, cols * sizeof(float), engine_stream()));
    return;
  }
  const int64_t col_blocks = ceil_div(cols, kColTile);
  if (col_blocks > (int64_t(1) << 31) - 1)
    throw ::engine::Error("kern::cuda::sum_cols: too many columns");
  // Enough row chunks to fill the GPU, each at least 64 rows; a function of the shape only.
  int64_t chunks = std::min<int64_t>({ceil_div(rows, 64), std::max<int64_t>(1, 1024 / col_blocks), 65535});
  chunks = std::max<int64_t>(1, chunks);
  const int64_t rows_per_chunk = ceil_div(rows, chunks);
  chunks = ceil_div(rows, rows_per_chunk);
  const dim3 block(kColTile, kRowLanes);
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks));
  if (chunks == 1) {
    sum_cols_chunk_kernel<<<grid, block, 0, engine_stream()>>>(rows, cols, rows_per_chunk, x, y, nullptr);
    CUDA_CHECK_LAUNCH();
    return;
  }
  Workspace ws(static_cast<std::size_t>(chunks * cols) * sizeof(double));
  sum_cols_chunk_kernel<<<grid, block, 0, engine_stream()>>>(rows, cols, rows_per_chunk, x, y,
                                                             ws.as<double>());
  CUDA_CHECK_LAUNCH();
  sum_chunks_kernel<<<grid_1d(cols, kThreads), kThreads, 0, engine_stream()>>>(chunks, cols, ws.as<double>(),
                                                                               y);
  CUDA_CHECK_LAUNCH();
}

void mse_loss_forward(int64_t n, const float* a, const float* b, float* out) {
  const int64_t nparts = std::max<int64_t>(1, std::min<int64_t>(ceil_div(n, kThreads * 8), 1024));
  Workspace ws(static_cast<std::size_t>(nparts) * sizeof(double));
  mse_partial_kernel<<<static_cast<unsigned>(nparts), kThreads, 0, engine_stream()>>>(n, a, b,
                                                                                      ws.as<double>());
  CUDA_CHECK_LAUNCH();
  mse_final_kernel<<<1, kThreads, 0, engine_stream()>>>(nparts, n, ws.as<double>(), out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kern::cuda
