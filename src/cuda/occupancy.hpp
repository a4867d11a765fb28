#pragma once
// Resident blocks per SM of a kernel, as the launchers' host heuristics ask for them (src/cuda/*_kernels.cu).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <utility>

namespace tpq::detail {

// Blocks of `kernel` (a __global__ function) with `threads` threads and no dynamic shared memory that fit on one SM
// of the current device at once: asked of the runtime once per kernel and device (one process may drive GPUs of
// different kinds), 1 where the runtime cannot say.
inline int resident_blocks_per_sm(const void* kernel, int threads) {
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, int> cache;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    (void)cudaGetLastError();
    return 1;
  }
  const std::lock_guard lock(mutex);
  const auto key = std::make_pair(kernel, device);
  if (const auto it = cache.find(key); it != cache.end()) return it->second;
  int blocks = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, 0) != cudaSuccess) {
    (void)cudaGetLastError();
    return 1;  // not cached: asked again next time
  }
  return cache[key] = std::max(blocks, 1);
}

}  // namespace tpq::detail
