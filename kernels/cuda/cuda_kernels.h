// CUDA kernel interface: the same contract as the CPU kernels (declared once, in kernels/kernel_list.h),
// float32 only, raw device pointers, contiguous row-major buffers, all work enqueued on the current
// device's engine stream (runtime/cuda_device.h). In a build without CUDA these are linked
// from kernels/cuda/cuda_stubs.cpp and throw "built without CUDA".
#pragma once
#include <cstdint>

#include "kernels/kernel_list.h"

namespace kern::cuda {

// void gemm(...), conv2d_forward(...), ... with T = float: see kernels/kernel_list.h.
// gemm/gemm_batched wrap cuBLAS (row-major); conv2d_* are hand-written implicit GEMMs.
KERN_BACKEND_KERNELS(KERN_DECLARE_CUDA)

// Element size in bytes (4 for float, 8 for int64) so the copy serves every dtype.
void copy_strided(int elem_size, const Strided& src_layout, const void* src, const Strided& dst_layout,
                  void* dst);

}  // namespace kern::cuda
