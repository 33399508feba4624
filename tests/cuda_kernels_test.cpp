// CudaKernel.*: every raw CUDA kernel against its CPU reference (kernels/cpu) on shapes that
// are not multiples of tile sizes and on the UNet's real shapes. Each output buffer sits
// between guard regions that must come back untouched (catches out-of-bounds writes), and
// starts filled with NaN so an element the kernel forgets to write fails the comparison.
#include "kernels/cuda/cuda_kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/numeric_compare.h"
#include "runtime/cuda_device.h"
#include "tests/cuda_test_util.h"

namespace {

constexpr int64_t kGuard = 1024;             // elements on each side
constexpr uint32_t kGuardBits = 0x7fc0dead;  // a NaN payload no kernel produces

// A device buffer of n elements of T with guard regions; contents start as NaN / guard bits.
template <typename T>
class Guarded {
 public:
  explicit Guarded(int64_t n) : n_(n) {
    bytes_ = (n + 2 * kGuard) * sizeof(T);
    base_ = engine::cuda::alloc(bytes_, 0);
    std::vector<uint32_t> init(bytes_ / 4, kGuardBits);
    engine::cuda::copy_h2d(base_, init.data(), bytes_, 0);
  }
  ~Guarded() { engine::cuda::free(base_, 0); }
  Guarded(const Guarded&) = delete;
  T* ptr() const { return reinterpret_cast<T*>(static_cast<char*>(base_) + kGuard * sizeof(T)); }
  void upload(const std::vector<T>& v) {
    EXPECT_EQ(static_cast<int64_t>(v.size()), n_);
    engine::cuda::copy_h2d(ptr(), v.data(), n_ * sizeof(T), 0);
  }
  std::vector<T> download() const {
    std::vector<T> v(n_);
    engine::cuda::copy_d2h(v.data(), ptr(), n_ * sizeof(T), 0);
    return v;
  }
  bool guards_intact() const {
    std::vector<uint32_t> all(bytes_ / 4);
    engine::cuda::copy_d2h(all.data(), base_, bytes_, 0);
    const size_t g = kGuard * sizeof(T) / 4;
    for (size_t i = 0; i < g; ++i)
      if (all[i] != kGuardBits || all[all.size() - 1 - i] != kGuardBits) return false;
    return true;
  }

 private:
  int64_t n_;
  size_t bytes_;
  void* base_;
};

std::vector<float> randv(int64_t n, unsigned seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

double rel(const std::vector<float>& a, const std::vector<float>& b) { return kern::rel_err_l2(a, b); }

#define EXPECT_CLOSE(gpu_buf, cpu_vec, tol)                                     \
  do {                                                                          \
    EXPECT_TRUE((gpu_buf).guards_intact()) << #gpu_buf ": out-of-bounds write"; \
    const double e_ = rel((gpu_buf).download(), (cpu_vec));                     \
    EXPECT_LE(e_, (tol)) << #gpu_buf " differs from the CPU reference";         \
  } while (0)

kern::Conv2dShape conv_shape(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R, int64_t S,
                             int64_t st, int64_t pad) {
  return kern::conv2d_shape(N, C, H, W, K, R, S, st, st, pad, pad);
}

void check_conv(const kern::Conv2dShape& s, bool bias) {
  SCOPED_TRACE(::testing::Message() << "conv N" << s.N << " C" << s.C << " " << s.H << "x" << s.W << " K"
                                    << s.K << " " << s.R << "x" << s.S << " stride " << s.stride_h << " pad "
                                    << s.pad_h);
  const int64_t nx = s.N * s.C * s.H * s.W, nw = s.K * s.C * s.R * s.S, ny = s.N * s.K * s.P * s.Q;
  auto x = randv(nx, 1), w = randv(nw, 2), b = randv(s.K, 3), dy = randv(ny, 4);
  std::vector<float> y(ny), dx(nx), dw(nw), db(s.K);
  kern::cpu::conv2d_forward<float>(s, x.data(), w.data(), bias ? b.data() : nullptr, y.data());
  kern::cpu::conv2d_backward_input<float>(s, dy.data(), w.data(), dx.data());
  kern::cpu::conv2d_backward_weight<float>(s, dy.data(), x.data(), dw.data(), bias ? db.data() : nullptr);
  Guarded<float> gx(nx), gw(nw), gb(s.K), gdy(ny), gy(ny), gdx(nx), gdw(nw), gdb(s.K);
  gx.upload(x), gw.upload(w), gb.upload(b), gdy.upload(dy);
  kern::cuda::conv2d_forward(s, gx.ptr(), gw.ptr(), bias ? gb.ptr() : nullptr, gy.ptr());
  kern::cuda::conv2d_backward_input(s, gdy.ptr(), gw.ptr(), gdx.ptr());
  kern::cuda::conv2d_backward_weight(s, gdy.ptr(), gx.ptr(), gdw.ptr(), bias ? gdb.ptr() : nullptr);
  EXPECT_CLOSE(gy, y, 1e-5);
  EXPECT_CLOSE(gdx, dx, 1e-5);
  // The weight/bias gradients reduce over N*P*Q (up to 100,352 terms at the UNet's shapes) in float on
  // both sides, in different orders: allow float rounding of such sums, still far below any index bug.
  EXPECT_CLOSE(gdw, dw, 1e-4);
  if (bias) EXPECT_CLOSE(gdb, db, 1e-4);
}

TEST(CudaKernel, Conv2dOddShapes) {
  SKIP_WITHOUT_CUDA();
  check_conv(conv_shape(3, 5, 7, 9, 6, 3, 3, 1, 1), true);
  check_conv(conv_shape(2, 3, 9, 7, 5, 3, 3, 2, 1), true);
  check_conv(conv_shape(2, 7, 5, 5, 3, 1, 1, 1, 0), false);
  check_conv(conv_shape(1, 2, 11, 10, 65, 5, 3, 2, 2), true);
}

TEST(CudaKernel, Conv2dUNetShapes) {
  SKIP_WITHOUT_CUDA();
  check_conv(conv_shape(128, 32, 28, 28, 32, 3, 3, 1, 1), true);
  check_conv(conv_shape(128, 96, 28, 28, 64, 3, 3, 1, 1), true);
  check_conv(conv_shape(128, 128, 14, 14, 64, 3, 3, 1, 1), true);
  check_conv(conv_shape(128, 128, 7, 7, 64, 3, 3, 1, 1), true);
  check_conv(conv_shape(128, 32, 28, 28, 32, 3, 3, 2, 1), true);
  check_conv(conv_shape(128, 64, 14, 14, 64, 3, 3, 2, 1), true);
  check_conv(conv_shape(128, 96, 28, 28, 64, 1, 1, 1, 0), true);
  check_conv(conv_shape(128, 2, 28, 28, 32, 3, 3, 1, 1), true);
  check_conv(conv_shape(128, 32, 28, 28, 1, 3, 3, 1, 1), true);
}

void check_group_norm(int64_t N, int64_t C, int64_t HW, int64_t G, bool affine) {
  SCOPED_TRACE(::testing::Message() << "group_norm N" << N << " C" << C << " HW" << HW << " G" << G);
  auto x = randv(N * C * HW, 5, -2.f, 3.f), gamma = randv(C, 6), beta = randv(C, 7),
       dy = randv(N * C * HW, 8);
  std::vector<float> y(x.size()), mean(N * G), rstd(N * G), dx(x.size()), dg(C), dbt(C);
  const float* gp = affine ? gamma.data() : nullptr;
  kern::cpu::group_norm_forward<float>(N, C, HW, G, 1e-5, x.data(), gp, affine ? beta.data() : nullptr,
                                       y.data(), mean.data(), rstd.data());
  kern::cpu::group_norm_backward<float>(N, C, HW, G, dy.data(), x.data(), mean.data(), rstd.data(), gp,
                                        dx.data(), affine ? dg.data() : nullptr,
                                        affine ? dbt.data() : nullptr);
  Guarded<float> gx(x.size()), gga(C), gbe(C), gy(x.size()), gm(N * G), gr(N * G), gdy(x.size()),
      gdx(x.size()), gdg(C), gdb(C);
  gx.upload(x), gga.upload(gamma), gbe.upload(beta), gdy.upload(dy);
  kern::cuda::group_norm_forward(N, C, HW, G, 1e-5, gx.ptr(), affine ? gga.ptr() : nullptr,
                                 affine ? gbe.ptr() : nullptr, gy.ptr(), gm.ptr(), gr.ptr());
  EXPECT_CLOSE(gy, y, 1e-5);
  EXPECT_CLOSE(gm, mean, 1e-5);
  EXPECT_CLOSE(gr, rstd, 1e-5);
  // Backward from the CPU statistics so the comparison isolates the backward kernel.
  gm.upload(mean), gr.upload(rstd);
  kern::cuda::group_norm_backward(N, C, HW, G, gdy.ptr(), gx.ptr(), gm.ptr(), gr.ptr(),
                                  affine ? gga.ptr() : nullptr, gdx.ptr(), affine ? gdg.ptr() : nullptr,
                                  affine ? gdb.ptr() : nullptr);
  EXPECT_CLOSE(gdx, dx, 1e-4);
  if (affine) {
    EXPECT_CLOSE(gdg, dg, 1e-4);
    EXPECT_CLOSE(gdb, dbt, 1e-4);
  }
}

TEST(CudaKernel, GroupNorm) {
  SKIP_WITHOUT_CUDA();
  check_group_norm(3, 6, 13, 3, true);
  check_group_norm(2, 4, 5, 4, false);
  check_group_norm(128, 32, 784, 32, true);
  check_group_norm(128, 96, 784, 32, true);
  check_group_norm(128, 64, 196, 32, true);
  check_group_norm(128, 128, 49, 32, true);
}

void check_attention(int64_t BH, int64_t Lq, int64_t Lk, int64_t D) {
  SCOPED_TRACE(::testing::Message() << "attention BH" << BH << " Lq" << Lq << " Lk" << Lk << " D" << D);
  const double scale = 1.0 / std::sqrt(double(D));
  auto q = randv(BH * Lq * D, 9, -2.f, 2.f), k = randv(BH * Lk * D, 10, -2.f, 2.f),
       v = randv(BH * Lk * D, 11);
  auto dout = randv(BH * Lq * D, 12);
  std::vector<float> o(q.size()), lse(BH * Lq), dq(q.size()), dk(k.size()), dv(v.size());
  kern::cpu::attention_forward<float>(BH, Lq, Lk, D, scale, q.data(), k.data(), v.data(), o.data(),
                                      lse.data());
  kern::cpu::attention_backward<float>(BH, Lq, Lk, D, scale, q.data(), k.data(), v.data(), o.data(),
                                       lse.data(), dout.data(), dq.data(), dk.data(), dv.data());
  Guarded<float> gq(q.size()), gk(k.size()), gv(v.size()), go(o.size()), gl(lse.size()), gdo(dout.size()),
      gdq(q.size()), gdk(k.size()), gdv(v.size());
  gq.upload(q), gk.upload(k), gv.upload(v), gdo.upload(dout);
  kern::cuda::attention_forward(BH, Lq, Lk, D, scale, gq.ptr(), gk.ptr(), gv.ptr(), go.ptr(), gl.ptr());
  EXPECT_CLOSE(go, o, 1e-5);
  EXPECT_CLOSE(gl, lse, 1e-5);
  go.upload(o), gl.upload(lse);
  kern::cuda::attention_backward(BH, Lq, Lk, D, scale, gq.ptr(), gk.ptr(), gv.ptr(), go.ptr(), gl.ptr(),
                                 gdo.ptr(), gdq.ptr(), gdk.ptr(), gdv.ptr());
  EXPECT_CLOSE(gdq, dq, 1e-4);
  EXPECT_CLOSE(gdk, dk, 1e-4);
  EXPECT_CLOSE(gdv, dv, 1e-4);
}

TEST(CudaKernel, Attention) {
  SKIP_WITHOUT_CUDA();
  check_attention(3, 5, 7, 3);
  check_attention(2, 65, 130, 8);
  check_attention(1024, 196, 196, 8);
  check_attention(1024, 49, 49, 8);
  check_attention(4, 784, 784, 64);
  check_attention(2, 100, 33, 40);
}

TEST(CudaKernel, ElementwiseAndLayout) {
  SKIP_WITHOUT_CUDA();
  const int64_t n = 10007;
  auto x = randv(n, 13, -4.f, 4.f), dy = randv(n, 14);
  for (kern::Unary op : {kern::Unary::Neg, kern::Unary::Exp, kern::Unary::Sin, kern::Unary::Cos,
                         kern::Unary::Silu, kern::Unary::Square}) {
    SCOPED_TRACE(static_cast<int>(op));
    std::vector<float> y(n);
    kern::cpu::unary<float>(op, n, x.data(), y.data());
    Guarded<float> gx(n), gy(n);
    gx.upload(x);
    kern::cuda::unary(op, n, gx.ptr(), gy.ptr());
    EXPECT_CLOSE(gy, y, 1e-6);
  }
  {
    std::vector<float> dx(n), y(n);
    kern::cpu::silu_backward<float>(n, x.data(), dy.data(), dx.data());
    kern::cpu::affine<float>(n, x.data(), 1.5, -0.25, y.data());
    Guarded<float> gx(n), gdy(n), gdx(n), gy(n);
    gx.upload(x), gdy.upload(dy);
    kern::cuda::silu_backward(n, gx.ptr(), gdy.ptr(), gdx.ptr());
    kern::cuda::affine(n, gx.ptr(), 1.5, -0.25, gy.ptr());
    EXPECT_CLOSE(gdx, dx, 1e-6);
    EXPECT_CLOSE(gy, y, 1e-6);
  }
  {  // broadcast binary: (5, 1, 7, 3) op (6, 1, 3) -> (5, 6, 7, 3)
    kern::Strided out{4, {5, 6, 7, 3}, {126, 21, 3, 1}};
    kern::Strided as{4, {5, 6, 7, 3}, {21, 0, 3, 1}};
    kern::Strided bs{4, {5, 6, 7, 3}, {0, 3, 0, 1}};
    auto a = randv(5 * 7 * 3, 15), b = randv(6 * 3, 16, 0.5f, 2.f);
    for (kern::Binary op : {kern::Binary::Add, kern::Binary::Sub, kern::Binary::Mul, kern::Binary::Div}) {
      std::vector<float> y(5 * 6 * 7 * 3);
      kern::cpu::binary<float>(op, out, a.data(), as, b.data(), bs, y.data());
      Guarded<float> ga(a.size()), gb(b.size()), gy(y.size());
      ga.upload(a), gb.upload(b);
      kern::cuda::binary(op, out, ga.ptr(), as, gb.ptr(), bs, gy.ptr());
      EXPECT_CLOSE(gy, y, 1e-6);
    }
  }
  {  // transposed copy (3, 4, 5) -> permuted (5, 3, 4) layout
    auto src = randv(60, 17);
    kern::Strided sl{3, {5, 3, 4}, {1, 20, 5}}, dl{3, {5, 3, 4}, {12, 4, 1}};
    std::vector<float> dst(60);
    kern::cpu::copy_strided<float>(sl, src.data(), dl, dst.data());
    Guarded<float> gs(60), gd(60);
    gs.upload(src);
    kern::cuda::copy_strided(4, sl, gs.ptr(), dl, gd.ptr());
    EXPECT_CLOSE(gd, dst, 0.0);
  }
  {  // upsample
    const int64_t NC = 37, H = 7, W = 5;
    auto xin = randv(NC * H * W, 18), g = randv(NC * 4 * H * W, 19);
    std::vector<float> y(NC * 4 * H * W), dx(NC * H * W);
    kern::cpu::upsample_nearest2x_forward<float>(NC, H, W, xin.data(), y.data());
    kern::cpu::upsample_nearest2x_backward<float>(NC, H, W, g.data(), dx.data());
    Guarded<float> gx(xin.size()), gy(y.size()), gg(g.size()), gdx(dx.size());
    gx.upload(xin), gg.upload(g);
    kern::cuda::upsample_nearest2x_forward(NC, H, W, gx.ptr(), gy.ptr());
    kern::cuda::upsample_nearest2x_backward(NC, H, W, gg.ptr(), gdx.ptr());
    EXPECT_CLOSE(gy, y, 0.0);
    EXPECT_CLOSE(gdx, dx, 1e-6);
  }
}

TEST(CudaKernel, ReductionsEmbeddingAdamWRandom) {
  SKIP_WITHOUT_CUDA();
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{3, 1000}, {1000, 3}, {129, 784}, {128, 100352}}) {
    auto x = randv(rows * cols, 20);
    std::vector<float> sr(rows), sc(cols);
    kern::cpu::sum_rows<float>(rows, cols, x.data(), sr.data());
    kern::cpu::sum_cols<float>(rows, cols, x.data(), sc.data());
    Guarded<float> gx(x.size()), gsr(rows), gsc(cols);
    gx.upload(x);
    kern::cuda::sum_rows(rows, cols, gx.ptr(), gsr.ptr());
    kern::cuda::sum_cols(rows, cols, gx.ptr(), gsc.ptr());
    EXPECT_CLOSE(gsr, sr, 1e-6);
    EXPECT_CLOSE(gsc, sc, 1e-6);
  }
  {
    const int64_t n = 100003;
    auto a = randv(n, 21), b = randv(n, 22);
    std::vector<float> m(1);
    kern::cpu::mse_loss_forward<float>(n, a.data(), b.data(), m.data());
    Guarded<float> ga(n), gb(n), gm(1);
    ga.upload(a), gb.upload(b);
    kern::cuda::mse_loss_forward(n, ga.ptr(), gb.ptr(), gm.ptr());
    EXPECT_CLOSE(gm, m, 1e-6);
  }
  {
    const int64_t n = 300, rows = 10, dim = 3;
    std::vector<int64_t> idx(n);
    for (int64_t i = 0; i < n; ++i) idx[i] = (i * 7) % rows;
    auto table = randv(rows * dim, 23), dy = randv(n * dim, 24);
    std::vector<float> y(n * dim), dt(rows * dim);
    kern::cpu::embedding_forward<float>(n, dim, idx.data(), table.data(), y.data());
    kern::cpu::embedding_backward<float>(n, rows, dim, idx.data(), dy.data(), dt.data());
    Guarded<int64_t> gi(n);
    gi.upload(idx);
    Guarded<float> gt(table.size()), gy(y.size()), gdy(dy.size()), gdt(dt.size());
    gt.upload(table), gdy.upload(dy);
    kern::cuda::embedding_forward(n, dim, gi.ptr(), gt.ptr(), gy.ptr());
    kern::cuda::embedding_backward(n, rows, dim, gi.ptr(), gdy.ptr(), gdt.ptr());
    EXPECT_CLOSE(gy, y, 0.0);
    EXPECT_CLOSE(gdt, dt, 1e-6);
  }
  {  // AdamW over tensors of awkward sizes, 3 steps
    const std::vector<int64_t> sizes = {1, 1000, 4097, 33};
    std::vector<std::vector<float>> p, g, m, v;
    std::vector<std::unique_ptr<Guarded<float>>> gp, gg, gm, gv;
    for (size_t i = 0; i < sizes.size(); ++i) {
      p.push_back(randv(sizes[i], 30 + i)), g.push_back(randv(sizes[i], 40 + i));
      m.push_back(std::vector<float>(sizes[i], 0.f)), v.push_back(std::vector<float>(sizes[i], 0.f));
      for (auto* vec : {&gp, &gg, &gm, &gv}) vec->push_back(std::make_unique<Guarded<float>>(sizes[i]));
      gp[i]->upload(p[i]), gg[i]->upload(g[i]), gm[i]->upload(m[i]), gv[i]->upload(v[i]);
    }
    for (int64_t step = 1; step <= 3; ++step) {
      kern::AdamWParams hp{1e-3, 0.9, 0.999, 1e-8, 0.01, step};
      std::vector<float*> cp, cm, cv, dp, dm, dv;
      std::vector<const float*> cg, dg;
      for (size_t i = 0; i < sizes.size(); ++i) {
        cp.push_back(p[i].data()), cg.push_back(g[i].data()), cm.push_back(m[i].data()),
            cv.push_back(v[i].data());
        dp.push_back(gp[i]->ptr()), dg.push_back(gg[i]->ptr()), dm.push_back(gm[i]->ptr()),
            dv.push_back(gv[i]->ptr());
      }
      const int nt = static_cast<int>(sizes.size());
      kern::cpu::adamw_step<float>(nt, cp.data(), cg.data(), cm.data(), cv.data(), sizes.data(), hp);
      kern::cuda::adamw_step(nt, dp.data(), dg.data(), dm.data(), dv.data(), sizes.data(), hp);
    }
    for (size_t i = 0; i < sizes.size(); ++i) {
      EXPECT_CLOSE(*gp[i], p[i], 1e-6);
      EXPECT_CLOSE(*gm[i], m[i], 1e-6);
      EXPECT_CLOSE(*gv[i], v[i], 1e-6);
    }
  }
  {  // Philox: bit-identical uniforms, normals within float rounding of the libm difference
    const int64_t n = 4099;
    std::vector<float> u(n), z(n);
    kern::cpu::philox_uniform<float>(n, 1234, 77, u.data());
    kern::cpu::philox_normal<float>(n, 1234, 77, z.data());
    Guarded<float> gu(n), gz(n);
    kern::cuda::philox_uniform(n, 1234, 77, gu.ptr());
    kern::cuda::philox_normal(n, 1234, 77, gz.ptr());
    EXPECT_CLOSE(gu, u, 0.0);
    EXPECT_CLOSE(gz, z, 1e-6);
  }
}

}  // namespace
