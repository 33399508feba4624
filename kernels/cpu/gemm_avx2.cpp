// GEMM microkernels for AVX2 + FMA (this file alone is compiled with -mavx2 -mfma; called only after
// the run-time check in gemm.cpp). Tiles: float 6 x 16, double 6 x 8 (12 ymm accumulators).
#include <immintrin.h>

#include "kernels/cpu/gemm_microkernel.h"

namespace kern::cpu::gemm_detail {
namespace {

struct F32x8 {
  using T = float;
  using R = __m256;
  static constexpr int W = 8;
  static R zero() { return _mm256_setzero_ps(); }
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, R v) { _mm256_storeu_ps(p, v); }
  static R broadcast(float x) { return _mm256_set1_ps(x); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
};

struct F64x4 {
  using T = double;
  using R = __m256d;
  static constexpr int W = 4;
  static R zero() { return _mm256_setzero_pd(); }
  static R load(const double* p) { return _mm256_loadu_pd(p); }
  static void store(double* p, R v) { _mm256_storeu_pd(p, v); }
  static R broadcast(double x) { return _mm256_set1_pd(x); }
  static R mul(R a, R b) { return _mm256_mul_pd(a, b); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
};

void f32(const MicroArgs<float>& a) { microkernel<F32x8, 6, 2>(a); }
void f64(const MicroArgs<double>& a) { microkernel<F64x4, 6, 2>(a); }
void f32_ar(const MicroArgs<float>& a) { microkernel<F32x8, 6, 2, true>(a); }
void f64_ar(const MicroArgs<double>& a) { microkernel<F64x4, 6, 2, true>(a); }

}  // namespace

Microkernel<float> microkernel_f32_avx2() {
  return {6, 16, f32, "avx2", false, narrow_f32_avx2(), nullptr, f32_ar, nullptr};
}
Microkernel<double> microkernel_f64_avx2() {
  return {6, 8, f64, "avx2", false, nullptr, nullptr, f64_ar, nullptr};
}

}  // namespace kern::cpu::gemm_detail
