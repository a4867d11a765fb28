#pragma once
// Device memory owned by a test or by the benchmark (cudaMalloc/cudaFree), move-only; a failed allocation is a
// tpq::Error naming the size. Shared by tests/cuda and benchmarks/.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

#include "tpq/detail/cuda_check.hpp"

namespace tpq::test {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) { TPQ_CUDA_CHECK(cudaMalloc(&ptr_, bytes > 0 ? bytes : 1)); }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) (void)cudaFree(ptr_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace tpq::test
