// The AVX-512 build of the small-D CPU attention (attention_small.h): a 16-lane block is one __m512, an
// 8-lane d vector an __m256. This file alone is compiled with -mavx512f -mfma -ffp-contract=off;
// attention.cpp calls it only when cpu_isa() is Avx512. Bitwise the scalar and AVX2 builds.
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as the unused merge source, which
// -Wmaybe-uninitialized reports at every inlined call: a known false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/attention_small.h"
#include "kernels/cpu/simd_math.h"
#include "kernels/cpu/simd_math_avx512.h"

namespace kern::cpu::detail {
namespace {

struct V16 {
  static constexpr int kLanes = 16;
  __m512 x;
};
struct V8 {
  static constexpr int kLanes = 8;
  __m256 x;
};

template <class V>
V vload(const float* p);
template <>
V16 vload<V16>(const float* p) {
  return {_mm512_loadu_ps(p)};
}
template <>
V8 vload<V8>(const float* p) {
  return {_mm256_loadu_ps(p)};
}
template <class V>
V vset(float x);
template <>
V16 vset<V16>(float x) {
  return {_mm512_set1_ps(x)};
}
template <>
V8 vset<V8>(float x) {
  return {_mm256_set1_ps(x)};
}
template <class V>
V vzero() {
  return vset<V>(0.0f);
}
void vstore(float* p, V16 a) { _mm512_storeu_ps(p, a.x); }
void vstore(float* p, V8 a) { _mm256_storeu_ps(p, a.x); }
V16 vmul(V16 a, V16 b) { return {_mm512_mul_ps(a.x, b.x)}; }
V8 vmul(V8 a, V8 b) { return {_mm256_mul_ps(a.x, b.x)}; }
V16 vadd(V16 a, V16 b) { return {_mm512_add_ps(a.x, b.x)}; }
V16 vsub(V16 a, V16 b) { return {_mm512_sub_ps(a.x, b.x)}; }
V16 vfma(V16 a, V16 b, V16 c) { return {_mm512_fmadd_ps(a.x, b.x, c.x)}; }
V8 vfma(V8 a, V8 b, V8 c) { return {_mm256_fmadd_ps(a.x, b.x, c.x)}; }
V16 vexp2(V16 a) { return {simd::exp2_nonpos16(a.x)}; }
V8 vadd(V8 a, V8 b) { return {_mm256_add_ps(a.x, b.x)}; }
V8 vsub(V8 a, V8 b) { return {_mm256_sub_ps(a.x, b.x)}; }
V8 vexp2(V8 a) { return {simd::exp2_nonpos(a.x)}; }
// Lane-wise a > b ? a : b (the max instructions' definition).
V16 vmax(V16 a, V16 b) { return {_mm512_max_ps(a.x, b.x)}; }
V8 vmax(V8 a, V8 b) { return {_mm256_max_ps(a.x, b.x)}; }
// The forward's query block: 16 lanes (the last <= 8 queries of a head: V8).
using QWide = V16;
// The backward's block of scores and dP (4 rows x 16 keys: 8 zmm accumulators, fused).
constexpr int kProbRows = 4;
using KProb = V16;
constexpr bool kFuseProbs = true;

}  // namespace
}  // namespace kern::cpu::detail

#include "kernels/cpu/attention_small_impl.h"

KERN_ATTN_SMALL_ENTRY_POINTS(avx512)
