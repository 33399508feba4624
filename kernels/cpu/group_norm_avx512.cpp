// AVX-512 group-norm loops (see group_norm_avx512.h). This file alone is compiled with -mavx512f; the
// caller checks cpu_isa() at run time.
#include "kernels/cpu/group_norm_avx512.h"

// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as the unused merge source, which
// -Wmaybe-uninitialized reports at every inlined call: a known false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

namespace kern::cpu::detail {
namespace {

// Mask of the first min(n, 8) lanes.
__mmask8 lanes(int64_t n) { return n >= 8 ? __mmask8(0xFF) : __mmask8((1u << n) - 1); }

// Floats p[0 .. min(n, 8)) as doubles; lanes >= n hold 0 (masked: never read from memory).
__m512d load8(const float* p, int64_t n) {
  return _mm512_cvtps_pd(_mm512_castps512_ps256(_mm512_maskz_loadu_ps(__mmask16(lanes(n)), p)));
}

// Stores the first min(n, 8) lanes of v as floats.
void store8(float* p, int64_t n, __m512d v) {
  _mm512_mask_storeu_ps(p, __mmask16(lanes(n)), _mm512_castps256_ps512(_mm512_cvtpd_ps(v)));
}

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

void gn_affine_avx512(const float* x, int64_t n, double mu, double a, double b, float* y) {
  const __m512d vm = _mm512_set1_pd(mu), va = _mm512_set1_pd(a), vb = _mm512_set1_pd(b);
  for (int64_t i = 0; i < n; i += 8)
    store8(y + i, n - i, _mm512_fmadd_pd(_mm512_sub_pd(load8(x + i, n - i), vm), va, vb));
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

}  // namespace kern::cpu::detail
