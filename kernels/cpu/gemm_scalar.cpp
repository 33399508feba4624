// Portable GEMM microkernels: std::fma, one correctly rounded fused multiply-add per step, so the
// results are bitwise those of the AVX paths. Used where the CPU has no AVX2/FMA, or when forced with
// ENGINE_CPU_ISA=scalar. Tiles: 4 x 4.
#include <cmath>

#include "kernels/cpu/gemm_microkernel.h"

namespace kern::cpu::gemm_detail {
namespace {

template <typename TT>
struct Scalar {
  using T = TT;
  using R = TT;
  static constexpr int W = 1;
  static R zero() { return T(0); }
  static R load(const T* p) { return *p; }
  static void store(T* p, R v) { *p = v; }
  static R broadcast(T x) { return x; }
  static R mul(R a, R b) { return a * b; }
  static R fma(R a, R b, R c) { return std::fma(a, b, c); }
};

void f32(const MicroArgs<float>& a) { microkernel<Scalar<float>, 4, 4>(a); }
void f64(const MicroArgs<double>& a) { microkernel<Scalar<double>, 4, 4>(a); }
void f32_ar(const MicroArgs<float>& a) { microkernel<Scalar<float>, 4, 4, true>(a); }
void f64_ar(const MicroArgs<double>& a) { microkernel<Scalar<double>, 4, 4, true>(a); }

}  // namespace

Microkernel<float> microkernel_f32_scalar() {
  return {4, 4, f32, "scalar", false, nullptr, nullptr, f32_ar, nullptr};
}
Microkernel<double> microkernel_f64_scalar() {
  return {4, 4, f64, "scalar", false, nullptr, nullptr, f64_ar, nullptr};
}

}  // namespace kern::cpu::gemm_detail
