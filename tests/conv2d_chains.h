// The CPU conv2d's documented results (kernels/cpu/conv2d.cpp, conv2d_bias_grad.h; docs/apps.md
// "Determinism"), written as plain loops from the convolution's index formulas, not from the kernels'
// code: the tests compare every path, ISA and thread count with them bit for bit.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/kernel_shapes.h"

namespace engine::test {

// The im2col value both chains multiply by: x[n][c][h][w] at h = p * stride_h - pad_h + r,
// w = q * stride_w - pad_w + t, or +0 outside the image.
inline float im2col_value(const kern::Conv2dShape& s, const std::vector<float>& x, int64_t n, int64_t c,
                          int64_t p, int64_t q, int64_t r, int64_t t) {
  const int64_t h = p * s.stride_h - s.pad_h + r, w = q * s.stride_w - s.pad_w + t;
  const bool in = h >= 0 && h < s.H && w >= 0 && w < s.W;
  return in ? x[((n * s.C + c) * s.H + h) * s.W + w] : 0.f;
}

// The definition of the CPU conv weight gradient (kernels/cpu/conv2d.cpp, every path): each dw element is
// ONE fma chain over (n, p, q) in order, starting from +0, with im2col_value as the other factor. Written
// from the convolution's index formula, not from the kernel's code.
inline std::vector<float> conv2d_bwd_weight_chain(const kern::Conv2dShape& s, const std::vector<float>& dy,
                                                  const std::vector<float>& x) {
  std::vector<float> dw(s.K * s.C * s.R * s.S);
  for (int64_t k = 0; k < s.K; ++k)
    for (int64_t c = 0; c < s.C; ++c)
      for (int64_t r = 0; r < s.R; ++r)
        for (int64_t t = 0; t < s.S; ++t) {
          float acc = 0.f;
          for (int64_t n = 0; n < s.N; ++n)
            for (int64_t p = 0; p < s.P; ++p)
              for (int64_t q = 0; q < s.Q; ++q)
                acc = std::fma(dy[((n * s.K + k) * s.P + p) * s.Q + q], im2col_value(s, x, n, c, p, q, r, t),
                               acc);
          dw[((k * s.C + c) * s.R + r) * s.S + t] = acc;
        }
  return dw;
}

// The conv forward with its fused epilogue (every path: im2col GEMM, direct, grouped pointwise):
// y[n][k][p][q] starts at e = b[k] + t[n][k] (the terms given; b, t may be null) plus r[n][k][p][q] when r is
// given (+0 with none), then ONE fma chain over (c, r, s) in order: acc = fma(w[k][c][r][s], the x value or
// +0 outside the image (im2col_value), acc).
inline std::vector<float> conv2d_forward_chain(const kern::Conv2dShape& s, const std::vector<float>& x,
                                               const std::vector<float>& w, const float* b, const float* t,
                                               const float* r) {
  std::vector<float> y(s.N * s.K * s.P * s.Q);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t k = 0; k < s.K; ++k)
      for (int64_t p = 0; p < s.P; ++p)
        for (int64_t q = 0; q < s.Q; ++q) {
          const int64_t o = ((n * s.K + k) * s.P + p) * s.Q + q;
          float acc = 0.f;
          if (b || t) {
            const float e = b && t ? b[k] + t[n * s.K + k] : b ? b[k] : t[n * s.K + k];
            acc = r ? e + r[o] : e;
          } else if (r) {
            acc = r[o];
          }
          for (int64_t c = 0; c < s.C; ++c)
            for (int64_t rr = 0; rr < s.R; ++rr)
              for (int64_t ss = 0; ss < s.S; ++ss)
                acc = std::fma(w[((k * s.C + c) * s.R + rr) * s.S + ss],
                               im2col_value(s, x, n, c, p, q, rr, ss), acc);
          y[o] = acc;
        }
  return y;
}

// A pointwise conv's backward-data: dx[n][c][p] = ONE fma chain over k in order from +0,
// acc = fma(w[k][c], dy[n][k][p], acc).
inline std::vector<float> pointwise_backward_input_chain(const kern::Conv2dShape& s,
                                                         const std::vector<float>& dy,
                                                         const std::vector<float>& w) {
  const int64_t L = s.P * s.Q;
  std::vector<float> dx(s.N * s.C * L);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t c = 0; c < s.C; ++c)
      for (int64_t p = 0; p < L; ++p) {
        float acc = 0.0f;
        for (int64_t k = 0; k < s.K; ++k) acc = std::fma(w[k * s.C + c], dy[(n * s.K + k) * L + p], acc);
        dx[(n * s.C + c) * L + p] = acc;
      }
  return dx;
}

// The conv bias gradient db (K): float64 partial sums q[i % 8] over the pixels i of each image, images in
// order, then ((q0 + q1) + (q2 + q3)) + ((q4 + q5) + (q6 + q7)), rounded once to T.
template <typename T>
std::vector<T> conv2d_db_chain(const kern::Conv2dShape& s, const std::vector<T>& dy) {
  const int64_t PQ = s.P * s.Q;
  std::vector<T> db(s.K);
  for (int64_t k = 0; k < s.K; ++k) {
    double q[8] = {};
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t i = 0; i < PQ; ++i) q[i % 8] += double(dy[(n * s.K + k) * PQ + i]);
    db[k] = T(((q[0] + q[1]) + (q[2] + q[3])) + ((q[4] + q[5]) + (q[6] + q[7])));
  }
  return db;
}

// The per-sample bias gradient dt (N, K): one float64 chain over the pixels in order per (n, k), rounded
// once to T (the order of sum(dy, {2, 3})).
template <typename T>
std::vector<T> conv2d_dt_chain(const kern::Conv2dShape& s, const std::vector<T>& dy) {
  const int64_t PQ = s.P * s.Q;
  std::vector<T> dt(s.N * s.K);
  for (int64_t nk = 0; nk < s.N * s.K; ++nk) {
    double acc = 0.0;
    for (int64_t i = 0; i < PQ; ++i) acc += double(dy[nk * PQ + i]);
    dt[nk] = T(acc);
  }
  return dt;
}

}  // namespace engine::test
