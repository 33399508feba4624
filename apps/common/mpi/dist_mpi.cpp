// MPI backend of the communicator layer (built only when CMake finds MPI). Collectives are issued
// non-blocking (MPI_Iallreduce, ...) and polled with MPI_Test against a deadline: when a peer died or
// hangs, this rank prints one line and calls MPI_Abort, so no rank waits longer than the timeout.
#include <mpi.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "apps/common/dist.h"

namespace engine::app::dist {

namespace {

class MpiComm final : public Communicator {
 public:
  explicit MpiComm(double timeout_s) : timeout_s_(timeout_s) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      int provided = 0;
      if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        throw std::runtime_error("MPI_Init_thread failed");
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    MPI_Comm local;
    check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local),
          "MPI_Comm_split_type");
    MPI_Comm_rank(local, &local_rank_);
    MPI_Comm_free(&local);
  }
  ~MpiComm() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  std::string backend() const override { return "mpi"; }

  void allreduce_sum(float* data, int64_t n) override { allreduce(data, n, MPI_FLOAT); }
  void allreduce_sum(double* data, int64_t n) override { allreduce(data, n, MPI_DOUBLE); }

  std::vector<float> allgather(const std::vector<float>& mine) override {
    std::vector<int> counts(size_), displs(size_);
    int n = count(static_cast<int64_t>(mine.size()), "allgather");
    MPI_Request req;
    check(MPI_Iallgather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, MPI_COMM_WORLD, &req), "MPI_Iallgather");
    wait(req, "allgather (counts)");
    int64_t total = 0;
    for (int r = 0; r < size_; ++r) {
      displs[r] = count(total, "allgather");
      total += counts[r];
    }
    count(total, "allgather");
    std::vector<float> all(static_cast<size_t>(total));
    check(MPI_Iallgatherv(mine.data(), n, MPI_FLOAT, all.data(), counts.data(), displs.data(), MPI_FLOAT,
                          MPI_COMM_WORLD, &req),
          "MPI_Iallgatherv");
    wait(req, "allgather");
    return all;
  }

  std::vector<double> gather_to_root(const std::vector<double>& mine) override {
    std::vector<int> counts(size_), displs(size_);
    int n = count(static_cast<int64_t>(mine.size()), "gather");
    MPI_Request req;
    check(MPI_Igather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, MPI_COMM_WORLD, &req), "MPI_Igather");
    wait(req, "gather (counts)");
    int64_t total = 0;
    if (rank_ == 0)
      for (int r = 0; r < size_; ++r) {
        displs[r] = count(total, "gather");
        total += counts[r];
      }
    std::vector<double> all(static_cast<size_t>(rank_ == 0 ? total : 0));
    check(MPI_Igatherv(mine.data(), n, MPI_DOUBLE, all.data(), counts.data(), displs.data(), MPI_DOUBLE, 0,
                       MPI_COMM_WORLD, &req),
          "MPI_Igatherv");
    wait(req, "gather");
    return all;
  }

  void broadcast(void* data, int64_t bytes, int root) override {
    MPI_Request req;
    check(MPI_Ibcast(data, count(bytes, "broadcast"), MPI_BYTE, root, MPI_COMM_WORLD, &req), "MPI_Ibcast");
    wait(req, "broadcast");
  }

  void barrier() override {
    MPI_Request req;
    check(MPI_Ibarrier(MPI_COMM_WORLD, &req), "MPI_Ibarrier");
    wait(req, "barrier");
  }

  [[noreturn]] void abort(int code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; this is for the compiler
  }

 private:
  void allreduce(void* data, int64_t n, MPI_Datatype t) {
    MPI_Request req;
    check(MPI_Iallreduce(MPI_IN_PLACE, data, count(n, "allreduce"), t, MPI_SUM, MPI_COMM_WORLD, &req),
          "MPI_Iallreduce");
    wait(req, "allreduce");
  }

  // Fails the job for counts MPI cannot express (int).
  int count(int64_t n, const char* what) {
    if (n < 0 || n > INT_MAX)
      fail(std::string(what) + ": " + std::to_string(n) + " elements exceed MPI's int count");
    return static_cast<int>(n);
  }

  void check(int rc, const char* what) {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    fail(std::string(what) + " failed: " + std::string(msg, static_cast<size_t>(len)));
  }

  // Polls the request until it completes; past the deadline, fails the job. Spins for 201 polls, then
  // sleeps 50 us between polls so that waiting ranks leave the cores to the ranks still computing.
  void wait(MPI_Request& req, const char* what) {
    try {
      poll_until(
          [&] {
            int done = 0;
            check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), what);
            return done != 0;
          },
          what, timeout_s_, /*spin_polls=*/201);
    } catch (const PollTimeout& e) {
      fail(e.what());
    }
  }

  [[noreturn]] void fail(const std::string& msg) {
    std::fprintf(stderr, "fm_train: rank %d of %d: %s\n", rank_, size_, msg.c_str());
    abort(1);
  }

  double timeout_s_;
  int rank_ = 0, size_ = 1, local_rank_ = 0;
};

}  // namespace

bool built_with_mpi() { return true; }

std::unique_ptr<Communicator> make_mpi(double timeout_s) { return std::make_unique<MpiComm>(timeout_s); }

}  // namespace engine::app::dist
