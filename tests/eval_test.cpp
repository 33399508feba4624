// Tests of the sample-quality evaluation (fm_eval): the statistics against closed forms and hand-made point
// sets (EvalMetrics.*), sanity checks of the committed classifier on real MNIST, noise and shuffled labels
// (EvalSanity.*, need ENGINE_MNIST_DIR), and the fm_eval binary's CLI (EvalApp.*).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "apps/common/checkpoint.h"
#include "apps/common/eval_metrics.h"
#include "apps/common/mnist.h"
#include "apps/common/sample_eval.h"
#include "core/safetensors.h"
#include "models/mnist_classifier.h"
#include "nn/state_dict.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace engine;
using namespace engine::app;

namespace {

Matrix from_rows(const std::vector<std::vector<double>>& rows) {
  Matrix m(static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size()));
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t j = 0; j < rows[i].size(); ++j) m(i, j) = rows[i][j];
  return m;
}

// A random orthogonal d x d matrix (Gram-Schmidt of a Gaussian matrix), columns orthonormal.
Matrix random_orthogonal(int64_t d, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd;
  Matrix q(d, d);
  for (int64_t j = 0; j < d; ++j) {
    std::vector<double> v(d);
    for (double& x : v) x = nd(rng);
    for (int pass = 0; pass < 2; ++pass)
      for (int64_t c = 0; c < j; ++c) {
        double dot = 0;
        for (int64_t i = 0; i < d; ++i) dot += v[i] * q(i, c);
        for (int64_t i = 0; i < d; ++i) v[i] -= dot * q(i, c);
      }
    double n = 0;
    for (double x : v) n += x * x;
    for (int64_t i = 0; i < d; ++i) q(i, j) = v[i] / std::sqrt(n);
  }
  return q;
}

// Q diag(l) Q^T.
Matrix rotate(const Matrix& q, const std::vector<double>& l) {
  const int64_t d = q.rows;
  Matrix out(d, d);
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < d; ++j) {
      double s = 0;
      for (int64_t k = 0; k < d; ++k) s += q(i, k) * l[k] * q(j, k);
      out(i, j) = s;
    }
  return out;
}

Gaussian gauss(std::vector<double> mu, Matrix cov) {
  Gaussian g;
  g.mu = std::move(mu);
  g.cov = std::move(cov);
  return g;
}

std::vector<double> logspace(double lo_exp, double hi_exp, int64_t n) {
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = std::pow(10.0, lo_exp + (hi_exp - lo_exp) * i / double(n - 1));
  return v;
}

}  // namespace

TEST(EvalMetrics, FitGaussianMeanAndUnbiasedCovariance) {
  // Rows (1, 2), (3, 6), (5, 10): mean (3, 6); deviations (-2, -4), (0, 0), (2, 4); sums of products
  // 8, 16, 32; divided by n - 1 = 2.
  const Gaussian g = fit_gaussian(from_rows({{1, 2}, {3, 6}, {5, 10}}));
  EXPECT_DOUBLE_EQ(g.mu[0], 3);
  EXPECT_DOUBLE_EQ(g.mu[1], 6);
  EXPECT_DOUBLE_EQ(g.cov(0, 0), 4);
  EXPECT_DOUBLE_EQ(g.cov(0, 1), 8);
  EXPECT_DOUBLE_EQ(g.cov(1, 0), 8);
  EXPECT_DOUBLE_EQ(g.cov(1, 1), 16);
  EXPECT_THROW(fit_gaussian(from_rows({{1, 2}})), std::invalid_argument);
}

TEST(EvalMetrics, SymmetricEigenKnownAndReconstructs) {
  const std::vector<double> l = symmetric_eigen(from_rows({{2, 1}, {1, 2}}));
  EXPECT_NEAR(l[0], 1, 1e-14);
  EXPECT_NEAR(l[1], 3, 1e-14);
  // A random symmetric 40 x 40: V diag(l) V^T == A, V^T V == I.
  const int64_t d = 40;
  std::mt19937_64 rng(3);
  std::normal_distribution<double> nd;
  Matrix a(d, d);
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j <= i; ++j) a(i, j) = a(j, i) = nd(rng);
  Matrix v;
  const std::vector<double> ev = symmetric_eigen(a, &v);
  EXPECT_TRUE(std::is_sorted(ev.begin(), ev.end()));
  const Matrix r = rotate(v, ev);
  double err = 0, orth = 0;
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < d; ++j) {
      err = std::max(err, std::fabs(r(i, j) - a(i, j)));
      double dot = 0;
      for (int64_t k = 0; k < d; ++k) dot += v(k, i) * v(k, j);
      orth = std::max(orth, std::fabs(dot - (i == j)));
    }
  EXPECT_LT(err, 1e-12);
  EXPECT_LT(orth, 1e-12);
  EXPECT_THROW(symmetric_eigen(Matrix(2, 3)), std::invalid_argument);
}

TEST(EvalMetrics, SymmetricEigenConvergesOnRankDeficientCovariance) {
  // The covariance of 1,000 points in a 6-d subspace of R^128 plus 1e-9 noise (what the features of an
  // untrained model look like): eigenvalues spanning 1e-18 to 1e2. The Demmel-Veselic rule must stop
  // (a sweep without rotations) well before the 100-sweep cap, with an accurate decomposition.
  const int64_t n = 1000, d = 128, r = 6;
  std::mt19937_64 rng(17);
  std::normal_distribution<double> nd;
  Matrix basis(r, d), x(n, d);
  for (double& v : basis.v) v = nd(rng);
  for (int64_t i = 0; i < n; ++i) {
    double z[r];
    for (double& v : z) v = nd(rng);
    for (int64_t j = 0; j < d; ++j) {
      double s = 1e-9 * nd(rng);
      for (int64_t k = 0; k < r; ++k) s += z[k] * basis(k, j);
      x(i, j) = s;
    }
  }
  const Matrix cov = fit_gaussian(x).cov;
  Matrix v;
  int sweeps = -1;
  const std::vector<double> ev = symmetric_eigen(cov, &v, &sweeps);
  EXPECT_GE(sweeps, 1);
  EXPECT_LE(sweeps, 15);
  const Matrix back = rotate(v, ev);
  double err = 0, norm = 0;
  for (size_t i = 0; i < cov.v.size(); ++i) {
    err = std::max(err, std::fabs(back.v[i] - cov.v[i]));
    norm = std::max(norm, std::fabs(cov.v[i]));
  }
  EXPECT_LT(err, 1e-13 * norm);
  // 122 eigenvalues are ~1e-18 (noise), 6 are O(100): none may come out as large negative garbage.
  EXPECT_GT(ev.front(), -1e-12 * norm);
  EXPECT_GT(ev[d - r], 1.0);
  EXPECT_LT(ev[d - r - 1], 1e-12 * norm);
}

TEST(EvalMetrics, FrechetDiagonalGaussiansClosedForm) {
  // Diagonal covariances commute: FD = |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
  const std::vector<double> a = {1, 4, 0.25, 9, 2}, b = {4, 1, 0.25, 1, 8};
  const std::vector<double> m1 = {0, 1, 2, 3, 4}, m2 = {1, 1, 0, 3, 5};
  Matrix sa(5, 5), sb(5, 5);
  double expect = 0;
  for (int i = 0; i < 5; ++i) {
    sa(i, i) = a[i];
    sb(i, i) = b[i];
    expect += (m1[i] - m2[i]) * (m1[i] - m2[i]) +
              (std::sqrt(a[i]) - std::sqrt(b[i])) * (std::sqrt(a[i]) - std::sqrt(b[i]));
  }
  // By hand: means 1 + 0 + 4 + 0 + 1 = 6; covariances 1 + 1 + 0 + 4 + 2 = 8 (sqrt 2 vs sqrt 8: (sqrt2)^2).
  EXPECT_NEAR(expect, 14, 1e-12);
  EXPECT_NEAR(frechet_distance(gauss(m1, sa), gauss(m2, sb)), 14, 1e-12);
  EXPECT_NEAR(frechet_distance(gauss(m1, sa), gauss(m1, sa)), 0, 1e-12);
}

TEST(EvalMetrics, FrechetNonCommutingTwoByTwoClosedForm) {
  // For 2 x 2 PSD M, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)); with M = S1^1/2 S2 S1^1/2: tr M = tr(S1 S2),
  // det M = det S1 det S2.
  const Matrix s1 = from_rows({{2, 1}, {1, 1}}), s2 = from_rows({{1, -0.5}, {-0.5, 3}});
  const double tr12 = 2 * 1 + 1 * -0.5 + 1 * -0.5 + 1 * 3;  // sum_ij s1_ij s2_ji = 4
  const double det1 = 2 * 1 - 1 * 1, det2 = 1 * 3 - 0.25;
  const double trsqrt = std::sqrt(tr12 + 2 * std::sqrt(det1 * det2));
  EXPECT_NEAR(trace_sqrt_product(s1, s2), trsqrt, 1e-13);
  EXPECT_NEAR(trace_sqrt_product(s2, s1), trsqrt, 1e-13);  // symmetric in its arguments
  const double fd = 1 + 4 + (3 + 4) - 2 * trsqrt;          // mu diff (1, 2); tr S1 + tr S2 = 3 + 4
  EXPECT_NEAR(frechet_distance(gauss({0, 0}, s1), gauss({1, 2}, s2)), fd, 1e-12);
}

TEST(EvalMetrics, FrechetIllConditionedCovariances) {
  // Condition number 1e14 and exactly singular covariances in a random basis (not diagonal, so the solver
  // has to rotate): commuting pairs have the closed form sum (sqrt(l1_i) - sqrt(l2_i))^2.
  const int64_t d = 48;
  const Matrix q = random_orthogonal(d, 11);
  std::vector<double> l1 = logspace(-12, 2, d), l2 = logspace(-12, 2, d);
  std::reverse(l2.begin(), l2.end());
  const Matrix s1 = rotate(q, l1), s2 = rotate(q, l2);
  double expect = 0, tr = 0;
  for (int64_t i = 0; i < d; ++i) {
    expect += (std::sqrt(l1[i]) - std::sqrt(l2[i])) * (std::sqrt(l1[i]) - std::sqrt(l2[i]));
    tr += l1[i];
  }
  const std::vector<double> mu(d, 0.0);
  EXPECT_NEAR(frechet_distance(gauss(mu, s1), gauss(mu, s2)), expect, 1e-9 * tr);
  // Identical ill-conditioned covariances: FD = 0 (not a negative number or NaN from a complex sqrt).
  const double self = frechet_distance(gauss(mu, s1), gauss(mu, s1));
  EXPECT_TRUE(std::isfinite(self));
  EXPECT_NEAR(self, 0, 1e-9 * tr);
  // Rank 5 of 48 (exact zeros) against itself and against a scaled copy: FD = tr(S) (1 - c)^2.
  std::vector<double> lr(d, 0.0);
  for (int i = 0; i < 5; ++i) lr[i] = 1.0 + i;
  const Matrix r1 = rotate(q, lr);
  std::vector<double> lr4 = lr;
  for (double& x : lr4) x *= 4;  // c = 2
  // The 43 zero eigenvalues come back as rounding noise of size eps |S|, and sqrt turns each into
  // sqrt(eps |S|) ~ 1e-7: any method's error is about d sqrt(eps |S|) here, so 1e-5 (not 1e-9).
  EXPECT_NEAR(frechet_distance(gauss(mu, r1), gauss(mu, r1)), 0, 1e-5);
  EXPECT_NEAR(frechet_distance(gauss(mu, r1), gauss(mu, rotate(q, lr4))), 15.0 * 1, 1e-5);
}

TEST(EvalMetrics, FrechetOfSampledGaussiansApproachesClosedForm) {
  // 20,000 draws each of N(0, diag(1, 4, 9)) and N((1, 0, 0), diag(4, 4, 1)): closed form 1 + 1 + 0 + 4 = 6.
  std::mt19937_64 rng(5);
  std::normal_distribution<double> nd;
  const int64_t n = 20000;
  Matrix x(n, 3), y(n, 3);
  for (int64_t i = 0; i < n; ++i) {
    x(i, 0) = nd(rng), x(i, 1) = 2 * nd(rng), x(i, 2) = 3 * nd(rng);
    y(i, 0) = 1 + 2 * nd(rng), y(i, 1) = 2 * nd(rng), y(i, 2) = nd(rng);
  }
  EXPECT_NEAR(frechet_distance(fit_gaussian(x), fit_gaussian(y)), 6.0, 0.15);
}

TEST(EvalMetrics, PrecisionRecallHandMadeSets) {
  // k = 1, 1-D. Real {0, 1, 10, 11}: radii 1 -> balls [-1, 1], [0, 2], [9, 11], [10, 12].
  // Fake {0.5, 1.5, 5, 5.5}: radii 1, 1, 0.5, 0.5 -> balls [-0.5, 1.5], [0.5, 2.5], [4.5, 5.5], [5, 6].
  // Precision: 0.5 and 1.5 inside, 5 and 5.5 not -> 0.5. Recall: 0 and 1 inside, 10 and 11 not -> 0.5.
  PrecisionRecall pr =
      precision_recall(from_rows({{0}, {1}, {10}, {11}}), from_rows({{0.5}, {1.5}, {5}, {5.5}}), 1);
  EXPECT_DOUBLE_EQ(pr.precision, 0.5);
  EXPECT_DOUBLE_EQ(pr.recall, 0.5);
  // k = 3. Real {0, 1, 2, 3, 4}: 3rd-neighbour radii 3, 2, 2, 2, 3 -> union [-3, 7].
  // Fake {-2.5, 3.5, 6.5, 7.5, 20}: -2.5, 3.5, 6.5 inside -> precision 3/5. The fake radii 10, 6, 9, 10,
  // 16.5 cover every real point -> recall 1.
  pr = precision_recall(from_rows({{0}, {1}, {2}, {3}, {4}}), from_rows({{-2.5}, {3.5}, {6.5}, {7.5}, {20}}),
                        3);
  EXPECT_DOUBLE_EQ(pr.precision, 0.6);
  EXPECT_DOUBLE_EQ(pr.recall, 1.0);
  // 2-D, boundary included: real {(0,0), (3,4)} k = 1 -> radius 5 each; fake (6, 8) is exactly 5 from (3, 4),
  // (0, -5.5) is 5.5 from (0, 0) -> precision 1/2. Fake radius sqrt(218.25) ~ 14.8 covers both real points ->
  // recall 1.
  pr = precision_recall(from_rows({{0, 0}, {3, 4}}), from_rows({{6, 8}, {0, -5.5}}), 1);
  EXPECT_DOUBLE_EQ(pr.precision, 0.5);
  EXPECT_DOUBLE_EQ(pr.recall, 1.0);
  // Identical sets: 1 and 1; far apart: 0 and 0.
  const Matrix a = from_rows({{0, 0}, {1, 0}, {0, 1}, {1, 1}, {0.5, 0.5}});
  Matrix far = a;
  for (double& v : far.v) v += 100;
  pr = precision_recall(a, a, 3);
  EXPECT_DOUBLE_EQ(pr.precision, 1.0);
  EXPECT_DOUBLE_EQ(pr.recall, 1.0);
  pr = precision_recall(a, far, 3);
  EXPECT_DOUBLE_EQ(pr.precision, 0.0);
  EXPECT_DOUBLE_EQ(pr.recall, 0.0);
  EXPECT_THROW(precision_recall(a, from_rows({{0, 0}, {1, 1}, {2, 2}}), 3), std::invalid_argument);
}

// ---- sanity checks of the committed classifier on MNIST

namespace {

std::string mnist_dir() { return ENGINE_MNIST_DIR; }
bool have_mnist() { return fs::exists(fs::path(mnist_dir()) / "train-images-idx3-ubyte.gz"); }
const std::string kWeights = std::string(ENGINE_SOURCE_DIR) + "/models/weights/mnist_classifier.safetensors";

class EvalSanity : public ::testing::Test {
 protected:
  static constexpr int64_t kN = 1000;
  struct Shared {
    MnistSet train, test;
    models::MnistClassifier clf;
    EvalReference ref;
  };
  static Shared* s_;
  static void SetUpTestSuite() {
    if (!have_mnist()) return;
    s_ = new Shared;
    s_->train = load_mnist(mnist_dir(), true);
    s_->test = load_mnist(mnist_dir(), false);
    models::load_classifier(s_->clf, kWeights);
    s_->ref = make_reference(s_->clf, s_->train, s_->test, kN, 0);
  }
  static void TearDownTestSuite() {
    delete s_;
    s_ = nullptr;
  }
  void SetUp() override {
    if (!s_) GTEST_SKIP() << "MNIST not found in " << mnist_dir() << " (set -DMNIST_DIR=...)";
  }
  // The first kN test images (values in [-1, 1]) and their true labels.
  static std::pair<std::vector<float>, std::vector<int64_t>> real_test() {
    std::vector<int64_t> idx(kN);
    std::iota(idx.begin(), idx.end(), 0);
    std::vector<int64_t> lab(kN);
    for (int64_t i = 0; i < kN; ++i) lab[i] = s_->test.labels[i];
    return {mnist_floats(s_->test, idx), lab};
  }
};
EvalSanity::Shared* EvalSanity::s_ = nullptr;

}  // namespace

TEST_F(EvalSanity, CommittedClassifierReachesTargetAccuracy) {
  EXPECT_GE(s_->ref.test_accuracy, 0.992);
  EXPECT_GT(s_->ref.fd_floor, 0);
}

TEST_F(EvalSanity, RealTestImagesScoreLikeTheClassifierAndTheFloor) {
  auto [img, lab] = real_test();
  const EvalResult r = evaluate_images(s_->clf, s_->ref, img.data(), lab);
  EXPECT_NEAR(r.accuracy, s_->ref.test_accuracy, 0.015);
  // Test images against the test set sit at the floor (train vs test), within sampling noise.
  EXPECT_LT(r.fd, 2.0 * s_->ref.fd_floor + 0.05) << "floor " << s_->ref.fd_floor;
  EXPECT_GT(r.precision, 0.6);
  EXPECT_GT(r.recall, 0.6);
  for (int c = 0; c < 10; ++c) EXPECT_GT(r.class_accuracy[c], 0.9) << "class " << c;
}

TEST_F(EvalSanity, UniformNoiseScoresChanceAndAFarDistance) {
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> img(kN * 784);
  for (float& v : img) v = u(rng);
  std::vector<int64_t> lab(kN);
  for (int64_t i = 0; i < kN; ++i) lab[i] = i % 10;
  const EvalResult r = evaluate_images(s_->clf, s_->ref, img.data(), lab);
  EXPECT_LT(r.accuracy, 0.2);  // balanced labels: any fixed prediction scores 10%
  EXPECT_GT(r.fd, 20 * s_->ref.fd_floor) << "floor " << s_->ref.fd_floor;
  EXPECT_LT(r.precision, 0.05);
}

TEST_F(EvalSanity, ShuffledLabelsScoreChance) {
  auto [img, lab] = real_test();
  std::mt19937_64 rng(2);
  std::shuffle(lab.begin(), lab.end(), rng);
  const EvalResult r = evaluate_images(s_->clf, s_->ref, img.data(), lab);
  EXPECT_GT(r.accuracy, 0.05);
  EXPECT_LT(r.accuracy, 0.16);
  EXPECT_LT(r.fd, 2.0 * s_->ref.fd_floor + 0.05);  // the images did not change
}

// ---- the fm_eval binary

namespace {

using engine::test::bin;
using engine::test::run;
using engine::test::RunResult;

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("eval_test_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

nlohmann::json parse_json(const std::string& out) {
  const size_t b = out.find('{');
  return nlohmann::json::parse(b == std::string::npos ? std::string("null") : out.substr(b));
}

const char* kTinyJson = R"({"sample_size": 28, "in_channels": 2, "out_channels": 1,
  "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
  "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
  "attention_head_dim": 8, "num_classes": 10, "class_emb_size": 1})";

#define REQUIRE_EVAL_BIN()                                                                    \
  if (!fs::exists(bin("fm_eval"))) GTEST_SKIP() << "fm_eval not built in " << ENGINE_BIN_DIR; \
  if (!have_mnist()) GTEST_SKIP() << "MNIST not found in " << mnist_dir()

}  // namespace

TEST(EvalApp, UsageErrorsExitTwoWithOneLine) {
  REQUIRE_EVAL_BIN();
  const std::string e = bin("fm_eval") + " --data " + mnist_dir();
  const fs::path d = temp_dir("usage");
  const std::string some = (d / "x.safetensors").string();
  for (const std::string& args : std::vector<std::string>{
           std::string(""), "--checkpoint a --samples b", "--samples " + some + " --sweep-cfg 1,2",
           "--samples " + some + " --classifier " + (d / "none.safetensors").string(), "--samples " + some,
           "--checkpoint " + some + " --cfg-scale nan", "--checkpoint " + some + " --solver rk9"}) {
    const RunResult r = run(e + " " + args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
  }
  fs::remove_all(d);
}

TEST(EvalApp, ScoresASamplesFileOfRealImages) {
  REQUIRE_EVAL_BIN();
  const MnistSet test = load_mnist(mnist_dir(), false);
  const int64_t n = 200;
  std::vector<int64_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::vector<int64_t> lab(n);
  for (int64_t i = 0; i < n; ++i) lab[i] = test.labels[i];
  const fs::path d = temp_dir("samples");
  st::StFile f;
  f.tensors.push_back(
      nn::st_from_tensor("samples", Tensor::from_vector<float>(mnist_floats(test, idx), {n, 1, 28, 28})));
  f.tensors.push_back(nn::st_from_tensor("labels", Tensor::from_vector<int64_t>(lab, {n})));
  st::write_file_atomic((d / "s.safetensors").string(), f);
  const std::string cache = " --cache-dir " + (d / "cache").string();
  RunResult r = run(bin("fm_eval") + " --samples " + (d / "s.safetensors").string() + " --data " +
                    mnist_dir() + " --json" + cache);
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json j = parse_json(r.out);
  EXPECT_EQ(j["n"], n);
  EXPECT_GT(j["results"][0]["accuracy"].get<double>(), 0.95);
  EXPECT_EQ(j["results"][0]["per_class"].size(), 10u);
  // The first run computed the reference and stored it; its phases are timed.
  EXPECT_EQ(j["reference_cached"], false);
  std::vector<std::string> phases;
  for (const auto& p : j["timings"]) {
    phases.push_back(p["phase"].get<std::string>());
    EXPECT_GE(p["seconds"].get<double>(), 0.0);
  }
  for (const char* p : {"load", "ref cache", "mnist", "ref features", "ref stats", "features", "FD", "k-NN"})
    EXPECT_NE(std::find(phases.begin(), phases.end(), p), phases.end()) << p;
  EXPECT_EQ(std::distance(fs::directory_iterator(d / "cache"), fs::directory_iterator{}), 1);
  // The second run reads the reference from the cache and gives the same figures, bit for bit (the JSON
  // doubles round-trip), and the same classifier accuracy.
  r = run(bin("fm_eval") + " --samples " + (d / "s.safetensors").string() + " --data " + mnist_dir() +
          " --json" + cache);
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json j2 = parse_json(r.out);
  EXPECT_EQ(j2["reference_cached"], true);
  EXPECT_EQ(j2["results"].dump(), j["results"].dump());
  EXPECT_EQ(j2["classifier_test_accuracy"].dump(), j["classifier_test_accuracy"].dump());
  // The table mode prints the figures and the timing line (here from the cache).
  r = run(bin("fm_eval") + " --samples " + (d / "s.safetensors").string() + " --data " + mnist_dir() + cache);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("FD floor"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\ntime: load "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(", k-NN "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(reference statistics from the cache)"), std::string::npos) << r.out;
  // A damaged entry is a miss: recomputed (same figures) and rewritten, no error.
  for (const auto& e : fs::directory_iterator(d / "cache")) fs::resize_file(e.path(), 100);
  r = run(bin("fm_eval") + " --samples " + (d / "s.safetensors").string() + " --data " + mnist_dir() +
          " --json" + cache);
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json j3 = parse_json(r.out);
  EXPECT_EQ(j3["reference_cached"], false);
  EXPECT_EQ(j3["results"].dump(), j["results"].dump());
  // A corrupt file is a runtime error (exit 1) with one line.
  std::FILE* fp = std::fopen((d / "bad.safetensors").c_str(), "wb");
  std::fputs("garbage", fp);
  std::fclose(fp);
  r = run(bin("fm_eval") + " --samples " + (d / "bad.safetensors").string() + " --data " + mnist_dir());
  EXPECT_EQ(r.code, 1) << r.out;
  fs::remove_all(d);
}

TEST(EvalApp, SamplesACheckpointWithAGuidanceSweep) {
  REQUIRE_EVAL_BIN();
  const fs::path d = temp_dir("ckpt");
  const models::ConditionalConfig cfg =
      models::ConditionalConfig::from_json(nlohmann::json::parse(kTinyJson));
  models::ConditionalUNet model(cfg, 0);
  TrainingState state;
  save_checkpoint((d / "c.safetensors").string(), model, nullptr, nullptr, state);
  const RunResult r =
      run(bin("fm_eval") + " --checkpoint " + (d / "c.safetensors").string() + " --data " + mnist_dir() +
          " --per-class 2 --steps 2 --sweep-cfg 1,3 --device cpu --json --no-cache");
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json j = parse_json(r.out);
  EXPECT_EQ(j["n"], 20);
  ASSERT_EQ(j["results"].size(), 2u);
  EXPECT_EQ(j["results"][0]["cfg_scale"], 1.0);
  EXPECT_EQ(j["results"][1]["cfg_scale"], 3.0);
  bool timed_sampling = false;
  for (const auto& p : j["timings"]) timed_sampling |= p["phase"] == "sampling";
  EXPECT_TRUE(timed_sampling) << j["timings"].dump();
  EXPECT_EQ(j["reference_cached"], false);  // --no-cache
  for (const auto& res : j["results"]) {
    // An untrained model draws noise-like images: far from the data.
    EXPECT_GT(res["fd"].get<double>(), res["fd_floor"].get<double>());
    EXPECT_GE(res["precision"].get<double>(), 0.0);
    EXPECT_LE(res["recall"].get<double>(), 1.0);
  }
  fs::remove_all(d);
}

TEST(EvalApp, TrainEvalEveryLogsTheFigures) {
  REQUIRE_EVAL_BIN();
  if (!fs::exists(bin("fm_train"))) GTEST_SKIP() << "fm_train not built";
  const fs::path d = temp_dir("train");
  std::FILE* fp = std::fopen((d / "tiny.json").c_str(), "w");
  std::fputs(kTinyJson, fp);
  std::fclose(fp);
  const RunResult r = run(bin("fm_train") + " --data " + mnist_dir() + " --model-config " +
                          (d / "tiny.json").string() + " --out " + (d / "run").string() +
                          " --max-steps 3 --batch-size 8 --limit 64 --no-samples --device cpu --quiet "
                          "--eval-every 2 --eval-per-class 1");
  ASSERT_EQ(r.code, 0) << r.out;
  std::FILE* f = std::fopen((d / "run" / "eval.csv").c_str(), "r");
  ASSERT_NE(f, nullptr);
  std::string csv;
  char buf[1024];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) csv.append(buf, n);
  std::fclose(f);
  // Step 2 (every 2) and step 3 (the end).
  EXPECT_EQ(csv.rfind("step,accuracy,fd,fd_floor,precision,recall\n2,", 0), 0u) << csv;
  EXPECT_NE(csv.find("\n3,"), std::string::npos) << csv;
  bool found = false;
  for (const auto& e : fs::directory_iterator(d / "run"))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) {
      std::FILE* ef = std::fopen(e.path().c_str(), "rb");
      std::string ev;
      while ((n = std::fread(buf, 1, sizeof buf, ef)) > 0) ev.append(buf, n);
      std::fclose(ef);
      found = ev.find("eval/fd_floor") != std::string::npos && ev.find("eval/accuracy") != std::string::npos;
    }
  EXPECT_TRUE(found);
  // A missing classifier is a usage error before training.
  const RunResult bad = run(bin("fm_train") + " --data " + mnist_dir() + " --out " + (d / "run2").string() +
                            " --eval-every 2 --eval-classifier " + (d / "none.safetensors").string());
  EXPECT_EQ(bad.code, 2) << bad.out;
  fs::remove_all(d);
}
