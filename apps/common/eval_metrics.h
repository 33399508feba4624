// Sample-quality statistics in a feature space (pure math on double matrices, no tensors):
//  - Gaussian fit (mean, covariance) of N x D features,
//  - a symmetric eigensolver (cyclic Jacobi in double precision),
//  - the Frechet distance between two Gaussians,
//      FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2),
//    where both square roots are taken by symmetric eigendecomposition with eigenvalues clamped at 0, so
//    every matrix handled is symmetric PSD and no complex values or non-symmetric iterations appear
//    (unlike the Schur-based scipy.linalg.sqrtm(S1 S2) used by common FID code),
//  - improved precision and recall (Kynkaanniemi et al. 2019): k-NN balls around each real (fake) point.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace engine::app {

// Row-major n x d matrix of doubles.
struct Matrix {
  int64_t rows = 0, cols = 0;
  std::vector<double> v;
  Matrix() = default;
  Matrix(int64_t r, int64_t c) : rows(r), cols(c), v(static_cast<size_t>(r * c), 0.0) {}
  double& operator()(int64_t i, int64_t j) { return v[static_cast<size_t>(i * cols + j)]; }
  double operator()(int64_t i, int64_t j) const { return v[static_cast<size_t>(i * cols + j)]; }
};

struct Gaussian {
  std::vector<double> mu;  // d
  Matrix cov;              // d x d, unbiased (divides by n - 1)
};

// Mean and covariance of the rows of `x` (n x d, n >= 2). Throws std::invalid_argument for n < 2.
Gaussian fit_gaussian(const Matrix& x);

// Eigendecomposition of a symmetric matrix `a` (d x d; its upper triangle is used) by cyclic Jacobi
// rotations, skipping a(p, q) once |a(p, q)| <= d eps sqrt(|a(p, p) a(q, q)|) (Demmel & Veselic 1992) and
// stopping after a sweep without rotations (at most 100 sweeps; `sweeps`, if not null, receives the count).
// Returns the eigenvalues (ascending); `vecs` (if not null) receives the eigenvectors as columns.
// Throws std::invalid_argument for a non-square matrix or non-finite entries.
std::vector<double> symmetric_eigen(const Matrix& a, Matrix* vecs = nullptr, int* sweeps = nullptr);

// Square root of a symmetric PSD matrix: V diag(sqrt(max(l, 0))) V^T.
Matrix sqrt_psd(const Matrix& a);

// tr((S1^1/2 S2 S1^1/2)^1/2) for symmetric PSD S1, S2 (= tr sqrt(S1 S2), computed symmetrically).
double trace_sqrt_product(const Matrix& s1, const Matrix& s2);

// Frechet distance between N(a.mu, a.cov) and N(b.mu, b.cov); throws std::invalid_argument on a dimension
// mismatch. Clamped at 0 (rounding can make it a tiny negative number).
double frechet_distance(const Gaussian& a, const Gaussian& b);

struct PrecisionRecall {
  double precision = 0;  // fraction of fake points inside the real manifold
  double recall = 0;     // fraction of real points inside the fake manifold
};

// Improved precision/recall: the manifold of a set is the union of balls around its points, each with the
// radius of the distance to the point's k-th nearest neighbour in the same set (itself excluded); a point
// is inside when its distance to some ball's centre is <= that radius. real (n x d), fake (m x d),
// n, m > k. Throws std::invalid_argument otherwise.
PrecisionRecall precision_recall(const Matrix& real, const Matrix& fake, int64_t k = 3);

}  // namespace engine::app
