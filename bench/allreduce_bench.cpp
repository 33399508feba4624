// allreduce_bench: time of the data-parallel collectives per step against the gradient size, through the
// engine's communicator layer (apps/common/dist.h): MPI_Allreduce (default mode) and MPI_Allgatherv of one
// gradient per rank (deterministic mode with one chunk per rank). Run under mpirun:
//   mpirun -np 2 build/bin/allreduce_bench [--iters 20]
// Rank 0 prints one row per size: min and median ms over the iterations and the algorithm bandwidth
// (bytes / time). The seed model's gradient (1.7M floats, 6.8 MB) is one of the sizes. Without a launcher
// (or a build without MPI) it runs as one process, where the collectives are copies.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "apps/common/dist.h"
#include "models/conditional_unet.h"

int main(int argc, char** argv) {
  int iters = 20;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--iters") == 0 && i + 1 < argc) {
      iters = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: [mpirun -np N] allreduce_bench [--iters N]\n");
      return 2;
    }
  }
  if (iters < 1) {
    std::fprintf(stderr, "allreduce_bench: --iters must be >= 1\n");
    return 2;
  }
  namespace dist = engine::app::dist;
  std::unique_ptr<dist::Communicator> comm =
      dist::launcher_world_size() > 0 && dist::built_with_mpi() ? dist::make_mpi(120) : dist::make_local();
  const int64_t seed_params =
      engine::models::ConditionalUNet(engine::models::ConditionalConfig::seed(), 0).num_parameters();
  const std::vector<int64_t> sizes = {1024, 16384, 262144, seed_params, 4 * seed_params};
  if (comm->rank() == 0)
    std::printf(
        "ranks %d (%s), %d iterations; seed model gradient = %lld floats\n"
        "| floats | MB | allreduce min ms | median ms | GB/s | allgather min ms | median ms |\n"
        "|---|---|---|---|---|---|---|\n",
        comm->size(), comm->backend().c_str(), iters, static_cast<long long>(seed_params));
  for (int64_t n : sizes) {
    std::vector<float> buf(static_cast<size_t>(n), 1.0f);
    std::vector<double> ar, ag;
    for (int it = -2; it < iters; ++it) {  // two warm-up rounds
      comm->barrier();
      auto t0 = std::chrono::steady_clock::now();
      comm->allreduce_sum(buf.data(), n);
      auto t1 = std::chrono::steady_clock::now();
      const std::vector<float> all = comm->allgather(buf);
      auto t2 = std::chrono::steady_clock::now();
      if (it >= 0) {
        ar.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        ag.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
      }
      std::fill(buf.begin(), buf.end(), 1.0f);
      if (all.size() != buf.size() * static_cast<size_t>(comm->size())) comm->abort(1);
    }
    auto med = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    const double mb = n * 4.0 / 1e6;
    if (comm->rank() == 0)
      std::printf("| %lld | %.3f | %.3f | %.3f | %.2f | %.3f | %.3f |\n", static_cast<long long>(n), mb,
                  *std::min_element(ar.begin(), ar.end()), med(ar),
                  mb / 1e3 / (*std::min_element(ar.begin(), ar.end()) / 1e3 + 1e-12),
                  *std::min_element(ag.begin(), ag.end()), med(ag));
  }
  return 0;
}
