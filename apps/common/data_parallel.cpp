// Chunked / sharded gradient computation and its combination across ranks for data-parallel fm_train.
#include "apps/common/data_parallel.h"

#include <algorithm>

#include "core/error.h"
#include "core/ops.h"

namespace engine::app {

std::vector<GradChunk> plan_chunks(int64_t B, int world, int64_t grad_chunk) {
  ENGINE_CHECK(B >= 1 && world >= 1 && grad_chunk >= 0, "plan_chunks",
               "need a batch >= 1, world >= 1 and grad_chunk >= 0, got ", B, ", ", world, ", ", grad_chunk);
  std::vector<GradChunk> out;
  if (grad_chunk == 0) {
    for (int r = 0; r < world; ++r) out.push_back({B * r / world, B * (r + 1) / world, r});
    return out;
  }
  const int64_t K = (B + grad_chunk - 1) / grad_chunk;
  for (int r = 0; r < world; ++r)
    for (int64_t k = K * r / world; k < K * (r + 1) / world; ++k)
      out.push_back({k * grad_chunk, std::min(B, (k + 1) * grad_chunk), r});
  return out;
}

DataParallelStep data_parallel_gradients(const models::ConditionalUNet& model, dist::Communicator& comm,
                                         const Batch& b, const StepDraws& d, int64_t H, int64_t W,
                                         int64_t grad_chunk, dist::DeviceAllreduce* device_reduce) {
  const int64_t B = b.size();
  const Device device = d.noise.device();
  std::vector<Tensor> params = model.parameters();
  int64_t P = 0;
  for (const Tensor& p : params) {
    ENGINE_CHECK(p.dtype() == DType::F32, "data_parallel_gradients", "parameters must be F32");
    P += p.numel();
  }
  // One row per chunk: the P gradient values (parameter order), one has-gradient flag per parameter, and
  // the chunk's weighted loss.
  const int64_t nparam = static_cast<int64_t>(params.size());
  const int64_t row = P + nparam + 1;
  std::vector<float> mine;
  std::vector<double> my_per_sample;
  // Default mode on a GPU with a device all-reduce (NCCL): this rank's (single) row stays on the device.
  const bool on_device = grad_chunk == 0 && device_reduce && device.is_cuda();
  Tensor flat;                                                     // (row,) F32 on the device when on_device
  std::vector<float> tail(static_cast<size_t>(nparam + 1), 0.0f);  // its flags and loss, on the host
  if (on_device) flat = Tensor::zeros({row}, DType::F32, device);
  for (const GradChunk& c : plan_chunks(B, comm.size(), grad_chunk)) {
    const int64_t n = c.end - c.begin;
    if (c.owner != comm.rank() || n == 0) continue;
    const std::vector<float> xs(b.x.begin() + c.begin * H * W, b.x.begin() + c.end * H * W);
    const std::vector<int64_t> ls(b.labels.begin() + c.begin, b.labels.begin() + c.end);
    Tensor x = Tensor::from_vector<float>(xs, {n, 1, H, W}, device);  // (n, 1, H, W)
    Tensor labels = Tensor::from_vector<int64_t>(ls, {n}, device);    // (n,)
    StepDraws dc{d.noise.narrow(0, c.begin, n).contiguous(), d.sigma.narrow(0, c.begin, n).contiguous(),
                 d.drop.narrow(0, c.begin, n).contiguous()};
    std::vector<double> ps;
    Tensor loss = flow_matching_loss(model, x, labels, dc, &ps);
    if (n != B) loss = affine(loss, static_cast<double>(n) / static_cast<double>(B), 0.0);
    for (Tensor& p : params) p.zero_grad();
    loss.backward();
    my_per_sample.insert(my_per_sample.end(), ps.begin(), ps.end());
    if (on_device) {
      int64_t off = 0;
      for (int64_t i = 0; i < nparam; ++i) {
        const Tensor g = params[i].grad();
        if (g.defined()) {
          flat.narrow(0, off, params[i].numel()).copy_(g.reshape({params[i].numel()}));
          tail[static_cast<size_t>(i)] = 1.0f;
        }
        off += params[i].numel();
      }
      tail[static_cast<size_t>(nparam)] = static_cast<float>(loss.item());
      continue;
    }
    const size_t at = mine.size();
    mine.resize(at + static_cast<size_t>(row), 0.0f);
    float* r = mine.data() + at;
    int64_t off = 0;
    for (int64_t i = 0; i < nparam; ++i) {
      const Tensor g = params[i].grad();
      if (g.defined()) {
        const std::vector<float> gv = g.to_vector<float>();
        std::copy(gv.begin(), gv.end(), r + off);
        r[P + i] = 1.0f;
      }
      off += params[i].numel();
    }
    r[row - 1] = static_cast<float>(loss.item());
  }

  DataParallelStep out;
  if (on_device) {
    flat.narrow(0, P, nparam + 1).copy_(Tensor::from_vector<float>(tail, {nparam + 1}, device));
    device_reduce->allreduce_sum(flat.data<float>(), row);
    tail = flat.narrow(0, P, nparam + 1).to_vector<float>();
    out.loss = tail[static_cast<size_t>(nparam)];
    int64_t off = 0;
    for (int64_t i = 0; i < nparam; ++i) {
      Tensor& p = params[i];
      if (tail[static_cast<size_t>(i)] > 0)
        p.set_grad(flat.narrow(0, off, p.numel()).reshape(p.shape()));
      else
        p.zero_grad();
      off += p.numel();
    }
    out.per_sample = comm.gather_to_root(my_per_sample);
    return out;
  }

  std::vector<float> acc(static_cast<size_t>(row), 0.0f);
  if (grad_chunk > 0) {
    // Every chunk's row in chunk order (ranks own consecutive chunks in rank order), summed left to right.
    const std::vector<float> all = comm.allgather(mine);
    const int64_t K = static_cast<int64_t>(all.size()) / row;
    ENGINE_CHECK(K >= 1 && K * row == static_cast<int64_t>(all.size()), "data_parallel_gradients",
                 "gathered ", all.size(), " values, not a whole number of chunk rows of ", row);
    std::copy(all.begin(), all.begin() + row, acc.begin());
    out.loss = acc[row - 1];
    for (int64_t k = 1; k < K; ++k) {
      const float* r = all.data() + k * row;
      for (int64_t i = 0; i < row - 1; ++i) acc[i] += r[i];
      out.loss += r[row - 1];
    }
  } else {
    for (size_t at = 0; at < mine.size(); at += static_cast<size_t>(row))
      for (int64_t i = 0; i < row; ++i) acc[i] += mine[at + i];
    comm.allreduce_sum(acc.data(), row);
    out.loss = acc[row - 1];
  }
  int64_t off = 0;
  for (int64_t i = 0; i < nparam; ++i) {
    Tensor& p = params[i];
    if (acc[P + i] > 0) {
      const std::vector<float> g(acc.begin() + off, acc.begin() + off + p.numel());
      p.set_grad(Tensor::from_vector<float>(g, p.shape(), p.device()));
    } else {
      p.zero_grad();
    }
    off += p.numel();
  }
  out.per_sample = comm.gather_to_root(my_per_sample);
  return out;
}

}  // namespace engine::app
