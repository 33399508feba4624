// NCCL backend of the device all-reduce (built only with CUDA + MPI + NCCL). UNVERIFIED: compiled here, never
// run on several GPUs (docs/distributed.md). libnccl (~200 MB) is loaded with dlopen when first needed, so
// the binaries do not depend on it: a machine without it runs everything else, and data parallelism on GPUs
// falls back to host memory and MPI. The communicator is created non-blocking and every operation is
// polled (cudaStreamQuery + ncclCommGetAsyncError) against the timeout; on expiry or error the NCCL
// communicator is aborted (ncclCommAbort) and the job ended through the MPI communicator.
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "apps/common/dist.h"
#include "runtime/cuda_device.h"

namespace engine::app::dist {

namespace {

// The NCCL entry points used here, resolved from libnccl.so.2 at run time.
struct NcclApi {
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRankConfig) comm_init_rank_config = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclCommGetAsyncError) comm_get_async_error = nullptr;
  decltype(&ncclCommAbort) comm_abort = nullptr;
  decltype(&ncclCommDestroy) comm_destroy = nullptr;
  decltype(&ncclGetErrorString) get_error_string = nullptr;
};

// Loads the library once; nullptr (and *why) when it or a symbol is missing.
const NcclApi* nccl_api(std::string* why) {
  static NcclApi api;
  static std::string error;
  static const bool ok = [] {
    void* h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) h = dlopen("libnccl.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* e = dlerror();
      error = e ? e : "dlopen libnccl.so.2 failed";
      return false;
    }
    auto load = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
      if (!fn && error.empty()) error = std::string("libnccl has no symbol ") + name;
    };
    load(api.get_unique_id, "ncclGetUniqueId");
    load(api.comm_init_rank_config, "ncclCommInitRankConfig");
    load(api.all_reduce, "ncclAllReduce");
    load(api.comm_get_async_error, "ncclCommGetAsyncError");
    load(api.comm_abort, "ncclCommAbort");
    load(api.comm_destroy, "ncclCommDestroy");
    load(api.get_error_string, "ncclGetErrorString");
    return error.empty();
  }();
  if (!ok && why) *why = error;
  return ok ? &api : nullptr;
}

class NcclAllreduce final : public DeviceAllreduce {
 public:
  NcclAllreduce(Communicator& comm, int device, double timeout_s)
      : api_(*nccl_api(nullptr)), comm_(comm), device_(device), timeout_s_(timeout_s) {
    ncclUniqueId id{};
    if (comm.rank() == 0) nccl_check(api_.get_unique_id(&id), "ncclGetUniqueId");
    comm.broadcast(&id, sizeof id, 0);
    cuda::DeviceScope scope(device_);
    cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // returns at once; completion is polled below, so a missing peer cannot hang us
    nccl_check(api_.comm_init_rank_config(&nccl_, comm.size(), id, comm.rank(), &config),
               "ncclCommInitRankConfig");
    wait("ncclCommInitRank", /*stream=*/false);
  }
  ~NcclAllreduce() override {
    if (nccl_) api_.comm_destroy(nccl_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  void allreduce_sum(float* dev, int64_t n) override {
    cuda::DeviceScope scope(device_);
    cuda::synchronize(device_);  // the gradients were written on the engine stream
    nccl_check(api_.all_reduce(dev, dev, static_cast<size_t>(n), ncclFloat, ncclSum, nccl_, stream_),
               "ncclAllReduce");
    wait("ncclAllReduce", /*stream=*/true);
  }

 private:
  // Polls the NCCL communicator (and, with `stream`, the stream) until the operation completed; past the
  // deadline, fails the job. Sleeps 50 us between polls.
  void wait(const char* what, bool stream) {
    try {
      poll_until(
          [&] {
            ncclResult_t async = ncclSuccess;
            nccl_check(api_.comm_get_async_error(nccl_, &async), "ncclCommGetAsyncError");
            if (async != ncclSuccess && async != ncclInProgress)
              fail(std::string(what) + ": " + api_.get_error_string(async));
            bool done = async == ncclSuccess;
            if (done && stream) {
              const cudaError_t q = cudaStreamQuery(stream_);
              if (q != cudaSuccess && q != cudaErrorNotReady)
                fail(std::string(what) + ": " + cudaGetErrorString(q));
              done = q == cudaSuccess;
            }
            return done;
          },
          what, timeout_s_, /*spin_polls=*/0);
    } catch (const PollTimeout& e) {
      fail(e.what());
    }
  }
  void nccl_check(ncclResult_t r, const char* what) {
    if (r != ncclSuccess && r != ncclInProgress)
      fail(std::string(what) + " failed: " + api_.get_error_string(r));
  }
  void cuda_check(cudaError_t r, const char* what) {
    if (r != cudaSuccess) fail(std::string(what) + " failed: " + cudaGetErrorString(r));
  }
  [[noreturn]] void fail(const std::string& msg) {
    std::fprintf(stderr, "fm_train: rank %d of %d (NCCL, cuda:%d): %s\n", comm_.rank(), comm_.size(), device_,
                 msg.c_str());
    if (nccl_) api_.comm_abort(nccl_);
    nccl_ = nullptr;
    comm_.abort(1);
    std::_Exit(1);  // not reached: abort() does not return
  }

  const NcclApi& api_;
  Communicator& comm_;
  int device_;
  double timeout_s_;
  cudaStream_t stream_ = nullptr;
  ncclComm_t nccl_ = nullptr;
};

}  // namespace

bool built_with_nccl() { return true; }

bool nccl_loadable(std::string* why) { return nccl_api(why) != nullptr; }

std::unique_ptr<DeviceAllreduce> make_nccl(Communicator& comm, int device, double timeout_s) {
  std::string why;
  if (!nccl_loadable(&why)) throw std::runtime_error("NCCL is not loadable: " + why);
  return std::make_unique<NcclAllreduce>(comm, device, timeout_s);
}

}  // namespace engine::app::dist
