// Internal: the one template behind attention_small.h's per-ISA head kernels. Included only by
// attention_small_{scalar,avx2,avx512}.cpp, each of which first defines, in kern::cpu::detail's anonymous
// namespace, its vector types and their lane-wise operations:
//   V16 (16 float lanes) and V8 (8 lanes), each with `static constexpr int kLanes`;
//   vload<V>(p), vset<V>(x), vzero<V>(), vstore(p, V), vmul, vfma(a, b, c) = a * b + c (one rounding),
//     vsub and vexp2 (2^t for t <= 0: simd_math.h's exp2_nonpos, bitwise on every ISA) for V = V8 and V16;
//     vadd and vmax(a, b) = a > b ? a : b (lane-wise) for V8 and QWide;
//   QWide: the forward's query block type (V16 or V8);
//   kProbRows and KProb (V16 or V8): the backward's block of query rows and keys whose scores and dP are
//   computed together; kFuseProbs: whether they stay in registers through the exp and dS (else they are
//   stored and reloaded); chosen per ISA by measurement (the bits depend on none of the three).
// Everything here has internal linkage (anonymous namespace; no std:: templates or inline functions), so no
// function compiled for one ISA can be picked by the linker for another caller.
//
// Operation order (the same on every ISA, which is what makes the three builds bitwise equal):
// - Element addresses: row i, column d of q, o, dout, dq at i * rq + d * cq, of k, v, dk, dv at
//   i * rk + d * ck (attention_small.h).
// - q is pre-scaled by scale2 = float(scale * log2(e)) (qs2 = q * scale2, rounded once), so that scores are
//   in base 2; a score is the chain qs2_0*k0, fma(qs2_1, k1, .), ... in d order (forward and backward alike).
// - Forward (vectorised over queries: forward_block): a block of 16 (AVX-512) or 8 query lanes keeps its
//   scores transposed, S^T (Lk, lanes), L1-resident; never an (Lq, Lk) matrix. Per query: m2 = the running
//   max m > s ? m : s in key order; p = exp2(s2 - m2); sum = the add chain p_0 + p_1 + ... from 0 in key
//   order; o[d] = (the FMA chain p_j * v[j][d] from 0 in key order) * float(1 / double(sum)); lse (natural
//   log; skipped when lse is null) = float(double(m2) * ln 2 + log(double(sum))). Every step is lane-wise,
//   so a query's bits do not depend on the block width, its lane or the ISA.
// - Backward (vectorised over keys and d): blocks of up to 8 query rows; per block, the scores and dP of
//   kProbRows rows and KProb keys (an ISA build's constants; 8 keys in the last key block where Lk8 = Lk
//   rounded up to a multiple of 8 is an odd multiple of 8), turned into p and dS in registers (kFuseProbs)
//   or after a store, and kept in 8 x Lk8 row buffers (the padding keys' lanes hold values never read back).
//   Every product over keys or query rows (dS K, P^T dO, dS^T qs) is an FMA chain from 0 in key or query
//   order per output element: dS K vectorised over d (8 lanes for D <= 8, else 16), P^T dO and dS^T qs over
//   16 (8) keys; no lane reductions.
// - Backward: p = exp2(s2 - float(double(lse) * log2(e))) recomputed with the forward's score bits, dP =
//   dO V^T as the scores' chain, delta = sum_d dO*O in double, dS = p * (dP - float(delta)); dq = (dS k) *
//   scale, dk = dS^T qs (qs = q * scale, rounded once),
//   dv = P^T dO, the last two accumulated over query blocks in a (D, Lk8) buffer in query order,
//   vectorised over 16 (8) keys (the padding keys' lanes are never read back).
// Non-finite semantics (as attention.cpp, torch.softmax): a row whose max is NaN (any NaN score), +inf or
// -inf (only -inf scores) gets NaN in o and lse; a -inf score alone gets probability 0. NaN and inf in q,
// k, v and dout propagate through the chains as in the definition.
#pragma once
#include <cmath>
#include <cstdint>

namespace kern::cpu::detail {
namespace {

constexpr int kRows = 8;  // query rows per block

inline int64_t pad16(int64_t n) { return (n + 15) / 16 * 16; }
inline int64_t pad8(int64_t n) { return (n + 7) / 8 * 8; }
inline int64_t lo_of(int64_t a, int64_t b) { return a < b ? a : b; }

// dst (n, W) = src (n rows of D; element (i, c) at i * rs + c * cs) * s (when scaled), lanes D..W-1 zero.
// For rs == 1 (the (B, H, D, L) layout) column by column, so that the reads run along src's rows.
inline void pack_rows(const float* src, int64_t n, int64_t D, int64_t rs, int64_t cs, int W, float s,
                      bool scaled, float* dst) {
  if (rs == 1) {
    for (int64_t c = 0; c < D; ++c) {
      const float* x = src + c * cs;
      if (scaled) {
        for (int64_t i = 0; i < n; ++i) dst[i * W + c] = x[i] * s;
      } else {
        for (int64_t i = 0; i < n; ++i) dst[i * W + c] = x[i];
      }
    }
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = D; c < W; ++c) dst[i * W + c] = 0.0f;
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    float* d = dst + i * W;
    const float* x = src + i * rs;
    if (scaled) {
      for (int64_t c = 0; c < D; ++c) d[c] = x[c * cs] * s;
    } else {
      for (int64_t c = 0; c < D; ++c) d[c] = x[c * cs];
    }
    for (int64_t c = D; c < W; ++c) d[c] = 0.0f;
  }
}
// dst (D, ld) = src (n rows of D; element (j, d) at j * rs + d * cs) transposed, columns n..ld-1 zero.
// For cs == 1 (row-major heads) a gather per column; for rs == 1 (the (B, H, D, L) layout) a row copy.
inline void pack_transposed(const float* src, int64_t n, int64_t D, int64_t rs, int64_t cs, int64_t ld,
                            float* dst) {
  for (int64_t d = 0; d < D; ++d) {
    float* out = dst + d * ld;
    const float* x = src + d * cs;
    if (rs == 1) {
      for (int64_t j = 0; j < n; ++j) out[j] = x[j];
    } else {
      for (int64_t j = 0; j < n; ++j) out[j] = x[j * rs];
    }
    for (int64_t j = n; j < ld; ++j) out[j] = 0.0f;
  }
}
// Lanes 0..D-1 of x to dst[0], dst[cs], ..., dst[(D-1) * cs].
template <class V>
inline void store_d(float* dst, int64_t D, int64_t cs, V x) {
  float t[V::kLanes];
  vstore(t, x);
  for (int64_t d = 0; d < D; ++d) dst[d * cs] = t[d];
}
// float(scale * log2(e)): the base-2 score scale (the same float on every ISA build).
inline float base2_scale(float scale) { return static_cast<float>(double(scale) * 1.4426950408889634074); }

// S rows r0..r0+G-1 of the block, keys jb..jb+KV::kLanes-1: the scores s = the chain qs2[r][0]*kt[0][j],
// fma(qs2[r][d], kt[d][j], .) and dp = the same chain of dor and vt (d order), kept in registers; then
// P[r][j] = p = exp2(s - l2[r]) and dS[r][j] = p * (dp - dl[r]). qs2, dor: the block's rows (stride W);
// kt, vt: (D, ld). G rows share each kt / vt load.
template <class KV, int G>
inline void probs_group(const float* qs2, const float* dor, int W, int64_t D, const float* kt,
                        const float* vt, int64_t ld, int64_t jb, const float* l2, const float* dl, float* P,
                        float* dS) {
  KV s[G], dp[G];
  KV b = vload<KV>(kt + jb), c = vload<KV>(vt + jb);
#pragma GCC unroll 8
  for (int r = 0; r < G; ++r) s[r] = vmul(vset<KV>(qs2[r * W]), b), dp[r] = vmul(vset<KV>(dor[r * W]), c);
  for (int64_t d = 1; d < D; ++d) {
    b = vload<KV>(kt + d * ld + jb);
    c = vload<KV>(vt + d * ld + jb);
#pragma GCC unroll 8
    for (int r = 0; r < G; ++r) {
      s[r] = vfma(vset<KV>(qs2[r * W + d]), b, s[r]);
      dp[r] = vfma(vset<KV>(dor[r * W + d]), c, dp[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < G; ++r) {
    const KV p = vexp2(vsub(s[r], vset<KV>(l2[r])));
    vstore(P + r * ld + jb, p);
    vstore(dS + r * ld + jb, vmul(p, vsub(dp[r], vset<KV>(dl[r]))));
  }
}
// S[r][jb..jb+KV::kLanes) (row stride ld) = the chain A[r][0]*B[0][j], fma(A[r][d], B[d][j], .) for the
// G rows at A (stride W); B: (D, ld). The unfused backward's score and dP chains (the same as probs_group's).
template <class KV, int G>
inline void scores_group(const float* A, int W, int64_t D, const float* B, int64_t ld, int64_t jb, float* S) {
  KV s[G];
  KV b = vload<KV>(B + jb);
#pragma GCC unroll 8
  for (int r = 0; r < G; ++r) s[r] = vmul(vset<KV>(A[r * W]), b);
  for (int64_t d = 1; d < D; ++d) {
    b = vload<KV>(B + d * ld + jb);
#pragma GCC unroll 8
    for (int r = 0; r < G; ++r) s[r] = vfma(vset<KV>(A[r * W + d]), b, s[r]);
  }
#pragma GCC unroll 8
  for (int r = 0; r < G; ++r) vstore(S + r * ld + jb, s[r]);
}
// One row's keys jb..jb+KV::kLanes: P = p = exp2(P - l2), dS = p * (dS - dl) (the scores and dP stored
// there).
template <class KV>
inline void probs_row(float* P, float* dS, int64_t jb, float l2, float dl) {
  const KV p = vexp2(vsub(vload<KV>(P + jb), vset<KV>(l2)));
  vstore(P + jb, p);
  vstore(dS + jb, vmul(p, vsub(vload<KV>(dS + jb), vset<KV>(dl))));
}
// G rows: probs_group (kFuseProbs: the scores and dP stay in registers) or scores_group twice, then probs_row
// per row (more independent work between the exps; AVX2's 16 registers hold too few chains for the fused
// form). Keys KProb::kLanes at a time, then one 8-key block where ld is an odd multiple of 8.
template <int G>
inline void rows_probs(const float* qs2, const float* dor, int W, int64_t D, const float* kt, const float* vt,
                       int64_t ld, const float* l2, const float* dl, float* P, float* dS) {
  constexpr int K = KProb::kLanes;
  int64_t jb = 0;
  if constexpr (kFuseProbs) {
    for (; jb + K <= ld; jb += K) probs_group<KProb, G>(qs2, dor, W, D, kt, vt, ld, jb, l2, dl, P, dS);
    if (jb < ld) probs_group<V8, G>(qs2, dor, W, D, kt, vt, ld, jb, l2, dl, P, dS);
  } else {
    for (; jb + K <= ld; jb += K) {
      scores_group<KProb, G>(qs2, W, D, kt, ld, jb, P);
      scores_group<KProb, G>(dor, W, D, vt, ld, jb, dS);
    }
    if (jb < ld) {
      scores_group<V8, G>(qs2, W, D, kt, ld, jb, P);
      scores_group<V8, G>(dor, W, D, vt, ld, jb, dS);
    }
    for (int r = 0; r < G; ++r) {
      int64_t j = 0;
      for (; j + K <= ld; j += K) probs_row<KProb>(P + r * ld, dS + r * ld, j, l2[r], dl[r]);
      if (j < ld) probs_row<V8>(P + r * ld, dS + r * ld, j, l2[r], dl[r]);
    }
  }
}
// rows_probs over the block's nr rows: groups of kProbRows, then one row at a time.
inline void block_probs(const float* qs2, const float* dor, int W, int nr, int64_t D, const float* kt,
                        const float* vt, int64_t ld, const float* l2, const float* dl, float* P, float* dS) {
  int r = 0;
  for (; r + kProbRows <= nr; r += kProbRows)
    rows_probs<kProbRows>(qs2 + r * W, dor + r * W, W, D, kt, vt, ld, l2 + r, dl + r, P + r * ld,
                          dS + r * ld);
  for (; r < nr; ++r)
    rows_probs<1>(qs2 + r * W, dor + r * W, W, D, kt, vt, ld, l2 + r, dl + r, P + r * ld, dS + r * ld);
}

// acc[r] = sum_j P[r][j] * B[j] for j = 0..n-1 in order (an FMA chain from 0), r < NR: P rows of stride
// ld, B rows of stride V::kLanes.
template <class V, int NR>
inline void rows_times_n(const float* P, int64_t ld, int64_t n, const float* B, V* acc) {
  V a[NR];
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r) a[r] = vzero<V>();
  for (int64_t j = 0; j < n; ++j) {
    const V b = vload<V>(B + j * V::kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) a[r] = vfma(vset<V>(P[r * ld + j]), b, a[r]);
  }
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r) acc[r] = a[r];
}
template <class V>
inline void block_rows_times(const float* P, int64_t ld, int nr, int64_t n, const float* B, V* acc) {
  switch (nr) {
    case 1:
      return rows_times_n<V, 1>(P, ld, n, B, acc);
    case 2:
      return rows_times_n<V, 2>(P, ld, n, B, acc);
    case 3:
      return rows_times_n<V, 3>(P, ld, n, B, acc);
    case 4:
      return rows_times_n<V, 4>(P, ld, n, B, acc);
    case 5:
      return rows_times_n<V, 5>(P, ld, n, B, acc);
    case 6:
      return rows_times_n<V, 6>(P, ld, n, B, acc);
    case 7:
      return rows_times_n<V, 7>(P, ld, n, B, acc);
    default:
      return rows_times_n<V, 8>(P, ld, n, B, acc);
  }
}

// AT[d][j] += X[r][d] * P[r][j] for r = 0..NR-1 in order, for every d < D and j in [jb, jb + KV::kLanes):
// AT (D, ld), P rows of stride ld, X rows of stride W.
template <class KV, int NR>
inline void accumulate_key_block(const float* P, int64_t ld, int64_t jb, int64_t D, const float* X, int W,
                                 float* AT) {
  KV p[NR];
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r) p[r] = vload<KV>(P + r * ld + jb);
  for (int64_t d = 0; d < D; ++d) {
    float* at = AT + d * ld + jb;
    KV a = vload<KV>(at);
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) a = vfma(vset<KV>(X[r * W + d]), p[r], a);
    vstore(at, a);
  }
}
// accumulate_key_block over all ld keys (a multiple of 8): 16 at a time, then one 8-key block.
template <int NR>
inline void accumulate_keys_n(const float* P, int64_t ld, int64_t D, const float* X, int W, float* AT) {
  int64_t jb = 0;
  for (; jb + 16 <= ld; jb += 16) accumulate_key_block<V16, NR>(P, ld, jb, D, X, W, AT);
  if (jb < ld) accumulate_key_block<V8, NR>(P, ld, jb, D, X, W, AT);
}
inline void accumulate_keys(const float* P, int64_t ld, int nr, int64_t D, const float* X, int W, float* AT) {
  switch (nr) {
    case 1:
      return accumulate_keys_n<1>(P, ld, D, X, W, AT);
    case 2:
      return accumulate_keys_n<2>(P, ld, D, X, W, AT);
    case 3:
      return accumulate_keys_n<3>(P, ld, D, X, W, AT);
    case 4:
      return accumulate_keys_n<4>(P, ld, D, X, W, AT);
    case 5:
      return accumulate_keys_n<5>(P, ld, D, X, W, AT);
    case 6:
      return accumulate_keys_n<6>(P, ld, D, X, W, AT);
    case 7:
      return accumulate_keys_n<7>(P, ld, D, X, W, AT);
    default:
      return accumulate_keys_n<8>(P, ld, D, X, W, AT);
  }
}

inline bool finite(float x) { return x - x == 0.0f; }  // false for NaN and +-inf

// Scratch floats (the larger lane width, so the count does not depend on D's width class).
inline int64_t scratch_floats(int64_t Lq, int64_t Lk, int64_t D, bool backward) {
  const int64_t ld = pad16(Lk);
  if (!backward) return D * pad16(Lq) + Lk * 16;
  return 3 * Lq * 16 + 4 * D * ld + Lk * 16 + 2 * kRows * ld;
}

// The forward, vectorised over query lanes (Q: V16 or V8; lane-wise operations only, so every query's
// bits are the same whatever Q and the block it falls in). kD: D at compile time (0: runtime D).
// One block of nq <= Q::kLanes queries starting at i0: qt (D, ldq) = (q * scale2)^T; k and v read in place
// (element (j, d) at j * rk + d * ck: each key's D values are broadcast from memory, so they need no
// packed copy); S (Lk, Q::kLanes) scratch for the scores.
template <class Q, int kD>
void forward_block(int64_t i0, int nq, int64_t Lk, int64_t Dr, int64_t rq, int64_t cq, const float* qt,
                   int64_t ldq, const float* k, const float* v, int64_t rk, int64_t ck, float* S, float* o,
                   float* lse) {
  constexpr int W = Q::kLanes;
  const int64_t D = kD > 0 ? kD : Dr;
  Q qv[kAttnSmallMaxD];
  for (int64_t d = 0; d < D; ++d) qv[d] = vload<Q>(qt + d * ldq + i0);
  const float* kd[kAttnSmallMaxD];  // column d of k and v: kd[d][j * rk] = k(j, d)
  const float* vd[kAttnSmallMaxD];
  for (int64_t d = 0; d < D; ++d) kd[d] = k + d * ck, vd[d] = v + d * ck;
  // Pass 1: S^T[j] = the score chain k[j][0] * qs2[0], fma(k[j][d], qs2[d], .) (the same bits as
  // the backward's (probs_group) qs2 * k chain: a product and an FMA do not depend on their factors' order);
  // m = the lane-wise running max m > s ? m : s in key order.
  Q m = vzero<Q>();
  for (int64_t j = 0, off = 0; j < Lk; ++j, off += rk) {
    Q s = vmul(vset<Q>(kd[0][off]), qv[0]);
    for (int64_t d = 1; d < D; ++d) s = vfma(vset<Q>(kd[d][off]), qv[d], s);
    vstore(S + j * W, s);
    m = j == 0 ? s : vmax(m, s);
  }
  // Pass 2: p = exp2(s - m); sum = the chain ((p_0 + p_1) + p_2) + ... from 0 in key order; acc[d] = the
  // FMA chain p_j * v[j][d] from 0 in key order.
  Q sum = vzero<Q>(), acc[kAttnSmallMaxD];
  for (int64_t d = 0; d < D; ++d) acc[d] = vzero<Q>();
  for (int64_t j = 0, off = 0; j < Lk; ++j, off += rk) {
    const Q p = vexp2(vsub(vload<Q>(S + j * W), m));
    sum = vadd(sum, p);
    for (int64_t d = 0; d < D; ++d) acc[d] = vfma(p, vset<Q>(vd[d][off]), acc[d]);
  }
  // Per query: a row whose max is not finite (NaN after a NaN score as the last key, +inf, or -inf: only
  // -inf scores) or whose sum is NaN (any NaN score: exp2(NaN) = NaN) is NaN in o and lse.
  float ml[W], sl[W], inv[W];
  vstore(ml, m);
  vstore(sl, sum);
  const float nan = __builtin_nanf("");
  for (int l = 0; l < W; ++l) {
    const bool bad = !finite(ml[l]) || sl[l] != sl[l];
    inv[l] = bad ? nan : static_cast<float>(1.0 / double(sl[l]));
    if (lse != nullptr && l < nq)
      lse[i0 + l] =
          bad ? nan : static_cast<float>(double(ml[l]) * 0.69314718055994530942 + std::log(double(sl[l])));
  }
  const Q vinv = vload<Q>(inv);
  for (int64_t d = 0; d < D; ++d) {
    const Q od = vmul(acc[d], vinv);  // NaN in the bad lanes
    if (rq == 1 && nq == W) {
      vstore(o + i0 + d * cq, od);
    } else {
      float t[W];
      vstore(t, od);
      for (int l = 0; l < nq; ++l) o[(i0 + l) * rq + d * cq] = t[l];
    }
  }
}

// One head of the forward: packs q^T * scale2 (D, pad16(Lq)) (k and v are read in place), then runs the query
// blocks: QW-wide while more than QN::kLanes queries are left, then QN-wide. lse may be null (not written).
template <class QW, class QN>
void forward_head(int64_t Lq, int64_t Lk, int64_t D, int64_t rq, int64_t cq, int64_t rk, int64_t ck,
                  float scale, const float* q, const float* k, const float* v, float* o, float* lse,
                  float* ws) {
  const int64_t ldq = pad16(Lq);
  float* qt = ws;           // (D, ldq): q^T * scale2, columns Lq.. zero
  float* S = qt + D * ldq;  // (Lk, 16): one block's scores
  const float s2 = base2_scale(scale);
  for (int64_t d = 0; d < D; ++d) {
    float* row = qt + d * ldq;
    const float* x = q + d * cq;
    if (rq == 1) {
      for (int64_t i = 0; i < Lq; ++i) row[i] = x[i] * s2;
    } else {
      for (int64_t i = 0; i < Lq; ++i) row[i] = x[i * rq] * s2;
    }
    for (int64_t i = Lq; i < ldq; ++i) row[i] = 0.0f;
  }
  for (int64_t i0 = 0; i0 < Lq;) {
    const int64_t left = Lq - i0;
    if (left > QN::kLanes) {
      const int nq = static_cast<int>(lo_of(QW::kLanes, left));
      if (D == 8)
        forward_block<QW, 8>(i0, nq, Lk, D, rq, cq, qt, ldq, k, v, rk, ck, S, o, lse);
      else
        forward_block<QW, 0>(i0, nq, Lk, D, rq, cq, qt, ldq, k, v, rk, ck, S, o, lse);
      i0 += nq;
    } else {
      const int nq = static_cast<int>(left);
      if (D == 8)
        forward_block<QN, 8>(i0, nq, Lk, D, rq, cq, qt, ldq, k, v, rk, ck, S, o, lse);
      else
        forward_block<QN, 0>(i0, nq, Lk, D, rq, cq, qt, ldq, k, v, rk, ck, S, o, lse);
      i0 += nq;
    }
  }
}

// One head of the backward (V: the d vector, V8 for D <= 8, else V16). kD: D at compile time (0: runtime D).
template <class V, int kD>
void backward_head(int64_t Lq, int64_t Lk, int64_t Dr, int64_t rq, int64_t cq, int64_t rk, int64_t ck,
                   float scale, const float* q, const float* k, const float* v, const float* o,
                   const float* lse, const float* dout, float* dq, float* dk, float* dv, float* ws) {
  constexpr int W = V::kLanes;
  const int64_t D = kD > 0 ? kD : Dr;
  const int64_t ld = pad8(Lk);
  float* qs = ws;              // (Lq, W): q * scale (for dk)
  float* qs2 = qs + Lq * W;    // (Lq, W): q * scale2 (for the base-2 scores)
  float* dor = qs2 + Lq * W;   // (Lq, W): dout
  float* kt = dor + Lq * W;    // (D, ld): k^T
  float* vt = kt + D * ld;     // (D, ld): v^T
  float* kr = vt + D * ld;     // (Lk, W): k
  float* dkt = kr + Lk * W;    // (D, ld): dk^T accumulator
  float* dvt = dkt + D * ld;   // (D, ld): dv^T accumulator
  float* P = dvt + D * ld;     // (8, ld): p
  float* dS = P + kRows * ld;  // (8, ld): dS
  pack_rows(q, Lq, D, rq, cq, W, scale, true, qs);
  pack_rows(q, Lq, D, rq, cq, W, base2_scale(scale), true, qs2);
  pack_rows(dout, Lq, D, rq, cq, W, 1.0f, false, dor);
  pack_transposed(k, Lk, D, rk, ck, ld, kt);
  pack_transposed(v, Lk, D, rk, ck, ld, vt);
  pack_rows(k, Lk, D, rk, ck, W, 1.0f, false, kr);
  for (int64_t i = 0; i < 2 * D * ld; ++i) dkt[i] = 0.0f;
  for (int64_t i0 = 0; i0 < Lq; i0 += kRows) {
    const int nr = static_cast<int>(lo_of(kRows, Lq - i0));
    float l2[kRows], dl[kRows];
    for (int r = 0; r < nr; ++r) {
      const int64_t i = i0 + r;
      double delta = 0;  // rowsum(dO * O)
      for (int64_t d = 0; d < D; ++d) delta += double(dor[i * W + d]) * double(o[i * rq + d * cq]);
      l2[r] = static_cast<float>(double(lse[i]) * 1.4426950408889634074);  // lse in base 2
      dl[r] = static_cast<float>(delta);
    }
    block_probs(qs2 + i0 * W, dor + i0 * W, W, nr, D, kt, vt, ld, l2, dl, P, dS);
    V acc[kRows];
    block_rows_times<V>(dS, ld, nr, Lk, kr, acc);
    for (int r = 0; r < nr; ++r) store_d(dq + (i0 + r) * rq, D, cq, vmul(acc[r], vset<V>(scale)));
    accumulate_keys(P, ld, nr, D, dor + i0 * W, W, dvt);
    accumulate_keys(dS, ld, nr, D, qs + i0 * W, W, dkt);
  }
  if (rk == 1) {  // (B, H, D, L): dk and dv rows are dkt and dvt rows
    for (int64_t d = 0; d < D; ++d)
      for (int64_t j = 0; j < Lk; ++j) {
        dk[j + d * ck] = dkt[d * ld + j];
        dv[j + d * ck] = dvt[d * ld + j];
      }
  } else {
    for (int64_t j = 0; j < Lk; ++j)
      for (int64_t d = 0; d < D; ++d) {
        dk[j * rk + d * ck] = dkt[d * ld + j];
        dv[j * rk + d * ck] = dvt[d * ld + j];
      }
  }
}

}  // namespace
}  // namespace kern::cpu::detail

// The entry points of one ISA build: NAME(forward_) and NAME(backward_) dispatch on D's lane width;
// attn_small_exp2_SUFFIX exposes vexp2 to the tests.
#define KERN_ATTN_SMALL_ENTRY_POINTS(SUFFIX)                                                                 \
  namespace kern::cpu::detail {                                                                              \
  void attn_small_forward_##SUFFIX(int64_t Lq, int64_t Lk, int64_t D, int64_t rq, int64_t cq, int64_t rk,    \
                                   int64_t ck, float scale, const float* q, const float* k, const float* v,  \
                                   float* o, float* lse, float* ws) {                                        \
    forward_head<QWide, V8>(Lq, Lk, D, rq, cq, rk, ck, scale, q, k, v, o, lse, ws);                          \
  }                                                                                                          \
  void attn_small_backward_##SUFFIX(int64_t Lq, int64_t Lk, int64_t D, int64_t rq, int64_t cq, int64_t rk,   \
                                    int64_t ck, float scale, const float* q, const float* k, const float* v, \
                                    const float* o, const float* lse, const float* dout, float* dq,          \
                                    float* dk, float* dv, float* ws) {                                       \
    if (D == 8)                                                                                              \
      backward_head<V8, 8>(Lq, Lk, D, rq, cq, rk, ck, scale, q, k, v, o, lse, dout, dq, dk, dv, ws);         \
    else if (D < 8)                                                                                          \
      backward_head<V8, 0>(Lq, Lk, D, rq, cq, rk, ck, scale, q, k, v, o, lse, dout, dq, dk, dv, ws);         \
    else                                                                                                     \
      backward_head<V16, 0>(Lq, Lk, D, rq, cq, rk, ck, scale, q, k, v, o, lse, dout, dq, dk, dv, ws);        \
  }                                                                                                          \
  void attn_small_exp2_##SUFFIX(const float* t, float* y, int64_t n) {                                       \
    for (int64_t i = 0; i + 16 <= n; i += 16) vstore(y + i, vexp2(vload<V16>(t + i)));                       \
  }                                                                                                          \
  }
