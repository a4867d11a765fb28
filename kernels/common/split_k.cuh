#pragma once
// The end of one output tile of the GEMVs (dense_gemv.cuh, woq_gemv.cuh, fp8/weight_only_gemv.cuh), once the
// block's warps have added up their K ranges: each thread holds kValues sums, value i for row mi[i] of M and
// column ni[i] of N (active[i]: inside m x n), and `store(sum, i)` finishes one (bias, scale) and writes y.
//  - One block covers all of K (sk.splits == 1): store every active value.
//  - Split-K in a cluster (sk.cluster, code built for sm_90+; the splits of a tile are one cluster of height
//    gridDim.y, so a block's cluster rank is its split): two phases of the cluster barrier. In the first every
//    block arrives at its end (so all have started and their shared memory exists); then the other blocks write
//    their sums into the first block's shared memory (distributed shared memory), arrive with release semantics
//    and leave, and the first block waits for them and adds them up in split order. No global round trips: the
//    global protocol below puts three L2 latencies (fence, counter, partials) at the end of the critical path (s9,
//    H200, GPTQ GEMV at two splits: 0.4-0.8 us of a 6-13 us launch). Until s19 the first block read the others'
//    shared memory between two full cluster syncs, the second (a GPU-scope fence behind the first block's stores
//    of y) holding every block: per-warp timestamps (H200, llama8b o and down at M = 1) put 1.1 us between the
//    last warp's loop and the last block's end there, against 0.16-0.2 us in launches without splits. The
//    hand-off: GPTQ 4-bit o 1.05-1.09x and down 1.02-1.05x at M 1-16, every launch without splits unchanged.
//  - Split-K otherwise (blockIdx-independent: the caller says which split this block is): publish the block's
//    partial sums in partials[split][m][n], and let the last block of the tile, by its counter, add them up in
//    split order (deterministic, the same sums as the cluster's), store, and reset the counter (zero between
//    launches).
// Every thread of the block (kThreads of them) must call it (it holds barriers).
#include <cooperative_groups.h>

#include "kernels/common/split_k_params.hpp"

namespace tpq::kernels {

// kClusters = false leaves the cluster path (and its shared memory) out of the kernel: for callers that never launch
// as a cluster.
template <int kThreads, int kValues, bool kClusters = true, class Store>
__device__ __forceinline__ void finish_tile(const float (&v)[kValues], const bool (&active)[kValues],
                                            const int (&mi)[kValues], const int (&ni)[kValues], const SplitK& sk,
                                            int tile, int split, int m, int n, Store store) {
  float* const partials = sk.partials;
  unsigned* const tile_counters = sk.tile_counters;
  const int splits = sk.splits;
  if (splits == 1) {
#pragma unroll
    for (int i = 0; i < kValues; ++i)
      if (active[i]) store(v[i], i);
    return;
  }
  if constexpr (kClusters) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (sk.cluster) {
      // The first block's inbox: split r's sums in [r - 1].
      __shared__ float inbox[kMaxClusterSplits - 1][kValues][kThreads];
      const cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
      // First phase: every block of the cluster has reached its end (so has started: its shared memory exists).
      asm volatile("barrier.cluster.arrive.relaxed;" ::: "memory");
      asm volatile("barrier.cluster.wait;" ::: "memory");
      const unsigned rank = cluster.block_rank();
      if (rank != 0) {
        float* const to = cluster.map_shared_rank(&inbox[rank - 1][0][threadIdx.x], 0);
#pragma unroll
        for (int i = 0; i < kValues; ++i) to[i * kThreads] = v[i];
        // Release: the writes above are visible to the first block once its wait returns. The block ends without
        // waiting for the phase (exited threads count as arrived).
        asm volatile("barrier.cluster.arrive.release;" ::: "memory");
        return;
      }
      asm volatile("barrier.cluster.arrive.relaxed;" ::: "memory");
      asm volatile("barrier.cluster.wait.acquire;" ::: "memory");  // every other block's sums are in the inbox
#pragma unroll
      for (int i = 0; i < kValues; ++i) {
        if (!active[i]) continue;
        float sum = v[i];
        for (int r = 1; r < splits; ++r) sum += inbox[r - 1][i][threadIdx.x];
        store(sum, i);
      }
      return;
    }
#endif
    // Code built for an older architecture, run on a cluster-capable GPU (the host checks the loaded code, this is
    // the fallback): the global protocol below, whose scratch the host always passes.
  }

#pragma unroll
  for (int i = 0; i < kValues; ++i)
    if (active[i]) partials[(static_cast<int64_t>(split) * m + mi[i]) * n + ni[i]] = v[i];
  __threadfence();
  __syncthreads();
  __shared__ bool is_last;
  if (threadIdx.x == 0) is_last = atomicAdd(&tile_counters[tile], 1u) == static_cast<unsigned>(splits - 1);
  __syncthreads();
  if (!is_last) return;
  __threadfence();
#pragma unroll
  for (int i = 0; i < kValues; ++i) {
    if (!active[i]) continue;
    float sum = 0.0f;
    for (int sp = 0; sp < splits; ++sp) sum += __ldcg(&partials[(static_cast<int64_t>(sp) * m + mi[i]) * n + ni[i]]);
    store(sum, i);
  }
  if (threadIdx.x == 0) tile_counters[tile] = 0;  // ready for the next launch
}

}  // namespace tpq::kernels
