// The seed UNet's real kernel shapes (../shared/reference/unet2d_spec.md, section 2), shared by every
// benchmark so that the CPU, CUDA and conv tables measure the same rows.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "kernels/kernel_shapes.h"

namespace bench {

struct ConvCase {
  const char* name;
  int64_t C, K, H, R, stride, pad;  // in channels, out channels, input side, kernel side, stride, padding
};
// The seed UNet's distinct conv shapes.
constexpr ConvCase kConvs[] = {
    {"conv3x3 32->32", 32, 32, 28, 3, 1, 1},    // down_blocks.0 resnets, up_blocks.2 conv2
    {"conv3x3 64->32", 64, 32, 28, 3, 1, 1},    // up_blocks.2 resnets.1/2 conv1
    {"conv3x3 96->32", 96, 32, 28, 3, 1, 1},    // up_blocks.2 resnets.0 conv1
    {"conv3x3 64->64", 64, 64, 28, 3, 1, 1},    // up_blocks.1 upsampler conv (after x2 to 28)
    {"conv3x3 128->64", 128, 64, 14, 3, 1, 1},  // up_blocks.1 resnets.0/1 conv1
    {"conv3x3 96->64", 96, 64, 14, 3, 1, 1},    // up_blocks.1 resnets.2 conv1
    {"conv3x3 64->64", 64, 64, 14, 3, 1, 1},    // resnet conv2 @14, up_blocks.0 upsampler conv
    {"conv3x3 32->64", 32, 64, 14, 3, 1, 1},    // down_blocks.1 resnets.0 conv1
    {"conv3x3 128->64", 128, 64, 7, 3, 1, 1},   // up_blocks.0 resnets conv1
    {"conv3x3 64->64", 64, 64, 7, 3, 1, 1},     // down_blocks.2 / mid resnets
    {"down s2 32", 32, 32, 28, 3, 2, 1},        // down_blocks.0 downsampler 28->14
    {"down s2 64", 64, 64, 14, 3, 2, 1},        // down_blocks.1 downsampler 14->7
    {"conv1x1 96->32", 96, 32, 28, 1, 1, 0},    // up_blocks.2 resnets.0 shortcut
    {"conv1x1 128->64", 128, 64, 14, 1, 1, 0},  // up_blocks.1 resnets.0/1 shortcut
    {"conv1x1 96->64", 96, 64, 14, 1, 1, 0},    // up_blocks.1 resnets.2 shortcut
    {"conv1x1 128->64", 128, 64, 7, 1, 1, 0},   // up_blocks.0 shortcuts
};

inline kern::Conv2dShape conv_shape(const ConvCase& c, int64_t batch) {
  return kern::conv2d_shape(batch, c.C, c.H, c.H, c.K, c.R, c.R, c.stride, c.stride, c.pad, c.pad);
}

// "16x32x28x28->28x28": the batch, input and output sides of a conv row.
inline std::string conv_shape_str(const kern::Conv2dShape& s) {
  return std::to_string(s.N) + "x" + std::to_string(s.C) + "x" + std::to_string(s.H) + "x" +
         std::to_string(s.W) + "->" + std::to_string(s.P) + "x" + std::to_string(s.Q);
}

// "conv3x3 32->32" at 28 -> "conv3x3_32to32_28x28" (benchmark-filter friendly).
inline std::string conv_id(const ConvCase& c) {
  std::string out;
  for (const char* p = c.name; *p; ++p) {
    if (*p == ' ')
      out += '_';
    else if (p[0] == '-' && p[1] == '>')
      out += "to", ++p;
    else
      out += *p;
  }
  return out + "_" + std::to_string(c.H) + "x" + std::to_string(c.H);
}

// Activation shapes (channels, side) that group norm and SiLU see.
struct Act {
  int64_t C, H;
};
constexpr Act kActs[] = {{32, 28}, {64, 28},  {96, 28}, {32, 14}, {64, 14},
                         {96, 14}, {128, 14}, {64, 7},  {128, 7}};

// "16x32x28x28 G=32" (groups > 0) or "16x32x28x28": an activation row at batch N.
inline std::string act_shape_str(int64_t N, const Act& a, int64_t groups = 0) {
  std::string s =
      std::to_string(N) + "x" + std::to_string(a.C) + "x" + std::to_string(a.H) + "x" + std::to_string(a.H);
  return groups > 0 ? s + " G=" + std::to_string(groups) : s;
}

// The kernel rows both benchmarks (cpu_kernels_bench, cuda_kernels_bench) run at these shapes, in this
// order; each benchmark supplies how it measures one row. `selected(name)` applies --filter.
struct UnetRowBenches {
  std::function<void(const ConvCase&)> conv;         // every kConvs shape, fwd / bwd-data / bwd-filter
  std::function<void(int64_t tokens)> attention;     // 8 heads of dim 8 at 196 and 49 tokens
  std::function<void(const Act&)> group_norm, silu;  // every kActs shape; silu at four of them
  std::function<void()> adamw;                       // AdamW over the seed model's parameters
};
inline void run_unet_rows(const std::function<bool(const std::string&)>& selected, const UnetRowBenches& b) {
  for (const ConvCase& c : kConvs)
    if (selected(std::string(c.name) + " conv")) b.conv(c);
  if (selected("attention"))
    for (int64_t L : {196, 49}) b.attention(L);
  if (selected("group_norm"))
    for (const Act& a : kActs) b.group_norm(a);
  if (selected("silu"))
    for (const Act& a : {kActs[0], kActs[1], kActs[6], kActs[7]}) b.silu(a);
  if (selected("adamw")) b.adamw();
}

}  // namespace bench
