// Winograd F(m x m, 3 x 3) forward convolution on the CPU (float32 only) for 3x3, stride-1, pad-1 convs,
// and the run-time choice between it and im2col + GEMM (ENGINE_CPU_CONV=auto|winograd|im2col).
// Deterministic: the tile transforms are the same float operations on every ISA path (the portable per-tile
// code, or its AVX2 / AVX-512 versions in conv2d_winograd_simd.h; no FMA contraction, no reassociation)
// and the transform-domain products go through kern::cpu::gemm, so every output is bitwise independent
// of the thread count, the batch size and the ISA path (ENGINE_CPU_ISA).
#pragma once
#include <cstdint>

#include "kernels/kernel_shapes.h"

namespace kern::cpu {

// Which algorithm conv2d_forward<float> uses for 3x3 stride-1 pad-1 convolutions.
enum class CpuConvAlgo : int { Auto = -1, Im2col = 0, Winograd = 1 };
// "auto", "im2col" or "winograd".
const char* cpu_conv_algo_name(CpuConvAlgo a);
// The setting in use: ENGINE_CPU_CONV=auto|winograd|im2col if set (read once; an unknown value throws
// engine::Error), else auto. Auto = Winograd where it applies and C * K >= kWinogradAutoMinCK (where it
// measured faster than im2col; bench/RESULTS.md), im2col elsewhere.
CpuConvAlgo cpu_conv_algo();
// Forces a setting (tests, benchmarks); Auto restores the environment's. Not thread-safe.
void set_cpu_conv_algo(CpuConvAlgo a);

// True when the Winograd kernel can compute s: 3x3 kernel, stride 1, padding 1 (so P == H, Q == W).
bool winograd_applies(const Conv2dShape& s);
// True when conv2d_forward<float> will use Winograd for s (winograd_applies and the setting allows it).
bool winograd_selected(const Conv2dShape& s);

// The output tile side m of F(m x m, 3 x 3) used by conv2d_forward: 2. F(4x4, 3x3) (tile 4; points
// {0, +-2/3, +-3/2, inf}, conv2d_winograd_f43.h) is now accurate enough: float32 RMS error 3.0x F(2x2)'s and
// 1.9x im2col's on the UNet shapes (Lavin & Gray's points: 6.4x and 4.0x), whole-model float32-vs-PyTorch
// parity ratio 0.79 (Model.ReferenceFixtureF64Tiny*, pass <= 1; F(2x2) 0.86, the old points 1.25). But
// with F(2x2)'s SIMD transforms it measured no faster (1 thread, batch 16, AVX-512 path: 1.14-1.16x
// F(2x2)'s time over the UNet shapes, AVX2 path 0.97x; callgrind, AVX2: 14% fewer instructions), so it
// stays reachable only through the tile argument (tests, benchmarks). The tile may never depend on the
// ISA path (that would change the bits); docs/apps.md has the error table.
constexpr int kWinogradTile = 2;
// Auto uses Winograd for C * K at least this (channel counts only: never the batch or thread count).
// 1024: the UNet's 32 -> 32 convs at 28x28 take Winograd too (forward + backward-data, batch 16, 1 thread:
// 0.41-0.79x im2col's time in four runs on the loaded 2-core VM; callgrind: bench/RESULTS.md); conv_in (1 ->
// 32) stays im2col.
constexpr int64_t kWinogradAutoMinCK = 1024;

// The optional additive epilogue of the Winograd forward (both may be nullptr): a per-sample bias
// t (N, K) and a residual r (N, K, H, W), contiguous; r may not alias y.
// (No member initialisers: an aggregate, so `{}` is both nullptrs and no constructor is ever emitted.)
struct WinogradAdd {
  const float* t;
  const float* r;
};

// The per-(n, k) term added to an output tile: b[k] + t[nk] (nk = n * K + k), either term only where its
// pointer is given, 0 if neither is. Every output transform (portable and SIMD) and the im2col forward's
// prefill (kernels/cpu/conv2d.cpp, float and double) use this one function, so
// the bits agree. static: internal linkage, so that the copy compiled into an AVX-512 file can never be
// linked into another caller (cf. conv2d_winograd_simd_impl.h).
template <typename T>
static inline T winograd_epilogue_bias(const T* b, const T* t, int64_t k, int64_t nk) {
  if (b && t) return b[k] + t[nk];
  return b ? b[k] : t ? t[nk] : T(0);
}

// y (N, K, H, W) = conv(x (N, C, H, W), w (K, C, 3, 3)) + b (K; may be nullptr) [+ add.t (N, K)]
// [+ add.r (N, K, H, W)], stride 1, pad 1, with F(m x m, 3 x 3), m = tile (2 or 4). Each output is
// (A^T M A + e) + r with e = winograd_epilogue_bias (terms absent are not added). Throws engine::Error if
// !winograd_applies(s) or tile is not 2 or 4. The weight transform is computed in float64 and rounded once;
// error bound: see docs/apps.md.
void conv2d_forward_winograd(const Conv2dShape& s, const float* x, const float* w, const float* b, float* y,
                             int tile = kWinogradTile, const WinogradAdd& add = {});

// dx (N, C, H, W) = the input gradient of that convolution for dy (N, K, H, W), w (K, C, 3, 3): a Winograd
// forward conv of dy with the flipped, transposed weights (overwrites dx). Same errors thrown as above.
// conv2d_backward_input<float> calls it whenever winograd_selected(s).
void conv2d_backward_input_winograd(const Conv2dShape& s, const float* dy, const float* w, float* dx,
                                    int tile = kWinogradTile);

}  // namespace kern::cpu

namespace kern::cpu {

// dw (K, C, 3, 3) = the weight gradient of that convolution, sum over images and pixels of dy (N, K, H, W)
// times x (N, C, H, W), with F(2x2, 3x3) (conv2d_winograd_wgrad.cpp; overwrites dw; the bias gradient is
// the caller's). Each dw element is bitwise independent of the thread count and the ISA path. Error: see
// docs/apps.md. Throws engine::Error if !winograd_applies(s). conv2d_backward_weight<float> calls it
// whenever winograd_selected(s).
void conv2d_backward_weight_winograd(const Conv2dShape& s, const float* dy, const float* x, float* dw);

}  // namespace kern::cpu
