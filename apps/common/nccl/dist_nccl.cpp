// NCCL backend of the device all-reduce (built only with CUDA + MPI + NCCL). UNVERIFIED: compiled here, never
// run on several GPUs (docs/distributed.md). The communicator is created non-blocking and every operation is
// polled (cudaStreamQuery + ncclCommGetAsyncError) against the timeout; on expiry or error the NCCL
// communicator is aborted (ncclCommAbort) and the job ended through the MPI communicator.
#include <cuda_runtime.h>
#include <nccl.h>
#include <time.h>

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "apps/common/dist.h"
#include "core/cuda_device.h"

namespace engine::app::dist {

namespace {

class NcclAllreduce final : public DeviceAllreduce {
 public:
  NcclAllreduce(Communicator& comm, int device, double timeout_s)
      : comm_(comm), device_(device), timeout_s_(timeout_s) {
    ncclUniqueId id{};
    if (comm.rank() == 0) nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    comm.broadcast(&id, sizeof id, 0);
    cuda::DeviceScope scope(device_);
    cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // returns at once; completion is polled below, so a missing peer cannot hang us
    nccl_check(ncclCommInitRankConfig(&nccl_, comm.size(), id, comm.rank(), &config),
               "ncclCommInitRankConfig");
    wait("ncclCommInitRank", /*stream=*/false);
  }
  ~NcclAllreduce() override {
    if (nccl_) ncclCommDestroy(nccl_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  void allreduce_sum(float* dev, int64_t n) override {
    cuda::DeviceScope scope(device_);
    cuda::synchronize(device_);  // the gradients were written on the engine stream
    nccl_check(ncclAllReduce(dev, dev, static_cast<size_t>(n), ncclFloat, ncclSum, nccl_, stream_),
               "ncclAllReduce");
    wait("ncclAllReduce", /*stream=*/true);
  }

 private:
  void wait(const char* what, bool stream) {
    const auto t0 = std::chrono::steady_clock::now();
    for (;;) {
      ncclResult_t async = ncclSuccess;
      nccl_check(ncclCommGetAsyncError(nccl_, &async), "ncclCommGetAsyncError");
      if (async != ncclSuccess && async != ncclInProgress)
        fail(std::string(what) + ": " + ncclGetErrorString(async));
      bool done = async == ncclSuccess;
      if (done && stream) {
        const cudaError_t q = cudaStreamQuery(stream_);
        if (q != cudaSuccess && q != cudaErrorNotReady)
          fail(std::string(what) + ": " + cudaGetErrorString(q));
        done = q == cudaSuccess;
      }
      if (done) return;
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > timeout_s_) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%g", timeout_s_);
        fail(std::string(what) + " did not complete within " + buf +
             " s (--dist-timeout): another rank died, hangs or is far behind; aborting the job");
      }
      struct timespec ts {
        0, 50000
      };
      nanosleep(&ts, nullptr);
    }
  }
  void nccl_check(ncclResult_t r, const char* what) {
    if (r != ncclSuccess && r != ncclInProgress)
      fail(std::string(what) + " failed: " + ncclGetErrorString(r));
  }
  void cuda_check(cudaError_t r, const char* what) {
    if (r != cudaSuccess) fail(std::string(what) + " failed: " + cudaGetErrorString(r));
  }
  [[noreturn]] void fail(const std::string& msg) {
    std::fprintf(stderr, "fm_train: rank %d of %d (NCCL, cuda:%d): %s\n", comm_.rank(), comm_.size(), device_,
                 msg.c_str());
    if (nccl_) ncclCommAbort(nccl_);
    nccl_ = nullptr;
    comm_.abort(1);
    std::_Exit(1);  // not reached: abort() does not return
  }

  Communicator& comm_;
  int device_;
  double timeout_s_;
  cudaStream_t stream_ = nullptr;
  ncclComm_t nccl_ = nullptr;
};

}  // namespace

bool built_with_nccl() { return true; }

std::unique_ptr<DeviceAllreduce> make_nccl(Communicator& comm, int device, double timeout_s) {
  return std::make_unique<NcclAllreduce>(comm, device, timeout_s);
}

}  // namespace engine::app::dist
