// Training progress display: one overall bar over the run's steps, to whichever limit ends the run
// (--epochs or --max-steps), with the epoch as context and an ETA to that limit; an in-place \r bar on a
// terminal, periodic plain lines otherwise (log files, CI), e.g.
//   "step 120/300 [########............]  40% epoch 1/10 loss 0.2345 52 img/s ETA 02:13"
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace engine::app {

// How long a training run is: the global step it ends at and which flag sets it.
struct RunLength {
  int64_t total_steps = 0;       // min(epochs * batches_per_epoch, max_steps if > 0)
  bool by_max_steps = false;     // --max-steps ends the run before the last epoch does
  std::string describe() const;  // e.g. "--max-steps 300" or "--epochs 10 x 1875 batches"
  int64_t epochs = 0, batches_per_epoch = 0, max_steps = 0;
};
// epochs >= 1, batches_per_epoch >= 1, max_steps >= 0 (0 = no limit); throws std::invalid_argument otherwise.
RunLength run_length(int64_t epochs, int64_t batches_per_epoch, int64_t max_steps);

class ProgressBar {
 public:
  // `run`: the run's length (the bar's total); `tty`: 1/0 forces bar/plain mode, -1 detects with isatty().
  // In plain mode a line is printed when `plain_interval_s` seconds passed since the last one, or every
  // `plain_every` steps if > 0, and always at the last step.
  explicit ProgressBar(const RunLength& run, std::FILE* out = stdout, int tty = -1,
                       double plain_interval_s = 10.0, int64_t plain_every = 0);

  // `step`: global steps done (1-based after the first step); `epoch`: 0-based epoch of that step (shown
  // 1-based, out of the --epochs of the run). The ETA extrapolates the step rate measured since the first
  // update of this process (so without the warm-up step) to run.total_steps.
  void update(int64_t step, int64_t epoch, double loss_smoothed, double img_per_s);
  // Ends the bar line (TTY) or prints the last state (plain).
  void finish();

  // The rendered text without control characters (exposed for tests); eta_s NaN = unknown.
  std::string render(int64_t step, int64_t epoch, double loss, double img_per_s, double eta_s) const;

 private:
  using Clock = std::chrono::steady_clock;
  void emit(const std::string& line, bool force_newline);

  RunLength run_;
  std::FILE* out_;
  bool tty_;
  double plain_interval_s_;
  int64_t plain_every_;
  bool started_ = false;
  Clock::time_point t0_, last_print_;
  int64_t steps_at_t0_ = 0;
  int64_t last_printed_step_ = 0;
  std::string last_line_;
  bool printed_any_ = false;  // the first update of a run always prints
  bool dirty_ = false;        // last_line_ not yet printed in plain mode
  size_t last_width_ = 0;
};

}  // namespace engine::app
