// Helpers shared by the test files: running an app binary of this build and capturing its output, and the
// small wrapper config used by the nn/ and models/ tests.
#pragma once
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "models/unet2d_config.h"

namespace engine::test {

struct RunResult {
  bool exited = false;  // false: killed by a signal
  int code = -1;        // exit status (-1 when killed by a signal)
  std::string out;      // stdout + stderr
};

// Runs a shell command and captures stdout + stderr. Children get OMP_WAIT_POLICY=passive so a loaded
// test machine does not make OpenMP's spin-waiting threads crawl; it does not change results.
inline RunResult run(const std::string& cmd) {
  RunResult r;
  std::FILE* p = ::popen(("export OMP_WAIT_POLICY=passive; " + cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.exited = WIFEXITED(st);
  r.code = r.exited ? WEXITSTATUS(st) : -1;
  return r;
}

// Path of an app binary of this build (ENGINE_BIN_DIR, set by tests/CMakeLists.txt).
inline std::string bin(const std::string& name) {
  return (std::filesystem::path(ENGINE_BIN_DIR) / name).string();
}

// A small wrapper config with every block kind (the "tiny" fixture's architecture): channels 8/16/16.
inline models::ConditionalConfig tiny_config() {
  models::ConditionalConfig c;
  c.unet.block_out_channels = {8, 16, 16};
  c.unet.norm_num_groups = 4;
  c.unet.sample_size = 16;
  return c;
}

}  // namespace engine::test
