// GEMM microkernels for AVX-512F (this file alone is compiled with -mavx512f -mfma; called only after
// the run-time check in gemm.cpp). Tiles: float 8 x 32 (16 zmm accumulators; 8 x 16 for a right edge
// at most half full), double 12 x 16 (24 zmm accumulators).
#include <immintrin.h>

#include "kernels/cpu/gemm_microkernel.h"

namespace kern::cpu::gemm_detail {
namespace {

struct F32x16 {
  using T = float;
  using R = __m512;
  static constexpr int W = 16;
  static R zero() { return _mm512_setzero_ps(); }
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, R v) { _mm512_storeu_ps(p, v); }
  static R broadcast(float x) { return _mm512_set1_ps(x); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
};

struct F64x8 {
  using T = double;
  using R = __m512d;
  static constexpr int W = 8;
  static R zero() { return _mm512_setzero_pd(); }
  static R load(const double* p) { return _mm512_loadu_pd(p); }
  static void store(double* p, R v) { _mm512_storeu_pd(p, v); }
  static R broadcast(double x) { return _mm512_set1_pd(x); }
  static R mul(R a, R b) { return _mm512_mul_pd(a, b); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
};

void f32(const MicroArgs<float>& a) { microkernel<F32x16, 8, 2>(a); }
void f32_half(const MicroArgs<float>& a) { microkernel<F32x16, 8, 1>(a); }
void f64(const MicroArgs<double>& a) { microkernel<F64x8, 12, 2>(a); }
void f32_ar(const MicroArgs<float>& a) { microkernel<F32x16, 8, 2, true>(a); }
void f32_half_ar(const MicroArgs<float>& a) { microkernel<F32x16, 8, 1, true>(a); }
void f64_ar(const MicroArgs<double>& a) { microkernel<F64x8, 12, 2, true>(a); }

}  // namespace

Microkernel<float> microkernel_f32_avx512() {
  return {8, 32, f32, "avx512", true, narrow_f32_avx2(), f32_half, f32_ar, f32_half_ar};
}
Microkernel<double> microkernel_f64_avx512() {
  return {12, 16, f64, "avx512", false, nullptr, nullptr, f64_ar, nullptr};
}

}  // namespace kern::cpu::gemm_detail
