// The AVX2 build of the small-D CPU attention (attention_small.h): a 16-lane block is two __m256, an
// 8-lane d vector one. This file alone is compiled with -mavx2 -mfma -ffp-contract=off; attention.cpp
// calls it only when cpu_isa() is at least Avx2. Bitwise the scalar and AVX-512 builds.
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/attention_small.h"
#include "kernels/cpu/simd_math.h"

namespace kern::cpu::detail {
namespace {

struct V16 {
  static constexpr int kLanes = 16;
  __m256 lo, hi;
};
struct V8 {
  static constexpr int kLanes = 8;
  __m256 x;
};

template <class V>
V vload(const float* p);
template <>
V16 vload<V16>(const float* p) {
  return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)};
}
template <>
V8 vload<V8>(const float* p) {
  return {_mm256_loadu_ps(p)};
}
template <class V>
V vset(float x);
template <>
V16 vset<V16>(float x) {
  return {_mm256_set1_ps(x), _mm256_set1_ps(x)};
}
template <>
V8 vset<V8>(float x) {
  return {_mm256_set1_ps(x)};
}
template <class V>
V vzero() {
  return vset<V>(0.0f);
}
void vstore(float* p, V16 a) {
  _mm256_storeu_ps(p, a.lo);
  _mm256_storeu_ps(p + 8, a.hi);
}
void vstore(float* p, V8 a) { _mm256_storeu_ps(p, a.x); }
V16 vmul(V16 a, V16 b) { return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
V8 vmul(V8 a, V8 b) { return {_mm256_mul_ps(a.x, b.x)}; }
V16 vsub(V16 a, V16 b) { return {_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)}; }
V16 vfma(V16 a, V16 b, V16 c) {
  return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
}
V8 vfma(V8 a, V8 b, V8 c) { return {_mm256_fmadd_ps(a.x, b.x, c.x)}; }
V16 vexp2(V16 a) { return {simd::exp2_nonpos(a.lo), simd::exp2_nonpos(a.hi)}; }
V8 vadd(V8 a, V8 b) { return {_mm256_add_ps(a.x, b.x)}; }
V8 vsub(V8 a, V8 b) { return {_mm256_sub_ps(a.x, b.x)}; }
V8 vexp2(V8 a) { return {simd::exp2_nonpos(a.x)}; }
// Lane-wise a > b ? a : b (the max instruction's definition).
V8 vmax(V8 a, V8 b) { return {_mm256_max_ps(a.x, b.x)}; }
// The forward's query block: 8 lanes (one ymm; 16 would not leave registers for the 8 accumulators).
using QWide = V8;
// The backward's block of scores and dP (4 rows x 16 keys stored, then the exps: the fused form (4 x 8 or 2 x
// 16 in registers) was 4-15% slower than this on AVX2).
constexpr int kProbRows = 4;
using KProb = V16;
constexpr bool kFuseProbs = false;

}  // namespace
}  // namespace kern::cpu::detail

#include "kernels/cpu/attention_small_impl.h"

KERN_ATTN_SMALL_ENTRY_POINTS(avx2)
