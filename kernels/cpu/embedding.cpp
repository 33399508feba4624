// CPU embedding lookup and its deterministic backward (rows bucketed by a stable counting sort, then
// each table row sums its dy rows in index order; no atomics).
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"

namespace kern::cpu {

template <typename T>
void embedding_forward(int64_t n, int64_t dim, const int64_t* idx, const T* table, T* y) {
#pragma omp parallel for schedule(static) if (n * dim > 32768)
  for (int64_t i = 0; i < n; ++i) std::memcpy(y + i * dim, table + idx[i] * dim, sizeof(T) * dim);
}

template <typename T>
void embedding_backward(int64_t n, int64_t num_rows, int64_t dim, const int64_t* idx, const T* dy,
                        T* dtable) {
  // start[r]..start[r+1]: positions i with idx[i] == r, in increasing i.
  std::vector<int64_t> start(num_rows + 1, 0), order(n);
  for (int64_t i = 0; i < n; ++i) ++start[idx[i] + 1];
  for (int64_t r = 0; r < num_rows; ++r) start[r + 1] += start[r];
  {
    std::vector<int64_t> pos(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < n; ++i) order[pos[idx[i]]++] = i;
  }
#pragma omp parallel for schedule(static) if (num_rows * dim > 32768)
  for (int64_t r = 0; r < num_rows; ++r) {
    T* dst = dtable + r * dim;
    std::fill(dst, dst + dim, T(0));
    for (int64_t k = start[r]; k < start[r + 1]; ++k) {
      const T* src = dy + order[k] * dim;
      for (int64_t d = 0; d < dim; ++d) dst[d] += src[d];
    }
  }
}

KERN_INSTANTIATE_CPU(embedding_forward)
KERN_INSTANTIATE_CPU(embedding_backward)

}  // namespace kern::cpu
