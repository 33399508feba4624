// Hand-written implicit-GEMM conv2d (NCHW, any kernel size / stride / padding) and its backward passes.
// One shared-memory tiled kernel computes Out[m, j] = sum_kk A[m, kk] * B[kk, j] where A and B are read
// straight from the tensors through an "Op" that maps GEMM coordinates to tensor elements:
//   forward:         M = K, cols = N*P*Q, red = C*R*S   (A = w, B = im2col(x))
//   backward input:  M = C, cols = N*H*W, red = K*R*S   (A = w transposed, B = dy gathered through stride)
//   backward weight: M = K, cols = C*R*S, red = N*P*Q   (A = dy, B = im2col(x)^T), split over the reduction
//                    into fixed chunks written to a workspace and summed in fixed order (deterministic).
// db is a per-channel block reduction. No atomics anywhere: results are bitwise reproducible.
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_kernels.h"

namespace kern::cuda {
namespace {

constexpr int kBM = 64;        // tile rows (M)
constexpr int kBN = 64;        // tile cols
constexpr int kBK = 16;        // reduction step
constexpr int kThreads = 256;  // 16 x 16 threads, each a 4 x 4 micro-tile (strided by 16)

// ---- Ops. a(m, kk) / b(col, kk) are only called with m < M, col valid, kk < red.

struct FwdOp {
  const float* x;  // (N, C, H, W)
  const float* w;  // (K, C, R, S)
  const float* bias;
  float* y;  // (N, K, P, Q)
  int64_t N, C, H, W, K, R, S, sh, sw, ph, pw, P, Q;
  int64_t M, cols, red;  // K, N*P*Q, C*R*S
  struct Col {
    int64_t n, h0, w0;  // input origin of the receptive field
  };
  __host__ __device__ Col col(int64_t j) const {
    const int64_t q = j % Q, t = j / Q, p = t % P, n = t / P;
    return {n, p * sh - ph, q * sw - pw};
  }
  __host__ __device__ float a(int64_t m, int64_t kk) const { return w[m * red + kk]; }
  __host__ __device__ float b(const Col& c, int64_t kk) const {
    const int64_t s = kk % S, t = kk / S, r = t % R, ci = t / R;
    const int64_t h = c.h0 + r, ww = c.w0 + s;
    if (h < 0 || h >= H || ww < 0 || ww >= W) return 0.f;
    return x[((c.n * C + ci) * H + h) * W + ww];
  }
  __host__ __device__ void store(int64_t m, int64_t j, int /*split*/, float v) const {
    const int64_t pq = j % (P * Q), n = j / (P * Q);
    y[(n * K + m) * (P * Q) + pq] = v + (bias ? bias[m] : 0.f);
  }
};

struct BwdInputOp {
  const float* dy;  // (N, K, P, Q)
  const float* w;   // (K, C, R, S)
  float* dx;        // (N, C, H, W)
  int64_t N, C, H, W, K, R, S, sh, sw, ph, pw, P, Q;
  int64_t M, cols, red;  // C, N*H*W, K*R*S
  struct Col {
    int64_t n, hp, wp;  // h + pad_h, w + pad_w
  };
  __host__ __device__ Col col(int64_t j) const {
    const int64_t wi = j % W, t = j / W, h = t % H, n = t / H;
    return {n, h + ph, wi + pw};
  }
  // A[c, (k, r, s)] = w[k, c, r, s]
  __host__ __device__ float a(int64_t m, int64_t kk) const {
    const int64_t rs = kk % (R * S), k = kk / (R * S);
    return w[(k * C + m) * (R * S) + rs];
  }
  // B[(k, r, s), (n, h, w)] = dy[n, k, p, q] where h + ph = p*sh + r and w + pw = q*sw + s.
  __host__ __device__ float b(const Col& c, int64_t kk) const {
    const int64_t s = kk % S, t = kk / S, r = t % R, k = t / R;
    const int64_t hh = c.hp - r, ww = c.wp - s;
    if (hh < 0 || ww < 0 || hh % sh != 0 || ww % sw != 0) return 0.f;
    const int64_t p = hh / sh, q = ww / sw;
    if (p >= P || q >= Q) return 0.f;
    return dy[((c.n * K + k) * P + p) * Q + q];
  }
  __host__ __device__ void store(int64_t m, int64_t j, int /*split*/, float v) const {
    const int64_t hw = j % (H * W), n = j / (H * W);
    dx[(n * C + m) * (H * W) + hw] = v;
  }
};

struct BwdWeightOp {
  const float* dy;  // (N, K, P, Q)
  const float* x;   // (N, C, H, W)
  float* ws;        // (splits, K, C*R*S)
  int64_t N, C, H, W, K, R, S, sh, sw, ph, pw, P, Q;
  int64_t M, cols, red;  // K, C*R*S, N*P*Q
  struct Col {
    int64_t c, r, s;
  };
  __host__ __device__ Col col(int64_t j) const {
    const int64_t s = j % S, t = j / S, r = t % R, c = t / R;
    return {c, r, s};
  }
  // A[k, (n, p, q)] = dy[n, k, p, q]
  __host__ __device__ float a(int64_t m, int64_t kk) const {
    const int64_t pq = kk % (P * Q), n = kk / (P * Q);
    return dy[(n * K + m) * (P * Q) + pq];
  }
  // B[(n, p, q), (c, r, s)] = x[n, c, p*sh - ph + r, q*sw - pw + s]
  __host__ __device__ float b(const Col& c, int64_t kk) const {
    const int64_t q = kk % Q, t = kk / Q, p = t % P, n = t / P;
    const int64_t h = p * sh - ph + c.r, ww = q * sw - pw + c.s;
    if (h < 0 || h >= H || ww < 0 || ww >= W) return 0.f;
    return x[((n * C + c.c) * H + h) * W + ww];
  }
  __host__ __device__ void store(int64_t m, int64_t j, int split, float v) const {
    ws[(split * M + m) * cols + j] = v;
  }
};

// Block (blockIdx.x, blockIdx.y) computes the 64 x 64 tile at cols [64*bx, ...), rows [64*by, ...) over the
// reduction range [bz*chunk, min(red, (bz+1)*chunk)).
template <class Op>
__global__ void __launch_bounds__(kThreads) igemm_kernel(const Op op, int64_t chunk) {
  __shared__ __align__(16) float As[kBK][kBM + 4];  // As[kk][m]; padding breaks store bank conflicts
  __shared__ __align__(16) float Bs[kBK][kBN];      // Bs[kk][j]
  const int tid = threadIdx.x;
  const int64_t m0 = int64_t(blockIdx.y) * kBM, n0 = int64_t(blockIdx.x) * kBN;
  const int split = blockIdx.z;
  const int64_t kbeg = int64_t(split) * chunk, kend = min(op.red, kbeg + chunk);

  // A loader: row am, 4 consecutive kk starting at ak.
  const int am = tid >> 2, ak = (tid & 3) * 4;
  const int64_t arow = m0 + am;
  const bool avalid = arow < op.M;
  // B loader: column bj, kk rows bk, bk + 4, bk + 8, bk + 12.
  const int bj = tid & (kBN - 1), bk = tid / kBN;
  const int64_t bcol = n0 + bj;
  const bool bvalid = bcol < op.cols;
  typename Op::Col col{};
  if (bvalid) col = op.col(bcol);

  const int tx = tid & 15, ty = tid >> 4;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;

  for (int64_t k0 = kbeg; k0 < kend; k0 += kBK) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t kk = k0 + ak + i;
      As[ak + i][am] = (avalid && kk < kend) ? op.a(arow, kk) : 0.f;
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int kr = bk + 4 * i;
      const int64_t kk = k0 + kr;
      Bs[kr][bj] = (bvalid && kk < kend) ? op.b(col, kk) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kr = 0; kr < kBK; ++kr) {
      float av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = As[kr][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = Bs[kr][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty + 16 * i;
    if (m >= op.M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + tx + 16 * j;
      if (n < op.cols) op.store(m, n, split, acc[i][j]);
    }
  }
}

template <class Op>
void launch_igemm(const Op& op, int splits, int64_t chunk) {
  const int64_t gx = ceil_div(op.cols, kBN), gy = ceil_div(op.M, kBM);
  if (gy > 65535) throw ::engine::Error("kern::cuda::conv2d: too many output rows for one launch");
  dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(splits));
  igemm_kernel<Op><<<grid, kThreads, 0, engine_stream()>>>(op, chunk);
  CUDA_CHECK_LAUNCH();
}

// out[i] = sum_z ws[z * n + i], z in order.
__global__ void reduce_splits_kernel(int64_t n, int splits, const float* ws, float* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float s = 0.f;
    for (int z = 0; z < splits; ++z) s += ws[z * n + i];
    out[i] = s;
  }
}

// db[k] = sum over n, p, q of dy[n, k, p, q]; one block per k.
__global__ void bias_grad_kernel(int64_t N, int64_t K, int64_t PQ, const float* dy, float* db) {
  __shared__ float scratch[32];
  const int64_t k = blockIdx.x;
  float s = 0.f;
  for (int64_t n = 0; n < N; ++n) {
    const float* row = dy + (n * K + k) * PQ;
    for (int64_t i = threadIdx.x; i < PQ; i += blockDim.x) s += row[i];
  }
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) db[k] = s;
}

template <class Op>
void fill_common(Op& op, const Conv2dShape& s) {
  op.N = s.N, op.C = s.C, op.H = s.H, op.W = s.W, op.K = s.K, op.R = s.R, op.S = s.S;
  op.sh = s.stride_h, op.sw = s.stride_w, op.ph = s.pad_h, op.pw = s.pad_w, op.P = s.P, op.Q = s.Q;
}

void check_shape(const Conv2dShape& s, const char* fn) {
  if (s.N < 0 || s.C <= 0 || s.H <= 0 || s.W <= 0 || s.K <= 0 || s.R <= 0 || s.S <= 0 || s.stride_h <= 0 ||
      s.stride_w <= 0 || s.pad_h < 0 || s.pad_w < 0 || s.P < 0 || s.Q < 0)
    throw ::engine::Error(std::string("kern::cuda::") + fn + ": invalid Conv2dShape");
}

}  // namespace

void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* b, float* y) {
  check_shape(s, "conv2d_forward");
  FwdOp op{};
  fill_common(op, s);
  op.x = x, op.w = w, op.bias = b, op.y = y;
  op.M = s.K, op.cols = s.N * s.P * s.Q, op.red = s.C * s.R * s.S;
  if (op.cols == 0) return;
  launch_igemm(op, 1, op.red);
}

void conv2d_backward_input(const Conv2dShape& s, const float* dy, const float* w, float* dx) {
  check_shape(s, "conv2d_backward_input");
  BwdInputOp op{};
  fill_common(op, s);
  op.dy = dy, op.w = w, op.dx = dx;
  op.M = s.C, op.cols = s.N * s.H * s.W, op.red = s.K * s.R * s.S;
  if (op.cols == 0) return;
  launch_igemm(op, 1, op.red);
}

void conv2d_backward_weight(const Conv2dShape& s, const float* dy, const float* x, float* dw, float* db) {
  check_shape(s, "conv2d_backward_weight");
  BwdWeightOp op{};
  fill_common(op, s);
  op.dy = dy, op.x = x;
  op.M = s.K, op.cols = s.C * s.R * s.S, op.red = s.N * s.P * s.Q;
  const int64_t nw = op.M * op.cols;
  if (op.red == 0) {  // empty batch: gradients are zero
    CUDA_CHECK(cudaMemsetAsync(dw, 0, nw * sizeof(float), engine_stream()));
    if (db) CUDA_CHECK(cudaMemsetAsync(db, 0, s.K * sizeof(float), engine_stream()));
    return;
  }
  // Split the reduction so that small weight tiles still fill the GPU; a pure function of the shape,
  // so the summation order (and the result) never changes between runs.
  const int64_t tiles = ceil_div(op.M, kBM) * ceil_div(op.cols, kBN);
  const int64_t max_by_work = ceil_div(op.red, 16 * kBK);  // at least 256 reduction steps per split
  int64_t splits = std::min<int64_t>({std::max<int64_t>(1, 512 / tiles), max_by_work, 64});
  splits = std::max<int64_t>(1, splits);
  const int64_t chunk = ceil_div(ceil_div(op.red, splits), kBK) * kBK;
  splits = ceil_div(op.red, chunk);  // no empty trailing split
  if (splits == 1) {
    op.ws = dw;
    launch_igemm(op, 1, op.red);
  } else {
    Workspace ws(static_cast<std::size_t>(splits * nw) * sizeof(float));
    op.ws = ws.as<float>();
    launch_igemm(op, static_cast<int>(splits), chunk);
    reduce_splits_kernel<<<grid_1d(nw, 256), 256, 0, engine_stream()>>>(nw, static_cast<int>(splits),
                                                                        ws.as<float>(), dw);
    CUDA_CHECK_LAUNCH();
  }
  if (db) {
    bias_grad_kernel<<<static_cast<unsigned>(s.K), 256, 0, engine_stream()>>>(s.N, s.K, s.P * s.Q, dy, db);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace kern::cuda
