// Classifier-based sample evaluation: features, accuracy, FD against the MNIST test set, precision/recall.
#include "apps/common/sample_eval.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>

#include "core/autograd.h"

#ifndef ENGINE_SOURCE_DIR
#define ENGINE_SOURCE_DIR "."
#endif

namespace engine::app {

namespace fs = std::filesystem;

std::string default_classifier_path() {
  if (const char* e = std::getenv("FM_EVAL_CLASSIFIER"); e && *e) return e;
  const std::string rel = "models/weights/mnist_classifier.safetensors";
  if (fs::exists(rel)) return rel;
  return std::string(ENGINE_SOURCE_DIR) + "/" + rel;
}

Classified classify(const models::MnistClassifier& model, const float* images, int64_t n, int64_t batch) {
  constexpr int64_t P = models::MnistClassifier::kImageSize * models::MnistClassifier::kImageSize;
  constexpr int64_t D = models::MnistClassifier::kFeatureDim;
  NoGradGuard ng;
  Classified out;
  out.features = Matrix(n, D);
  out.predicted.resize(static_cast<size_t>(n));
  const Device dev = model.head->weight.device();
  std::vector<float> buf;
  for (int64_t s = 0; s < n; s += batch) {
    const int64_t b = std::min(batch, n - s);
    buf.assign(images + s * P, images + (s + b) * P);
    for (float& v : buf) v = std::isnan(v) ? 0.f : std::clamp(v, -1.f, 1.f);
    Tensor x = Tensor::from_vector<float>(buf, {b, 1, 28, 28}, dev);
    Tensor f = model.features(x);
    Tensor logits = model.head_logits(f);
    const std::vector<float> fv = f.to(Device::cpu()).to_vector<float>();
    const std::vector<float> lv = logits.to(Device::cpu()).to_vector<float>();
    for (int64_t i = 0; i < b; ++i) {
      for (int64_t j = 0; j < D; ++j) out.features(s + i, j) = fv[static_cast<size_t>(i * D + j)];
      const float* l = lv.data() + i * 10;
      out.predicted[static_cast<size_t>(s + i)] = std::max_element(l, l + 10) - l;
    }
  }
  return out;
}

std::vector<float> mnist_floats(const MnistSet& set, const std::vector<int64_t>& index) {
  const int64_t P = set.rows * set.cols;
  std::vector<float> out(index.size() * static_cast<size_t>(P));
  for (size_t k = 0; k < index.size(); ++k) {
    const uint8_t* src = set.images.data() + index[k] * P;
    for (int64_t p = 0; p < P; ++p) out[k * P + p] = src[p] / 127.5f - 1.f;
  }
  return out;
}

namespace {

std::vector<int64_t> random_subset(int64_t total, int64_t n, uint64_t seed) {
  std::vector<int64_t> idx(static_cast<size_t>(total));
  std::iota(idx.begin(), idx.end(), 0);
  std::mt19937_64 rng(seed);
  // Partial Fisher-Yates: the first n entries are a uniform random subset.
  for (int64_t i = 0; i < n; ++i) {
    std::uniform_int_distribution<int64_t> u(i, total - 1);
    std::swap(idx[static_cast<size_t>(i)], idx[static_cast<size_t>(u(rng))]);
  }
  idx.resize(static_cast<size_t>(n));
  return idx;
}

Matrix rows_of(const Matrix& m, const std::vector<int64_t>& idx) {
  Matrix out(static_cast<int64_t>(idx.size()), m.cols);
  for (size_t k = 0; k < idx.size(); ++k)
    std::copy_n(m.v.begin() + idx[k] * m.cols, m.cols, out.v.begin() + static_cast<int64_t>(k) * m.cols);
  return out;
}

}  // namespace

EvalReference make_reference(const models::MnistClassifier& model, const MnistSet& train,
                             const MnistSet& test, int64_t n, uint64_t seed, PhaseTimer* timer) {
  if (n < 4) throw std::invalid_argument("evaluation needs at least 4 samples, got " + std::to_string(n));
  if (n > train.n || n > test.n)
    throw std::invalid_argument("evaluation sample count " + std::to_string(n) +
                                " exceeds the MNIST set sizes (" + std::to_string(std::min(train.n, test.n)) +
                                ")");
  EvalReference ref;
  ref.n = n;
  std::vector<int64_t> all(static_cast<size_t>(test.n));
  std::iota(all.begin(), all.end(), 0);
  const std::vector<float> timg = mnist_floats(test, all);
  const Classified tc = classify(model, timg.data(), test.n);
  const std::vector<float> trimg = mnist_floats(train, random_subset(train.n, n, seed ^ 0x7a1f));
  const Classified trc = classify(model, trimg.data(), n);
  if (timer) timer->mark("ref features");
  int64_t correct = 0;
  for (int64_t i = 0; i < test.n; ++i) correct += tc.predicted[static_cast<size_t>(i)] == test.labels[i];
  ref.test_accuracy = static_cast<double>(correct) / static_cast<double>(test.n);
  ref.test = fit_gaussian(tc.features);
  ref.test_subset = rows_of(tc.features, random_subset(test.n, n, seed ^ 0x7e57));
  ref.fd_floor = frechet_distance(fit_gaussian(trc.features), ref.test);
  if (timer) timer->mark("ref stats");
  return ref;
}

nlohmann::json EvalResult::to_json() const {
  nlohmann::json per = nlohmann::json::array();
  for (size_t c = 0; c < class_accuracy.size(); ++c)
    per.push_back({{"class", c},
                   {"count", class_count[c]},
                   {"accuracy", std::isnan(class_accuracy[c]) ? nlohmann::json(nullptr)
                                                              : nlohmann::json(class_accuracy[c])}});
  return {{"n", n},
          {"accuracy", accuracy},
          {"fd", fd},
          {"fd_floor", fd_floor},
          {"precision", precision},
          {"recall", recall},
          {"per_class", per}};
}

EvalResult evaluate_images(const models::MnistClassifier& model, const EvalReference& ref,
                           const float* images, const std::vector<int64_t>& labels, int64_t k,
                           PhaseTimer* timer) {
  const int64_t n = static_cast<int64_t>(labels.size());
  if (n != ref.n)
    throw std::invalid_argument("evaluate_images: " + std::to_string(n) +
                                " images but the reference is for " + std::to_string(ref.n));
  for (int64_t l : labels)
    if (l < 0 || l >= 10) throw std::invalid_argument("label " + std::to_string(l) + " out of range [0, 10)");
  const Classified c = classify(model, images, n);
  if (timer) timer->mark("features");
  EvalResult r;
  r.n = n;
  r.class_count.assign(10, 0);
  std::vector<int64_t> hit(10, 0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t l = labels[static_cast<size_t>(i)];
    ++r.class_count[static_cast<size_t>(l)];
    hit[static_cast<size_t>(l)] += c.predicted[static_cast<size_t>(i)] == l;
  }
  int64_t total_hit = 0;
  r.class_accuracy.resize(10);
  for (int c2 = 0; c2 < 10; ++c2) {
    total_hit += hit[c2];
    r.class_accuracy[c2] = r.class_count[c2] ? static_cast<double>(hit[c2]) / r.class_count[c2]
                                             : std::numeric_limits<double>::quiet_NaN();
  }
  r.accuracy = static_cast<double>(total_hit) / static_cast<double>(n);
  r.fd = frechet_distance(fit_gaussian(c.features), ref.test);
  r.fd_floor = ref.fd_floor;
  if (timer) timer->mark("FD");
  const PrecisionRecall pr = precision_recall(ref.test_subset, c.features, k);
  r.precision = pr.precision;
  r.recall = pr.recall;
  if (timer) timer->mark("k-NN");
  return r;
}

TrainingEvaluator::TrainingEvaluator(const std::string& data_dir, const std::string& classifier_path,
                                     int64_t per_class, Device device, uint64_t seed, SampleOptions opt)
    : clf_(0, device), seed_(seed), opt_(opt) {
  models::load_classifier(clf_, classifier_path);
  clf_.eval();
  const MnistSet train = load_mnist(data_dir, true), test = load_mnist(data_dir, false);
  ref_ = make_reference(clf_, train, test, 10 * per_class, seed);
  std::vector<int64_t> classes(10);
  std::iota(classes.begin(), classes.end(), 0);
  labels_ = grid_labels(classes, per_class);
}

EvalResult TrainingEvaluator::operator()(const models::ConditionalUNet& model) const {
  Generator gen(seed_);
  const int64_t n = static_cast<int64_t>(labels_.size());
  const Tensor x = sample(model, Tensor::from_vector<int64_t>(labels_, {n}), gen, opt_, 28, 28);
  return evaluate_images(clf_, ref_, x.data<float>(), labels_);
}

}  // namespace engine::app
