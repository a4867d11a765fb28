#pragma once
// Shared by every CUDA test: the skip-without-GPU fixture (tests/cuda/main.cpp decides once per process) and
// a few RAII helpers for device memory and streams.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/common/device_buffer.hpp"
#include "tpq/core/context.hpp"

namespace tpq::test {

// Whether this process sees a CUDA device (set by main before any test runs).
bool cuda_available();

// Base fixture of CUDA tests. The global environment already skips everything without a device; this keeps a
// test safe when run under another main or with environments disabled.
class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  }
};

template <typename Param>
class CudaTestWithParam : public CudaTest, public ::testing::WithParamInterface<Param> {};

// Asserts a CUDA runtime call succeeded, naming the call.
#define TPQ_TEST_CUDA(expr)                                                                                  \
  do {                                                                                                       \
    const cudaError_t tpq_test_err_ = (expr);                                                                \
    ASSERT_EQ(tpq_test_err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(tpq_test_err_);             \
  } while (0)

// A non-blocking stream owned by a test.
class Stream {
 public:
  Stream() {
    if (cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking) != cudaSuccess)
      throw std::runtime_error("cudaStreamCreateWithFlags failed");
  }
  ~Stream() { (void)cudaStreamDestroy(stream_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

// Stream-ordered memory whose every allocation starts as NaN bytes (0xFF: NaN in bf16, f16, f32 and e4m3), so an
// unwritten output or temporary shows up as NaN.
class PoisonAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes, Device device, StreamHandle stream) override {
    void* p = nullptr;
    if (cudaSetDevice(device.index) != cudaSuccess || cudaMallocAsync(&p, bytes > 0 ? bytes : 1, stream) != cudaSuccess)
      throw std::runtime_error("cudaMallocAsync failed");
    if (cudaMemsetAsync(p, 0xFF, bytes > 0 ? bytes : 1, stream) != cudaSuccess)
      throw std::runtime_error("cudaMemsetAsync failed");
    return p;
  }
  void deallocate(void* p, size_t, Device, StreamHandle stream) noexcept override { (void)cudaFreeAsync(p, stream); }
};

// A seed for random test data, different on every run (tests print it on failure).
inline uint64_t fresh_seed() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

// The oracle of the linear tests: y[m, n] = x[m, k]·w[n, k]ᵀ (+ bias[n]) in float64, over values already rounded
// to what the device sees; output columns are spread over up to 32 threads.
inline std::vector<double> reference_linear(const std::vector<double>& x, const std::vector<double>& w,
                                            const double* bias, int64_t m, int64_t n, int64_t k) {
  std::vector<double> y(static_cast<size_t>(m * n));
  const int threads = static_cast<int>(std::clamp<int64_t>(std::thread::hardware_concurrency(), 1, 32));
  std::vector<std::thread> pool;
  const int64_t step = (n + threads - 1) / threads;
  for (int t = 0; t < threads; ++t) {
    const int64_t n0 = t * step, n1 = std::min(n, n0 + step);
    if (n0 >= n1) break;
    pool.emplace_back([&, n0, n1] {
      for (int64_t j = n0; j < n1; ++j) {
        const double* wr = w.data() + j * k;
        for (int64_t i = 0; i < m; ++i) {
          const double* xr = x.data() + i * k;
          double acc = 0.0;
          for (int64_t l = 0; l < k; ++l) acc += xr[l] * wr[l];
          y[static_cast<size_t>(i * n + j)] = acc + (bias ? bias[j] : 0.0);
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  return y;
}

}  // namespace tpq::test
