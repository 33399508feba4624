// AVX-512 group-norm loops (see group_norm_avx512.h). This file alone is compiled with -mavx512f; the
// caller checks cpu_isa() at run time.
#include "kernels/cpu/group_norm_avx512.h"

// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as the unused merge source, which
// -Wmaybe-uninitialized reports at every inlined call: a known false positive (GCC only: clang has no
// such warning and would warn about the unknown option).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "kernels/cpu/silu_math.h"

namespace kern::cpu::detail {
namespace {

// Mask of the first min(n, 8) lanes (none for n <= 0).
__mmask8 lanes(int64_t n) { return n >= 8 ? __mmask8(0xFF) : n <= 0 ? __mmask8(0) : __mmask8((1u << n) - 1); }

// Masked loads and stores only in a tail: a full block uses plain ones. (A masked 512-bit store covers 64
// bytes for the store-to-load forwarding logic, so the in-place dx loop, whose next load overlaps the
// masked-off half of the previous store, stalled on every block: it was the backward's slowest loop.)

// Floats p[0 .. min(n, 8)) as doubles; lanes >= n hold 0 (masked: never read from memory).
__m512d load8(const float* p, int64_t n) {
  if (n >= 8) return _mm512_cvtps_pd(_mm256_loadu_ps(p));
  return _mm512_cvtps_pd(_mm512_castps512_ps256(_mm512_maskz_loadu_ps(__mmask16(lanes(n)), p)));
}

// Stores the first min(n, 8) lanes of v as floats.
void store8(float* p, int64_t n, __m512d v) {
  if (n >= 8)
    _mm256_storeu_ps(p, _mm512_cvtpd_ps(v));
  else
    _mm512_mask_storeu_ps(p, __mmask16(lanes(n)), _mm512_castps256_ps512(_mm512_cvtpd_ps(v)));
}

// Mask of the first min(n, 16) lanes.
__mmask16 lanes16(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }

// p[0 .. min(n, 16)); lanes >= n hold 0. Stores the first min(n, 16) lanes of v.
__m512 load16(const float* p, int64_t n) {
  return n >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(lanes16(n), p);
}
void store16(float* p, int64_t n, __m512 v) {
  if (n >= 16)
    _mm512_storeu_ps(p, v);
  else
    _mm512_mask_storeu_ps(p, lanes16(n), v);
}

// The low / high 8 floats of v as doubles.
__m512d lo_pd(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
__m512d hi_pd(__m512 v) {
  return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

// The float affine fmaf((x - mh) - ml, a, b) on 16 lanes.
struct Affine16 {
  __m512 mh, ml, a, b;
  Affine16(float mh_, float ml_, float a_, float b_)
      : mh(_mm512_set1_ps(mh_)), ml(_mm512_set1_ps(ml_)), a(_mm512_set1_ps(a_)), b(_mm512_set1_ps(b_)) {}
  __m512 operator()(__m512 x) const { return _mm512_fmadd_ps(_mm512_sub_ps(_mm512_sub_ps(x, mh), ml), a, b); }
};

// ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)), as group_norm.cpp's hsum / combine8.
double hsum(__m512d a) {
  alignas(64) double l[8];
  _mm512_store_pd(l, a);
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

}  // namespace

double gn_sum_shifted_avx512(const float* x, int64_t n, double K) {
  const __m512d k = _mm512_set1_pd(K);
  __m512d acc = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += 8)
    acc = _mm512_add_pd(acc, _mm512_maskz_sub_pd(lanes(n - i), load8(x + i, n - i), k));
  return hsum(acc);
}

std::array<double, 2> gn_shifted_sums_avx512(const float* x, int64_t n, double K) {
  const __m512d k = _mm512_set1_pd(K);
  __m512d s0 = _mm512_setzero_pd(), s1 = s0, q0 = s0, q1 = s0;  // partials 0-7, 8-15
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __m512d d0 = _mm512_sub_pd(lo_pd(v), k), d1 = _mm512_sub_pd(hi_pd(v), k);
    s0 = _mm512_add_pd(s0, d0), s1 = _mm512_add_pd(s1, d1);
    q0 = _mm512_fmadd_pd(d0, d0, q0), q1 = _mm512_fmadd_pd(d1, d1, q1);
  }
  if (i < n) {  // the tail (< 16): dead lanes add 0
    const int64_t r = n - i;
    const __m512 v = load16(x + i, r);
    const __m512d d0 = _mm512_maskz_sub_pd(lanes(r), lo_pd(v), k),
                  d1 = _mm512_maskz_sub_pd(lanes(r - 8), hi_pd(v), k);
    s0 = _mm512_add_pd(s0, d0), s1 = _mm512_add_pd(s1, d1);
    q0 = _mm512_fmadd_pd(d0, d0, q0), q1 = _mm512_fmadd_pd(d1, d1, q1);
  }
  return {hsum(_mm512_add_pd(s0, s1)), hsum(_mm512_add_pd(q0, q1))};
}

double gn_sum_sq_dev_avx512(const float* x, int64_t n, double mu) {
  const __m512d m = _mm512_set1_pd(mu);
  __m512d acc = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += 8) {
    const __m512d d = _mm512_maskz_sub_pd(lanes(n - i), load8(x + i, n - i), m);
    acc = _mm512_fmadd_pd(d, d, acc);
  }
  return hsum(acc);
}

std::array<double, 3> gn_backward_sums_avx512(const float* x, const float* dy, int64_t n, double K) {
  const __m512d k = _mm512_set1_pd(K);
  __m512d s0 = _mm512_setzero_pd(), s1 = s0, s2 = s0;
  for (int64_t i = 0; i < n; i += 8) {
    const __m512d g = load8(dy + i, n - i);  // 0 in unused lanes
    const __m512d d = _mm512_maskz_sub_pd(lanes(n - i), load8(x + i, n - i), k);
    s0 = _mm512_add_pd(s0, g);
    s1 = _mm512_fmadd_pd(g, d, s1);
    s2 = _mm512_add_pd(s2, d);
  }
  return {hsum(s0), hsum(s1), hsum(s2)};
}

// Two groups interleaved: each has its own partial sums in exactly the order of
// gn_shifted_sums_avx512, so the results are bitwise two calls of it; the second set of accumulator chains
// hides the add/fma latency that bounds one span (one chain step per 16 elements).
void gn_shifted_sums2_avx512(const float* xa, const float* xb, int64_t n, double Ka, double Kb,
                             std::array<double, 2>* out) {
  const __m512d ka = _mm512_set1_pd(Ka), kb = _mm512_set1_pd(Kb);
  __m512d sa0 = _mm512_setzero_pd(), sa1 = sa0, qa0 = sa0, qa1 = sa0;
  __m512d sb0 = sa0, sb1 = sa0, qb0 = sa0, qb1 = sa0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 va = _mm512_loadu_ps(xa + i), vb = _mm512_loadu_ps(xb + i);
    const __m512d da0 = _mm512_sub_pd(lo_pd(va), ka), da1 = _mm512_sub_pd(hi_pd(va), ka);
    const __m512d db0 = _mm512_sub_pd(lo_pd(vb), kb), db1 = _mm512_sub_pd(hi_pd(vb), kb);
    sa0 = _mm512_add_pd(sa0, da0), sa1 = _mm512_add_pd(sa1, da1);
    sb0 = _mm512_add_pd(sb0, db0), sb1 = _mm512_add_pd(sb1, db1);
    qa0 = _mm512_fmadd_pd(da0, da0, qa0), qa1 = _mm512_fmadd_pd(da1, da1, qa1);
    qb0 = _mm512_fmadd_pd(db0, db0, qb0), qb1 = _mm512_fmadd_pd(db1, db1, qb1);
  }
  if (i < n) {  // the tail (< 16): dead lanes add 0, as in gn_shifted_sums_avx512
    const int64_t r = n - i;
    const __m512 va = load16(xa + i, r), vb = load16(xb + i, r);
    const __m512d da0 = _mm512_maskz_sub_pd(lanes(r), lo_pd(va), ka),
                  da1 = _mm512_maskz_sub_pd(lanes(r - 8), hi_pd(va), ka);
    const __m512d db0 = _mm512_maskz_sub_pd(lanes(r), lo_pd(vb), kb),
                  db1 = _mm512_maskz_sub_pd(lanes(r - 8), hi_pd(vb), kb);
    sa0 = _mm512_add_pd(sa0, da0), sa1 = _mm512_add_pd(sa1, da1);
    sb0 = _mm512_add_pd(sb0, db0), sb1 = _mm512_add_pd(sb1, db1);
    qa0 = _mm512_fmadd_pd(da0, da0, qa0), qa1 = _mm512_fmadd_pd(da1, da1, qa1);
    qb0 = _mm512_fmadd_pd(db0, db0, qb0), qb1 = _mm512_fmadd_pd(db1, db1, qb1);
  }
  out[0] = {hsum(_mm512_add_pd(sa0, sa1)), hsum(_mm512_add_pd(qa0, qa1))};
  out[1] = {hsum(_mm512_add_pd(sb0, sb1)), hsum(_mm512_add_pd(qb0, qb1))};
}

void gn_affine_avx512(const float* x, int64_t n, float mh, float ml, float a, float b, float* y) {
  const Affine16 f(mh, ml, a, b);
  for (int64_t i = 0; i < n; i += 16) store16(y + i, n - i, f(load16(x + i, n - i)));
}

void gn_dx_avx512(const float* x, const float* dy, int64_t n, double mu, double rs, double gm, double m1,
                  double m2, float* dx) {
  const __m512d vmu = _mm512_set1_pd(mu), vrs = _mm512_set1_pd(rs), vgm = _mm512_set1_pd(gm),
                vnm1 = _mm512_set1_pd(-m1), vm2 = _mm512_set1_pd(m2);
  for (int64_t i = 0; i < n; i += 8) {
    const __m512d xhat = _mm512_mul_pd(_mm512_sub_pd(load8(x + i, n - i), vmu), vrs);
    const __m512d inner = _mm512_fmadd_pd(vgm, load8(dy + i, n - i), vnm1);
    // fnmadd(a, b, c) = -(a * b) + c, one rounding: exactly std::fma(-xhat, m2, inner).
    store8(dx + i, n - i, _mm512_mul_pd(vrs, _mm512_fnmadd_pd(xhat, vm2, inner)));
  }
}

void gn_affine_silu_avx512(const float* x, int64_t n, float mh, float ml, float a, float b, float* y) {
  const Affine16 f(mh, ml, a, b);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, silu_math::silu16(f(_mm512_loadu_ps(x + i))));
  if (i < n) store16(y + i, n - i, silu_math::silu16(f(load16(x + i, n - i))));
}

std::array<double, 3> gn_silu_dv_sums_avx512(const float* x, const float* dy, int64_t n, float mh, float ml,
                                             float a, float b, double K, float* dv) {
  // Two passes over the channel (in L1): dv first, whose blocks are independent, then the sums, whose
  // accumulator chains held back the long SiLU' latency of every block in one fused loop (the whole
  // group_norm_silu backward measured 1.17x slower that way, 64x28x28 channels).
  const Affine16 f(mh, ml, a, b);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dv + i, silu_math::silu_grad16(f(_mm512_loadu_ps(x + i)), _mm512_loadu_ps(dy + i)));
  if (i < n) store16(dv + i, n - i, silu_math::silu_grad16(f(load16(x + i, n - i)), load16(dy + i, n - i)));
  return gn_backward_sums_avx512(x, dv, n, K);
}

}  // namespace kern::cpu::detail
