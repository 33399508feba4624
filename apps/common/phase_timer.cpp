// PhaseTimer: steady-clock and CLOCK_PROCESS_CPUTIME_ID intervals per named phase.
#include "apps/common/phase_timer.h"

#include <time.h>

#include <chrono>
#include <cstdio>

namespace engine::app {

namespace {

double wall_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double cpu_now() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

}  // namespace

PhaseTimer::PhaseTimer() { restart(); }

void PhaseTimer::restart() {
  last_wall_ = wall_now();
  last_cpu_ = cpu_now();
}

void PhaseTimer::mark(const std::string& name) {
  const double w = wall_now(), c = cpu_now();
  Phase* p = nullptr;
  for (Phase& q : phases_)
    if (q.name == name) p = &q;
  if (!p) {
    phases_.push_back({name, 0, 0});
    p = &phases_.back();
  }
  p->wall += w - last_wall_;
  p->cpu += c - last_cpu_;
  last_wall_ = w;
  last_cpu_ = c;
}

double PhaseTimer::wall(const std::string& name) const {
  for (const Phase& p : phases_)
    if (p.name == name) return p.wall;
  return 0;
}

double PhaseTimer::total_wall() const {
  double s = 0;
  for (const Phase& p : phases_) s += p.wall;
  return s;
}

std::string PhaseTimer::summary() const {
  std::string out;
  char buf[128];
  for (const Phase& p : phases_) {
    std::snprintf(buf, sizeof buf, "%s%s %.1f s", out.empty() ? "" : ", ", p.name.c_str(), p.wall);
    out += buf;
  }
  return out;
}

nlohmann::json PhaseTimer::to_json() const {
  nlohmann::json j = nlohmann::json::array();
  for (const Phase& p : phases_)
    j.push_back({{"phase", p.name}, {"seconds", p.wall}, {"cpu_seconds", p.cpu}});
  return j;
}

}  // namespace engine::app
