// Communicator layer for data-parallel fm_train: rank, world size and the few collectives the training
// loop needs, with a single-process implementation (always built) and an MPI one (built when CMake finds
// MPI: ENGINE_HAS_MPI). Every MPI collective is non-blocking and polled against a deadline, so a dead or
// hung rank makes the others print one line and abort the job instead of waiting forever.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace engine::app::dist {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;             // 0 .. size() - 1
  virtual int size() const = 0;             // number of processes (>= 1)
  virtual int local_rank() const = 0;       // rank among the processes of this node (picks the GPU)
  virtual std::string backend() const = 0;  // "local" or "mpi"

  // In-place elementwise sum of n values over all ranks; every rank gets the same result. MPI: the
  // summation order is the library's (not bitwise reproducible across world sizes).
  virtual void allreduce_sum(float* data, int64_t n) = 0;
  virtual void allreduce_sum(double* data, int64_t n) = 0;
  // Every rank's `mine` (any length, may be empty) concatenated in rank order, on every rank.
  virtual std::vector<float> allgather(const std::vector<float>& mine) = 0;
  // Rank 0 gets every rank's `mine` concatenated in rank order; the others get an empty vector.
  virtual std::vector<double> gather_to_root(const std::vector<double>& mine) = 0;
  // Copies `bytes` bytes from `root`'s buffer into every other rank's.
  virtual void broadcast(void* data, int64_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // Ends every process of the job with exit status `code` (never returns). Local: std::exit(code).
  [[noreturn]] virtual void abort(int code) = 0;
};

// One process: rank 0 of 1, collectives are copies.
std::unique_ptr<Communicator> make_local();

// True when this build has the MPI backend.
bool built_with_mpi();

// World size announced by an MPI launcher in the environment (OMPI_COMM_WORLD_SIZE, PMIX_SIZE or PMI_SIZE;
// srun sets them with --mpi=pmix/pmi2); 0 when the process was not started by such a launcher.
int launcher_world_size();

// Initialises MPI (MPI_Init_thread, FUNNELED: only the main thread calls MPI) and returns a communicator
// over MPI_COMM_WORLD with MPI_ERRORS_RETURN as its error handler. A collective that has not completed
// after `timeout_s` seconds, or an MPI error, prints "fm_train: rank R of N: ..." and calls MPI_Abort(1).
// MPI_Finalize runs when the communicator is destroyed. Throws std::runtime_error when built without MPI.
std::unique_ptr<Communicator> make_mpi(double timeout_s);

// Device-memory all-reduce for ranks that train on a GPU (NCCL). Built only with CUDA + MPI + NCCL
// (ENGINE_HAS_NCCL); UNVERIFIED: it compiles, but has not run on a machine with several GPUs.
class DeviceAllreduce {
 public:
  virtual ~DeviceAllreduce() = default;
  // In-place elementwise sum of n floats at `dev` (memory of this rank's GPU) over all ranks. Waits for the
  // engine stream first and returns when the result is in place; a collective that has not completed after
  // the timeout, or an NCCL error, prints one line and aborts the job.
  virtual void allreduce_sum(float* dev, int64_t n) = 0;
};

// Thrown by poll_until when its deadline passes; what() is the one-line message.
class PollTimeout : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The deadline loop of the MPI and NCCL back ends: calls done() until it returns true. The first
// `spin_polls` polls run back to back; each later one follows a 50 us sleep, so a waiting rank leaves the
// cores to the ranks still computing. When done() is still false after `timeout_s` seconds, throws
// PollTimeout("<what> did not complete within <timeout_s> s (--dist-timeout): another rank died, hangs or
// is far behind; aborting the job"). done() is always called at least once, even with timeout_s <= 0.
void poll_until(const std::function<bool()>& done, const std::string& what, double timeout_s,
                int64_t spin_polls = 0);

// True when this build has the NCCL backend.
bool built_with_nccl();
// True when libnccl.so.2 can be loaded (dlopen; the binaries do not link it); else false with the reason in
// *why (if given). Always false without the NCCL backend.
bool nccl_loadable(std::string* why = nullptr);

// Creates an NCCL communicator over all ranks of `comm` (ncclUniqueId from rank 0, broadcast over `comm`),
// rank r on CUDA device `device`. Throws std::runtime_error when built without NCCL or on NCCL errors.
std::unique_ptr<DeviceAllreduce> make_nccl(Communicator& comm, int device, double timeout_s);

}  // namespace engine::app::dist
