// Gaussian fit, Jacobi symmetric eigensolver (Demmel-Veselic stopping rule), Frechet distance and k-NN
// precision/recall.
#include "apps/common/eval_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace engine::app {

Gaussian fit_gaussian(const Matrix& x) {
  const int64_t n = x.rows, d = x.cols;
  if (n < 2) throw std::invalid_argument("fit_gaussian: need at least 2 rows, got " + std::to_string(n));
  Gaussian g;
  g.mu.assign(static_cast<size_t>(d), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) g.mu[j] += x(i, j);
  for (double& m : g.mu) m /= static_cast<double>(n);
  g.cov = Matrix(d, d);
  Matrix c(n, d);  // centred rows
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) c(i, j) = x(i, j) - g.mu[j];
      // One parallel region over covariance rows (not one per sample: 10,000 fork/joins cost seconds on a
      // loaded machine). Each entry still sums its products in sample order, so the result does not depend on
      // the thread count.
#pragma omp parallel for schedule(dynamic, 4) if (d >= 64)
  for (int64_t a = 0; a < d; ++a) {
    double* row = &g.cov(a, 0);
    for (int64_t i = 0; i < n; ++i) {
      const double* ci = &c(i, 0);
      const double ca = ci[a];
      for (int64_t b = a; b < d; ++b) row[b] += ca * ci[b];
    }
  }
  for (int64_t a = 0; a < d; ++a)
    for (int64_t b = a; b < d; ++b) g.cov(b, a) = g.cov(a, b) = g.cov(a, b) / static_cast<double>(n - 1);
  return g;
}

std::vector<double> symmetric_eigen(const Matrix& in, Matrix* vecs, int* sweeps) {
  const int64_t d = in.rows;
  if (in.cols != d) throw std::invalid_argument("symmetric_eigen: matrix is not square");
  Matrix a = in;
  for (double v : a.v)
    if (!std::isfinite(v)) throw std::invalid_argument("symmetric_eigen: non-finite entry");
  for (int64_t p = 0; p < d; ++p)  // work on the exactly symmetric matrix of the upper triangle
    for (int64_t q = p + 1; q < d; ++q) a(q, p) = a(p, q);
  Matrix vt(d, d);  // rows: the eigenvectors (V^T), so that every rotation updates contiguous rows
  for (int64_t i = 0; i < d; ++i) vt(i, i) = 1;
  // Demmel & Veselic (1992) threshold: a(p, q) is negligible once |a(p, q)| <= tol sqrt(|a(p, p) a(q, q)|);
  // the iteration ends after a sweep that needed no rotation. A fixed tolerance relative to |A|_F may never
  // be met by rounding (the old criterion ran all 100 sweeps on rank-deficient covariances).
  const double tol = static_cast<double>(std::max<int64_t>(d, 1)) * std::numeric_limits<double>::epsilon();
  int sweep = 0;
  for (; sweep < 100; ++sweep) {
    bool rotated = false;
    for (int64_t p = 0; p < d; ++p)
      for (int64_t q = p + 1; q < d; ++q) {
        const double apq = a(p, q);
        if (std::fabs(apq) <= tol * std::sqrt(std::fabs(a(p, p) * a(q, q))) ||
            std::fabs(apq) < std::numeric_limits<double>::min())
          continue;
        rotated = true;
        // Rotation that zeroes a(p, q) (Golub & Van Loan, sym.schur2): A <- J^T A J.
        const double tau = (a(q, q) - a(p, p)) / (2 * apq);
        const double t = (tau >= 0 ? 1.0 : -1.0) / (std::fabs(tau) + std::sqrt(1 + tau * tau));
        const double c = 1 / std::sqrt(1 + t * t), s = t * c;
        double* rp = &a(p, 0);
        double* rq = &a(q, 0);
        for (int64_t k = 0; k < d; ++k) {  // rows p and q, mirrored into columns p and q
          if (k == p || k == q) continue;
          const double apk = rp[k], aqk = rq[k];
          rp[k] = a(k, p) = c * apk - s * aqk;
          rq[k] = a(k, q) = s * apk + c * aqk;
        }
        a(p, p) -= t * apq;
        a(q, q) += t * apq;
        a(p, q) = a(q, p) = 0;
        double* vp = &vt(p, 0);
        double* vq = &vt(q, 0);
        for (int64_t k = 0; k < d; ++k) {  // V J
          const double vkp = vp[k], vkq = vq[k];
          vp[k] = c * vkp - s * vkq;
          vq[k] = s * vkp + c * vkq;
        }
      }
    if (!rotated) break;
  }
  if (sweeps) *sweeps = sweep;
  std::vector<int64_t> order(static_cast<size_t>(d));
  for (int64_t i = 0; i < d; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return a(x, x) < a(y, y); });
  std::vector<double> vals(static_cast<size_t>(d));
  if (vecs) *vecs = Matrix(d, d);
  for (int64_t j = 0; j < d; ++j) {
    vals[j] = a(order[j], order[j]);
    if (vecs)
      for (int64_t i = 0; i < d; ++i) (*vecs)(i, j) = vt(order[j], i);
  }
  return vals;
}

Matrix sqrt_psd(const Matrix& m) {
  Matrix v;
  const std::vector<double> l = symmetric_eigen(m, &v);
  const int64_t d = m.rows;
  Matrix out(d, d);
  for (int64_t k = 0; k < d; ++k) {
    const double s = std::sqrt(std::max(l[k], 0.0));
    if (s == 0) continue;
    for (int64_t i = 0; i < d; ++i) {
      const double vi = v(i, k) * s;
      for (int64_t j = 0; j < d; ++j) out(i, j) += vi * v(j, k);
    }
  }
  return out;
}

namespace {

Matrix matmul(const Matrix& x, const Matrix& y) {
  Matrix out(x.rows, y.cols);
#pragma omp parallel for schedule(static) if (x.rows >= 64)
  for (int64_t i = 0; i < x.rows; ++i)
    for (int64_t k = 0; k < x.cols; ++k) {
      const double xik = x(i, k);
      for (int64_t j = 0; j < y.cols; ++j) out(i, j) += xik * y(k, j);
    }
  return out;
}

}  // namespace

double trace_sqrt_product(const Matrix& s1, const Matrix& s2) {
  if (s1.rows != s1.cols || s2.rows != s2.cols || s1.rows != s2.rows)
    throw std::invalid_argument("trace_sqrt_product: covariance shapes differ");
  const Matrix r = sqrt_psd(s1);
  Matrix m = matmul(matmul(r, s2), r);
  for (int64_t i = 0; i < m.rows; ++i)  // exact symmetry against rounding
    for (int64_t j = i + 1; j < m.cols; ++j) m(i, j) = m(j, i) = 0.5 * (m(i, j) + m(j, i));
  double tr = 0;
  for (double l : symmetric_eigen(m)) tr += std::sqrt(std::max(l, 0.0));
  return tr;
}

double frechet_distance(const Gaussian& a, const Gaussian& b) {
  const size_t d = a.mu.size();
  if (b.mu.size() != d || a.cov.rows != static_cast<int64_t>(d) || b.cov.rows != static_cast<int64_t>(d))
    throw std::invalid_argument("frechet_distance: dimensions differ (" + std::to_string(d) + " vs " +
                                std::to_string(b.mu.size()) + ")");
  double m2 = 0, tr = 0;
  for (size_t i = 0; i < d; ++i) {
    m2 += (a.mu[i] - b.mu[i]) * (a.mu[i] - b.mu[i]);
    tr += a.cov(i, i) + b.cov(i, i);
  }
  return std::max(0.0, m2 + tr - 2 * trace_sqrt_product(a.cov, b.cov));
}

namespace {

// Squared Euclidean distances between the rows of x (n x d) and y (m x d).
std::vector<double> sq_dists(const Matrix& x, const Matrix& y) {
  std::vector<double> out(static_cast<size_t>(x.rows * y.rows));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < x.rows; ++i)
    for (int64_t j = 0; j < y.rows; ++j) {
      double s = 0;
      for (int64_t k = 0; k < x.cols; ++k) {
        const double t = x(i, k) - y(j, k);
        s += t * t;
      }
      out[static_cast<size_t>(i * y.rows + j)] = s;
    }
  return out;
}

// Squared distance of each row to its k-th nearest other row.
std::vector<double> knn_radii2(const Matrix& x, int64_t k) {
  const std::vector<double> d = sq_dists(x, x);
  const int64_t n = x.rows;
  std::vector<double> r(static_cast<size_t>(n));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> row;
    row.reserve(static_cast<size_t>(n - 1));
    for (int64_t j = 0; j < n; ++j)
      if (j != i) row.push_back(d[static_cast<size_t>(i * n + j)]);
    std::nth_element(row.begin(), row.begin() + (k - 1), row.end());
    r[i] = row[static_cast<size_t>(k - 1)];
  }
  return r;
}

// Fraction of rows of `q` within the k-NN ball of some row of `ref`.
double coverage(const Matrix& ref, const std::vector<double>& radii2, const Matrix& q) {
  const std::vector<double> d = sq_dists(q, ref);
  int64_t inside = 0;
  for (int64_t i = 0; i < q.rows; ++i)
    for (int64_t j = 0; j < ref.rows; ++j)
      if (d[static_cast<size_t>(i * ref.rows + j)] <= radii2[j]) {
        ++inside;
        break;
      }
  return static_cast<double>(inside) / static_cast<double>(q.rows);
}

}  // namespace

PrecisionRecall precision_recall(const Matrix& real, const Matrix& fake, int64_t k) {
  if (k < 1) throw std::invalid_argument("precision_recall: k must be >= 1");
  if (real.rows <= k || fake.rows <= k)
    throw std::invalid_argument("precision_recall: need more than k = " + std::to_string(k) +
                                " points in each set (got " + std::to_string(real.rows) + " real, " +
                                std::to_string(fake.rows) + " fake)");
  if (real.cols != fake.cols) throw std::invalid_argument("precision_recall: feature dimensions differ");
  PrecisionRecall pr;
  pr.precision = coverage(real, knn_radii2(real, k), fake);
  pr.recall = coverage(fake, knn_radii2(fake, k), real);
  return pr;
}

}  // namespace engine::app
