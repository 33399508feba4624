// CPU reductions (row sums, column sums, MSE loss), accumulated in double in a fixed order so results
// do not depend on the thread count.
#include <algorithm>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"

namespace kern::cpu {

template <typename T>
void sum_rows(int64_t rows, int64_t cols, const T* x, T* y) {
#pragma omp parallel for schedule(static) if (rows * cols > 32768 && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    double acc = 0;
    for (int64_t c = 0; c < cols; ++c) acc += xr[c];
    y[r] = static_cast<T>(acc);
  }
}

template <typename T>
void sum_cols(int64_t rows, int64_t cols, const T* x, T* y) {
  constexpr int64_t kBlock = 256;  // columns per task
  const int64_t nblocks = (cols + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (rows * cols > 32768 && nblocks > 1)
  for (int64_t bi = 0; bi < nblocks; ++bi) {
    const int64_t c0 = bi * kBlock, c1 = std::min(cols, c0 + kBlock);
    double acc[kBlock] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * cols;
      for (int64_t c = c0; c < c1; ++c) acc[c - c0] += xr[c];
    }
    for (int64_t c = c0; c < c1; ++c) y[c] = static_cast<T>(acc[c - c0]);
  }
}

template <typename T>
void mse_loss_forward(int64_t n, const T* a, const T* b, T* out) {
  constexpr int64_t kChunk = 1 << 14;  // fixed chunks, partials summed in chunk order
  const int64_t nchunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(std::max<int64_t>(nchunks, 1), 0.0);
#pragma omp parallel for schedule(static) if (nchunks > 1)
  for (int64_t ci = 0; ci < nchunks; ++ci) {
    double acc = 0;
    for (int64_t i = ci * kChunk; i < std::min(n, (ci + 1) * kChunk); ++i) {
      const double d = double(a[i]) - double(b[i]);
      acc += d * d;
    }
    partial[ci] = acc;
  }
  double s = 0;
  for (int64_t ci = 0; ci < nchunks; ++ci) s += partial[ci];
  out[0] = static_cast<T>(n > 0 ? s / double(n) : 0.0);
}

KERN_INSTANTIATE_CPU(sum_rows)
KERN_INSTANTIATE_CPU(sum_cols)
KERN_INSTANTIATE_CPU(mse_loss_forward)

}  // namespace kern::cpu
