// Linked instead of kernels/cuda/*.cu in a build without CUDA: every kernel throws
// "built without CUDA" so a request for a cuda tensor fails loudly, never silently.
#include <string>

#include "kernels/cuda/cuda_kernels.h"
#include "runtime/error.h"

namespace kern::cuda {
namespace {
[[noreturn]] void no_cuda(const char* fn) {
  throw ::engine::Error(std::string("kern::cuda::") + fn + ": this engine was built without CUDA");
}
}  // namespace

void gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  no_cuda("gemm");
}
void gemm_batched(int64_t batch, bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha,
                  const float* A, int64_t lda, int64_t strideA, const float* B, int64_t ldb, int64_t strideB,
                  float beta, float* C, int64_t ldc, int64_t strideC) {
  no_cuda("gemm_batched");
}
void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* b, float* y) {
  no_cuda("conv2d_forward");
}
void conv2d_backward_input(const Conv2dShape& s, const float* dy, const float* w, float* dx) {
  no_cuda("conv2d_backward_input");
}
void conv2d_backward_weight(const Conv2dShape& s, const float* dy, const float* x, float* dw, float* db) {
  no_cuda("conv2d_backward_weight");
}
void group_norm_forward(int64_t N, int64_t C, int64_t HW, int64_t G, double eps, const float* x,
                        const float* gamma, const float* beta, float* y, float* mean, float* rstd) {
  no_cuda("group_norm_forward");
}
void group_norm_backward(int64_t N, int64_t C, int64_t HW, int64_t G, const float* dy, const float* x,
                         const float* mean, const float* rstd, const float* gamma, float* dx, float* dgamma,
                         float* dbeta) {
  no_cuda("group_norm_backward");
}
void attention_forward(int64_t BH, int64_t Lq, int64_t Lk, int64_t D, double scale, const float* q,
                       const float* k, const float* v, float* o, float* lse) {
  no_cuda("attention_forward");
}
void attention_backward(int64_t BH, int64_t Lq, int64_t Lk, int64_t D, double scale, const float* q,
                        const float* k, const float* v, const float* o, const float* lse, const float* dout,
                        float* dq, float* dk, float* dv) {
  no_cuda("attention_backward");
}
void unary(Unary op, int64_t n, const float* x, float* y) { no_cuda("unary"); }
void silu_backward(int64_t n, const float* x, const float* dy, float* dx) { no_cuda("silu_backward"); }
void affine(int64_t n, const float* x, double alpha, double beta, float* y) { no_cuda("affine"); }
void binary(Binary op, const Strided& out, const float* a, const Strided& as, const float* b,
            const Strided& bs, float* y) {
  no_cuda("binary");
}
void copy_strided(int elem_size, const Strided& src_layout, const void* src, const Strided& dst_layout,
                  void* dst) {
  no_cuda("copy_strided");
}
void fill(int64_t n, float* y, double value) { no_cuda("fill"); }
void upsample_nearest2x_forward(int64_t NC, int64_t H, int64_t W, const float* x, float* y) {
  no_cuda("upsample_nearest2x_forward");
}
void upsample_nearest2x_backward(int64_t NC, int64_t H, int64_t W, const float* dy, float* dx) {
  no_cuda("upsample_nearest2x_backward");
}
void sum_rows(int64_t rows, int64_t cols, const float* x, float* y) { no_cuda("sum_rows"); }
void sum_cols(int64_t rows, int64_t cols, const float* x, float* y) { no_cuda("sum_cols"); }
void mse_loss_forward(int64_t n, const float* a, const float* b, float* out) { no_cuda("mse_loss_forward"); }
void embedding_forward(int64_t n, int64_t dim, const int64_t* idx, const float* table, float* y) {
  no_cuda("embedding_forward");
}
void embedding_backward(int64_t n, int64_t num_rows, int64_t dim, const int64_t* idx, const float* dy,
                        float* dtable) {
  no_cuda("embedding_backward");
}
void adamw_step(int ntensors, float* const* p, const float* const* g, float* const* m, float* const* v,
                const int64_t* sizes, const AdamWParams& hp) {
  no_cuda("adamw_step");
}
void philox_uniform(int64_t n, uint64_t seed, uint64_t offset, float* y) { no_cuda("philox_uniform"); }
void philox_normal(int64_t n, uint64_t seed, uint64_t offset, float* y) { no_cuda("philox_normal"); }

}  // namespace kern::cuda
