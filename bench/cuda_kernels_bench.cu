// cuda_kernels_bench: the engine's hand-written CUDA kernels at the seed UNet's real shapes (batch 128),
// each beside a vendor baseline and the hardware floor.
//   conv 3x3 / stride-2 / 1x1 (fwd, bwd-data, bwd-filter)  vs cuDNN: its fastest algorithm by its own search
//        (cudnnFind*AlgorithmEx), strict FP32 (CUDNN_FMA_MATH: no TF32; --cudnn-tf32 allows it), + bias ops
//   attention, 8 heads of dim 8 at 196 / 49 tokens (BH = 1024)  vs the cuBLAS-GEMM+softmax path
//        (cublasSgemmStridedBatched for QK^T and PV, a one-warp-per-row softmax; backward likewise)
//   group norm (32 groups), silu, AdamW over the 1,707,307 parameters  vs the bandwidth floor only
// Method: median of --runs after --warmup, L2 flushed before every run (256 MB cudaMemsetAsync), timed with
// cudaEvents on the engine stream. Peak FP32 FLOP/s (an FMA-bound kernel) and bandwidth (a 1 GiB
// device-to-device copy) are measured first; floor = max(FLOPs / peak, minimal bytes / bandwidth).
// --check compares every output with cuDNN/cuBLAS (conv, attention) or the CPU kernels (group norm, silu,
// AdamW): max |ours - ref| / max |ref|. Exit status 1 when a check fails, and with --check also when nothing
// was compared (no CUDA device, or --filter matched nothing).
//   build/bin/cuda_kernels_bench [--check] [--quick] [--runs 50] [--filter conv]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if ENGINE_BENCH_HAS_CUDNN
#include <cudnn.h>
#endif

#include "bench/bench_table.h"
#include "bench/op_table_rows.h"
#include "bench/unet_shapes.h"
#include "runtime/cuda_device.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_kernels.h"
#include "models/conditional_unet.h"

namespace {

using kern::cuda::engine_stream;

constexpr int64_t kBatch = 128;
constexpr int64_t kGroups = 32;
constexpr double kCheckTol =
    1e-3;  // max-normalised error allowed for FP32 results (different summation order)

bench::Options g_opt;  // defaults set in main: 50 runs after 5 warm-up

// ---------------------------------------------------------------- device buffers and helpers

struct DevBuf {
  float* p = nullptr;
  int64_t n = 0;
  DevBuf() = default;
  explicit DevBuf(int64_t count) : n(count) { CUDA_CHECK(cudaMalloc(&p, std::max<int64_t>(count, 1) * 4)); }
  ~DevBuf() {
    if (p) cudaFree(p);
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  DevBuf(DevBuf&& o) noexcept : p(o.p), n(o.n) { o.p = nullptr; }
  std::vector<float> host() const {
    std::vector<float> h(n);
    CUDA_CHECK(cudaStreamSynchronize(engine_stream()));
    CUDA_CHECK(cudaMemcpy(h.data(), p, n * 4, cudaMemcpyDeviceToHost));
    return h;
  }
};

uint64_t g_seed_offset = 0;
DevBuf randn_buf(int64_t n, float scale = 1.f) {
  DevBuf b(n);
  kern::cuda::philox_normal(n, 1234, g_seed_offset, b.p);
  g_seed_offset += static_cast<uint64_t>(n);
  if (scale != 1.f) kern::cuda::affine(n, b.p, scale, 0.0, b.p);
  return b;
}

double rel_err(const std::vector<float>& a, const std::vector<float>& b) { return bench::max_rel_err(a, b); }

// ---------------------------------------------------------------- timing

class Timer {
 public:
  Timer() {
    CUDA_CHECK(cudaEventCreate(&a_));
    CUDA_CHECK(cudaEventCreate(&b_));
    CUDA_CHECK(cudaMalloc(&flush_, kFlushBytes));
  }
  // Median milliseconds of fn() over g_opt.runs runs after g_opt.warmup, L2 flushed before each.
  double median_ms(const std::function<void()>& fn, int runs = -1) {
    cudaStream_t st = engine_stream();
    if (runs < 0) runs = g_opt.runs;
    for (int i = 0; i < g_opt.warmup; ++i) fn();
    std::vector<float> ts;
    for (int r = 0; r < runs; ++r) {
      CUDA_CHECK(cudaMemsetAsync(flush_, r & 0xff, kFlushBytes, st));
      CUDA_CHECK(cudaEventRecord(a_, st));
      fn();
      CUDA_CHECK(cudaEventRecord(b_, st));
      CUDA_CHECK(cudaEventSynchronize(b_));
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, a_, b_));
      ts.push_back(ms);
    }
    std::sort(ts.begin(), ts.end());
    return ts.size() % 2 ? ts[ts.size() / 2] : 0.5 * (ts[ts.size() / 2 - 1] + ts[ts.size() / 2]);
  }

 private:
  static constexpr size_t kFlushBytes = size_t(256) << 20;
  cudaEvent_t a_, b_;
  void* flush_ = nullptr;
};
Timer* g_timer = nullptr;

// ---------------------------------------------------------------- peaks

// FMA-bound: 8 independent accumulator chains per thread, kIters iterations -> 16 * kIters FLOP per thread.
constexpr int kFmaIters = 4096;
__global__ void fma_peak_kernel(float* out, float seed) {
  float a[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) a[i] = seed + threadIdx.x * 1e-7f + i;
  const float m = 0.999999f, c = 1e-7f;
  for (int it = 0; it < kFmaIters; ++it) {
#pragma unroll
    for (int i = 0; i < 8; ++i) a[i] = fmaf(a[i], m, c);
  }
  float s = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) s += a[i];
  if (s == 12345.678f) out[blockIdx.x] = s;  // never true; keeps the work alive
}

using bench::Peaks;
Peaks g_peak;

Peaks measure_peaks() {
  Peaks p;
  cudaDeviceProp prop{};
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  const int blocks = prop.multiProcessorCount * 16, threads = 256;
  DevBuf out(blocks);
  const double ms_f = g_timer->median_ms(
      [&] {
        fma_peak_kernel<<<blocks, threads, 0, engine_stream()>>>(out.p, 1.f);
        CUDA_CHECK_LAUNCH();
      },
      10);
  p.flops = double(blocks) * threads * kFmaIters * 16 / (ms_f * 1e-3);
  const size_t bytes = size_t(1) << 30;
  void *src = nullptr, *dst = nullptr;
  CUDA_CHECK(cudaMalloc(&src, bytes));
  CUDA_CHECK(cudaMalloc(&dst, bytes));
  CUDA_CHECK(cudaMemset(src, 1, bytes));
  const double ms_c = g_timer->median_ms(
      [&] { CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, engine_stream())); }, 10);
  p.bw = 2.0 * bytes / (ms_c * 1e-3);  // read + write
  CUDA_CHECK(cudaFree(src));
  CUDA_CHECK(cudaFree(dst));
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  std::printf(
      "measured peak FP32: %.1f TFLOP/s (FMA kernel); bandwidth: %.0f GB/s (1 GiB D2D copy, read+write)\n\n",
      p.flops * 1e-12, p.bw * 1e-9);
  return p;
}

// ---------------------------------------------------------------- the table

using bench::Row;

// With --check, judges each row's error against kCheckTol and counts the compared outputs.
bench::Printer* g_printer = nullptr;
void print_row(const Row& r) { g_printer->row(r); }

bool selected(const std::string& name) { return bench::selected(name, g_opt.filter); }

// ---------------------------------------------------------------- cuDNN baseline

#if ENGINE_BENCH_HAS_CUDNN
#define CUDNN_CHECK(call)                                                                    \
  do {                                                                                       \
    const cudnnStatus_t st_ = (call);                                                        \
    if (st_ != CUDNN_STATUS_SUCCESS)                                                         \
      throw std::runtime_error(std::string(#call) + " failed: " + cudnnGetErrorString(st_)); \
  } while (0)

cudnnHandle_t g_cudnn = nullptr;
void* g_ws = nullptr;
constexpr size_t kWsBytes = size_t(1) << 30;

bool math_allowed(cudnnMathType_t m) {
  return g_opt.cudnn_tf32 || (m != CUDNN_TENSOR_OP_MATH && m != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION);
}

struct CudnnConv {
  cudnnTensorDescriptor_t x, y, b;
  cudnnFilterDescriptor_t w;
  cudnnConvolutionDescriptor_t conv;
  explicit CudnnConv(const kern::Conv2dShape& s) {
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&x));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&y));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&b));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, s.N, s.C, s.H, s.W));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, s.N, s.K, s.P, s.Q));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(b, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, s.K, 1, 1));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, s.K, s.C, s.R, s.S));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv, s.pad_h, s.pad_w, s.stride_h, s.stride_w, 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionMathType(conv, g_opt.cudnn_tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
  }
  ~CudnnConv() {
    cudnnDestroyTensorDescriptor(x);
    cudnnDestroyTensorDescriptor(y);
    cudnnDestroyTensorDescriptor(b);
    cudnnDestroyFilterDescriptor(w);
    cudnnDestroyConvolutionDescriptor(conv);
  }
};

// Picks the fastest successful result whose math type is allowed; returns its index or -1.
template <typename Perf>
int pick(const Perf* perf, int n) {
  for (int i = 0; i < n; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS && math_allowed(perf[i].mathType)) return i;
  return -1;
}
#endif

// ---------------------------------------------------------------- conv

using bench::ConvCase;
using bench::kConvs;
kern::Conv2dShape conv_shape(const ConvCase& c) { return bench::conv_shape(c, kBatch); }

void bench_conv(const ConvCase& c) {
  const kern::Conv2dShape s = conv_shape(c);
  const std::string shape = bench::conv_shape_str(s);
  const int64_t nx = s.N * s.C * s.H * s.W, nw = s.K * s.C * s.R * s.S, ny = s.N * s.K * s.P * s.Q;
  DevBuf x = randn_buf(nx), w = randn_buf(nw, 0.1f), b = randn_buf(s.K), dy = randn_buf(ny);
  DevBuf y(ny), dx(nx), dw(nw), db(s.K), ry(ny), rdx(nx), rdw(nw), rdb(s.K);
  const double flops = s.flops();
  Row fwd{std::string(c.name) + " fwd", shape}, bd{std::string(c.name) + " bwd-data", shape},
      bw{std::string(c.name) + " bwd-filter", shape};
  fwd.flops = bd.flops = bw.flops = flops;
  fwd.bytes = 4.0 * (nx + nw + ny + s.K), bd.bytes = 4.0 * (ny + nw + nx),
  bw.bytes = 4.0 * (ny + nx + nw + s.K);
  fwd.ours_ms = g_timer->median_ms([&] { kern::cuda::conv2d_forward(s, x.p, w.p, b.p, y.p); });
  bd.ours_ms = g_timer->median_ms([&] { kern::cuda::conv2d_backward_input(s, dy.p, w.p, dx.p); });
  bw.ours_ms = g_timer->median_ms([&] { kern::cuda::conv2d_backward_weight(s, dy.p, x.p, dw.p, db.p); });
#if ENGINE_BENCH_HAS_CUDNN
  if (g_cudnn) {
    try {
      CudnnConv d(s);
      const float one = 1.f, zero = 0.f;
      int n = 0;
      cudnnConvolutionFwdAlgoPerf_t pf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(g_cudnn, d.x, x.p, d.w, w.p, d.conv, d.y, ry.p,
                                                         CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, pf, g_ws,
                                                         kWsBytes));
      if (int i = pick(pf, n); i >= 0) {
        const auto algo = pf[i].algo;
        CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, pf[i].mathType));
        auto run = [&] {
          CUDNN_CHECK(cudnnConvolutionForward(g_cudnn, &one, d.x, x.p, d.w, w.p, d.conv, algo, g_ws, kWsBytes,
                                              &zero, d.y, ry.p));
          CUDNN_CHECK(cudnnAddTensor(g_cudnn, &one, d.b, b.p, &one, d.y, ry.p));
        };
        fwd.base_ms = g_timer->median_ms(run);
        fwd.note = "cuDNN fwd algo " + std::to_string(int(algo)) + " + AddTensor(bias)";
        if (g_opt.check) fwd.err = rel_err(y.host(), ry.host());
      }
      cudnnConvolutionBwdDataAlgoPerf_t pd[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
      CUDNN_CHECK(
          cudnnSetConvolutionMathType(d.conv, g_opt.cudnn_tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
      CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(g_cudnn, d.w, w.p, d.y, dy.p, d.conv, d.x,
                                                              rdx.p, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                              &n, pd, g_ws, kWsBytes));
      if (int i = pick(pd, n); i >= 0) {
        const auto algo = pd[i].algo;
        CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, pd[i].mathType));
        bd.base_ms = g_timer->median_ms([&] {
          CUDNN_CHECK(cudnnConvolutionBackwardData(g_cudnn, &one, d.w, w.p, d.y, dy.p, d.conv, algo, g_ws,
                                                   kWsBytes, &zero, d.x, rdx.p));
        });
        bd.note = "cuDNN bwd-data algo " + std::to_string(int(algo));
        if (g_opt.check) bd.err = rel_err(dx.host(), rdx.host());
      }
      cudnnConvolutionBwdFilterAlgoPerf_t pw[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
      CUDNN_CHECK(
          cudnnSetConvolutionMathType(d.conv, g_opt.cudnn_tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
      CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
          g_cudnn, d.x, x.p, d.y, dy.p, d.conv, d.w, rdw.p, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, pw,
          g_ws, kWsBytes));
      if (int i = pick(pw, n); i >= 0) {
        const auto algo = pw[i].algo;
        CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, pw[i].mathType));
        bw.base_ms = g_timer->median_ms([&] {
          CUDNN_CHECK(cudnnConvolutionBackwardFilter(g_cudnn, &one, d.x, x.p, d.y, dy.p, d.conv, algo, g_ws,
                                                     kWsBytes, &zero, d.w, rdw.p));
          CUDNN_CHECK(cudnnConvolutionBackwardBias(g_cudnn, &one, d.y, dy.p, &zero, d.b, rdb.p));
        });
        bw.note = "cuDNN bwd-filter algo " + std::to_string(int(algo)) + " + BackwardBias";
        if (g_opt.check) bw.err = std::max(rel_err(dw.host(), rdw.host()), rel_err(db.host(), rdb.host()));
      }
    } catch (const std::exception& e) {
      fwd.note = std::string("cuDNN failed: ") + e.what();
    }
  }
#endif
  print_row(fwd);
  print_row(bd);
  print_row(bw);
}

// ---------------------------------------------------------------- attention (cuBLAS-GEMM + softmax path)

// Row-major C(M,N) = alpha op(A) op(B) + beta C for `batch` matrices: column-major cuBLAS on the transposes.
cublasHandle_t g_cublas = nullptr;
void sgemm_rm(int64_t batch, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
              int64_t lda, int64_t sa, const float* B, int64_t ldb, int64_t sb, float beta, float* C,
              int64_t ldc, int64_t sc) {
  CUBLAS_CHECK(cublasSgemmStridedBatched(g_cublas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                         ta ? CUBLAS_OP_T : CUBLAS_OP_N, int(N), int(M), int(K), &alpha, B,
                                         int(ldb), sb, A, int(lda), sa, &beta, C, int(ldc), sc, int(batch)));
}

// In-place row softmax of S (rows, L), one warp per row.
__global__ void softmax_rows_kernel(int64_t rows, int L, float* s) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  float* r = s + row * L;
  float m = -INFINITY;
  for (int j = lane; j < L; j += 32) m = fmaxf(m, r[j]);
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  float sum = 0;
  for (int j = lane; j < L; j += 32) {
    const float e = __expf(r[j] - m);
    r[j] = e;
    sum += e;
  }
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  const float inv = 1.f / sum;
  for (int j = lane; j < L; j += 32) r[j] *= inv;
}

// dS = P * (dP - rowsum(P * dP)), written over dP; one warp per row.
__global__ void softmax_bwd_rows_kernel(int64_t rows, int L, const float* p, float* dp) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float* pr = p + row * L;
  float* dr = dp + row * L;
  float delta = 0;
  for (int j = lane; j < L; j += 32) delta += pr[j] * dr[j];
  for (int o = 16; o > 0; o >>= 1) delta += __shfl_xor_sync(0xffffffffu, delta, o);
  for (int j = lane; j < L; j += 32) dr[j] = pr[j] * (dr[j] - delta);
}

void softmax_rows(int64_t rows, int L, float* s) {
  softmax_rows_kernel<<<unsigned((rows + 7) / 8), 256, 0, engine_stream()>>>(rows, L, s);
  CUDA_CHECK_LAUNCH();
}
void softmax_bwd_rows(int64_t rows, int L, const float* p, float* dp) {
  softmax_bwd_rows_kernel<<<unsigned((rows + 7) / 8), 256, 0, engine_stream()>>>(rows, L, p, dp);
  CUDA_CHECK_LAUNCH();
}

void bench_attention(int64_t L) {
  const int64_t heads = 8, D = 8, BH = kBatch * heads, n = BH * L * D;
  const float scale = 1.f / std::sqrt(float(D));
  char shape[64];
  std::snprintf(shape, sizeof shape, "BH=%lld L=%lld D=%lld", (long long)BH, (long long)L, (long long)D);
  DevBuf q = randn_buf(n), k = randn_buf(n), v = randn_buf(n), dout = randn_buf(n);
  DevBuf o(n), lse(BH * L), dq(n), dk(n), dv(n), ro(n), rdq(n), rdk(n), rdv(n), S(BH * L * L), dP(BH * L * L);
  const int64_t LL = L * L, LD = L * D;
  auto base_fwd = [&] {
    sgemm_rm(BH, false, true, L, L, D, scale, q.p, D, LD, k.p, D, LD, 0.f, S.p, L, LL);  // S = s Q K^T
    softmax_rows(BH * L, int(L), S.p);                                                   // P
    sgemm_rm(BH, false, false, L, D, L, 1.f, S.p, L, LL, v.p, D, LD, 0.f, ro.p, D, LD);  // O = P V
  };
  auto base_bwd = [&] {
    sgemm_rm(BH, false, true, L, L, D, scale, q.p, D, LD, k.p, D, LD, 0.f, S.p, L, LL);      // recompute S
    softmax_rows(BH * L, int(L), S.p);                                                       // P
    sgemm_rm(BH, true, false, L, D, L, 1.f, S.p, L, LL, dout.p, D, LD, 0.f, rdv.p, D, LD);   // dV = P^T dO
    sgemm_rm(BH, false, true, L, L, D, 1.f, dout.p, D, LD, v.p, D, LD, 0.f, dP.p, L, LL);    // dP = dO V^T
    softmax_bwd_rows(BH * L, int(L), S.p, dP.p);                                             // dS
    sgemm_rm(BH, false, false, L, D, L, scale, dP.p, L, LL, k.p, D, LD, 0.f, rdq.p, D, LD);  // dQ = s dS K
    sgemm_rm(BH, true, false, L, D, L, scale, dP.p, L, LL, q.p, D, LD, 0.f, rdk.p, D, LD);   // dK = s dS^T Q
  };
  Row f{"attention fwd", shape}, b{"attention bwd", shape};
  f.flops = 4.0 * BH * LL * D;  // QK^T + PV
  b.flops = 8.0 * BH * LL * D;  // dV, dP, dQ, dK (recomputation not counted)
  f.bytes = 4.0 * (4 * n + BH * L), b.bytes = 4.0 * (8 * n + BH * L);
  f.ours_ms = g_timer->median_ms(
      [&] { kern::cuda::attention_forward(BH, L, L, D, scale, q.p, k.p, v.p, o.p, lse.p); });
  f.base_ms = g_timer->median_ms(base_fwd);
  kern::cuda::attention_forward(BH, L, L, D, scale, q.p, k.p, v.p, o.p, lse.p);
  b.ours_ms = g_timer->median_ms([&] {
    kern::cuda::attention_backward(BH, L, L, D, scale, q.p, k.p, v.p, o.p, lse.p, dout.p, dq.p, dk.p, dv.p);
  });
  b.base_ms = g_timer->median_ms(base_bwd);
  f.note = "cuBLAS sgemm strided-batched x2 + softmax kernel";
  b.note = "cuBLAS: recompute S, 4 GEMMs + softmax bwd";
  if (g_opt.check) {
    base_fwd();
    f.err = rel_err(o.host(), ro.host());
    b.err = std::max(
        {rel_err(dq.host(), rdq.host()), rel_err(dk.host(), rdk.host()), rel_err(dv.host(), rdv.host())});
  }
  print_row(f);
  print_row(b);
}

// ---------------------------------------------------------------- group norm, silu

using bench::Act;
using bench::kActs;

void bench_group_norm(const Act& a) {
  const int64_t N = kBatch, C = a.C, HW = a.H * a.H, n = N * C * HW, G = kGroups;
  const double eps = 1e-5;
  const std::string shape = bench::act_shape_str(N, a, G);
  DevBuf x = randn_buf(n), gamma = randn_buf(C), beta = randn_buf(C), dy = randn_buf(n);
  DevBuf y(n), mean(N * G), rstd(N * G), dx(n), dgamma(C), dbeta(C);
  Row f{"group_norm fwd", shape}, b{"group_norm bwd", shape};
  f.bytes = 4.0 * 2 * n, b.bytes = 4.0 * 3 * n;  // x in, y out | dy, x in, dx out
  f.ours_ms = g_timer->median_ms(
      [&] { kern::cuda::group_norm_forward(N, C, HW, G, eps, x.p, gamma.p, beta.p, y.p, mean.p, rstd.p); });
  b.ours_ms = g_timer->median_ms([&] {
    kern::cuda::group_norm_backward(N, C, HW, G, dy.p, x.p, mean.p, rstd.p, gamma.p, dx.p, dgamma.p, dbeta.p);
  });
  f.note = b.note = "no vendor baseline: vs bandwidth floor";
  if (g_opt.check) {
    const auto hx = x.host(), hg = gamma.host(), hb = beta.host(), hdy = dy.host();
    std::vector<float> ry(n), rm(N * G), rr(N * G), rdx(n), rdg(C), rdb(C);
    kern::cpu::group_norm_forward<float>(N, C, HW, G, eps, hx.data(), hg.data(), hb.data(), ry.data(),
                                         rm.data(), rr.data());
    kern::cpu::group_norm_backward<float>(N, C, HW, G, hdy.data(), hx.data(), rm.data(), rr.data(), hg.data(),
                                          rdx.data(), rdg.data(), rdb.data());
    f.err = rel_err(y.host(), ry);
    b.err = std::max({rel_err(dx.host(), rdx), rel_err(dgamma.host(), rdg), rel_err(dbeta.host(), rdb)});
    f.note = b.note = "no vendor baseline: vs bandwidth floor (check vs CPU kernel)";
  }
  print_row(f);
  print_row(b);
}

void bench_silu(const Act& a) {
  const int64_t n = kBatch * a.C * a.H * a.H;
  const std::string shape = bench::act_shape_str(kBatch, a);
  DevBuf x = randn_buf(n), dy = randn_buf(n), y(n), dx(n);
  Row f{"silu fwd", shape}, b{"silu bwd", shape};
  f.bytes = 4.0 * 2 * n, b.bytes = 4.0 * 3 * n;
  f.ours_ms = g_timer->median_ms([&] { kern::cuda::unary(kern::Unary::Silu, n, x.p, y.p); });
  b.ours_ms = g_timer->median_ms([&] { kern::cuda::silu_backward(n, x.p, dy.p, dx.p); });
  f.note = b.note = "vs bandwidth floor";
  if (g_opt.check) {
    const auto hx = x.host(), hdy = dy.host();
    std::vector<float> ry(n), rdx(n);
    kern::cpu::unary<float>(kern::Unary::Silu, n, hx.data(), ry.data());
    kern::cpu::silu_backward<float>(n, hx.data(), hdy.data(), rdx.data());
    f.err = rel_err(y.host(), ry);
    b.err = rel_err(dx.host(), rdx);
  }
  print_row(f);
  print_row(b);
}

// ---------------------------------------------------------------- AdamW

void bench_adamw(bool flat) {
  // The real parameter list of the seed model (319 tensors, 1,707,307 values), or one flat tensor.
  std::vector<int64_t> sizes;
  {
    engine::models::ConditionalUNet model(engine::models::ConditionalConfig::seed(), 0);
    for (const auto& [name, t] : model.named_parameters()) sizes.push_back(t.numel());
  }
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  if (flat) sizes = {total};
  const int nt = static_cast<int>(sizes.size());
  DevBuf p = randn_buf(total), g = randn_buf(total), m = randn_buf(total, 0.01f), v(total);
  {
    DevBuf r = randn_buf(total, 0.01f);  // v >= 0
    kern::cuda::unary(kern::Unary::Square, total, r.p, v.p);
  }
  std::vector<float*> pp, mp, vp;
  std::vector<const float*> gp;
  int64_t off = 0;
  for (int64_t s : sizes) {
    pp.push_back(p.p + off), gp.push_back(g.p + off), mp.push_back(m.p + off), vp.push_back(v.p + off);
    off += s;
  }
  kern::AdamWParams hp{1e-3, 0.9, 0.999, 1e-8, 0.01, 1};
  char shape[64];
  std::snprintf(shape, sizeof shape, "%d tensors, %lld values", nt, (long long)total);
  Row r{flat ? "adamw (1 flat tensor)" : "adamw (model params)", shape};
  r.bytes = 4.0 * 7 * total;  // read p, g, m, v; write p, m, v
  r.note = "vs bandwidth floor";
  if (g_opt.check) {  // one step from the same state on CPU and GPU
    auto hp0 = p.host(), hg = g.host(), hm = m.host(), hv = v.host();
    std::vector<float*> cp, cm, cv;
    std::vector<const float*> cg;
    off = 0;
    for (int64_t s : sizes) {
      cp.push_back(hp0.data() + off), cg.push_back(hg.data() + off), cm.push_back(hm.data() + off),
          cv.push_back(hv.data() + off);
      off += s;
    }
    kern::cpu::adamw_step<float>(nt, cp.data(), cg.data(), cm.data(), cv.data(), sizes.data(), hp);
    kern::cuda::adamw_step(nt, pp.data(), gp.data(), mp.data(), vp.data(), sizes.data(), hp);
    r.err = std::max({rel_err(p.host(), hp0), rel_err(m.host(), hm), rel_err(v.host(), hv)});
  }
  r.ours_ms = g_timer->median_ms([&] {
    kern::cuda::adamw_step(nt, pp.data(), gp.data(), mp.data(), vp.data(), sizes.data(), hp);
    ++hp.step;
  });
  print_row(r);
}

}  // namespace

int main(int argc, char** argv) {
  g_opt.runs = 50, g_opt.warmup = 5;
  const int rc = bench::parse_options(
      argc, argv, bench::kOptWarmup | bench::kOptCheck | bench::kOptCudnnTf32,
      "usage: %s [--check] [--quick] [--runs N (50)] [--warmup N (5)] [--filter SUBSTR] [--cudnn-tf32]\n"
      "  --check       compare outputs with cuDNN / cuBLAS / the CPU kernels (exit 1 on failure)\n"
      "  --quick       10 runs, 2 warm-up (also implied by --benchmark_min_time=..., for gpu_check.sh)\n"
      "  --filter      only rows whose kernel name contains SUBSTR (conv, attention, group_norm, silu, "
      "adamw, op)\n"
      "  --cudnn-tf32  let cuDNN use TF32 tensor cores (CUDNN_DEFAULT_MATH); default strict FP32 "
      "(FMA_MATH)\n",
      g_opt);
  if (rc >= 0) return rc;
  if (g_opt.quick) g_opt.runs = std::min(g_opt.runs, 10), g_opt.warmup = std::min(g_opt.warmup, 2);
  try {
    if (engine::cuda::device_count() == 0) {
      if (g_opt.check) {  // a check that checked nothing must not report success
        std::fprintf(stderr, "cuda_kernels_bench: no CUDA device: nothing was checked\n");
        return 1;
      }
      std::printf("cuda_kernels_bench: no CUDA device; nothing to benchmark\n");
      return 0;
    }
    engine::cuda::set_device(0);
    Timer timer;
    g_timer = &timer;
    CUBLAS_CHECK(cublasCreate(&g_cublas));
    CUBLAS_CHECK(cublasSetStream(g_cublas, engine_stream()));
    CUBLAS_CHECK(cublasSetMathMode(g_cublas, CUBLAS_DEFAULT_MATH));  // strict FP32, no TF32
#if ENGINE_BENCH_HAS_CUDNN
    if (cudnnCreate(&g_cudnn) == CUDNN_STATUS_SUCCESS) {
      CUDNN_CHECK(cudnnSetStream(g_cudnn, engine_stream()));
      CUDA_CHECK(cudaMalloc(&g_ws, kWsBytes));
      std::printf(
          "cuDNN %zu, math %s\n", cudnnGetVersion(),
          g_opt.cudnn_tf32 ? "CUDNN_DEFAULT_MATH (TF32 allowed)" : "CUDNN_FMA_MATH (strict FP32, no TF32)");
    } else {
      g_cudnn = nullptr;
      std::printf("cuDNN baseline unavailable (cudnnCreate failed)\n");
    }
#else
    std::printf("cuDNN baseline unavailable (built without cuDNN)\n");
#endif
    std::printf("batch %lld, median of %d runs after %d warm-up, L2 flushed before each run\n",
                (long long)kBatch, g_opt.runs, g_opt.warmup);
    g_peak = measure_peaks();
    bench::Printer printer(g_peak, 4, 0, g_opt.check ? kCheckTol : NAN);
    g_printer = &printer;
    printer.header();
    bench::run_unet_rows(selected, {bench_conv, bench_attention, bench_group_norm, bench_silu, [] {
                                      bench_adamw(false);
                                      bench_adamw(true);
                                    }});
    bench::bench_op_table(engine::Device::cuda(0), g_opt.filter, printer,
                          [](const std::function<void()>& fn) { return g_timer->median_ms(fn); });
    std::printf(
        "\nfloor = max(FLOPs / measured peak FP32, minimal bytes / measured bandwidth); %%floor = floor / "
        "ours. ours/b < 1: ours faster than the baseline.\n");
    if (g_opt.check && printer.checked() == 0) {
      std::fprintf(stderr,
                   "cuda_kernels_bench: --check compared nothing (filter '%s'): nothing was checked\n",
                   g_opt.filter.c_str());
      return 1;
    }
    if (g_opt.check)
      std::printf("check: %s (%lld outputs, tolerance %.0e)\n", printer.failed() ? "FAILED" : "all ok",
                  static_cast<long long>(printer.checked()), kCheckTol);
    if (printer.failed()) return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cuda_kernels_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
