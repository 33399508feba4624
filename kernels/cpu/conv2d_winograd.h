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

// The output tile side m of F(m x m, 3 x 3) used by conv2d_forward: 2. F(4x4, 3x3) (tile 4) measured up to
// 1.3x faster again on the 28x28 and 14x14 shapes but its float32 error (about 19x F(2x2)'s on the UNet
// shapes) broke the whole-model float32-vs-PyTorch parity floor (Model.ReferenceFixtureF64Tiny:
// 1.25x the allowed error), so it is only reachable through the tile argument (tests, benchmarks).
constexpr int kWinogradTile = 2;
// Auto uses Winograd for C * K at least this (channel counts only: never the batch or thread count).
constexpr int64_t kWinogradAutoMinCK = 2048;

// y (N, K, H, W) = conv(x (N, C, H, W), w (K, C, 3, 3)) + b (K; may be nullptr), stride 1, pad 1, with
// F(m x m, 3 x 3), m = tile (2 or 4). Throws engine::Error if !winograd_applies(s) or tile is not 2 or 4.
// The weight transform is computed in float64 and rounded once; error bound: see docs/apps.md.
void conv2d_forward_winograd(const Conv2dShape& s, const float* x, const float* w, const float* b, float* y,
                             int tile = kWinogradTile);

// dx (N, C, H, W) = the input gradient of that convolution for dy (N, K, H, W), w (K, C, 3, 3): a Winograd
// forward conv of dy with the flipped, transposed weights (overwrites dx). Same errors thrown as above.
// conv2d_backward_input<float> calls it whenever winograd_selected(s).
void conv2d_backward_input_winograd(const Conv2dShape& s, const float* dy, const float* w, float* dx,
                                    int tile = kWinogradTile);

}  // namespace kern::cpu
