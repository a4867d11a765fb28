#pragma once
// The end of one output tile of the GEMVs (dense_gemv.cuh, woq_gemv.cuh, fp8/weight_only_gemv.cuh), once the
// block's warps have added up their K ranges: each thread holds kValues sums, value i for row mi[i] of M and
// column ni[i] of N (active[i]: inside m x n), and `store(sum, i)` finishes one (bias, scale) and writes y.
//  - One block covers all of K (sk.splits == 1): store every active value.
//  - Split-K (blockIdx-independent: the caller says which split this block is): publish the block's partial sums
//    in partials[split][m][n], and let the last block of the tile, by its counter, add them up in split order
//    (deterministic), store, and reset the counter (zero between launches).
// Every thread of the block must call it (it holds barriers).
#include "kernels/common/split_k_params.hpp"

namespace tpq::kernels {

template <int kValues, class Store>
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
