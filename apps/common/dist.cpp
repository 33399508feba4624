// The single-process communicator and the launcher environment probe (the MPI backend is dist_mpi.cpp).
#include "apps/common/dist.h"

#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace engine::app::dist {

namespace {

class LocalComm final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  std::string backend() const override { return "local"; }
  void allreduce_sum(float*, int64_t) override {}
  void allreduce_sum(double*, int64_t) override {}
  std::vector<float> allgather(const std::vector<float>& mine) override { return mine; }
  std::vector<double> gather_to_root(const std::vector<double>& mine) override { return mine; }
  void broadcast(void*, int64_t, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(int code) override {
    std::fflush(stdout);
    std::exit(code);
  }
};

int env_int(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return -1;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  return (*end == '\0' && x >= 0 && x < (1L << 30)) ? static_cast<int>(x) : -1;
}

}  // namespace

std::unique_ptr<Communicator> make_local() { return std::make_unique<LocalComm>(); }

int launcher_world_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"}) {
    const int n = env_int(name);
    if (n >= 1) return n;
  }
  return 0;
}

void poll_until(const std::function<bool()>& done, const std::string& what, double timeout_s,
                int64_t spin_polls) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t polls = 0;; ++polls) {
    if (done()) return;
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > timeout_s) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%g", timeout_s);
      throw PollTimeout(what + " did not complete within " + buf +
                        " s (--dist-timeout): another rank died, hangs or is far behind; aborting the job");
    }
    if (polls >= spin_polls) {
      struct timespec ts {
        0, 50000
      };
      nanosleep(&ts, nullptr);
    }
  }
}

#ifndef ENGINE_HAS_MPI
bool built_with_mpi() { return false; }
std::unique_ptr<Communicator> make_mpi(double) { throw std::runtime_error("built without MPI"); }
#endif

#ifndef ENGINE_HAS_NCCL
bool built_with_nccl() { return false; }
bool nccl_loadable(std::string* why) {
  if (why) *why = "built without NCCL";
  return false;
}
std::unique_ptr<DeviceAllreduce> make_nccl(Communicator&, int, double) {
  throw std::runtime_error("built without NCCL");
}
#endif

}  // namespace engine::app::dist
