// Data-parallel pieces that run in one process: how a global batch is split into chunks owned by ranks
// (plan_chunks) and the chunked gradient step over the single-process communicator (its equivalence to
// the plain step), and the deadline loop of the MPI/NCCL back ends (poll_until). The multi-process
// equivalence runs under mpirun in scripts/test_mpi.sh.
#include "apps/common/dist.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <vector>

#include "apps/common/data_parallel.h"
#include "core/error.h"

using namespace engine;
using namespace engine::app;

namespace {

std::vector<std::vector<int64_t>> as_rows(const std::vector<GradChunk>& cs) {
  std::vector<std::vector<int64_t>> out;
  for (const GradChunk& c : cs) out.push_back({c.begin, c.end, c.owner});
  return out;
}

models::ConditionalConfig tiny() {
  return models::ConditionalConfig::from_json(nlohmann::json::parse(
      R"({"sample_size": 8, "in_channels": 2, "out_channels": 1, "block_out_channels": [8, 8],
  "layers_per_block": 1, "norm_num_groups": 4, "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
  "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 8, "num_classes": 10,
  "class_emb_size": 1})"));
}

Batch random_batch(int64_t B, int64_t H, int64_t W, uint64_t seed) {
  Generator g(seed);
  Batch b;
  b.x = affine(rand({B * H * W}, g), 2.0, -1.0).to_vector<float>();
  for (int64_t i = 0; i < B; ++i) b.labels.push_back((i * 7 + 3) % 10);
  return b;
}

std::vector<float> grads(const models::ConditionalUNet& m) {
  std::vector<float> out;
  for (const Tensor& p : m.parameters()) {
    const std::vector<float> g = p.grad().to_vector<float>();
    out.insert(out.end(), g.begin(), g.end());
  }
  return out;
}

}  // namespace

TEST(DataParallel, PlanChunksShardsAndChunks) {
  // One shard per rank, uneven for 3 ranks; empty shards when the batch is smaller than the world.
  EXPECT_EQ(as_rows(plan_chunks(10, 3, 0)),
            (std::vector<std::vector<int64_t>>{{0, 3, 0}, {3, 6, 1}, {6, 10, 2}}));
  EXPECT_EQ(as_rows(plan_chunks(2, 3, 0)),
            (std::vector<std::vector<int64_t>>{{0, 0, 0}, {0, 1, 1}, {1, 2, 2}}));
  // Chunks of 4 (the last one smaller); ranks own consecutive chunks in rank order.
  EXPECT_EQ(as_rows(plan_chunks(10, 1, 4)),
            (std::vector<std::vector<int64_t>>{{0, 4, 0}, {4, 8, 0}, {8, 10, 0}}));
  EXPECT_EQ(as_rows(plan_chunks(10, 2, 4)),
            (std::vector<std::vector<int64_t>>{{0, 4, 0}, {4, 8, 1}, {8, 10, 1}}));
  EXPECT_EQ(as_rows(plan_chunks(10, 3, 4)),
            (std::vector<std::vector<int64_t>>{{0, 4, 0}, {4, 8, 1}, {8, 10, 2}}));
  EXPECT_EQ(as_rows(plan_chunks(5, 3, 4)), (std::vector<std::vector<int64_t>>{{0, 4, 1}, {4, 5, 2}}));
  EXPECT_THROW(plan_chunks(0, 1, 0), Error);
  EXPECT_THROW(plan_chunks(4, 0, 0), Error);
  EXPECT_THROW(plan_chunks(4, 1, -1), Error);
}

TEST(DataParallel, ChunkedGradientIsTheGlobalMeanGradient) {
  const int64_t B = 6, H = 8, W = 8;
  models::ConditionalUNet model(tiny(), 3);
  const Batch b = random_batch(B, H, W, 11);
  Generator gen(5);
  const StepDraws d = draw_step(gen, B, 1, H, W, 0.3, Device::cpu());
  auto comm = dist::make_local();

  // The plain step: the loss of the whole batch.
  Tensor x = Tensor::from_vector<float>(b.x, {B, 1, H, W});
  Tensor labels = Tensor::from_vector<int64_t>(b.labels, {B});
  for (Tensor& p : model.parameters()) p.zero_grad();
  Tensor loss = flow_matching_loss(model, x, labels, d);
  loss.backward();
  const std::vector<float> plain = grads(model);
  const double plain_loss = loss.item();

  // One chunk of the whole batch is the plain step, bit for bit.
  DataParallelStep one = data_parallel_gradients(model, *comm, b, d, H, W, B);
  EXPECT_EQ(grads(model), plain);
  EXPECT_EQ(one.loss, plain_loss);
  ASSERT_EQ(one.per_sample.size(), static_cast<size_t>(B));

  // Chunks of 4 + 2, each weighted by its share: the same gradient up to float summation order.
  DataParallelStep chunked = data_parallel_gradients(model, *comm, b, d, H, W, 4);
  const std::vector<float> g4 = grads(model);
  ASSERT_EQ(g4.size(), plain.size());
  double max_rel = 0, scale = 0;
  for (float v : plain) scale = std::max(scale, std::fabs(double(v)));
  for (size_t i = 0; i < g4.size(); ++i)
    max_rel = std::max(max_rel, std::fabs(double(g4[i]) - plain[i]) / scale);
  EXPECT_LT(max_rel, 1e-5);
  EXPECT_GT(scale, 0);
  EXPECT_NEAR(chunked.loss, plain_loss, 1e-6 * plain_loss);
  // ... and the per-image losses do not depend on the chunking.
  EXPECT_EQ(chunked.per_sample, one.per_sample);
  // Reproducible: the same chunking gives the same bits again.
  data_parallel_gradients(model, *comm, b, d, H, W, 4);
  EXPECT_EQ(grads(model), g4);
}

// poll_until: the deadline loop the MPI and NCCL back ends wait with.
TEST(PollUntil, ReturnsAtOnceWhenAlreadyDone) {
  int calls = 0;
  dist::poll_until([&] { return ++calls >= 1; }, "barrier", 5.0);
  EXPECT_EQ(calls, 1);
}

TEST(PollUntil, KeepsPollingUntilDone) {
  for (int64_t spin : {0, 2, 201}) {
    int calls = 0;
    dist::poll_until([&] { return ++calls == 5; }, "allreduce", 5.0, spin);
    EXPECT_EQ(calls, 5) << "spin_polls " << spin;
  }
}

TEST(PollUntil, TimeoutThrowsTheOneLineError) {
  int calls = 0;
  const auto t0 = std::chrono::steady_clock::now();
  try {
    dist::poll_until(
        [&] {
          ++calls;
          return false;
        },
        "ncclAllReduce", 0.05, 3);
    FAIL() << "no timeout";
  } catch (const dist::PollTimeout& e) {
    EXPECT_STREQ(e.what(),
                 "ncclAllReduce did not complete within 0.05 s (--dist-timeout): another rank died, hangs or "
                 "is far behind; aborting the job");
  }
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(waited, 0.05);
  EXPECT_LT(waited, 5.0);
  // Past the 3 spinning polls, the polls are >= 50 us apart: at most ~1,000 of them in 0.05 s.
  EXPECT_GT(calls, 3);
  EXPECT_LE(calls, 3 + 1001);
}

TEST(PollUntil, ZeroTimeoutStillPollsOnce) {
  int calls = 0;
  dist::poll_until([&] { return ++calls == 1; }, "barrier", 0.0);
  EXPECT_EQ(calls, 1);
  EXPECT_THROW(dist::poll_until([] { return false; }, "barrier", 0.0), dist::PollTimeout);
}
