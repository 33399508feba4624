// The portable build of the small-D CPU attention (attention_small.h): plain C++ lanes (std::fma, and
// simd_math.h's exp2_nonpos emulated step for step), compiled with -ffp-contract=off. It is the path of
// ENGINE_CPU_ISA=scalar and of non-x86 builds, and bitwise the AVX2 and AVX-512 builds.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/attention_small.h"

namespace kern::cpu::detail {
namespace {

template <int N>
struct Lanes {
  static constexpr int kLanes = N;
  float v[N];
};
using V16 = Lanes<16>;
using V8 = Lanes<8>;

template <class V>
V vload(const float* p) {
  V r;
  for (int l = 0; l < V::kLanes; ++l) r.v[l] = p[l];
  return r;
}
template <class V>
V vset(float x) {
  V r;
  for (int l = 0; l < V::kLanes; ++l) r.v[l] = x;
  return r;
}
template <class V>
V vzero() {
  return vset<V>(0.0f);
}
template <int N>
void vstore(float* p, Lanes<N> a) {
  for (int l = 0; l < N; ++l) p[l] = a.v[l];
}
template <int N>
Lanes<N> vmul(Lanes<N> a, Lanes<N> b) {
  for (int l = 0; l < N; ++l) a.v[l] *= b.v[l];
  return a;
}
template <int N>
Lanes<N> vadd(Lanes<N> a, Lanes<N> b) {
  for (int l = 0; l < N; ++l) a.v[l] += b.v[l];
  return a;
}
template <int N>
Lanes<N> vsub(Lanes<N> a, Lanes<N> b) {
  for (int l = 0; l < N; ++l) a.v[l] -= b.v[l];
  return a;
}
template <int N>
Lanes<N> vfma(Lanes<N> a, Lanes<N> b, Lanes<N> c) {
  for (int l = 0; l < N; ++l) c.v[l] = std::fma(a.v[l], b.v[l], c.v[l]);
  return c;
}

// simd::exp2_nonpos (simd_math.h) on one lane, operation for operation: _mm256_max_ps(lo, x) is
// lo > x ? lo : x; the rounding is to nearest even; the power of two is built from the exponent bits.
float exp2_nonpos1(float t0) {
  const float lo = -126.0f;
  const float t = lo > t0 ? lo : t0;
  const float n = std::nearbyint(t);
  const float f = t - n;
  float y = 1.32647273e-3f;
  y = std::fma(y, f, 9.67151299e-3f);
  y = std::fma(y, f, 5.55073358e-2f);
  y = std::fma(y, f, 2.40222424e-1f);
  y = std::fma(y, f, 6.93147004e-1f);
  y = std::fma(y, f, 1.0f);
  // _mm256_cvtps_epi32: exact for the integral n in range, INT32_MIN ("integer indefinite") for NaN and
  // out-of-range values (only inputs > 0 reach those; then y is NaN or the result is meaningless alike).
  // (Branch-free, so that the compiler can vectorise the lane loop.)
  const bool in_range = (n >= -2147483648.0f) & (n < 2147483648.0f);
  const int32_t converted = static_cast<int32_t>(in_range ? n : 0.0f);
  const int32_t ni = in_range ? converted : INT32_MIN;
  const uint32_t bits = (static_cast<uint32_t>(ni) + 127u) << 23;
  float e;
  std::memcpy(&e, &bits, sizeof e);
  y = y * e;
  return t0 < lo ? 0.0f : y;
}
template <int N>
Lanes<N> vexp2(Lanes<N> a) {
  for (int l = 0; l < N; ++l) a.v[l] = exp2_nonpos1(a.v[l]);
  return a;
}

float max2(float a, float b) { return a > b ? a : b; }  // _mm*_max_ps(a, b) lane-wise
template <int N>
Lanes<N> vmax(Lanes<N> a, Lanes<N> b) {
  for (int l = 0; l < N; ++l) a.v[l] = max2(a.v[l], b.v[l]);
  return a;
}
// The forward's query block: 8 lanes.
using QWide = V8;
// The backward's block of scores and dP (as the AVX2 build).
constexpr int kProbRows = 4;
using KProb = V16;
constexpr bool kFuseProbs = false;

}  // namespace
}  // namespace kern::cpu::detail

#include "kernels/cpu/attention_small_impl.h"

KERN_ATTN_SMALL_ENTRY_POINTS(scalar)

namespace kern::cpu::detail {
int64_t attn_small_scratch_floats(int64_t Lq, int64_t Lk, int64_t D, bool backward) {
  return scratch_floats(Lq, Lk, D, backward);
}
}  // namespace kern::cpu::detail
