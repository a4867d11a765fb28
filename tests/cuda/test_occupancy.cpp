// resident_blocks_per_sm (src/cuda/occupancy.hpp): the lock-free table the GEMV plans read on every forward
// returns what the runtime says for each (kernel, threads, device), from many threads at once, and 1 where the
// runtime cannot say.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <utility>
#include <vector>

#include "src/cuda/occupancy.hpp"
#include "tests/cuda/occupancy_kernels.hpp"
#include "tests/cuda/cuda_test.hpp"

namespace tpq::test {
namespace {

struct Query {
  const void* kernel;
  int threads;
};

std::vector<Query> queries() {
  std::vector<Query> q;
  for (const void* k : {light_kernel(), shared_kernel()})
    for (int t : {32, 64, 96, 128, 256, 512, 1024}) q.push_back({k, t});
  return q;
}

int runtime_answer(const Query& q) {
  int blocks = 0;
  EXPECT_EQ(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, q.kernel, q.threads, 0), cudaSuccess);
  return blocks;
}

TEST_F(CudaTest, OccupancyTableReturnsTheRuntimesAnswerPerKernelAndBlockSize) {
  int device = 0;
  TPQ_TEST_CUDA(cudaGetDevice(&device));
  // Twice: the first call fills the table, the second reads it. The same kernel at two block sizes must not share
  // an entry (light_kernel: 32 blocks of 32 threads on an SM, 2 of 1024).
  for (int pass = 0; pass < 2; ++pass) {
    for (const Query& q : queries()) {
      const int expected = runtime_answer(q);
      ASSERT_GE(expected, 1) << q.threads;
      EXPECT_EQ(detail::resident_blocks_per_sm(q.kernel, q.threads, device), expected)
          << "pass " << pass << ", " << q.threads << " threads";
    }
  }
  EXPECT_NE(detail::resident_blocks_per_sm(light_kernel(), 32, device),
            detail::resident_blocks_per_sm(light_kernel(), 1024, device));
}

TEST_F(CudaTest, OccupancyTableAnswersManyThreadsAtOnce) {
  int device = 0;
  TPQ_TEST_CUDA(cudaGetDevice(&device));
  std::vector<std::pair<Query, int>> expected;
  for (const Query& q : queries()) expected.emplace_back(q, runtime_answer(q));
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      if (cudaSetDevice(device) != cudaSuccess) {
        wrong.fetch_add(1);
        return;
      }
      for (int round = 0; round < 200; ++round) {
        // Each thread walks the queries from its own start, so first inserts race with reads of other keys.
        for (size_t i = 0; i < expected.size(); ++i) {
          const auto& [q, blocks] = expected[(i + static_cast<size_t>(t) * 3) % expected.size()];
          if (detail::resident_blocks_per_sm(q.kernel, q.threads, device) != blocks) wrong.fetch_add(1);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST_F(CudaTest, OccupancyTableSaysOneWhereTheRuntimeCannot) {
  int device = 0, count = 0;
  TPQ_TEST_CUDA(cudaGetDevice(&device));
  TPQ_TEST_CUDA(cudaGetDeviceCount(&count));
  const void* k = light_kernel();
  EXPECT_EQ(detail::resident_blocks_per_sm(nullptr, 128, device), 1);
  EXPECT_EQ(detail::resident_blocks_per_sm(k, 0, device), 1);
  EXPECT_EQ(detail::resident_blocks_per_sm(k, -5, device), 1);
  EXPECT_EQ(detail::resident_blocks_per_sm(k, 128, -1), 1);
  EXPECT_EQ(detail::resident_blocks_per_sm(k, 128, count), 1);  // no such device
  // Asking about another device leaves the caller's current device and error state as they were.
  int after = -1;
  TPQ_TEST_CUDA(cudaGetDevice(&after));
  EXPECT_EQ(after, device);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  // A valid query afterwards still gets the runtime's answer.
  EXPECT_EQ(detail::resident_blocks_per_sm(k, 128, device), runtime_answer({k, 128}));
}

}  // namespace
}  // namespace tpq::test
