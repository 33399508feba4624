// Reductions: sum/mean over dims, sum_to (un-broadcast) and mse_loss.
#include <algorithm>
#include <numeric>

#include "core/ops.h"
#include "core/ops/dispatch.h"

namespace engine {

namespace {
// Sums contiguous x viewed as (rows, cols) over cols (by_rows) or over rows.
Tensor sum_2d(const Tensor& xc, int64_t rows, int64_t cols, bool over_cols, const Shape& out_shape) {
  Tensor y = Tensor::empty(out_shape, xc.dtype(), xc.device());
  if (y.numel() == 0) return y;
  if (rows * cols == 0) return y.fill_(0.0);
  auto cost = [&] { return detail::work(static_cast<double>(xc.numel()), {&xc, &y}); };
  detail::dispatch_float(xc, "sum", cost, [&]<typename T, bool Cuda>() {
    if (over_cols)
      KERN(sum_rows, rows, cols, xc.data<T>(), y.data<T>());
    else
      KERN(sum_cols, rows, cols, xc.data<T>(), y.data<T>());
  });
  return y;
}

// Forward-only sum over a sorted set of dims (no autograd).
Tensor sum_raw(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  const int64_t nd = x.dim();
  std::vector<bool> red(nd, false);
  for (int64_t d : dims) red[d] = true;
  Shape kept_shape, out_keep(x.shape());
  std::vector<int64_t> perm_kept, perm_red;
  int64_t rows = 1, cols = 1;
  for (int64_t i = 0; i < nd; ++i) {
    if (red[i]) {
      perm_red.push_back(i);
      cols *= x.shape()[i];
      out_keep[i] = 1;
    } else {
      perm_kept.push_back(i);
      rows *= x.shape()[i];
      kept_shape.push_back(x.shape()[i]);
    }
  }
  const Shape& out_shape = keepdim ? out_keep : kept_shape;
  // Reduced dims forming a prefix of a contiguous tensor: column sums, no copy.
  bool prefix = true;
  for (int64_t i = 0; i < static_cast<int64_t>(perm_red.size()); ++i) prefix &= perm_red[i] == i;
  if (prefix && x.is_contiguous()) return sum_2d(x, cols, rows, false, out_shape);
  std::vector<int64_t> perm = perm_kept;
  perm.insert(perm.end(), perm_red.begin(), perm_red.end());
  Tensor xc = x.detach().permute(perm).contiguous();
  return sum_2d(xc, rows, cols, true, out_shape);
}

std::vector<int64_t> normalise_dims(const std::vector<int64_t>& dims, int64_t nd, const char* op) {
  std::vector<int64_t> out;
  for (int64_t d : dims) {
    int64_t w = d < 0 ? d + nd : d;
    ENGINE_CHECK(w >= 0 && w < nd, op, "dim ", d, " out of range for a ", nd, "-d tensor");
    out.push_back(w);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}
}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  auto dims = normalise_dims(dims_in, x.dim(), "sum");
  Tensor y = sum_raw(x, dims, keepdim);
  if (any_requires_grad({&x})) {
    Shape in_shape = x.shape();
    Shape keep_shape = in_shape;
    for (int64_t d : dims) keep_shape[d] = 1;
    record("sum", y, {x}, [in_shape, keep_shape](const Tensor& g) {
      return std::vector<Tensor>{g.reshape(keep_shape).expand(in_shape).contiguous()};
    });
  }
  return y;
}

Tensor sum(const Tensor& x) {
  std::vector<int64_t> all(x.dim());
  std::iota(all.begin(), all.end(), 0);
  return sum(x, all, false);
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  auto dims = normalise_dims(dims_in, x.dim(), "mean");
  int64_t n = 1;
  for (int64_t d : dims) n *= x.shape()[d];
  ENGINE_CHECK(n > 0, "mean", "mean over an empty set of elements of shape ", shape_str(x.shape()));
  return mul(sum(x, dims, keepdim), 1.0 / static_cast<double>(n));
}

Tensor mean(const Tensor& x) {
  std::vector<int64_t> all(x.dim());
  std::iota(all.begin(), all.end(), 0);
  return mean(x, all, false);
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  const int64_t lead = x.dim() - static_cast<int64_t>(shape.size());
  ENGINE_CHECK(lead >= 0, "sum_to", "cannot reduce ", shape_str(x.shape()), " to ", shape_str(shape));
  std::vector<int64_t> dims;
  for (int64_t i = 0; i < x.dim(); ++i) {
    if (i < lead) {
      dims.push_back(i);
    } else if (shape[i - lead] == 1 && x.shape()[i] != 1) {
      dims.push_back(i);
    } else {
      ENGINE_CHECK(shape[i - lead] == x.shape()[i], "sum_to", "cannot reduce ", shape_str(x.shape()), " to ",
                   shape_str(shape));
    }
  }
  return sum(x, dims, true).reshape(shape);
}

Tensor mse_loss(const Tensor& pred, const Tensor& target) {
  ENGINE_CHECK(pred.shape() == target.shape(), "mse_loss", "pred ", shape_str(pred.shape()), " and target ",
               shape_str(target.shape()), " differ");
  detail::check_same("mse_loss", {&pred, &target});
  ENGINE_CHECK(pred.numel() > 0, "mse_loss", "empty input");
  Tensor pc = pred.contiguous(), tc = target.contiguous();
  Tensor y = Tensor::empty({}, pred.dtype(), pred.device());
  auto cost = [&] { return detail::work(2.0 * static_cast<double>(pc.numel()), {&pc, &tc, &y}); };
  detail::dispatch_float(pred, "mse_loss", cost, [&]<typename T, bool Cuda>() {
    KERN(mse_loss_forward, pc.numel(), pc.data<T>(), tc.data<T>(), y.data<T>());
  });
  if (any_requires_grad({&pred, &target})) {
    Tensor sp = pc.detach(), st = tc.detach();
    const bool gp = pred.requires_grad(), gt = target.requires_grad();
    const double scale = 2.0 / static_cast<double>(pred.numel());
    record("mse_loss", y, {pred, target}, [=](const Tensor& g) {
      NoGradGuard ng;
      Tensor d = mul(sub(sp, st), g);  // (pred - target) * g, g is 0-d
      d = mul(d, scale);
      return std::vector<Tensor>{gp ? d : Tensor(), gt ? neg(d) : Tensor()};
    });
  }
  return y;
}

}  // namespace engine
