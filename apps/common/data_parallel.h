// Data-parallel gradients for fm_train: how a global batch is split into gradient chunks owned by ranks,
// and the step that computes each owned chunk's gradient and combines them across ranks
// (docs/distributed.md).
#pragma once
#include <cstdint>
#include <vector>

#include "apps/common/dist.h"
#include "apps/common/flow_matching.h"
#include "apps/common/mnist.h"
#include "models/conditional_unet.h"

namespace engine::app {

// Images [begin, end) of the global batch, whose gradient rank `owner` computes.
struct GradChunk {
  int64_t begin = 0, end = 0;
  int owner = 0;
};

// Splits a global batch of B >= 1 images over `world` >= 1 ranks.
// grad_chunk > 0 (deterministic mode): ceil(B / grad_chunk) chunks of grad_chunk images (the last one may be
// smaller); with K chunks, rank r owns chunks [K r / world, K (r + 1) / world) (none when K < world).
// grad_chunk == 0: one contiguous shard per rank, rank r's images [B r / world, B (r + 1) / world) (empty
// when B < world). Chunks are returned in batch order; ranks own consecutive chunks in rank order.
// Throws engine::Error for B < 1, world < 1 or grad_chunk < 0.
std::vector<GradChunk> plan_chunks(int64_t B, int world, int64_t grad_chunk);

struct DataParallelStep {
  double loss = 0;                 // mean loss of the global batch (the same value on every rank)
  std::vector<double> per_sample;  // rank 0: each image's loss in batch order (B); other ranks: empty
};

// Sets every parameter's .grad to the gradient of the global-batch mean flow-matching loss, identical on all
// ranks. Each rank evaluates only the chunks it owns (plan_chunks), each chunk's loss weighted by
// chunk / B so that the weighted chunk gradients add up to the global-mean gradient.
// grad_chunk > 0: every rank gathers all chunk gradients and adds them in chunk order, so the result is
// bitwise the same for any number of ranks (and equal to one process with the same grad_chunk).
// grad_chunk == 0: the shard gradients are summed with comm.allreduce_sum (float summation order of MPI).
// `b` and `d` are the whole global batch (the same on every rank): b.x (B * H * W), d on the model device.
// With `device_reduce` (NCCL), grad_chunk == 0 and a CUDA model, the shard gradients are summed in device
// memory by device_reduce instead of through the host and comm (UNVERIFIED on GPUs).
// Parameters must be F32; parameters that get no gradient in any chunk are left without .grad.
DataParallelStep data_parallel_gradients(const models::ConditionalUNet& model, dist::Communicator& comm,
                                         const Batch& b, const StepDraws& d, int64_t H, int64_t W,
                                         int64_t grad_chunk, dist::DeviceAllreduce* device_reduce = nullptr);

}  // namespace engine::app
