// Matrix products: batched matmul (GEMM through the engine's CPU GEMM / cuBLAS) and linear layers (one op:
// the bias prefills the output and the GEMM accumulates onto it).
#include <algorithm>

#include "core/ops.h"
#include "core/ops/dispatch.h"

namespace engine {

namespace {
// A batch of matrices as GEMM sees it: base tensor, transpose flag, leading dim, batch stride.
struct MatBatch {
  Tensor t;
  bool trans = false;
  int64_t ld = 0, batch_stride = 0;
};

// Views (..., R, C) as a batch of matrices without copying when the layout allows it:
// the last two dims row-major or transposed, the batch dims collapsible to one stride.
MatBatch as_mat_batch(const Tensor& x) {
  const int64_t nd = x.dim();
  const int64_t R = x.shape()[nd - 2], C = x.shape()[nd - 1];
  const auto& st = x.strides();
  bool batch_ok = true;
  for (int64_t i = 0; i + 3 < nd + 0 && i < nd - 3; ++i) batch_ok &= st[i] == st[i + 1] * x.shape()[i + 1];
  const int64_t bstride = nd > 2 ? st[nd - 3] : 0;
  if (batch_ok) {
    if ((st[nd - 1] == 1 || C == 1) && st[nd - 2] >= C)
      return {x, false, std::max<int64_t>(st[nd - 2], 1), bstride};
    if ((st[nd - 2] == 1 || R == 1) && st[nd - 1] >= R)
      return {x, true, std::max<int64_t>(st[nd - 1], 1), bstride};
  }
  Tensor c = x.contiguous();
  return {c, false, std::max<int64_t>(C, 1), R * C};
}
}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  detail::check_same("matmul", {&a, &b});
  ENGINE_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul", "expects at least 2-d operands, got ",
               shape_str(a.shape()), " and ", shape_str(b.shape()));
  const int64_t M = a.size(-2), K = a.size(-1), K2 = b.size(-2), N = b.size(-1);
  ENGINE_CHECK(K == K2, "matmul", "inner dimensions differ: ", shape_str(a.shape()), " @ ",
               shape_str(b.shape()));
  Shape batch_shape(a.shape().begin(), a.shape().end() - 2);
  if (b.dim() > 2) {
    Shape bb(b.shape().begin(), b.shape().end() - 2);
    ENGINE_CHECK(bb == batch_shape, "matmul", "batch dims differ: ", shape_str(a.shape()), " @ ",
                 shape_str(b.shape()));
  }
  const int64_t batch = numel_of(batch_shape);
  Shape out_shape = batch_shape;
  out_shape.push_back(M);
  out_shape.push_back(N);
  Tensor y = Tensor::empty(out_shape, a.dtype(), a.device());
  if (y.numel() > 0) {
    if (K == 0) {
      y.fill_(0.0);
    } else {
      MatBatch A = as_mat_batch(a), B = as_mat_batch(b);
      if (b.dim() == 2) B.batch_stride = 0;
      auto cost = [&] { return detail::work(2.0 * static_cast<double>(batch * M) * N * K, {&a, &b, &y}); };
      detail::dispatch_float(a, "matmul", cost, [&]<typename T, bool Cuda>() {
        if (batch == 1)
          KERN(gemm, A.trans, B.trans, M, N, K, T(1), A.t.template data<T>(), A.ld, B.t.template data<T>(),
               B.ld, T(0), y.data<T>(), N);
        else
          KERN(gemm_batched, batch, A.trans, B.trans, M, N, K, T(1), A.t.template data<T>(), A.ld,
               A.batch_stride, B.t.template data<T>(), B.ld, B.batch_stride, T(0), y.data<T>(), N, M * N);
      });
    }
  }
  if (any_requires_grad({&a, &b})) {
    const bool ga = a.requires_grad(), gb = b.requires_grad();
    Tensor sa = gb ? a.detach() : Tensor(), sb = ga ? b.detach() : Tensor();
    const bool shared_b = b.dim() == 2 && a.dim() > 2;
    record("matmul", y, {a, b}, [=](const Tensor& g) {
      Tensor da, db;
      if (ga) da = matmul(g, sb.transpose(-1, -2));
      if (gb) {
        if (shared_b)  // sum over the batch: (batch*M, K)^T @ (batch*M, N)
          db = matmul(sa.reshape({-1, K}).transpose(0, 1), g.reshape({-1, N}));
        else
          db = matmul(sa.transpose(-1, -2), g);
      }
      return std::vector<Tensor>{da, db};
    });
  }
  return y;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  detail::check_same("linear", {&x, &weight, &bias});
  ENGINE_CHECK(weight.dim() == 2, "linear", "weight must be (out, in), got ", shape_str(weight.shape()));
  ENGINE_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1), "linear", "input ", shape_str(x.shape()),
               " does not match weight ", shape_str(weight.shape()));
  if (bias.defined())
    ENGINE_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), "linear", "bias ",
                 shape_str(bias.shape()), " does not match weight ", shape_str(weight.shape()));
  const int64_t in = weight.size(1), out = weight.size(0);
  Shape out_shape = x.shape();
  out_shape.back() = out;
  Tensor x2 = x.reshape({-1, in});
  const int64_t M = x2.size(0);
  Tensor y = Tensor::empty({M, out}, x.dtype(), x.device());
  if (y.numel() > 0) {
    Tensor bc = bias.defined() ? bias.contiguous() : Tensor();
    MatBatch A = as_mat_batch(x2), B = as_mat_batch(weight.transpose(0, 1));
    auto cost = [&] {
      return detail::work(2.0 * static_cast<double>(M) * out * in, {&x2, &weight, &bc, &y});
    };
    detail::dispatch_float(x, "linear", cost, [&]<typename T, bool Cuda>() {
      // y starts as the bias rows (or 0 when there is nothing to multiply), and gemm with beta = 1 continues
      // each element's FMA chain from its bias.
      if (bc.defined()) {
        if constexpr (Cuda) {
          detail::copy_into(bc.reshape({1, out}).expand({M, out}), y);
        } else {
          const T* b = bc.data<T>();
          T* yp = y.data<T>();
          for (int64_t i = 0; i < M; ++i) std::copy(b, b + out, yp + i * out);
        }
      } else if (in == 0) {
        y.fill_(0.0);
      }
      if (in > 0)
        KERN(gemm, A.trans, B.trans, M, out, in, T(1), A.t.template data<T>(), A.ld, B.t.template data<T>(),
             B.ld, bc.defined() ? T(1) : T(0), y.data<T>(), out);
    });
  }
  if (any_requires_grad({&x, &weight, &bias})) {
    const bool gx = x.requires_grad(), gw = weight.requires_grad(),
               gb = bias.defined() && bias.requires_grad();
    Tensor sx = gw ? x2.detach() : Tensor(), sw = gx ? weight.detach() : Tensor();
    record("linear", y, {x2, weight, bias}, [=](const Tensor& g) {
      return std::vector<Tensor>{gx ? matmul(g, sw) : Tensor(),                  // (M, out) @ (out, in)
                                 gw ? matmul(g.transpose(0, 1), sx) : Tensor(),  // (out, M) @ (M, in)
                                 gb ? sum(g, {0}) : Tensor()};
    });
  }
  return y.reshape(out_shape);
}

}  // namespace engine
