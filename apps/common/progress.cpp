// ProgressBar implementation (see progress.h).
#include "apps/common/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

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

ProgressBar::ProgressBar(int64_t total_epochs, std::FILE* out, int tty, double plain_interval_s,
                         int64_t plain_every)
    : total_epochs_(total_epochs),
      out_(out),
      tty_(tty < 0 ? ::isatty(::fileno(out)) != 0 : tty != 0),
      plain_interval_s_(plain_interval_s),
      plain_every_(plain_every) {}

std::string ProgressBar::render(int64_t epoch, int64_t step, int64_t total_steps, double loss,
                                double img_per_s, double eta_s) const {
  constexpr int kWidth = 20;
  const double frac = total_steps > 0 ? std::clamp(double(step) / double(total_steps), 0.0, 1.0) : 0.0;
  const int filled = static_cast<int>(frac * kWidth);
  std::string bar = std::string(filled, '#') + std::string(kWidth - filled, '.');
  char buf[256];
  std::snprintf(buf, sizeof(buf), "epoch %lld/%lld [%s] %lld/%lld loss %.4f %.0f img/s ETA %s",
                static_cast<long long>(epoch + 1), static_cast<long long>(total_epochs_), bar.c_str(),
                static_cast<long long>(step), static_cast<long long>(total_steps), loss, img_per_s,
                format_eta(eta_s).c_str());
  return buf;
}

void ProgressBar::update(int64_t epoch, int64_t step, int64_t total_steps, double loss_smoothed,
                         double img_per_s) {
  const auto now = Clock::now();
  const int64_t global = epoch * total_steps + step;
  if (!started_) {
    started_ = true;
    t0_ = now;
    last_print_ = now;
    steps_at_t0_ = global;
  }
  const double elapsed = std::chrono::duration<double>(now - t0_).count();
  const int64_t done = global - steps_at_t0_;
  int64_t end = total_epochs_ * total_steps;
  if (step_limit_ >= 0) end = std::min(end, step_limit_);
  const int64_t remaining = std::max<int64_t>(0, end - global);
  const double eta = done > 0 ? elapsed / double(done) * double(remaining) : NAN;
  last_line_ = render(epoch, step, total_steps, loss_smoothed, img_per_s, eta);
  dirty_ = true;

  const double since = std::chrono::duration<double>(now - last_print_).count();
  bool print;
  if (!printed_any_)
    print = true;
  else if (tty_)
    print = since >= 0.1 || step == total_steps;
  else if (plain_every_ > 0)
    print = global - last_global_step_ >= plain_every_ || step == total_steps;
  else
    print = since >= plain_interval_s_ || step == total_steps;
  if (print) {
    emit(last_line_, false);
    printed_any_ = true;
    last_print_ = now;
    last_global_step_ = global;
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
