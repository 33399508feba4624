// Per-phase wall-clock and process CPU time for the apps' timing lines (fm_eval: "time: mnist 0.6 s, ...").
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace engine::app {

// Accumulates the time between successive mark() calls into named phases, in first-seen order.
class PhaseTimer {
 public:
  struct Phase {
    std::string name;
    double wall = 0;  // seconds, steady clock
    double cpu = 0;   // seconds of process CPU time (all threads): less sensitive to other processes
  };
  PhaseTimer();
  // Charges the time since the previous mark() (or construction / restart()) to `name`; a repeated name
  // accumulates.
  void mark(const std::string& name);
  // Starts the next interval now without charging the time since the previous mark to any phase.
  void restart();
  const std::vector<Phase>& phases() const { return phases_; }
  double wall(const std::string& name) const;  // 0 for an unknown phase
  double total_wall() const;
  // "mnist 0.6 s, reference 5.1 s, ..." (wall seconds, one decimal).
  std::string summary() const;
  // [{"phase": name, "seconds": wall, "cpu_seconds": cpu}, ...]
  nlohmann::json to_json() const;

 private:
  std::vector<Phase> phases_;
  double last_wall_ = 0, last_cpu_ = 0;
};

}  // namespace engine::app
