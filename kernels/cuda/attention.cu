// Fused (flash-style) scaled dot-product attention over BH heads, q (BH, Lq, D), k/v (BH, Lk, D).
// The Lq x Lk score matrix never touches global memory.
//   forward:  one thread per query, 64 queries per block; 64-key K/V tiles staged in shared memory;
//             online softmax (running max m, running sum l) updated every 8 keys; writes o and
//             lse = m + log(l).
//   backward: delta = rowsum(dO * O) first; then dK/dV with T threads per key (each owning D/T of the
//             head dims, dot products combined by warp shuffles) looping over all queries in 64-query
//             shared-memory tiles, and dQ the same way per query looping over all keys. P is recomputed
//             from lse. Every output element is owned by one thread and accumulated in a fixed order:
//             no atomics, bitwise deterministic.
// Non-finite scores follow torch.softmax, like the CPU kernel: a NaN score, a +inf score or a row of
// only -inf scores gives a NaN row (o and lse); a -inf score alone gets probability 0.
// Head dims up to 64 are supported: kernels are templated on DM in {8, 16, 32, 64} (D <= DM, the
// padding lanes hold zeros).
#include <cmath>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_kernels.h"

namespace kern::cuda {
namespace {

constexpr int kTile = 64;  // queries per forward block; keys/queries per tile everywhere
constexpr int kGroup = 8;  // keys per online-softmax update
constexpr int64_t kMaxGridY = 65535;

// ---- forward

template <int DM>
__global__ void __launch_bounds__(kTile)
    attn_fwd_kernel(int64_t Lq, int64_t Lk, int D, float scale, const float* __restrict__ q,
                    const float* __restrict__ k, const float* __restrict__ v, float* __restrict__ o,
                    float* __restrict__ lse) {
  __shared__ __align__(16) float Ks[kTile][DM];
  __shared__ __align__(16) float Vs[kTile][DM];
  const int64_t bh = blockIdx.y;
  const int64_t qi = int64_t(blockIdx.x) * kTile + threadIdx.x;
  const bool valid = qi < Lq;
  const float* kb = k + bh * Lk * D;
  const float* vb = v + bh * Lk * D;

  float qr[DM], acc[DM];
#pragma unroll
  for (int d = 0; d < DM; ++d) {
    qr[d] = (valid && d < D) ? q[(bh * Lq + qi) * D + d] * scale : 0.f;
    acc[d] = 0.f;
  }
  float m = -INFINITY, l = 0.f;

  for (int64_t k0 = 0; k0 < Lk; k0 += kTile) {
    const int n = static_cast<int>(Lk - k0 < kTile ? Lk - k0 : kTile);
    for (int e = threadIdx.x; e < kTile * DM; e += blockDim.x) {
      const int j = e / DM, d = e % DM;
      const bool ok = j < n && d < D;
      Ks[j][d] = ok ? kb[(k0 + j) * D + d] : 0.f;
      Vs[j][d] = ok ? vb[(k0 + j) * D + d] : 0.f;
    }
    __syncthreads();
    for (int j0 = 0; j0 < n; j0 += kGroup) {
      float s[kGroup];
      float mx = m;
#pragma unroll
      for (int jj = 0; jj < kGroup; ++jj) {
        const int j = j0 + jj;
        float dot = -INFINITY;
        if (j < n) {
          const float4* kr = reinterpret_cast<const float4*>(&Ks[j][0]);
          float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
#pragma unroll
          for (int d4 = 0; d4 < DM / 4; ++d4) {
            const float4 kv = kr[d4];
            a0 = fmaf(qr[4 * d4 + 0], kv.x, a0);
            a1 = fmaf(qr[4 * d4 + 1], kv.y, a1);
            a2 = fmaf(qr[4 * d4 + 2], kv.z, a2);
            a3 = fmaf(qr[4 * d4 + 3], kv.w, a3);
          }
          dot = (a0 + a1) + (a2 + a3);
        }
        s[jj] = dot;
        // NaN-propagating max (fmaxf would drop a NaN score): once NaN, mx stays NaN.
        mx = (dot > mx || dot != dot) ? dot : mx;
      }
      // mref keeps exp() finite while every score so far is -inf (then corr = p = 0). A NaN or +inf
      // score makes corr or p NaN (inf - inf), hence l and the whole row NaN, as in torch.softmax.
      const float mref = mx == -INFINITY ? 0.f : mx;
      const float corr = expf(m - mref);
      l *= corr;
#pragma unroll
      for (int d = 0; d < DM; ++d) acc[d] *= corr;
#pragma unroll
      for (int jj = 0; jj < kGroup; ++jj) {
        const int j = j0 + jj;
        if (j < n) {
          const float p = expf(s[jj] - mref);
          l += p;
          const float4* vr = reinterpret_cast<const float4*>(&Vs[j][0]);
#pragma unroll
          for (int d4 = 0; d4 < DM / 4; ++d4) {
            const float4 vv = vr[d4];
            acc[4 * d4 + 0] = fmaf(p, vv.x, acc[4 * d4 + 0]);
            acc[4 * d4 + 1] = fmaf(p, vv.y, acc[4 * d4 + 1]);
            acc[4 * d4 + 2] = fmaf(p, vv.z, acc[4 * d4 + 2]);
            acc[4 * d4 + 3] = fmaf(p, vv.w, acc[4 * d4 + 3]);
          }
        }
      }
      m = mx;
    }
    __syncthreads();  // the next tile overwrites Ks/Vs
  }

  if (valid) {
    // l > 0 unless every score was -inf (torch.softmax gives NaN there) or l is NaN.
    const float inv = l > 0.f ? 1.f / l : NAN;
    float* orow = o + (bh * Lq + qi) * D;
#pragma unroll
    for (int d = 0; d < DM; ++d)
      if (d < D) orow[d] = acc[d] * inv;
    lse[bh * Lq + qi] = l > 0.f ? m + logf(l) : NAN;
  }
}

// ---- backward

// delta[r] = sum_d dout[r, d] * o[r, d]; one warp per row.
__global__ void attn_delta_kernel(int64_t rows, int D, const float* __restrict__ o,
                                  const float* __restrict__ dout, float* __restrict__ delta) {
  const int lane = threadIdx.x & 31;
  const int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (row >= rows) return;  // whole warp leaves together
  float s = 0.f;
  for (int d = lane; d < D; d += 32) s = fmaf(dout[row * D + d], o[row * D + d], s);
  s = warp_sum(s);
  if (lane == 0) delta[row] = s;
}

// Threads per key/query row: each owns DPT = DM / T head dims d = t + T*e (interleaved so that the T
// lanes of a row read consecutive shared-memory words).
template <int DM>
struct Split {
  static constexpr int DPT = DM < 16 ? DM : 16;
  static constexpr int T = DM / DPT;
};

// Sum over the T consecutive lanes that share a row (T in {1, 2, 4}); all lanes must call it.
template <int T>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int off = T / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// dV[j] = sum_i P[i, j] dO[i];  dK[j] = scale * sum_i dS[i, j] q[i],  dS = P * (dO.v_j - delta).
// Block: kTile keys x T threads; loops over all queries in kTile-query tiles.
template <int DM>
__global__ void __launch_bounds__(kTile* Split<DM>::T)
    attn_bwd_dkdv_kernel(int64_t Lq, int64_t Lk, int D, float scale, const float* __restrict__ q,
                         const float* __restrict__ k, const float* __restrict__ v,
                         const float* __restrict__ lse, const float* __restrict__ delta,
                         const float* __restrict__ dout, float* __restrict__ dk, float* __restrict__ dv) {
  constexpr int DPT = Split<DM>::DPT, T = Split<DM>::T;
  __shared__ float Qs[kTile][DM];
  __shared__ float dOs[kTile][DM];
  __shared__ float Ls[kTile], Ds[kTile];
  const int64_t bh = blockIdx.y;
  const int t = threadIdx.x % T;
  const int64_t kj = int64_t(blockIdx.x) * kTile + threadIdx.x / T;
  const bool valid = kj < Lk;

  float kr[DPT], vr[DPT], dka[DPT], dva[DPT];
#pragma unroll
  for (int e = 0; e < DPT; ++e) {
    const int d = t + T * e;
    const bool ok = valid && d < D;
    kr[e] = ok ? k[(bh * Lk + kj) * D + d] : 0.f;
    vr[e] = ok ? v[(bh * Lk + kj) * D + d] : 0.f;
    dka[e] = 0.f;
    dva[e] = 0.f;
  }

  for (int64_t q0 = 0; q0 < Lq; q0 += kTile) {
    const int nq = static_cast<int>(Lq - q0 < kTile ? Lq - q0 : kTile);
    for (int e = threadIdx.x; e < kTile * DM; e += blockDim.x) {
      const int i = e / DM, d = e % DM;
      const bool ok = i < nq && d < D;
      Qs[i][d] = ok ? q[(bh * Lq + q0 + i) * D + d] : 0.f;
      dOs[i][d] = ok ? dout[(bh * Lq + q0 + i) * D + d] : 0.f;
    }
    for (int i = threadIdx.x; i < kTile; i += blockDim.x) {
      Ls[i] = i < nq ? lse[bh * Lq + q0 + i] : 0.f;
      Ds[i] = i < nq ? delta[bh * Lq + q0 + i] : 0.f;
    }
    __syncthreads();
    for (int i = 0; i < nq; ++i) {
      float sp = 0.f, dpp = 0.f;
#pragma unroll
      for (int e = 0; e < DPT; ++e) {
        sp = fmaf(Qs[i][t + T * e], kr[e], sp);
        dpp = fmaf(dOs[i][t + T * e], vr[e], dpp);
      }
      const float s = group_sum<T>(sp) * scale;
      const float dp = group_sum<T>(dpp);
      const float p = expf(s - Ls[i]);
      const float ds = p * (dp - Ds[i]);
#pragma unroll
      for (int e = 0; e < DPT; ++e) {
        dva[e] = fmaf(p, dOs[i][t + T * e], dva[e]);
        dka[e] = fmaf(ds, Qs[i][t + T * e], dka[e]);
      }
    }
    __syncthreads();  // the next tile overwrites the shared arrays
  }

  if (valid) {
#pragma unroll
    for (int e = 0; e < DPT; ++e) {
      const int d = t + T * e;
      if (d < D) {
        dk[(bh * Lk + kj) * D + d] = dka[e] * scale;
        dv[(bh * Lk + kj) * D + d] = dva[e];
      }
    }
  }
}

// dQ[i] = scale * sum_j dS[i, j] k[j]. Block: kTile queries x T threads; loops over all keys.
template <int DM>
__global__ void __launch_bounds__(kTile* Split<DM>::T)
    attn_bwd_dq_kernel(int64_t Lq, int64_t Lk, int D, float scale, const float* __restrict__ q,
                       const float* __restrict__ k, const float* __restrict__ v,
                       const float* __restrict__ lse, const float* __restrict__ delta,
                       const float* __restrict__ dout, float* __restrict__ dq) {
  constexpr int DPT = Split<DM>::DPT, T = Split<DM>::T;
  __shared__ float Ks[kTile][DM];
  __shared__ float Vs[kTile][DM];
  const int64_t bh = blockIdx.y;
  const int t = threadIdx.x % T;
  const int64_t qi = int64_t(blockIdx.x) * kTile + threadIdx.x / T;
  const bool valid = qi < Lq;

  float qr[DPT], dor[DPT], dqa[DPT];
#pragma unroll
  for (int e = 0; e < DPT; ++e) {
    const int d = t + T * e;
    const bool ok = valid && d < D;
    qr[e] = ok ? q[(bh * Lq + qi) * D + d] : 0.f;
    dor[e] = ok ? dout[(bh * Lq + qi) * D + d] : 0.f;
    dqa[e] = 0.f;
  }
  const float li = valid ? lse[bh * Lq + qi] : 0.f;
  const float di = valid ? delta[bh * Lq + qi] : 0.f;

  for (int64_t k0 = 0; k0 < Lk; k0 += kTile) {
    const int nk = static_cast<int>(Lk - k0 < kTile ? Lk - k0 : kTile);
    for (int e = threadIdx.x; e < kTile * DM; e += blockDim.x) {
      const int j = e / DM, d = e % DM;
      const bool ok = j < nk && d < D;
      Ks[j][d] = ok ? k[(bh * Lk + k0 + j) * D + d] : 0.f;
      Vs[j][d] = ok ? v[(bh * Lk + k0 + j) * D + d] : 0.f;
    }
    __syncthreads();
    for (int j = 0; j < nk; ++j) {
      float sp = 0.f, dpp = 0.f;
#pragma unroll
      for (int e = 0; e < DPT; ++e) {
        sp = fmaf(qr[e], Ks[j][t + T * e], sp);
        dpp = fmaf(dor[e], Vs[j][t + T * e], dpp);
      }
      const float s = group_sum<T>(sp) * scale;
      const float dp = group_sum<T>(dpp);
      const float p = expf(s - li);
      const float ds = p * (dp - di);
#pragma unroll
      for (int e = 0; e < DPT; ++e) dqa[e] = fmaf(ds, Ks[j][t + T * e], dqa[e]);
    }
    __syncthreads();
  }

  if (valid) {
#pragma unroll
    for (int e = 0; e < DPT; ++e) {
      const int d = t + T * e;
      if (d < D) dq[(bh * Lq + qi) * D + d] = dqa[e] * scale;
    }
  }
}

int padded_dim(int64_t D, const char* fn) {
  if (D <= 0 || D > 64)
    throw ::engine::Error(std::string("kern::cuda::") + fn + ": head dim D = " + std::to_string(D) +
                                " unsupported (1..64)");
  return D <= 8 ? 8 : D <= 16 ? 16 : D <= 32 ? 32 : 64;
}

template <int DM>
void forward_dm(int64_t BH, int64_t Lq, int64_t Lk, int D, float scale, const float* q, const float* k,
                const float* v, float* o, float* lse) {
  for (int64_t b0 = 0; b0 < BH; b0 += kMaxGridY) {
    const int64_t nb = std::min(kMaxGridY, BH - b0);
    dim3 grid(static_cast<unsigned>(ceil_div(Lq, kTile)), static_cast<unsigned>(nb));
    attn_fwd_kernel<DM><<<grid, kTile, 0, engine_stream()>>>(
        Lq, Lk, D, scale, q + b0 * Lq * D, k + b0 * Lk * D, v + b0 * Lk * D, o + b0 * Lq * D, lse + b0 * Lq);
    CUDA_CHECK_LAUNCH();
  }
}

template <int DM>
void backward_dm(int64_t BH, int64_t Lq, int64_t Lk, int D, float scale, const float* q, const float* k,
                 const float* v, const float* lse, const float* delta, const float* dout, float* dq,
                 float* dk, float* dv) {
  constexpr int threads = kTile * Split<DM>::T;
  for (int64_t b0 = 0; b0 < BH; b0 += kMaxGridY) {
    const int64_t nb = std::min(kMaxGridY, BH - b0);
    const float *qb = q + b0 * Lq * D, *kb = k + b0 * Lk * D, *vb = v + b0 * Lk * D;
    const float *lb = lse + b0 * Lq, *db = delta + b0 * Lq, *gb = dout + b0 * Lq * D;
    if (Lk > 0) {
      dim3 grid(static_cast<unsigned>(ceil_div(Lk, kTile)), static_cast<unsigned>(nb));
      attn_bwd_dkdv_kernel<DM><<<grid, threads, 0, engine_stream()>>>(Lq, Lk, D, scale, qb, kb, vb, lb, db,
                                                                      gb, dk + b0 * Lk * D, dv + b0 * Lk * D);
      CUDA_CHECK_LAUNCH();
    }
    if (Lq > 0) {
      dim3 grid(static_cast<unsigned>(ceil_div(Lq, kTile)), static_cast<unsigned>(nb));
      attn_bwd_dq_kernel<DM>
          <<<grid, threads, 0, engine_stream()>>>(Lq, Lk, D, scale, qb, kb, vb, lb, db, gb, dq + b0 * Lq * D);
      CUDA_CHECK_LAUNCH();
    }
  }
}

}  // namespace

void attention_forward(int64_t BH, int64_t Lq, int64_t Lk, int64_t D, double scale, const float* q,
                       const float* k, const float* v, float* o, float* lse) {
  const int dm = padded_dim(D, "attention_forward");
  if (BH == 0 || Lq == 0) return;
  const int d = static_cast<int>(D);
  const float sc = static_cast<float>(scale);
  switch (dm) {
    case 8:
      return forward_dm<8>(BH, Lq, Lk, d, sc, q, k, v, o, lse);
    case 16:
      return forward_dm<16>(BH, Lq, Lk, d, sc, q, k, v, o, lse);
    case 32:
      return forward_dm<32>(BH, Lq, Lk, d, sc, q, k, v, o, lse);
    default:
      return forward_dm<64>(BH, Lq, Lk, d, sc, q, k, v, o, lse);
  }
}

void attention_backward(int64_t BH, int64_t Lq, int64_t Lk, int64_t D, double scale, const float* q,
                        const float* k, const float* v, const float* o, const float* lse, const float* dout,
                        float* dq, float* dk, float* dv) {
  const int dm = padded_dim(D, "attention_backward");
  if (BH == 0 || (Lq == 0 && Lk == 0)) return;
  const int d = static_cast<int>(D);
  const float sc = static_cast<float>(scale);
  const int64_t rows = BH * Lq;
  Workspace delta(static_cast<std::size_t>(std::max<int64_t>(rows, 1)) * sizeof(float));
  if (rows > 0) {
    attn_delta_kernel<<<static_cast<unsigned>(ceil_div(rows * 32, 256)), 256, 0, engine_stream()>>>(
        rows, d, o, dout, delta.as<float>());
    CUDA_CHECK_LAUNCH();
  }
  const float* dl = delta.as<float>();
  switch (dm) {
    case 8:
      return backward_dm<8>(BH, Lq, Lk, d, sc, q, k, v, lse, dl, dout, dq, dk, dv);
    case 16:
      return backward_dm<16>(BH, Lq, Lk, d, sc, q, k, v, lse, dl, dout, dq, dk, dv);
    case 32:
      return backward_dm<32>(BH, Lq, Lk, d, sc, q, k, v, lse, dl, dout, dq, dk, dv);
    default:
      return backward_dm<64>(BH, Lq, Lk, d, sc, q, k, v, lse, dl, dout, dq, dk, dv);
  }
}

}  // namespace kern::cuda
