// Indexing and layout ops: embedding lookup, concat along a dim, nearest x2 upsampling.
#include "core/ops.h"
#include "core/ops/dispatch.h"

namespace engine {

Tensor embedding(const Tensor& indices, const Tensor& table) {
  ENGINE_CHECK(indices.dtype() == DType::I64, "embedding", "indices must be int64, got ",
               dtype_name(indices.dtype()));
  ENGINE_CHECK(table.dim() == 2, "embedding", "table must be (num, dim), got ", shape_str(table.shape()));
  ENGINE_CHECK(indices.device() == table.device(), "embedding", "indices on ", indices.device().str(),
               ", table on ", table.device().str());
  const int64_t n = indices.numel(), rows = table.size(0), dim = table.size(1);
  Tensor ic = indices.contiguous(), tc = table.contiguous();
  // Out-of-range indices would read outside the table: checked on the host (labels are small).
  for (int64_t i : ic.to_vector<int64_t>())
    ENGINE_CHECK(i >= 0 && i < rows, "embedding", "index ", i, " out of range for a table of ", rows,
                 " rows");
  Shape out_shape = indices.shape();
  out_shape.push_back(dim);
  Tensor y = Tensor::empty(out_shape, table.dtype(), table.device());
  if (y.numel() > 0)
    detail::dispatch_float(table, "embedding", [&]<typename T, bool Cuda>() {
      KERN(embedding_forward, n, dim, ic.data<int64_t>(), tc.data<T>(), y.data<T>());
    });
  if (any_requires_grad({&table})) {
    Tensor si = ic.detach();
    record("embedding", y, {table}, [=](const Tensor& g) {
      Tensor gc = g.contiguous();
      Tensor dt = Tensor::empty({rows, dim}, gc.dtype(), gc.device());
      detail::dispatch_float(gc, "embedding_backward", [&]<typename T, bool Cuda>() {
        KERN(embedding_backward, n, rows, dim, si.data<int64_t>(), gc.data<T>(), dt.data<T>());
      });
      return std::vector<Tensor>{dt};
    });
  }
  return y;
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  ENGINE_CHECK(!xs.empty(), "concat", "no tensors given");
  const Tensor& first = xs[0];
  const int64_t nd = first.dim();
  const int64_t d = dim < 0 ? dim + nd : dim;
  ENGINE_CHECK(d >= 0 && d < nd, "concat", "dim ", dim, " out of range for ", shape_str(first.shape()));
  Shape out_shape = first.shape();
  out_shape[d] = 0;
  for (const Tensor& t : xs) {
    detail::check_same("concat", {&first, &t});
    bool ok = t.dim() == nd;
    for (int64_t i = 0; ok && i < nd; ++i) ok = i == d || t.shape()[i] == first.shape()[i];
    ENGINE_CHECK(ok, "concat", "shapes ", shape_str(first.shape()), " and ", shape_str(t.shape()),
                 " differ outside dim ", d);
    out_shape[d] += t.shape()[d];
  }
  Tensor y = Tensor::empty(out_shape, first.dtype(), first.device());
  std::vector<int64_t> sizes;
  int64_t at = 0;
  for (const Tensor& t : xs) {
    detail::copy_into(t.detach(), y.detach().narrow(d, at, t.shape()[d]));
    sizes.push_back(t.shape()[d]);
    at += t.shape()[d];
  }
  if (any_requires_grad(xs)) {
    record("concat", y, xs, [sizes, d](const Tensor& g) {
      std::vector<Tensor> gs;
      int64_t pos = 0;
      for (int64_t s : sizes) {
        gs.push_back(g.narrow(d, pos, s).contiguous());
        pos += s;
      }
      return gs;
    });
  }
  return y;
}

Tensor upsample_nearest2x(const Tensor& x) {
  ENGINE_CHECK(x.dim() == 4, "upsample_nearest2x", "input must be (N, C, H, W), got ", shape_str(x.shape()));
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor xc = x.contiguous();
  Tensor y = Tensor::empty({N, C, 2 * H, 2 * W}, x.dtype(), x.device());
  if (y.numel() > 0) {
    auto cost = [&] { return detail::work(0, {&xc, &y}); };
    detail::dispatch_float(x, "upsample_nearest2x", cost, [&]<typename T, bool Cuda>() {
      KERN(upsample_nearest2x_forward, N * C, H, W, xc.data<T>(), y.data<T>());
    });
  }
  if (any_requires_grad({&x})) {
    record("upsample_nearest2x", y, {x}, [=](const Tensor& g) {
      Tensor gc = g.contiguous();
      Tensor dx = Tensor::empty({N, C, H, W}, gc.dtype(), gc.device());
      auto cost = [&] { return detail::work(0, {&gc, &dx}); };
      detail::dispatch_float(gc, "upsample_nearest2x_backward", cost, [&]<typename T, bool Cuda>() {
        KERN(upsample_nearest2x_backward, N * C, H, W, gc.data<T>(), dx.data<T>());
      });
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}

}  // namespace engine
