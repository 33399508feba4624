// fm_classifier: trains the MNIST classifier that fm_eval scores samples with (models/mnist_classifier.h),
// with the engine's AdamW on the MNIST training set (random +-2 px shifts), reports its accuracy on the
// 10,000 test images and writes the weights as safetensors (metadata: test accuracy, seed, command).
// The committed weights (models/weights/) come from the command in models/weights/README.md.
// Exit status: 0 done, 1 runtime error, 2 usage error.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "apps/common/cli_checks.h"
#include "apps/common/mnist.h"
#include "apps/common/omp_wait.h"
#include "apps/common/run_flags.h"
#include "apps/common/sample_eval.h"
#include "models/mnist_classifier.h"
#include "nn/adamw.h"

namespace {

// Shifts each 28x28 image (values in [-1, 1], background -1) by dx, dy in [-max_shift, max_shift].
void random_shift(std::vector<float>& x, int64_t n, int max_shift, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> u(-max_shift, max_shift);
  std::vector<float> tmp(28 * 28);
  for (int64_t i = 0; i < n; ++i) {
    const int dx = u(rng), dy = u(rng);
    float* img = x.data() + i * 784;
    std::fill(tmp.begin(), tmp.end(), -1.f);
    for (int r = 0; r < 28; ++r)
      for (int c = 0; c < 28; ++c) {
        const int sr = r - dy, sc = c - dx;
        if (sr >= 0 && sr < 28 && sc >= 0 && sc < 28) tmp[r * 28 + c] = img[sr * 28 + sc];
      }
    std::copy(tmp.begin(), tmp.end(), img);
  }
}

}  // namespace

int main(int argc, char** argv) {
  engine::app::apply_omp_wait_default(argv);  // first: before any OpenMP region (docs/apps.md "Threads")
  namespace app_ns = engine::app;
  CLI::App app{
      "fm_classifier: train the MNIST classifier used by fm_eval (AdamW, cosine learning rate, random\n"
      "+-2 px shifts), report its test accuracy and write its weights as safetensors.\n"
      "Exit status: 0 done, 1 runtime error, 2 usage error."};
  std::string data, out = "mnist_classifier.safetensors";
  int64_t epochs = 5, batch = 128, max_shift = 2, limit = 0;
  double lr = 3e-3, weight_decay = 0.01;
  uint64_t seed = 0;
  app_ns::ComputeFlags cf;
  cf.device = "cpu";  // the committed weights were trained on the CPU
  app.add_option("--data", data, "MNIST directory [default: $MNIST_DIR, else data/mnist]");
  app.add_option("--out", out, "weights file (must end in .safetensors)")->capture_default_str();
  app.add_option("--epochs", epochs, "passes over the training set")
      ->check(app_ns::int_in(1, 1000))
      ->capture_default_str();
  app.add_option("--batch", batch, "batch size")->check(app_ns::int_in(1, 60000))->capture_default_str();
  app.add_option("--lr", lr, "peak AdamW learning rate (200 warm-up steps, then cosine to 0)")
      ->check(app_ns::number_in(0, 1, false, false))
      ->capture_default_str();
  app.add_option("--weight-decay", weight_decay, "AdamW decoupled weight decay")
      ->check(app_ns::finite(0, 10))
      ->capture_default_str();
  app.add_option("--shift", max_shift, "random shift augmentation, max pixels (0 = none)")
      ->check(app_ns::int_in(0, 8))
      ->capture_default_str();
  app.add_option("--limit", limit, "train on the first N images only (0 = all; for tests)")
      ->check(app_ns::int_in(0, 60000))
      ->capture_default_str();
  app.add_option("--seed", seed, "initialisation, data order and augmentation seed")
      ->check(app_ns::int_in(0, 18446744073709551615.0))
      ->capture_default_str();
  app_ns::add_compute_flags(app, cf);
  if (const int rc = app_ns::parse_command_line(app, argc, argv); rc >= 0) return rc;
  try {
    engine::Device device;
    std::string data_dir;
    try {
      app_ns::check_output_file("--out", out, ".safetensors");
      device = app_ns::apply_compute_flags(cf);
      data_dir = app_ns::resolve_data_dir(data);
    } catch (const engine::Error& e) {
      throw app_ns::UsageError(e.what());
    } catch (const app_ns::DataError& e) {
      throw app_ns::UsageError(std::string("--data: ") + e.what());
    }
    const app_ns::MnistSet train = app_ns::load_mnist(data_dir, true);
    const app_ns::MnistSet test = app_ns::load_mnist(data_dir, false);

    engine::models::MnistClassifier model(seed, device);
    engine::nn::AdamW opt(model.named_parameters(),
                          engine::nn::AdamWOptions{lr, 0.9, 0.999, 1e-8, weight_decay});
    app_ns::BatchLoader loader(train, batch, seed, 0, 0, limit);
    const int64_t total = epochs * loader.batches_per_epoch(), warmup = std::min<int64_t>(200, total / 10);
    std::mt19937_64 aug(seed ^ 0xa06u);
    const auto t0 = std::chrono::steady_clock::now();
    double loss_avg = 0;
    int64_t seen = 0, correct = 0;
    std::printf("fm_classifier: %s parameters, %lld steps (%lld epochs x %lld), batch %lld, lr %g\n",
                engine::nn::format_thousands(model.num_parameters()).c_str(), static_cast<long long>(total),
                static_cast<long long>(epochs), static_cast<long long>(loader.batches_per_epoch()),
                static_cast<long long>(batch), lr);
    for (int64_t step = 0; step < total; ++step) {
      const double f = step < warmup ? (step + 1.0) / warmup
                                     : 0.5 * (1 + std::cos(M_PI * (step - warmup) / double(total - warmup)));
      opt.set_lr(lr * f);
      app_ns::Batch b = loader.next();
      const int64_t B = b.size();
      if (max_shift > 0) random_shift(b.x, B, static_cast<int>(max_shift), aug);
      engine::Tensor x = engine::Tensor::from_vector<float>(b.x, {B, 1, 28, 28}, device);
      engine::Tensor logits = model.forward(x);  // (B, 10)
      // Softmax cross-entropy, mean over the batch; its gradient (softmax - onehot) / B is fed to backward.
      const std::vector<float> lv = logits.to(engine::Device::cpu()).to_vector<float>();
      std::vector<float> grad(lv.size());
      double loss = 0;
      for (int64_t i = 0; i < B; ++i) {
        const float* l = lv.data() + i * 10;
        const double m = *std::max_element(l, l + 10);
        double z = 0;
        for (int j = 0; j < 10; ++j) z += std::exp(l[j] - m);
        const int64_t y = b.labels[static_cast<size_t>(i)];
        loss += -(l[y] - m - std::log(z));
        correct += (std::max_element(l, l + 10) - l) == y;
        for (int j = 0; j < 10; ++j)
          grad[i * 10 + j] = static_cast<float>((std::exp(l[j] - m) / z - (j == y)) / B);
      }
      loss /= B;
      if (!std::isfinite(loss))
        throw std::runtime_error("loss became non-finite at step " + std::to_string(step + 1));
      seen += B;
      loss_avg = step == 0 ? loss : 0.98 * loss_avg + 0.02 * loss;
      opt.zero_grad();
      logits.backward(engine::Tensor::from_vector<float>(grad, {B, 10}, device));
      opt.step();
      if ((step + 1) % 100 == 0 || step + 1 == total) {
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("step %lld/%lld epoch %lld loss %.4f train-acc %.4f lr %.2e %.0f s\n",
                    static_cast<long long>(step + 1), static_cast<long long>(total),
                    static_cast<long long>(b.epoch), loss_avg, double(correct) / seen, lr * f, secs);
        std::fflush(stdout);
        seen = correct = 0;
      }
    }
    const double train_secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    model.eval();
    std::vector<int64_t> all(static_cast<size_t>(test.n));
    std::iota(all.begin(), all.end(), 0);
    const std::vector<float> timg = app_ns::mnist_floats(test, all);
    const app_ns::Classified c = app_ns::classify(model, timg.data(), test.n);
    int64_t hit = 0;
    for (int64_t i = 0; i < test.n; ++i) hit += c.predicted[static_cast<size_t>(i)] == test.labels[i];
    const double acc = double(hit) / double(test.n);
    std::string cmd;
    for (int i = 0; i < argc; ++i) cmd += (i ? " " : "") + std::string(argv[i]);
    char accs[32];
    std::snprintf(accs, sizeof accs, "%.4f", acc);
    engine::models::save_classifier(model, out,
                                    {{"format", "engine-mnist-classifier-v1"},
                                     {"test_accuracy", accs},
                                     {"seed", std::to_string(seed)},
                                     {"epochs", std::to_string(epochs)},
                                     {"command", cmd}});
    std::printf("fm_classifier: test accuracy %.2f%% (%lld / %lld), trained in %.0f s -> %s\n", 100 * acc,
                static_cast<long long>(hit), static_cast<long long>(test.n), train_secs, out.c_str());
    return 0;
  } catch (const app_ns::UsageError& e) {
    std::fprintf(stderr, "fm_classifier: %s\nRun with --help for more information.\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fm_classifier: %s\n", e.what());
    return 1;
  }
}
