// Scores a set of labelled 28x28 images (generated samples, or real images for reference) with the engine's
// MNIST classifier (models/mnist_classifier.h): class accuracy against the requested labels (overall and per
// class), the Frechet distance of classifier features against the MNIST test set with the real-data floor
// (training images vs test images, same count), and k-NN precision/recall (apps/common/eval_metrics.h).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "apps/common/eval_metrics.h"
#include "apps/common/flow_matching.h"
#include "apps/common/mnist.h"
#include "apps/common/phase_timer.h"
#include "models/mnist_classifier.h"

namespace engine::app {

// The default classifier weights: $FM_EVAL_CLASSIFIER, else models/weights/mnist_classifier.safetensors in
// the current directory if it exists, else in the source tree the binary was built from.
std::string default_classifier_path();

struct Classified {
  Matrix features;                 // n x 128
  std::vector<int64_t> predicted;  // n, argmax of the logits
};

// Runs the classifier on n images (n * 28 * 28 floats, values in [-1, 1]; clamped to [-1, 1] first) in
// batches of `batch`, without autograd. The result is on the CPU.
Classified classify(const models::MnistClassifier& model, const float* images, int64_t n,
                    int64_t batch = 500);

// MNIST images as floats in [-1, 1] (the loader's normalisation: x / 127.5 - 1); `index` selects images.
std::vector<float> mnist_floats(const MnistSet& set, const std::vector<int64_t>& index);

// The real-data side of an evaluation, computed once per (classifier, n) and reused across a sweep.
struct EvalReference {
  Gaussian test;             // features of all 10,000 test images
  Matrix test_subset;        // features of n test images (random, seeded) for precision/recall
  double fd_floor = 0;       // FD(n random training images, all test images)
  double test_accuracy = 0;  // the classifier's accuracy on the test set
  int64_t n = 0;
};

// Builds the reference for sample count n (n >= 4) from the MNIST directory. Deterministic in `seed`.
// `timer` (optional) receives the phases "ref features" (classifier on the 10,000 test and n training
// images) and "ref stats" (Gaussian fits, FD floor).
EvalReference make_reference(const models::MnistClassifier& model, const MnistSet& train,
                             const MnistSet& test, int64_t n, uint64_t seed, PhaseTimer* timer = nullptr);

struct EvalResult {
  int64_t n = 0;
  double accuracy = 0;                 // fraction of samples classified as their requested label
  std::vector<double> class_accuracy;  // 10 entries; NaN for a class with no samples
  std::vector<int64_t> class_count;    // samples requested per class
  double fd = 0, fd_floor = 0;
  double precision = 0, recall = 0;
  nlohmann::json to_json() const;
};

// Scores n images with requested labels (each in [0, 10)) against `ref` (built for the same n).
// Throws std::invalid_argument for a label out of range or n != ref.n. `timer` (optional) receives the
// phases "features" (classifier), "FD" (Gaussian fit, Frechet distance) and "k-NN" (precision/recall).
EvalResult evaluate_images(const models::MnistClassifier& model, const EvalReference& ref,
                           const float* images, const std::vector<int64_t>& labels, int64_t k = 3,
                           PhaseTimer* timer = nullptr);

// Periodic evaluation during training (fm_train --eval-every): loads MNIST, the classifier and the reference
// statistics once, then each call samples per_class x 10 images of `model` (`opt`, noise from `seed`, the
// same every call) and scores them. Throws like load_mnist / load_classifier / make_reference.
class TrainingEvaluator {
 public:
  TrainingEvaluator(const std::string& data_dir, const std::string& classifier_path, int64_t per_class,
                    Device device, uint64_t seed, SampleOptions opt = {});
  EvalResult operator()(const models::ConditionalUNet& model) const;

 private:
  models::MnistClassifier clf_;
  EvalReference ref_;
  std::vector<int64_t> labels_;
  uint64_t seed_;
  SampleOptions opt_;
};

}  // namespace engine::app
