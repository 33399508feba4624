// Tests of the adds fused into the conv and GEMM outputs: kern::cpu::conv2d_forward_fused (per-sample
// bias t (N, K) and residual r (N, K, P, Q) on top of the conv bias, im2col and Winograd paths), the
// linear op (bias prefilled, gemm with beta = 1), and their use in nn::ResnetBlock2D.
//   - against the float64 definition (odd shapes, every combination of terms, every ISA path);
//   - the documented rounding order, exactly: Winograd's output is (conv + e) + r with e = b[k] + t[n, k]
//     on the unfused Winograd result, linear is gemm_reference's FMA chain started from the bias;
//   - bitwise independence of the thread count, the batch around an image and the ISA path;
//   - the layer: a ResnetBlock2D forward runs no separate add, and equals the unfused float64 formula.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "kernels/cpu/conv2d_winograd.h"
#include "kernels/cpu/cpu_kernels.h"
#include "nn/layers.h"
#include "runtime/profiler.h"
#include "tests/test_util.h"

namespace engine::test {
namespace {

using kern::Conv2dShape;
namespace kc = kern::cpu;
using kc::CpuConvAlgo;
using kc::CpuIsa;

Conv2dShape conv_shape(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R, int64_t stride,
                       int64_t pad) {
  const int64_t P = kern::conv_out_size(H, R, stride, pad), Q = kern::conv_out_size(W, R, stride, pad);
  return Conv2dShape{N, C, H, W, K, R, R, stride, stride, pad, pad, P, Q};
}

// The operands of one fused conv: x, w, b (K), t (N, K), r (N, K, P, Q), drawn from one seed.
template <typename T>
struct Operands {
  std::vector<T> x, w, b, t, r;
  Operands(const Conv2dShape& s, unsigned seed)
      : x(random_vector<T>(s.N * s.C * s.H * s.W, seed)),
        w(random_vector<T>(s.K * s.C * s.R * s.S, seed + 1)),
        b(random_vector<T>(s.K, seed + 2)),
        t(random_vector<T>(s.N * s.K, seed + 3)),
        r(random_vector<T>(s.N * s.K * s.P * s.Q, seed + 4)) {}
};

// Which terms a call adds: bit 0 the conv bias, bit 1 t, bit 2 r.
template <typename T>
std::vector<T> run_fused(const Conv2dShape& s, const Operands<T>& o, int terms) {
  std::vector<T> y(s.N * s.K * s.P * s.Q, T(99));
  kc::conv2d_forward_fused<T>(s, o.x.data(), o.w.data(), terms & 1 ? o.b.data() : nullptr,
                              terms & 2 ? o.t.data() : nullptr, terms & 4 ? o.r.data() : nullptr, y.data());
  return y;
}

// The definition in float64, written from y = conv(x, w) + b[k] + t[n, k] + r[n, k, p, q]; mag receives the
// same sum over absolute values (the scale of the rounding error).
template <typename T>
std::vector<double> definition(const Conv2dShape& s, const Operands<T>& o, int terms,
                               std::vector<double>& mag) {
  std::vector<double> y(s.N * s.K * s.P * s.Q);
  mag.assign(y.size(), 0.0);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t k = 0; k < s.K; ++k)
      for (int64_t p = 0; p < s.P; ++p)
        for (int64_t q = 0; q < s.Q; ++q) {
          const int64_t i = ((n * s.K + k) * s.P + p) * s.Q + q;
          double acc = 0, am = 0;
          for (int64_t c = 0; c < s.C; ++c)
            for (int64_t u = 0; u < s.R; ++u)
              for (int64_t v = 0; v < s.S; ++v) {
                const int64_t h = p * s.stride_h - s.pad_h + u, ww = q * s.stride_w - s.pad_w + v;
                if (h < 0 || h >= s.H || ww < 0 || ww >= s.W) continue;
                const double prod = double(o.x[((n * s.C + c) * s.H + h) * s.W + ww]) *
                                    double(o.w[((k * s.C + c) * s.R + u) * s.S + v]);
                acc += prod, am += std::fabs(prod);
              }
          const double terms_v[3] = {double(o.b[k]), double(o.t[n * s.K + k]), double(o.r[i])};
          for (int j = 0; j < 3; ++j)
            if (terms & (1 << j)) acc += terms_v[j], am += std::fabs(terms_v[j]);
          y[i] = acc;
          mag[i] = am;
        }
  return y;
}

class FusedConv : public engine::test::CpuSettingsRestored {};

// 3x3 stride-1 pad-1 shapes whose sizes are not multiples of the Winograd tiles (both algorithms), and
// strided / 1x1 / 5x3-padded ones (im2col only).
const Conv2dShape kOdd3x3[] = {conv_shape(3, 5, 7, 9, 6, 3, 1, 1), conv_shape(2, 3, 1, 1, 4, 3, 1, 1),
                               conv_shape(1, 9, 10, 13, 17, 3, 1, 1), conv_shape(2, 8, 13, 4, 8, 3, 1, 1)};
const Conv2dShape kOther[] = {conv_shape(3, 5, 7, 6, 4, 3, 2, 1), conv_shape(2, 6, 5, 3, 7, 1, 1, 0),
                              conv_shape(2, 3, 9, 8, 5, 5, 2, 2)};

TEST_F(FusedConv, MatchesTheFloat64DefinitionForEveryTermAlgorithmAndIsa) {
  for (CpuIsa isa : supported_isas()) {
    kc::set_cpu_isa(isa);
    for (CpuConvAlgo algo : {CpuConvAlgo::Im2col, CpuConvAlgo::Winograd}) {
      kc::set_cpu_conv_algo(algo);
      std::vector<Conv2dShape> shapes(std::begin(kOdd3x3), std::end(kOdd3x3));
      if (algo == CpuConvAlgo::Im2col) shapes.insert(shapes.end(), std::begin(kOther), std::end(kOther));
      for (const Conv2dShape& s : shapes)
        for (int terms = 0; terms < 8; ++terms) {
          SCOPED_TRACE(::testing::Message()
                       << kc::cpu_isa_name(isa) << " " << kc::cpu_conv_algo_name(algo) << " N" << s.N << " C"
                       << s.C << " " << s.H << "x" << s.W << " K" << s.K << " R" << s.R << " stride "
                       << s.stride_h << " terms " << terms);
          const Operands<float> o(s, 11 + terms);
          std::vector<double> mag;
          const std::vector<double> ref = definition(s, o, terms, mag);
          const std::vector<float> y = run_fused(s, o, terms);
          // Float32 rounding: (C R S + 3) roundings along a path, on magnitudes up to 16x the direct
          // |x||w| sum in Winograd's transform domain (a generous constant; misplaced terms are O(1)).
          const double u = std::ldexp(1.0, -24), n = double(s.C * s.R * s.S + 3);
          for (size_t i = 0; i < y.size(); ++i)
            ASSERT_LE(std::fabs(double(y[i]) - ref[i]), 16 * n * u * mag[i] + 1e-30) << "output " << i;
          // Float64 (always im2col): the same definition to float64 rounding.
          const Operands<double> od(s, 11 + terms);
          const std::vector<double> yd = run_fused(s, od, terms), refd = definition(s, od, terms, mag);
          for (size_t i = 0; i < yd.size(); ++i)
            ASSERT_LE(std::fabs(yd[i] - refd[i]), 1e-13 * (1 + mag[i])) << "float64 output " << i;
        }
    }
  }
}

// Winograd adds the terms after its output transform in the documented order, (conv + e) + r with
// e = b[k] + t[n, k]: exactly that on the unfused Winograd result, on every ISA path (so the SIMD output
// transforms equal the portable one), both tiles, any thread count.
TEST_F(FusedConv, WinogradIsTheUnfusedResultPlusTheTermsInOrder) {
  for (int tile : {2, 4})
    for (const Conv2dShape& s : kOdd3x3) {
      const Operands<float> o(s, 21);
      kc::set_cpu_isa(CpuIsa::Scalar);
      omp_set_num_threads(1);
      std::vector<float> plain(s.N * s.K * s.P * s.Q);
      kc::conv2d_forward_winograd(s, o.x.data(), o.w.data(), nullptr, plain.data(), tile);
      for (CpuIsa isa : supported_isas())
        for (int threads : {1, 2, 3})
          for (int terms = 1; terms < 8; ++terms) {
            SCOPED_TRACE(::testing::Message()
                         << kc::cpu_isa_name(isa) << " threads " << threads << " tile " << tile << " N" << s.N
                         << " C" << s.C << " " << s.H << "x" << s.W << " K" << s.K << " terms " << terms);
            kc::set_cpu_isa(isa);
            omp_set_num_threads(threads);
            const float* b = terms & 1 ? o.b.data() : nullptr;
            const float* t = terms & 2 ? o.t.data() : nullptr;
            const float* r = terms & 4 ? o.r.data() : nullptr;
            std::vector<float> y(plain.size(), 99.0f);
            kc::conv2d_forward_winograd(s, o.x.data(), o.w.data(), b, y.data(), tile, {t, r});
            std::vector<float> want(plain.size());
            const int64_t PQ = s.P * s.Q;
            for (size_t i = 0; i < want.size(); ++i) {
              const int64_t nk = int64_t(i) / PQ, k = nk % s.K;
              float v = plain[i];
              if (b && t)
                v = v + (b[k] + t[nk]);
              else if (b || t)
                v = v + (b ? b[k] : t[nk]);
              want[i] = r ? v + r[i] : v;
            }
            ASSERT_TRUE(bitwise_equal(y, want));
          }
    }
}

// Every algorithm with all terms: the same bits on every ISA path and thread count, and for each image
// alone (its t row and r image) as inside the batch.
TEST_F(FusedConv, BitwiseInvariantToThreadsBatchAndIsa) {
  for (CpuConvAlgo algo : {CpuConvAlgo::Im2col, CpuConvAlgo::Winograd}) {
    kc::set_cpu_conv_algo(algo);
    const Conv2dShape s = conv_shape(5, 32, 14, 11, 32, 3, 1, 1);
    const Operands<float> o(s, 41);
    kc::set_cpu_isa(CpuIsa::Scalar);
    omp_set_num_threads(1);
    const std::vector<float> ref = run_fused(s, o, 7);
    const int64_t img = s.K * s.P * s.Q;
    for (CpuIsa isa : supported_isas())
      for (int threads : {1, 2, 3}) {
        SCOPED_TRACE(::testing::Message() << kc::cpu_conv_algo_name(algo) << " " << kc::cpu_isa_name(isa)
                                          << " threads " << threads);
        kc::set_cpu_isa(isa);
        omp_set_num_threads(threads);
        EXPECT_TRUE(bitwise_equal(run_fused(s, o, 7), ref));
        for (int64_t n = 0; n < s.N; n += 2) {
          Conv2dShape one = s;
          one.N = 1;
          std::vector<float> y1(img);
          kc::conv2d_forward_fused<float>(one, o.x.data() + n * s.C * s.H * s.W, o.w.data(), o.b.data(),
                                          o.t.data() + n * s.K, o.r.data() + n * img, y1.data());
          EXPECT_EQ(0, std::memcmp(y1.data(), ref.data() + n * img, sizeof(float) * img)) << "image " << n;
        }
      }
  }
}

TEST(FusedConvOp, BadEpilogueShapesAreClearErrors) {
  Tensor x = Tensor::zeros({2, 3, 5, 5}), w = Tensor::zeros({4, 3, 3, 3});
  const Conv2dOptions o = Conv2dOptions::same(1, 1);
  EXPECT_THROW(conv2d(x, w, Tensor(), o, Tensor::zeros({4})), Error);                     // not (N, K)
  EXPECT_THROW(conv2d(x, w, Tensor(), o, Tensor::zeros({2, 4, 1, 1})), Error);            // not (N, K)
  EXPECT_THROW(conv2d(x, w, Tensor(), o, Tensor(), Tensor::zeros({2, 4, 5, 4})), Error);  // not (N, K, P, Q)
  EXPECT_THROW(conv2d(x, w, Tensor(), o, Tensor(), Tensor::zeros({2, 4, 5, 5}, DType::F64)), Error);
  try {
    conv2d(x, w, Tensor(), o, Tensor(), Tensor::zeros({1, 4, 5, 5}));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("residual"), std::string::npos) << e.what();
  }
}

// The op's sample-bias gradient (N, K) is dy summed over (P, Q), the bits of sum(dy, {2, 3}), computed on
// the CPU in the weight gradient's bias pass: no separate sum op runs in the backward. Float32 and float64,
// Winograd (3x3, C * K >= 1024) and im2col shapes, with and without a residual.
TEST(FusedConvOp, SampleBiasGradientIsThePixelSumFromTheBiasPass) {
  for (DType dt : {DType::F32, DType::F64})
    for (int64_t c : {3, 32}) {
      const int64_t N = 3, K = 32, H = 9, W = 7;
      Tensor x = Tensor::from_vector(random_vector<double>(N * c * H * W, 71), {N, c, H, W}).to(dt);
      Tensor w = Tensor::from_vector(random_vector<double>(K * c * 9, 72), {K, c, 3, 3}).to(dt);
      Tensor b = Tensor::from_vector(random_vector<double>(K, 73), {K}).to(dt);
      Tensor t = Tensor::from_vector(random_vector<double>(N * K, 74), {N, K}).to(dt);
      Tensor r = Tensor::from_vector(random_vector<double>(N * K * H * W, 75), {N, K, H, W}).to(dt);
      std::vector<double> gv = random_vector<double>(N * K * H * W, 76);
      for (size_t i = 0; i < gv.size(); ++i) gv[i] *= std::ldexp(1.0, int(i % 23) - 11);  // many binades
      Tensor g = Tensor::from_vector(gv, {N, K, H, W}).to(dt);
      for (bool with_r : {false, true}) {
        SCOPED_TRACE(::testing::Message() << dtype_name(dt) << " C " << c << " residual " << with_r);
        w.set_requires_grad(true), b.set_requires_grad(true), t.set_requires_grad(true);
        w.zero_grad(), b.zero_grad(), t.zero_grad();
        Tensor y = conv2d(x, w, b, Conv2dOptions::same(1, 1), t, with_r ? r : Tensor());
        prof::start({.trace = true});
        y.backward(g);
        prof::stop();
        const std::string path = ::testing::TempDir() + "fused_conv_dt_trace.json";
        prof::write_trace(path);
        prof::clear();
        std::ifstream in(path);
        const std::string trace((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        std::remove(path.c_str());
        EXPECT_NE(trace.find("\"conv2d_backward\""), std::string::npos) << "no conv2d_backward in the trace";
        EXPECT_EQ(trace.find("\"sum\""), std::string::npos) << "a separate sum op ran in the backward";
        Tensor want;
        {
          NoGradGuard ng;
          want = engine::sum(g, {2, 3});
        }
        ASSERT_TRUE(t.grad().defined());
        if (dt == DType::F32)
          EXPECT_TRUE(bitwise_equal(t.grad().to_vector<float>(), want.to_vector<float>()));
        else
          EXPECT_TRUE(bitwise_equal(t.grad().to_vector<double>(), want.to_vector<double>()));
      }
    }
}

// linear's float32 output is gemm's definition (gemm_reference: one FMA chain per element) started from
// the bias (beta = 1), on every ISA path and thread count, and a row's bits do not depend on the batch.
TEST(FusedLinear, IsTheFmaChainStartedFromTheBiasForAnyIsaThreadsAndBatch) {
  IsaGuard guard;
  const int64_t M = 37, in = 70, out = 19;
  const auto xv = random_vector(M * in, 51), wv = random_vector(out * in, 52), bv = random_vector(out, 53);
  std::vector<float> want(M * out);
  for (int64_t i = 0; i < M; ++i) std::memcpy(want.data() + i * out, bv.data(), sizeof(float) * out);
  kc::gemm_reference<float>(false, true, M, out, in, 1.0f, xv.data(), in, wv.data(), in, 1.0f, want.data(),
                            out);
  Tensor x = Tensor::from_vector(xv, {M, in}), w = Tensor::from_vector(wv, {out, in}),
         b = Tensor::from_vector(bv, {out});
  for (CpuIsa isa : supported_isas())
    for (int threads : {1, 2, 3}) {
      SCOPED_TRACE(::testing::Message() << kc::cpu_isa_name(isa) << " threads " << threads);
      kc::set_cpu_isa(isa);
      with_threads(threads, [&] {
        EXPECT_TRUE(bitwise_equal(linear(x, w, b).to_vector<float>(), want));
        const std::vector<float> part = linear(x.narrow(0, 5, 3), w, b).to_vector<float>();
        EXPECT_TRUE(bitwise_equal(part, std::vector<float>(want.begin() + 5 * out, want.begin() + 8 * out)));
      });
    }
}

// The ResnetBlock2D forward (float64): the unfused diffusers formula, with the time term and the shortcut
// fused into conv1 / conv2 and no separate add op left; for both shortcut kinds.
TEST(FusedResnetBlock, EqualsTheUnfusedFormulaWithNoSeparateAdd) {
  for (int64_t in : {32, 48}) {
    nn::Init init(7, DType::F64);
    nn::ResnetBlock2D blk(init, in, 32, 16, 8, 1e-5, 2.0);
    Tensor x = Tensor::from_vector(random_vector<double>(2 * in * 6 * 5, 61), {2, in, 6, 5});
    Tensor temb = Tensor::from_vector(random_vector<double>(2 * 16, 62), {2, 16});
    NoGradGuard ng;
    prof::start();
    Tensor y = blk.forward(x, temb);
    prof::stop();
    const prof::Summary sum = prof::summary();
    prof::clear();
    for (const prof::Row& r : sum.rows)
      EXPECT_NE(r.name, "add") << "a separate add ran: " << r.calls << " calls";
    // diffusers: h = conv1(silu(norm1(x))) + proj(silu(temb))[:, :, None, None]; h = conv2(silu(norm2(h)));
    // (shortcut(x) + h) / output_scale_factor.
    Tensor h = blk.conv1->forward(blk.norm1->forward_silu(x));
    h = add(h, blk.time_emb_proj->forward(silu(temb)).reshape({2, 32, 1, 1}));
    h = blk.conv2->forward(blk.norm2->forward_silu(h));
    Tensor sc = blk.conv_shortcut ? blk.conv_shortcut->forward(x) : x;
    Tensor want = div(add(sc, h), Tensor::scalar(2.0, DType::F64));
    const auto a = y.to_vector<double>(), e = want.to_vector<double>();
    ASSERT_EQ(a.size(), e.size());
    for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], e[i], 1e-12 * (1 + std::fabs(e[i]))) << i;
  }
}

}  // namespace
}  // namespace engine::test
