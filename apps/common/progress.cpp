// RunLength and ProgressBar implementation (see progress.h).
#include "apps/common/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace engine::app {
namespace {

std::string format_eta(double s) {
  if (!std::isfinite(s) || s < 0) return "--:--";
  long long t = std::llround(s);
  char buf[48];
  if (t >= 3600)
    std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", t / 3600, (t / 60) % 60, t % 60);
  else
    std::snprintf(buf, sizeof(buf), "%02lld:%02lld", t / 60, t % 60);
  return buf;
}

}  // namespace

RunLength run_length(int64_t epochs, int64_t batches_per_epoch, int64_t max_steps) {
  if (epochs < 1 || batches_per_epoch < 1 || max_steps < 0)
    throw std::invalid_argument("run_length: epochs and batches_per_epoch must be >= 1, max_steps >= 0");
  RunLength r;
  r.epochs = epochs;
  r.batches_per_epoch = batches_per_epoch;
  r.max_steps = max_steps;
  r.total_steps = epochs * batches_per_epoch;
  if (max_steps > 0 && max_steps < r.total_steps) {
    r.total_steps = max_steps;
    r.by_max_steps = true;
  }
  return r;
}

std::string RunLength::describe() const {
  if (by_max_steps) return "--max-steps " + std::to_string(max_steps);
  return "--epochs " + std::to_string(epochs) + " x " + std::to_string(batches_per_epoch) + " batches";
}

ProgressBar::ProgressBar(const RunLength& run, std::FILE* out, int tty, double plain_interval_s,
                         int64_t plain_every)
    : run_(run),
      out_(out),
      tty_(tty < 0 ? ::isatty(::fileno(out)) != 0 : tty != 0),
      plain_interval_s_(plain_interval_s),
      plain_every_(plain_every) {}

std::string ProgressBar::render(int64_t step, int64_t epoch, double loss, double img_per_s,
                                double eta_s) const {
  constexpr int kWidth = 20;
  const int64_t total = run_.total_steps;
  const double frac = total > 0 ? std::clamp(double(step) / double(total), 0.0, 1.0) : 0.0;
  const int filled = static_cast<int>(frac * kWidth);
  std::string bar = std::string(filled, '#') + std::string(kWidth - filled, '.');
  char buf[256];
  std::snprintf(buf, sizeof(buf), "step %lld/%lld [%s] %3d%% epoch %lld/%lld loss %.4f %.0f img/s ETA %s",
                static_cast<long long>(step), static_cast<long long>(total), bar.c_str(),
                static_cast<int>(frac * 100), static_cast<long long>(epoch + 1),
                static_cast<long long>(run_.epochs), loss, img_per_s, format_eta(eta_s).c_str());
  return buf;
}

void ProgressBar::update(int64_t step, int64_t epoch, double loss_smoothed, double img_per_s) {
  const auto now = Clock::now();
  if (!started_) {
    started_ = true;
    t0_ = now;
    last_print_ = now;
    steps_at_t0_ = step;  // the rate is measured from the first update (excludes the warm-up step)
  }
  const double elapsed = std::chrono::duration<double>(now - t0_).count();
  const int64_t done = step - steps_at_t0_;
  const int64_t remaining = std::max<int64_t>(0, run_.total_steps - step);
  const double eta = done > 0 ? elapsed / double(done) * double(remaining) : remaining == 0 ? 0.0 : NAN;
  last_line_ = render(step, epoch, loss_smoothed, img_per_s, eta);
  dirty_ = true;

  const bool last = step >= run_.total_steps;
  const double since = std::chrono::duration<double>(now - last_print_).count();
  bool print;
  if (!printed_any_)
    print = true;
  else if (tty_)
    print = since >= 0.1 || last;
  else if (plain_every_ > 0)
    print = step - last_printed_step_ >= plain_every_ || last;
  else
    print = since >= plain_interval_s_ || last;
  if (print) {
    emit(last_line_, false);
    printed_any_ = true;
    last_print_ = now;
    last_printed_step_ = step;
  }
}

void ProgressBar::emit(const std::string& line, bool force_newline) {
  if (tty_) {
    // Pad with spaces to erase leftovers of a longer previous line.
    std::string padded = line;
    if (padded.size() < last_width_) padded.append(last_width_ - padded.size(), ' ');
    last_width_ = line.size();
    std::fprintf(out_, "\r%s%s", padded.c_str(), force_newline ? "\n" : "");
  } else {
    std::fprintf(out_, "%s\n", line.c_str());
  }
  dirty_ = false;
  std::fflush(out_);
}

void ProgressBar::finish() {
  if (!started_) return;
  if (tty_) {
    emit(last_line_, true);
  } else if (dirty_) {
    emit(last_line_, false);
  }
  started_ = false;
  printed_any_ = false;
  last_width_ = 0;
}

}  // namespace engine::app
