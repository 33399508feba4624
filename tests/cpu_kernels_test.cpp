// Tests of the CPU kernels (kern::cpu) against independent, straightforward definitions written here:
// naive loops, explicit formulas and finite differences (in double).
#include "kernels/cpu/cpu_kernels.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/philox.h"
#include "tests/test_util.h"

namespace {

using kern::Conv2dShape;
using kern::Strided;
namespace kc = kern::cpu;

template <typename T>
constexpr double tol() {
  return std::is_same_v<T, float> ? 1e-4 : 1e-10;
}

using engine::test::random_vector;

// max |got - ref| <= rtol * max(1, max |ref|)
template <typename T, typename U>
void expect_close(const std::vector<T>& got, const std::vector<U>& ref, double rtol, const char* what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  double scale = 1.0, err = 0.0;
  size_t worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    scale = std::max(scale, std::abs(double(ref[i])));
    const double e = std::abs(double(got[i]) - double(ref[i]));
    if (!(e <= err)) {  // also catches NaN
      err = e;
      worst = i;
    }
  }
  EXPECT_LE(err, rtol * scale) << what << ": worst index " << worst << " got " << double(got[worst])
                               << " ref " << double(ref[worst]);
}

Strided make_strided(std::vector<int64_t> shape, std::vector<int64_t> stride = {}) {
  Strided s{};
  s.ndim = static_cast<int>(shape.size());
  int64_t acc = 1;
  for (int d = s.ndim - 1; d >= 0; --d) {
    s.shape[d] = shape[d];
    s.stride[d] = stride.empty() ? acc : stride[d];
    acc *= shape[d];
  }
  return s;
}

// ---------------------------------------------------------------- GEMM

template <typename T>
void gemm_case(bool ta, bool tb, int64_t M, int64_t N, int64_t K) {
  const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 2, ldc = N + 1;
  auto A = random_vector<T>((ta ? K : M) * lda, 1), B = random_vector<T>((tb ? N : K) * ldb, 2),
       C = random_vector<T>(M * ldc, 3);
  std::vector<double> ref(C.begin(), C.end());
  const double alpha = 0.75, beta = -0.5;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k)
        acc += double(ta ? A[k * lda + i] : A[i * lda + k]) * double(tb ? B[j * ldb + k] : B[k * ldb + j]);
      ref[i * ldc + j] = alpha * acc + beta * double(C[i * ldc + j]);
    }
  kc::gemm<T>(ta, tb, M, N, K, T(alpha), A.data(), lda, B.data(), ldb, T(beta), C.data(), ldc);
  expect_close(C, ref, tol<T>() * K, "gemm");
}

TEST(CpuKernel, Gemm) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      gemm_case<double>(ta, tb, 7, 5, 9);
      gemm_case<float>(ta, tb, 33, 17, 40);
    }
}

template <typename T>
void gemm_batched_case(int64_t batch, int64_t M, int64_t N, int64_t K, bool ta, bool tb) {
  auto A = random_vector<T>(batch * M * K, 4), B = random_vector<T>(batch * K * N, 5);
  std::vector<T> C(batch * M * N, T(7));
  std::vector<double> ref(C.size());
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k)
          acc += double(ta ? A[b * M * K + k * M + i] : A[b * M * K + i * K + k]) *
                 double(tb ? B[b * K * N + j * K + k] : B[b * K * N + k * N + j]);
        ref[b * M * N + i * N + j] = 2.0 * acc;
      }
  kc::gemm_batched<T>(batch, ta, tb, M, N, K, T(2), A.data(), ta ? M : K, M * K, B.data(), tb ? K : N, K * N,
                      T(0), C.data(), N, M * N);
  expect_close(C, ref, tol<T>() * K, "gemm_batched");
}

TEST(CpuKernel, GemmBatched) {
  gemm_batched_case<double>(5, 6, 7, 8, false, true);
  gemm_batched_case<float>(64, 49, 49, 8, false, true);
  gemm_batched_case<float>(3, 20, 8, 30, true, false);
}

// ---------------------------------------------------------------- conv2d

Conv2dShape conv_shape(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R, int64_t S,
                       int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  return kern::conv2d_shape(N, C, H, W, K, R, S, sh, sw, ph, pw);
}

template <typename T>
std::vector<double> naive_conv_fwd(const Conv2dShape& s, const std::vector<T>& x, const std::vector<T>& w,
                                   const T* b) {
  std::vector<double> y(s.N * s.K * s.P * s.Q);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t k = 0; k < s.K; ++k)
      for (int64_t p = 0; p < s.P; ++p)
        for (int64_t q = 0; q < s.Q; ++q) {
          double acc = b ? double(b[k]) : 0.0;
          for (int64_t c = 0; c < s.C; ++c)
            for (int64_t r = 0; r < s.R; ++r)
              for (int64_t t = 0; t < s.S; ++t) {
                const int64_t h = p * s.stride_h - s.pad_h + r, ww = q * s.stride_w - s.pad_w + t;
                if (h < 0 || h >= s.H || ww < 0 || ww >= s.W) continue;
                acc += double(x[((n * s.C + c) * s.H + h) * s.W + ww]) *
                       double(w[((k * s.C + c) * s.R + r) * s.S + t]);
              }
          y[((n * s.K + k) * s.P + p) * s.Q + q] = acc;
        }
  return y;
}

// dx[n,c,h,w] = sum_{k,r,s} dy[n,k,p,q] * w[k,c,r,s] over (p, q) with h = p*sh - ph + r, w = q*sw - pw + s.
template <typename T>
std::vector<double> naive_conv_bwd_input(const Conv2dShape& s, const std::vector<T>& dy,
                                         const std::vector<T>& w) {
  std::vector<double> dx(s.N * s.C * s.H * s.W, 0.0);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t c = 0; c < s.C; ++c)
      for (int64_t h = 0; h < s.H; ++h)
        for (int64_t ww = 0; ww < s.W; ++ww) {
          double acc = 0;
          for (int64_t k = 0; k < s.K; ++k)
            for (int64_t r = 0; r < s.R; ++r)
              for (int64_t t = 0; t < s.S; ++t) {
                const int64_t ph = h + s.pad_h - r, pq = ww + s.pad_w - t;
                if (ph < 0 || pq < 0 || ph % s.stride_h || pq % s.stride_w) continue;
                const int64_t p = ph / s.stride_h, q = pq / s.stride_w;
                if (p >= s.P || q >= s.Q) continue;
                acc += double(dy[((n * s.K + k) * s.P + p) * s.Q + q]) *
                       double(w[((k * s.C + c) * s.R + r) * s.S + t]);
              }
          dx[((n * s.C + c) * s.H + h) * s.W + ww] = acc;
        }
  return dx;
}

// dw[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] * x[n,c,p*sh-ph+r,q*sw-pw+s]; db[k] = sum_{n,p,q} dy[n,k,p,q].
template <typename T>
void naive_conv_bwd_weight(const Conv2dShape& s, const std::vector<T>& dy, const std::vector<T>& x,
                           std::vector<double>& dw, std::vector<double>& db) {
  dw.assign(s.K * s.C * s.R * s.S, 0.0);
  db.assign(s.K, 0.0);
  for (int64_t k = 0; k < s.K; ++k) {
    for (int64_t c = 0; c < s.C; ++c)
      for (int64_t r = 0; r < s.R; ++r)
        for (int64_t t = 0; t < s.S; ++t) {
          double acc = 0;
          for (int64_t n = 0; n < s.N; ++n)
            for (int64_t p = 0; p < s.P; ++p)
              for (int64_t q = 0; q < s.Q; ++q) {
                const int64_t h = p * s.stride_h - s.pad_h + r, ww = q * s.stride_w - s.pad_w + t;
                if (h < 0 || h >= s.H || ww < 0 || ww >= s.W) continue;
                acc += double(dy[((n * s.K + k) * s.P + p) * s.Q + q]) *
                       double(x[((n * s.C + c) * s.H + h) * s.W + ww]);
              }
          dw[((k * s.C + c) * s.R + r) * s.S + t] = acc;
        }
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t i = 0; i < s.P * s.Q; ++i) db[k] += double(dy[(n * s.K + k) * s.P * s.Q + i]);
  }
}

template <typename T>
void conv_case(const Conv2dShape& s, bool bias) {
  SCOPED_TRACE(::testing::Message() << "conv N" << s.N << " C" << s.C << " H" << s.H << " W" << s.W << " K"
                                    << s.K << " R" << s.R << " S" << s.S << " stride " << s.stride_h << ","
                                    << s.stride_w << " pad " << s.pad_h << "," << s.pad_w << " bias "
                                    << bias);
  auto x = random_vector<T>(s.N * s.C * s.H * s.W, 11), w = random_vector<T>(s.K * s.C * s.R * s.S, 12),
       b = random_vector<T>(s.K, 13);
  auto dy = random_vector<T>(s.N * s.K * s.P * s.Q, 14);
  const double t = tol<T>() * std::sqrt(double(s.C * s.R * s.S + s.N * s.P * s.Q));
  std::vector<T> y(s.N * s.K * s.P * s.Q, T(99));
  kc::conv2d_forward<T>(s, x.data(), w.data(), bias ? b.data() : nullptr, y.data());
  expect_close(y, naive_conv_fwd(s, x, w, bias ? b.data() : nullptr), t, "conv forward");

  std::vector<T> dx(x.size(), T(99));
  kc::conv2d_backward_input<T>(s, dy.data(), w.data(), dx.data());
  expect_close(dx, naive_conv_bwd_input(s, dy, w), t, "conv backward input");

  std::vector<T> dw(w.size(), T(99)), db(s.K, T(99));
  std::vector<double> rdw, rdb;
  naive_conv_bwd_weight(s, dy, x, rdw, rdb);
  kc::conv2d_backward_weight<T>(s, dy.data(), x.data(), dw.data(), bias ? db.data() : nullptr);
  expect_close(dw, rdw, t, "conv backward weight");
  if (bias) expect_close(db, rdb, t, "conv backward bias");
}

std::vector<Conv2dShape> conv_configs() {
  return {
      conv_shape(3, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1),    // 3x3 s1 p1, odd sizes
      conv_shape(3, 2, 9, 7, 5, 3, 3, 2, 2, 1, 1),    // 3x3 s2 p1
      conv_shape(4, 5, 5, 6, 3, 1, 1, 1, 1, 0, 0),    // 1x1 pointwise
      conv_shape(2, 3, 11, 8, 4, 5, 3, 2, 1, 2, 0),   // 5x3, stride (2,1), pad (2,0)
      conv_shape(2, 4, 8, 9, 3, 1, 1, 2, 2, 0, 0),    // 1x1 stride 2
      conv_shape(1, 2, 6, 5, 3, 3, 3, 1, 1, 1, 1),    // batch 1 (serial path)
      conv_shape(5, 3, 10, 10, 6, 4, 4, 3, 2, 2, 1),  // 4x4 kernel, stride (3,2), pad (2,1)
  };
}

TEST(CpuKernel, Conv2dDouble) {
  for (const auto& s : conv_configs())
    for (bool bias : {false, true}) conv_case<double>(s, bias);
}

TEST(CpuKernel, Conv2dFloat) {
  for (const auto& s : conv_configs())
    for (bool bias : {false, true}) conv_case<float>(s, bias);
}

TEST(CpuKernel, Conv2dBackwardWeightDeterministic) {
  const auto s = conv_shape(9, 8, 12, 12, 8, 3, 3, 1, 1, 1, 1);
  auto x = random_vector<float>(s.N * s.C * s.H * s.W, 21),
       dy = random_vector<float>(s.N * s.K * s.P * s.Q, 22);
  std::vector<float> dw1(s.K * s.C * 9), dw2(dw1.size()), db1(s.K), db2(s.K);
  kc::conv2d_backward_weight<float>(s, dy.data(), x.data(), dw1.data(), db1.data());
  for (int rep = 0; rep < 3; ++rep) {
    kc::conv2d_backward_weight<float>(s, dy.data(), x.data(), dw2.data(), db2.data());
    EXPECT_EQ(0, std::memcmp(dw1.data(), dw2.data(), sizeof(float) * dw1.size()));
    EXPECT_EQ(0, std::memcmp(db1.data(), db2.data(), sizeof(float) * db1.size()));
  }
}

// Prints GFLOP/s of the 3 conv kernels at the UNet-like size; run with --gtest_also_run_disabled_tests.
TEST(CpuKernel, DISABLED_Conv2dTiming) {
  const auto s = conv_shape(128, 32, 28, 28, 32, 3, 3, 1, 1, 1, 1);
  auto x = random_vector<float>(s.N * s.C * s.H * s.W, 1), w = random_vector<float>(s.K * s.C * 9, 2),
       b = random_vector<float>(s.K, 3);
  auto dy = random_vector<float>(s.N * s.K * s.P * s.Q, 4);
  std::vector<float> y(dy.size()), dx(x.size()), dw(w.size()), db(s.K);
  auto bench = [&](const char* name, auto&& fn) {
    fn();
    double best = 1e30;
    for (int i = 0; i < 5; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      fn();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf("%-24s %8.2f ms  %6.1f GFLOP/s (threads %d)\n", name, best * 1e3, s.flops() / best * 1e-9,
                omp_get_max_threads());
  };
  bench("conv2d_forward", [&] { kc::conv2d_forward<float>(s, x.data(), w.data(), b.data(), y.data()); });
  bench("conv2d_backward_input",
        [&] { kc::conv2d_backward_input<float>(s, dy.data(), w.data(), dx.data()); });
  bench("conv2d_backward_weight",
        [&] { kc::conv2d_backward_weight<float>(s, dy.data(), x.data(), dw.data(), db.data()); });
  const int64_t BH = 1024, L = 196, D = 8;
  auto q = random_vector<float>(BH * L * D, 5), k = random_vector<float>(BH * L * D, 6),
       v = random_vector<float>(BH * L * D, 7);
  std::vector<float> o(q.size()), lse(BH * L), dq(q.size()), dk(q.size()), dv(q.size());
  auto bench2 = [&](const char* name, auto&& fn) {
    fn();
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    std::printf("%-24s %8.2f ms\n", name,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * 1e3);
  };
  bench2("attention_fwd 1024x196x8", [&] {
    kc::attention_forward<float>(BH, L, L, D, 0.35, q.data(), k.data(), v.data(), o.data(), lse.data());
  });
  bench2("attention_bwd 1024x196x8", [&] {
    kc::attention_backward<float>(BH, L, L, D, 0.35, q.data(), k.data(), v.data(), o.data(), lse.data(),
                                  v.data(), dq.data(), dk.data(), dv.data());
  });
}

// ---------------------------------------------------------------- group_norm

// Reference forward in double directly from the definition.
void naive_group_norm(int64_t N, int64_t C, int64_t HW, int64_t G, double eps, const std::vector<double>& x,
                      const double* gamma, const double* beta, std::vector<double>& y,
                      std::vector<double>& mean, std::vector<double>& rstd) {
  const int64_t Cg = C / G;
  y.assign(x.size(), 0.0);
  mean.assign(N * G, 0.0);
  rstd.assign(N * G, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < G; ++g) {
      double s = 0, ss = 0;
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c)
        for (int64_t i = 0; i < HW; ++i) s += x[(n * C + c) * HW + i];
      const double mu = s / double(Cg * HW);
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c)
        for (int64_t i = 0; i < HW; ++i) ss += std::pow(x[(n * C + c) * HW + i] - mu, 2);
      const double var = ss / double(Cg * HW);
      mean[n * G + g] = mu;
      rstd[n * G + g] = 1.0 / std::sqrt(var + eps);
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c)
        for (int64_t i = 0; i < HW; ++i) {
          const int64_t j = (n * C + c) * HW + i;
          y[j] = (x[j] - mu) / std::sqrt(var + eps) * (gamma ? gamma[c] : 1.0) + (beta ? beta[c] : 0.0);
        }
    }
}

TEST(CpuKernel, GroupNormForward) {
  const int64_t N = 3, C = 6, HW = 10, G = 3;
  const double eps = 1e-5;
  auto xd = random_vector<double>(N * C * HW, 31, -2.0, 3.0), gd = random_vector<double>(C, 32),
       bd = random_vector<double>(C, 33);
  for (bool affine : {false, true}) {
    std::vector<double> ry, rm, rr;
    naive_group_norm(N, C, HW, G, eps, xd, affine ? gd.data() : nullptr, affine ? bd.data() : nullptr, ry, rm,
                     rr);
    std::vector<double> y(xd.size()), m(N * G), r(N * G);
    kc::group_norm_forward<double>(N, C, HW, G, eps, xd.data(), affine ? gd.data() : nullptr,
                                   affine ? bd.data() : nullptr, y.data(), m.data(), r.data());
    expect_close(y, ry, 1e-10, "gn y");
    expect_close(m, rm, 1e-10, "gn mean");
    expect_close(r, rr, 1e-10, "gn rstd");
    std::vector<float> xf(xd.begin(), xd.end()), gf(gd.begin(), gd.end()), bf(bd.begin(), bd.end());
    std::vector<float> yf(xd.size()), mf(N * G), rf(N * G);
    kc::group_norm_forward<float>(N, C, HW, G, eps, xf.data(), affine ? gf.data() : nullptr,
                                  affine ? bf.data() : nullptr, yf.data(), mf.data(), rf.data());
    expect_close(yf, ry, 1e-4, "gn y float");
  }
}

TEST(CpuKernel, GroupNormBackwardFiniteDifference) {
  const int64_t N = 2, C = 4, HW = 6, G = 2;
  const double eps = 1e-5;
  auto x = random_vector<double>(N * C * HW, 41, -1.0, 2.0), gamma = random_vector<double>(C, 42),
       beta = random_vector<double>(C, 43);
  auto wts = random_vector<double>(N * C * HW, 44);  // loss = sum(y * wts)
  auto loss = [&](const std::vector<double>& xx, const std::vector<double>& gg,
                  const std::vector<double>& bb) {
    std::vector<double> y, m, r;
    naive_group_norm(N, C, HW, G, eps, xx, gg.data(), bb.data(), y, m, r);
    return std::inner_product(y.begin(), y.end(), wts.begin(), 0.0);
  };
  std::vector<double> y(x.size()), m(N * G), r(N * G), dx(x.size()), dg(C), db(C);
  kc::group_norm_forward<double>(N, C, HW, G, eps, x.data(), gamma.data(), beta.data(), y.data(), m.data(),
                                 r.data());
  kc::group_norm_backward<double>(N, C, HW, G, wts.data(), x.data(), m.data(), r.data(), gamma.data(),
                                  dx.data(), dg.data(), db.data());
  const double h = 1e-5;
  auto fd = [&](std::vector<double>& v, size_t i) {
    const double old = v[i];
    v[i] = old + h;
    const double lp = loss(x, gamma, beta);
    v[i] = old - h;
    const double lm = loss(x, gamma, beta);
    v[i] = old;
    return (lp - lm) / (2 * h);
  };
  std::vector<double> rdx(x.size()), rdg(C), rdb(C);
  for (size_t i = 0; i < x.size(); ++i) rdx[i] = fd(x, i);
  for (int64_t c = 0; c < C; ++c) rdg[c] = fd(gamma, c), rdb[c] = fd(beta, c);
  expect_close(dx, rdx, 1e-7, "gn dx");
  expect_close(dg, rdg, 1e-7, "gn dgamma");
  expect_close(db, rdb, 1e-7, "gn dbeta");
  // No-affine backward equals affine backward with gamma = 1.
  std::vector<double> ones(C, 1.0), dx1(x.size()), dx2(x.size());
  kc::group_norm_backward<double>(N, C, HW, G, wts.data(), x.data(), m.data(), r.data(), ones.data(),
                                  dx1.data(), dg.data(), db.data());
  kc::group_norm_backward<double>(N, C, HW, G, wts.data(), x.data(), m.data(), r.data(), nullptr, dx2.data(),
                                  nullptr, nullptr);
  expect_close(dx2, dx1, 1e-12, "gn dx no affine");
  // float backward against double backward.
  std::vector<float> xf(x.begin(), x.end()), gf(gamma.begin(), gamma.end()), bf(beta.begin(), beta.end()),
      wf(wts.begin(), wts.end()), yf(x.size()), mf(N * G), rf(N * G), dxf(x.size()), dgf(C), dbf(C);
  kc::group_norm_forward<float>(N, C, HW, G, eps, xf.data(), gf.data(), bf.data(), yf.data(), mf.data(),
                                rf.data());
  kc::group_norm_backward<float>(N, C, HW, G, wf.data(), xf.data(), mf.data(), rf.data(), gf.data(),
                                 dxf.data(), dgf.data(), dbf.data());
  kc::group_norm_backward<double>(N, C, HW, G, wts.data(), x.data(), m.data(), r.data(), gamma.data(),
                                  dx.data(), dg.data(), db.data());
  expect_close(dxf, dx, 1e-4, "gn dx float");
  expect_close(dgf, dg, 1e-4, "gn dgamma float");
  expect_close(dbf, db, 1e-4, "gn dbeta float");
}

// ---------------------------------------------------------------- attention

// Explicit per-head loop: o = softmax(scale q k^T) v, lse = log sum exp(scale q k^T) per row.
void naive_attention(int64_t BH, int64_t Lq, int64_t Lk, int64_t D, double scale,
                     const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
                     std::vector<double>& o, std::vector<double>& lse) {
  o.assign(BH * Lq * D, 0.0);
  lse.assign(BH * Lq, 0.0);
  std::vector<double> s(Lk);
  for (int64_t h = 0; h < BH; ++h)
    for (int64_t i = 0; i < Lq; ++i) {
      double mx = -1e300;
      for (int64_t j = 0; j < Lk; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += q[(h * Lq + i) * D + d] * k[(h * Lk + j) * D + d];
        s[j] = scale * dot;
        mx = std::max(mx, s[j]);
      }
      double z = 0;
      for (int64_t j = 0; j < Lk; ++j) z += std::exp(s[j] - mx);
      lse[h * Lq + i] = mx + std::log(z);
      for (int64_t j = 0; j < Lk; ++j)
        for (int64_t d = 0; d < D; ++d)
          o[(h * Lq + i) * D + d] += std::exp(s[j] - mx) / z * v[(h * Lk + j) * D + d];
    }
}

TEST(CpuKernel, AttentionForward) {
  struct Cfg {
    int64_t BH, Lq, Lk, D;
  };
  for (Cfg c :
       {Cfg{3, 5, 7, 4}, Cfg{4, 49, 49, 8}, Cfg{2, 196, 196, 32}, Cfg{1, 17, 9, 64}, Cfg{2, 784, 784, 8}}) {
    SCOPED_TRACE(::testing::Message() << "BH " << c.BH << " Lq " << c.Lq << " Lk " << c.Lk << " D " << c.D);
    const double scale = 1.0 / std::sqrt(double(c.D));
    auto q = random_vector<double>(c.BH * c.Lq * c.D, 51, -2, 2),
         k = random_vector<double>(c.BH * c.Lk * c.D, 52, -2, 2),
         v = random_vector<double>(c.BH * c.Lk * c.D, 53);
    std::vector<double> ro, rl;
    naive_attention(c.BH, c.Lq, c.Lk, c.D, scale, q, k, v, ro, rl);
    std::vector<double> o(ro.size()), l(rl.size());
    kc::attention_forward<double>(c.BH, c.Lq, c.Lk, c.D, scale, q.data(), k.data(), v.data(), o.data(),
                                  l.data());
    expect_close(o, ro, 1e-10, "attn o");
    expect_close(l, rl, 1e-10, "attn lse");
    std::vector<float> qf(q.begin(), q.end()), kf(k.begin(), k.end()), vf(v.begin(), v.end()), of(o.size()),
        lf(l.size());
    kc::attention_forward<float>(c.BH, c.Lq, c.Lk, c.D, scale, qf.data(), kf.data(), vf.data(), of.data(),
                                 lf.data());
    expect_close(of, ro, 1e-4, "attn o float");
    expect_close(lf, rl, 1e-4, "attn lse float");
  }
}

TEST(CpuKernel, AttentionLargeLogitsStable) {
  const int64_t BH = 1, L = 4, D = 2;
  std::vector<float> q = {100, 0, -100, 0, 0, 100, 50, 50}, k = q, v = random_vector<float>(L * D, 3),
                     o(L * D), l(L);
  kc::attention_forward<float>(BH, L, L, D, 1.0, q.data(), k.data(), v.data(), o.data(), l.data());
  for (float x : o) EXPECT_TRUE(std::isfinite(x));
  for (float x : l) EXPECT_TRUE(std::isfinite(x));
}

TEST(CpuKernel, AttentionBackwardFiniteDifference) {
  const int64_t BH = 2, Lq = 5, Lk = 7, D = 4;
  const double scale = 0.6;
  auto q = random_vector<double>(BH * Lq * D, 61, -1.5, 1.5),
       k = random_vector<double>(BH * Lk * D, 62, -1.5, 1.5), v = random_vector<double>(BH * Lk * D, 63),
       wts = random_vector<double>(BH * Lq * D, 64);  // loss = sum(o * wts)
  auto loss = [&] {
    std::vector<double> o, l;
    naive_attention(BH, Lq, Lk, D, scale, q, k, v, o, l);
    return std::inner_product(o.begin(), o.end(), wts.begin(), 0.0);
  };
  std::vector<double> o(BH * Lq * D), l(BH * Lq), dq(q.size()), dk(k.size()), dv(v.size());
  kc::attention_forward<double>(BH, Lq, Lk, D, scale, q.data(), k.data(), v.data(), o.data(), l.data());
  kc::attention_backward<double>(BH, Lq, Lk, D, scale, q.data(), k.data(), v.data(), o.data(), l.data(),
                                 wts.data(), dq.data(), dk.data(), dv.data());
  const double h = 1e-5;
  auto fd = [&](std::vector<double>& t) {
    std::vector<double> g(t.size());
    for (size_t i = 0; i < t.size(); ++i) {
      const double old = t[i];
      t[i] = old + h;
      const double lp = loss();
      t[i] = old - h;
      const double lm = loss();
      t[i] = old;
      g[i] = (lp - lm) / (2 * h);
    }
    return g;
  };
  expect_close(dq, fd(q), 1e-8, "attn dq");
  expect_close(dk, fd(k), 1e-8, "attn dk");
  expect_close(dv, fd(v), 1e-8, "attn dv");
}

TEST(CpuKernel, AttentionBackwardFloatMatchesDouble) {
  const int64_t BH = 6, Lq = 49, Lk = 49, D = 8;
  const double scale = 1.0 / std::sqrt(8.0);
  auto q = random_vector<double>(BH * Lq * D, 71, -2, 2), k = random_vector<double>(BH * Lk * D, 72, -2, 2),
       v = random_vector<double>(BH * Lk * D, 73), dout = random_vector<double>(BH * Lq * D, 74);
  std::vector<double> o(q.size()), l(BH * Lq), dq(q.size()), dk(k.size()), dv(v.size());
  kc::attention_forward<double>(BH, Lq, Lk, D, scale, q.data(), k.data(), v.data(), o.data(), l.data());
  kc::attention_backward<double>(BH, Lq, Lk, D, scale, q.data(), k.data(), v.data(), o.data(), l.data(),
                                 dout.data(), dq.data(), dk.data(), dv.data());
  std::vector<float> qf(q.begin(), q.end()), kf(k.begin(), k.end()), vf(v.begin(), v.end()),
      df(dout.begin(), dout.end()), of(o.size()), lf(l.size()), dqf(q.size()), dkf(k.size()), dvf(v.size());
  kc::attention_forward<float>(BH, Lq, Lk, D, scale, qf.data(), kf.data(), vf.data(), of.data(), lf.data());
  kc::attention_backward<float>(BH, Lq, Lk, D, scale, qf.data(), kf.data(), vf.data(), of.data(), lf.data(),
                                df.data(), dqf.data(), dkf.data(), dvf.data());
  expect_close(dqf, dq, 1e-4, "attn dq float");
  expect_close(dkf, dk, 1e-4, "attn dk float");
  expect_close(dvf, dv, 1e-4, "attn dv float");
}

// ---------------------------------------------------------------- elementwise

template <typename T>
void unary_case() {
  auto x = random_vector<T>(50000, 81, -5, 5);  // large enough for the parallel path
  x[0] = T(-100), x[1] = T(100), x[2] = T(0);
  std::vector<T> xp(x.size());
  for (size_t i = 0; i < x.size(); ++i) xp[i] = std::abs(x[i]);
  struct Case {
    kern::Unary op;
    double (*f)(double);
    bool positive;
  };
  const Case cases[] = {
      {kern::Unary::Neg, [](double a) { return -a; }, false},
      {kern::Unary::Exp, [](double a) { return std::exp(a); }, false},
      {kern::Unary::Sin, [](double a) { return std::sin(a); }, false},
      {kern::Unary::Cos, [](double a) { return std::cos(a); }, false},
      {kern::Unary::Silu, [](double a) { return a / (1.0 + std::exp(-a)); }, false},
      {kern::Unary::Sqrt, [](double a) { return std::sqrt(a); }, true},
      {kern::Unary::Square, [](double a) { return a * a; }, false},
  };
  for (const auto& c : cases) {
    const auto& in = c.positive ? xp : x;
    std::vector<T> y(in.size());
    kc::unary<T>(c.op, in.size(), in.data(), y.data());
    std::vector<double> ref(in.size());
    for (size_t i = 0; i < in.size(); ++i) {
      ref[i] = c.f(double(in[i]));
      if (ref[i] > 1e30) continue;  // exp(100) overflows float
      // relative check per element (exp spans many magnitudes)
      ASSERT_NEAR(double(y[i]), ref[i], tol<T>() * std::max(1.0, std::abs(ref[i])))
          << "unary op " << int(c.op) << " x " << double(in[i]);
    }
  }
}

TEST(CpuKernel, Unary) {
  unary_case<double>();
  unary_case<float>();
}

TEST(CpuKernel, SiluBackwardAndAffine) {
  auto x = random_vector<double>(1000, 91, -8, 8), dy = random_vector<double>(1000, 92);
  x[0] = -800, x[1] = 800;
  std::vector<double> dx(x.size()), ref(x.size());
  kc::silu_backward<double>(x.size(), x.data(), dy.data(), dx.data());
  auto silu = [](double a) { return a / (1.0 + std::exp(-a)); };
  for (size_t i = 0; i < x.size(); ++i) {
    const double h = 1e-5;
    ref[i] = dy[i] * (silu(x[i] + h) - silu(x[i] - h)) / (2 * h);
    EXPECT_TRUE(std::isfinite(dx[i]));
  }
  expect_close(dx, ref, 1e-8, "silu backward");
  std::vector<float> xf(x.begin(), x.end()), dyf(dy.begin(), dy.end()), dxf(x.size());
  kc::silu_backward<float>(x.size(), xf.data(), dyf.data(), dxf.data());
  expect_close(dxf, ref, 1e-4, "silu backward float");

  std::vector<double> y(x.size()), ra(x.size());
  kc::affine<double>(x.size(), x.data(), -1.5, 0.25, y.data());
  for (size_t i = 0; i < x.size(); ++i) ra[i] = -1.5 * x[i] + 0.25;
  expect_close(y, ra, 1e-12, "affine");
}

template <typename T>
void binary_broadcast_case(const std::vector<int64_t>& out_shape, const std::vector<int64_t>& a_shape,
                           const std::vector<int64_t>& b_shape) {
  // a_shape/b_shape have the same rank as out_shape, size 1 on broadcast dims.
  const int nd = static_cast<int>(out_shape.size());
  auto sz = [](const std::vector<int64_t>& s) {
    return std::accumulate(s.begin(), s.end(), int64_t(1), std::multiplies<>());
  };
  auto a = random_vector<T>(sz(a_shape), 101), b = random_vector<T>(sz(b_shape), 102, 0.5, 2.0);
  auto bstrides = [&](const std::vector<int64_t>& s) {
    std::vector<int64_t> st(nd);
    int64_t acc = 1;
    for (int d = nd - 1; d >= 0; --d) {
      st[d] = s[d] == 1 ? 0 : acc;
      acc *= s[d];
    }
    return st;
  };
  const Strided os = make_strided(out_shape), as = make_strided(out_shape, bstrides(a_shape)),
                bs = make_strided(out_shape, bstrides(b_shape));
  const int64_t n = sz(out_shape);
  for (auto op : {kern::Binary::Add, kern::Binary::Sub, kern::Binary::Mul, kern::Binary::Div}) {
    std::vector<T> y(n);
    kc::binary<T>(op, os, a.data(), as, b.data(), bs, y.data());
    std::vector<double> ref(n);
    for (int64_t lin = 0; lin < n; ++lin) {
      int64_t rem = lin, ia = 0, ib = 0;
      for (int d = nd - 1; d >= 0; --d) {
        const int64_t i = rem % out_shape[d];
        rem /= out_shape[d];
        ia += i * as.stride[d];  // stride 0 on broadcast dims
        ib += i * bs.stride[d];
      }
      const double u = a[ia], v = b[ib];
      ref[lin] = op == kern::Binary::Add   ? u + v
                 : op == kern::Binary::Sub ? u - v
                 : op == kern::Binary::Mul ? u * v
                                           : u / v;
    }
    expect_close(y, ref, tol<T>(), "binary");
  }
}

TEST(CpuKernel, BinaryBroadcast) {
  binary_broadcast_case<double>({3, 4, 5}, {3, 1, 5}, {1, 4, 5});
  binary_broadcast_case<double>({3, 4, 5}, {3, 4, 5}, {1, 1, 1});
  binary_broadcast_case<double>({3, 4, 5}, {1, 1, 5}, {3, 4, 1});
  binary_broadcast_case<float>({2, 3, 4, 5, 6}, {2, 3, 4, 5, 6}, {1, 3, 1, 1, 1});   // per-channel bias
  binary_broadcast_case<float>({64, 32, 28, 28}, {64, 32, 28, 28}, {64, 32, 1, 1});  // parallel path
  binary_broadcast_case<float>({1000, 100}, {1000, 100}, {1000, 100});               // contiguous fast path
  binary_broadcast_case<double>({}, {}, {});                                         // 0-d
}

TEST(CpuKernel, BinaryTransposedInput) {
  // a is a (4, 3) buffer read as its transpose (3, 4); b contiguous (3, 4).
  auto a = random_vector<double>(12, 111), b = random_vector<double>(12, 112);
  const Strided os = make_strided({3, 4}), as = make_strided({3, 4}, {1, 3}), bs = make_strided({3, 4});
  std::vector<double> y(12), ref(12);
  kc::binary<double>(kern::Binary::Sub, os, a.data(), as, b.data(), bs, y.data());
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) ref[i * 4 + j] = a[j * 3 + i] - b[i * 4 + j];
  expect_close(y, ref, 1e-15, "binary transposed");
}

template <typename T>
void copy_transpose_case() {
  // src (2, 3, 4) contiguous; dst is a (4, 2, 3) contiguous buffer written through the permuted view,
  // i.e. dst[k, i, j] = src[i, j, k].
  std::vector<T> src(24);
  for (int i = 0; i < 24; ++i) src[i] = static_cast<T>(i * 3 + 1);
  std::vector<T> dst(24, T(0));
  const Strided sl = make_strided({2, 3, 4}), dl = make_strided({2, 3, 4}, {3, 1, 6});
  kc::copy_strided<T>(sl, src.data(), dl, dst.data());
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) EXPECT_EQ(dst[k * 6 + i * 3 + j], src[(i * 3 + j) * 4 + k]);
  // Transposed read into contiguous: back[i, j, k] = dst[k, i, j] recovers src.
  std::vector<T> back(24, T(0));
  kc::copy_strided<T>(dl, dst.data(), sl, back.data());
  EXPECT_EQ(back, src);
}

TEST(CpuKernel, CopyStrided) {
  copy_transpose_case<float>();
  copy_transpose_case<double>();
  copy_transpose_case<int64_t>();
  copy_transpose_case<uint8_t>();
  // Large 4-d permutation (N, C, H, W) -> (N, H, W, C) through the parallel path.
  const int64_t N = 8, C = 16, H = 20, W = 24;
  auto x = random_vector<float>(N * C * H * W, 121);
  std::vector<float> y(x.size());
  const Strided sl = make_strided({N, C, H, W}), dl = make_strided({N, C, H, W}, {H * W * C, 1, W * C, C});
  kc::copy_strided<float>(sl, x.data(), dl, y.data());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w)
          ASSERT_EQ(y[((n * H + h) * W + w) * C + c], x[((n * C + c) * H + h) * W + w]);
  // Broadcast read (stride 0) into contiguous.
  std::vector<double> row = {1, 2, 3}, out(12);
  kc::copy_strided<double>(make_strided({4, 3}, {0, 1}), row.data(), make_strided({4, 3}), out.data());
  for (int i = 0; i < 12; ++i) EXPECT_EQ(out[i], row[i % 3]);
  // Contiguous memcpy path.
  std::vector<double> c1 = random_vector<double>(100, 1), c2(100);
  kc::copy_strided<double>(make_strided({10, 10}), c1.data(), make_strided({10, 10}), c2.data());
  EXPECT_EQ(c1, c2);
}

// dst[i] = src[i] for every index i of shape, through the layouts' strides, written as a plain loop.
template <typename T>
void naive_copy(const std::vector<int64_t>& shape, const std::vector<int64_t>& ss, const T* src,
                const std::vector<int64_t>& ds, T* dst) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  for (int64_t i = 0; i < n; ++i) {
    int64_t rem = i, so = 0, dof = 0;
    for (int d = int(shape.size()) - 1; d >= 0; --d) {
      so += rem % shape[d] * ss[d];
      dof += rem % shape[d] * ds[d];
      rem /= shape[d];
    }
    dst[dof] = src[so];
  }
}

// Layouts whose dims merge (rows of 8 that are contiguous together, size-1 dims, a broadcast dim) and
// short rows on 1-3 threads (the row counter steps across dims and thread ranges): same as a plain loop.
TEST(CpuKernel, CopyStridedMergedDimsAndShortRows) {
  struct Case {
    std::vector<int64_t> shape, ss, ds;
  };
  const int64_t B = 6, L = 700, D = 8, H = 3;
  const std::vector<Case> cases = {
      {{B, L, D}, {L * D, D, 1}, {2 * L * D, D, 1}},                       // into half of a concat
      {{B, 1, L, D}, {L * D, 5, D, 1}, {L * D, 7, D, 1}},                  // size-1 dim, odd strides
      {{B, H, L, D}, {H * L * D, D, H * D, 1}, {H * L * D, L * D, D, 1}},  // (B, L, H, D) -> (B, H, L, D)
      {{B, L, D}, {0, D, 1}, {L * D, D, 1}},                               // broadcast over B
      {{L, D, B}, {D, 1, L * D}, {D * B, B, 1}},                           // stride-1 source, strided dest
  };
  const int prev = omp_get_max_threads();
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    for (const auto& c : cases) {
      int64_t n = 1, src_n = 1, dst_n = 1;
      for (size_t d = 0; d < c.shape.size(); ++d) {
        n *= c.shape[d];
        src_n += (c.shape[d] - 1) * c.ss[d];
        dst_n += (c.shape[d] - 1) * c.ds[d];
      }
      auto src = random_vector<float>(src_n, 131);
      std::vector<float> got(dst_n, -7.f), want(dst_n, -7.f);
      auto layout = [&](const std::vector<int64_t>& st) { return make_strided(c.shape, st); };
      kc::copy_strided<float>(layout(c.ss), src.data(), layout(c.ds), got.data());
      naive_copy(c.shape, c.ss, src.data(), c.ds, want.data());
      EXPECT_EQ(got, want) << "threads " << threads << " ndim " << c.shape.size() << " n " << n;
    }
  }
  omp_set_num_threads(prev);
}

TEST(CpuKernel, FillAndCast) {
  std::vector<float> f(100000);
  kc::fill<float>(f.size(), f.data(), 2.5);
  for (float v : f) ASSERT_EQ(v, 2.5f);
  std::vector<double> d(7);
  kc::fill<double>(d.size(), d.data(), -1.25);
  for (double v : d) EXPECT_EQ(v, -1.25);
  std::vector<int64_t> i(9);
  kc::fill<int64_t>(i.size(), i.data(), 42.0);
  for (int64_t v : i) EXPECT_EQ(v, 42);
  std::vector<uint8_t> u(9);
  kc::fill<uint8_t>(u.size(), u.data(), 1.0);
  for (uint8_t v : u) EXPECT_EQ(v, 1);
  auto src = random_vector<double>(50000, 131);
  std::vector<float> sf(src.size());
  std::vector<double> back(src.size());
  kc::cast_f64_to_f32(src.size(), src.data(), sf.data());
  kc::cast_f32_to_f64(sf.size(), sf.data(), back.data());
  for (size_t k = 0; k < src.size(); ++k) {
    ASSERT_EQ(sf[k], static_cast<float>(src[k]));
    ASSERT_EQ(back[k], static_cast<double>(sf[k]));
  }
}

// ---------------------------------------------------------------- upsample / reductions / embedding

TEST(CpuKernel, Upsample) {
  const int64_t NC = 5, H = 3, W = 4;
  auto x = random_vector<double>(NC * H * W, 141);
  std::vector<double> y(NC * 4 * H * W);
  kc::upsample_nearest2x_forward<double>(NC, H, W, x.data(), y.data());
  for (int64_t c = 0; c < NC; ++c)
    for (int64_t i = 0; i < 2 * H; ++i)
      for (int64_t j = 0; j < 2 * W; ++j)
        EXPECT_EQ(y[(c * 2 * H + i) * 2 * W + j], x[(c * H + i / 2) * W + j / 2]);
  auto dy = random_vector<float>(NC * 4 * H * W, 142);
  std::vector<float> dx(NC * H * W);
  std::vector<double> ref(dx.size(), 0.0);
  for (int64_t c = 0; c < NC; ++c)
    for (int64_t i = 0; i < 2 * H; ++i)
      for (int64_t j = 0; j < 2 * W; ++j) ref[(c * H + i / 2) * W + j / 2] += dy[(c * 2 * H + i) * 2 * W + j];
  kc::upsample_nearest2x_backward<float>(NC, H, W, dy.data(), dx.data());
  expect_close(dx, ref, 1e-6, "upsample backward");
}

TEST(CpuKernel, Reductions) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{7, 13}, {300, 700}, {1, 1000}, {1000, 1}}) {
    auto x = random_vector<float>(rows * cols, 151);
    std::vector<double> rr(rows, 0.0), rc(cols, 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) rr[r] += x[r * cols + c], rc[c] += x[r * cols + c];
    std::vector<float> yr(rows), yc(cols);
    kc::sum_rows<float>(rows, cols, x.data(), yr.data());
    kc::sum_cols<float>(rows, cols, x.data(), yc.data());
    expect_close(yr, rr, 1e-6, "sum_rows");
    expect_close(yc, rc, 1e-6, "sum_cols");
  }
  auto a = random_vector<double>(100003, 152), b = random_vector<double>(100003, 153);
  double ref = 0;
  for (size_t i = 0; i < a.size(); ++i) ref += (a[i] - b[i]) * (a[i] - b[i]);
  ref /= double(a.size());
  double out = 0;
  kc::mse_loss_forward<double>(a.size(), a.data(), b.data(), &out);
  EXPECT_NEAR(out, ref, 1e-12 * ref);
  std::vector<float> af(a.begin(), a.end()), bf(b.begin(), b.end());
  float outf = 0;
  kc::mse_loss_forward<float>(af.size(), af.data(), bf.data(), &outf);
  EXPECT_NEAR(outf, ref, 1e-5 * ref);
}

TEST(CpuKernel, Embedding) {
  const int64_t rows = 10, dim = 6;
  const std::vector<int64_t> idx = {3, 7, 3, 0, 9, 3, 7, 2};
  const int64_t n = idx.size();
  auto table = random_vector<double>(rows * dim, 161), dy = random_vector<double>(n * dim, 162);
  std::vector<double> y(n * dim);
  kc::embedding_forward<double>(n, dim, idx.data(), table.data(), y.data());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < dim; ++d) EXPECT_EQ(y[i * dim + d], table[idx[i] * dim + d]);
  std::vector<double> dt(rows * dim, 123.0), ref(rows * dim, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < dim; ++d) ref[idx[i] * dim + d] += dy[i * dim + d];
  kc::embedding_backward<double>(n, rows, dim, idx.data(), dy.data(), dt.data());
  expect_close(dt, ref, 1e-14, "embedding backward");
  std::vector<float> dyf(dy.begin(), dy.end()), dtf(rows * dim, 5.0f);
  kc::embedding_backward<float>(n, rows, dim, idx.data(), dyf.data(), dtf.data());
  expect_close(dtf, ref, 1e-6, "embedding backward float");
}

// ---------------------------------------------------------------- AdamW

template <typename T>
void adamw_case() {
  const std::vector<int64_t> sizes = {37, 50000};
  std::vector<std::vector<T>> p, m, v, g;
  std::vector<std::vector<double>> rp, rm, rv;
  for (size_t t = 0; t < sizes.size(); ++t) {
    p.push_back(random_vector<T>(sizes[t], 171 + t));
    m.push_back(std::vector<T>(sizes[t], T(0)));
    v.push_back(std::vector<T>(sizes[t], T(0)));
    rp.emplace_back(p[t].begin(), p[t].end());
    rm.emplace_back(sizes[t], 0.0);
    rv.emplace_back(sizes[t], 0.0);
  }
  kern::AdamWParams hp{1e-2, 0.9, 0.999, 1e-8, 0.05, 0};
  for (int step = 1; step <= 3; ++step) {
    hp.step = step;
    g.clear();
    for (size_t t = 0; t < sizes.size(); ++t) g.push_back(random_vector<T>(sizes[t], 200 + 10 * step + t));
    std::vector<T*> pp, mp, vp;
    std::vector<const T*> gp;
    for (size_t t = 0; t < sizes.size(); ++t)
      pp.push_back(p[t].data()), mp.push_back(m[t].data()), vp.push_back(v[t].data()),
          gp.push_back(g[t].data());
    kc::adamw_step<T>(int(sizes.size()), pp.data(), gp.data(), mp.data(), vp.data(), sizes.data(), hp);
    // Hand-written scalar reference (double).
    for (size_t t = 0; t < sizes.size(); ++t)
      for (int64_t i = 0; i < sizes[t]; ++i) {
        const double gi = g[t][i];
        rp[t][i] *= 1.0 - hp.lr * hp.weight_decay;
        rm[t][i] = hp.beta1 * rm[t][i] + (1 - hp.beta1) * gi;
        rv[t][i] = hp.beta2 * rv[t][i] + (1 - hp.beta2) * gi * gi;
        const double bc1 = 1 - std::pow(hp.beta1, step), bc2 = 1 - std::pow(hp.beta2, step);
        const double denom = std::sqrt(rv[t][i]) / std::sqrt(bc2) + hp.eps;
        rp[t][i] -= hp.lr / bc1 * rm[t][i] / denom;
      }
  }
  for (size_t t = 0; t < sizes.size(); ++t) {
    expect_close(p[t], rp[t], std::is_same_v<T, float> ? 1e-5 : 1e-12, "adamw p");
    expect_close(m[t], rm[t], std::is_same_v<T, float> ? 1e-5 : 1e-12, "adamw m");
    expect_close(v[t], rv[t], std::is_same_v<T, float> ? 1e-5 : 1e-12, "adamw v");
  }
}

TEST(CpuKernel, AdamW) {
  adamw_case<double>();
  adamw_case<float>();
}

// ---------------------------------------------------------------- Philox RNG

TEST(CpuKernel, PhiloxKnownAnswer) {
  // Random123 known-answer vectors for philox4x32_10.
  auto b = kern::philox4x32_10(0, 0, 0, 0, 0, 0);
  EXPECT_EQ(b.v[0], 0x6627e8d5u);
  EXPECT_EQ(b.v[1], 0xe169c58du);
  EXPECT_EQ(b.v[2], 0xbc57ac4cu);
  EXPECT_EQ(b.v[3], 0x9b00dbd8u);
  b = kern::philox4x32_10(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0);
  EXPECT_EQ(b.v[0], 0xd16cfe09u);
  EXPECT_EQ(b.v[1], 0x94fdccebu);
  EXPECT_EQ(b.v[2], 0x5001e420u);
  EXPECT_EQ(b.v[3], 0x24126ea1u);
  // Stream definition: element index i -> counter i/4, word i%4, key = seed.
  const uint64_t seed = 0x299f31d0a4093822ull;
  b = kern::philox4x32_10(5, 0, 0, 0, uint32_t(seed), uint32_t(seed >> 32));
  EXPECT_EQ(kern::philox_word(seed, 22), b.v[2]);
}

TEST(CpuKernel, PhiloxDeterminismAndOffset) {
  const int64_t n = 1000;
  std::vector<float> a(n + 5), b(n + 5), c(n);
  kc::philox_uniform<float>(n + 5, 1234, 0, a.data());
  kc::philox_uniform<float>(n + 5, 1234, 0, b.data());
  EXPECT_EQ(a, b);
  kc::philox_uniform<float>(n, 1234, 5, c.data());
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(c[i], a[i + 5]);
  std::vector<float> other(n + 5);
  kc::philox_uniform<float>(n + 5, 1235, 0, other.data());
  EXPECT_NE(a, other);
  // float and double uniforms are the same values.
  std::vector<double> ad(n + 5);
  kc::philox_uniform<double>(n + 5, 1234, 0, ad.data());
  for (int64_t i = 0; i < n + 5; ++i) ASSERT_EQ(ad[i], double(a[i]));
  // Normal: determinism, offset shift, float close to double.
  std::vector<float> na(n + 5), nc(n);
  std::vector<double> nd(n + 5), ndc(n);
  kc::philox_normal<float>(n + 5, 99, 0, na.data());
  kc::philox_normal<float>(n, 99, 5, nc.data());
  kc::philox_normal<double>(n + 5, 99, 0, nd.data());
  kc::philox_normal<double>(n, 99, 5, ndc.data());
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(nc[i], na[i + 5]);
    ASSERT_EQ(ndc[i], nd[i + 5]);
  }
  for (int64_t i = 0; i < n + 5; ++i) ASSERT_NEAR(na[i], nd[i], 1e-4 * std::max(1.0, std::abs(nd[i])));
}

TEST(CpuKernel, PhiloxStatistics) {
  const int64_t n = 100000;
  std::vector<double> u(n), z(n);
  kc::philox_uniform<double>(n, 42, 7, u.data());
  kc::philox_normal<double>(n, 42, 7, z.data());
  double su = 0, sz = 0, szz = 0;
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_GE(u[i], 0.0);
    ASSERT_LT(u[i], 1.0);
    ASSERT_TRUE(std::isfinite(z[i]));
    su += u[i];
    sz += z[i];
    szz += z[i] * z[i];
  }
  const double mu = sz / n, var = szz / n - mu * mu;
  EXPECT_NEAR(su / n, 0.5, 0.005);  // sd of the mean ~ 0.0009
  EXPECT_NEAR(mu, 0.0, 0.015);      // sd of the mean ~ 0.0032
  EXPECT_NEAR(var, 1.0, 0.02);      // sd of the variance ~ 0.0045
  std::vector<float> zf(n);
  kc::philox_normal<float>(n, 42, 7, zf.data());
  double sf = 0;
  for (float x : zf) sf += x;
  EXPECT_NEAR(sf / n, 0.0, 0.015);
}

}  // namespace
