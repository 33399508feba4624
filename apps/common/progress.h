// Training progress display: an in-place \r progress bar on a terminal, periodic plain lines otherwise
// (log files, CI), e.g. "epoch 3/10 [#####.....] 1234/4690 loss 0.1234 1520 img/s ETA 02:13".
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace engine::app {

class ProgressBar {
 public:
  // `tty`: 1/0 forces bar/plain mode, -1 detects with isatty(). In plain mode a line is printed when
  // `plain_interval_s` seconds passed since the last one, or every `plain_every` steps if > 0.
  explicit ProgressBar(int64_t total_epochs, std::FILE* out = stdout, int tty = -1,
                       double plain_interval_s = 10.0, int64_t plain_every = 0);

  // `epoch` is 0-based (shown 1-based); `step` is the number of steps done in this epoch, out of
  // `total_steps`. The ETA covers the remaining epochs too, from the measured step rate.
  void update(int64_t epoch, int64_t step, int64_t total_steps, double loss_smoothed, double img_per_s);
  // Caps the ETA at this many global steps (epoch * total_steps + step), e.g. for --max-steps.
  void set_step_limit(int64_t global_steps) { step_limit_ = global_steps; }
  // Ends the bar line (TTY) or prints the last state (plain).
  void finish();

  // The rendered text without control characters (exposed for tests).
  std::string render(int64_t epoch, int64_t step, int64_t total_steps, double loss, double img_per_s,
                     double eta_s) const;

 private:
  using Clock = std::chrono::steady_clock;
  void emit(const std::string& line, bool force_newline);

  int64_t total_epochs_;
  std::FILE* out_;
  bool tty_;
  double plain_interval_s_;
  int64_t plain_every_;
  bool started_ = false;
  Clock::time_point t0_, last_print_;
  int64_t steps_at_t0_ = 0;
  int64_t last_global_step_ = 0;
  int64_t step_limit_ = -1;  // < 0: the end of the last epoch
  std::string last_line_;
  bool printed_any_ = false;  // the first update of a run always prints
  bool dirty_ = false;        // last_line_ not yet printed in plain mode
  size_t last_width_ = 0;
};

}  // namespace engine::app
