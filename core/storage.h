// Storage: one owned allocation on one device, shared by every tensor view of it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/dtype.h"

namespace engine {

class Storage {
 public:
  // Uninitialised memory; CPU memory is 64-byte aligned, CUDA memory comes from the caching allocator.
  static std::shared_ptr<Storage> allocate(std::size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  // In-place modification counter (as PyTorch's version counter): every in-place update through any view
  // (Tensor::copy_, Tensor::fill_, the adamw_step op) bumps it. Autograd records the versions of an op's
  // inputs and refuses to run the op's backward when one has changed since (core/autograd.cpp).
  uint64_t version() const { return version_; }
  void bump_version() { ++version_; }

 private:
  Storage(void* data, std::size_t bytes, Device device) : data_(data), bytes_(bytes), device_(device) {}
  void* data_;
  std::size_t bytes_;
  Device device_;
  uint64_t version_ = 0;
};

}  // namespace engine
