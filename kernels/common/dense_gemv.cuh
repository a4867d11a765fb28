#pragma once
// Dense GEMV for decode-sized M: y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]), bf16 or f16, f32 accumulation.
//
// At M <= 16 the time is the time to stream W once, so the kernel is shaped around the weight loads:
//  - Each warp owns a tile of 16 rows of W and a contiguous range of K. Per step it reads 16 rows x 32 columns
//    with one 16-byte load per lane per row-half (lane = group g (0..7) x t (0..3): rows g and g+8, columns
//    8t..8t+7 of the step), kUnroll steps in flight before the first use.
//  - The products go through one m16n8k16 tensor-core MMA per half-chunk: W is the A operand (16 rows), x the B
//    operand (8 columns = 8 rows of x; a second MMA per column tile of 8 for M in 9..16). A dot product does
//    not care in which order K is summed, so each lane's 8 contiguous elements are fed to the MMA as the K
//    positions the fragment layout assigns it (logical 2t,2t+1,2t+8,2t+9 <- physical 8t+0..3, then 8t+4..7),
//    and x is read with the same mapping: no shuffles, no reduction across lanes, and M costs almost nothing.
//  - The 8 warps of a block split K; one shared-memory pass sums them. When the output has fewer 16-row tiles
//    than the device has SMs, blocks also split K (blockIdx.y) and the last block of a tile to finish adds the
//    partial sums in split order (deterministic) and resets the tile's counter for the next launch.
//  - Weights are constant during a forward, so each warp's first batch is prefetched into L2 before the
//    programmatic-dependent-launch wait: DRAM starts on this kernel's weights while the previous kernel drains.
//    Everything else (x, bias, scratch, y, and the register loads of W) comes after the wait.
// Requirements (checked by the host): k % 8 == 0, x and w 16-byte aligned, 1 <= m <= 8 * kColTiles.
#include <cstdint>

#include "kernels/common/dense_params.hpp"
#include "kernels/common/float_convert.cuh"
#include "kernels/common/ptx_ops.cuh"
#include "kernels/common/split_k.cuh"

namespace tpq::kernels {

namespace gemv_detail {

// Two MMAs: this lane's 8 elements of rows g (lo) and g+8 (hi), against the same 8 elements of one x row.
template <typename T>
__device__ __forceinline__ void mma_chunk(float (&acc)[4], const uint4& lo, const uint4& hi, const uint4& xv) {
  mma_m16n8k16<T>(acc, lo.x, hi.x, lo.y, hi.y, xv.x, xv.y);
  mma_m16n8k16<T>(acc, lo.z, hi.z, lo.w, hi.w, xv.z, xv.w);
}

}  // namespace gemv_detail

template <typename T, int kColTiles, int kUnroll>
__global__ void __launch_bounds__(kGemvWarps * 32, 2) dense_gemv_kernel(const DenseGemvParams p) {
  static_assert(kColTiles * 4 * 32 <= kGemvWarps * 32, "the epilogue gives each thread at most one output");
  pdl_launch_dependents();

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int tile = blockIdx.x;
  const int m = p.m, n = p.n, k = p.k;

  // Rows past n (and x rows past m) are clamped to the last valid one: every lane loads real memory without a
  // predicate, and the results of the clamped rows/columns are never stored.
  const T* w = static_cast<const T*>(p.w);
  const T* x = static_cast<const T*>(p.x);
  const T* w_lo = w + static_cast<int64_t>(min(tile * kGemvTileRows + g, n - 1)) * k;
  const T* w_hi = w + static_cast<int64_t>(min(tile * kGemvTileRows + g + 8, n - 1)) * k;
  const T* x_row[kColTiles];
#pragma unroll
  for (int j = 0; j < kColTiles; ++j) x_row[j] = x + static_cast<int64_t>(min(j * 8 + g, m - 1)) * k;

  const int chunks = k >> 3;  // 16-byte chunks per row
  const int steps = (chunks + 3) >> 2;
  const int split_begin = blockIdx.y * p.steps_per_split;
  const int split_end = min(steps, split_begin + p.steps_per_split);
  const int per_warp = (split_end - split_begin + kGemvWarps - 1) / kGemvWarps;
  const int begin = split_begin + warp * per_warp;
  const int end = min(split_end, begin + per_warp);
  const int full_end = min(end, chunks >> 2);  // steps whose 4 chunks all exist

  // Weights do not depend on the previous kernel: ask for this warp's first batch before waiting for it.
  if (t == 0 && begin < end) {
    const int first_chunk = begin << 2;
    const int last_chunk = min(min(begin + kUnroll, end) << 2, chunks);
    const uint32_t bytes = static_cast<uint32_t>(last_chunk - first_chunk) * 16u;
    prefetch_l2_bulk(w_lo + (static_cast<int64_t>(first_chunk) << 3), bytes);
    prefetch_l2_bulk(w_hi + (static_cast<int64_t>(first_chunk) << 3), bytes);
  }
  pdl_wait();

  // Two accumulator sets (even/odd steps) halve the chain of dependent MMAs.
  float acc[2][kColTiles][4] = {};
  int s = begin;
  for (; s + kUnroll <= full_end; s += kUnroll) {
    uint4 wl[kUnroll], wh[kUnroll], xv[kUnroll][kColTiles];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = ((s + u) << 2) + t;
      wl[u] = load_stream_16(w_lo + (c << 3));
      wh[u] = load_stream_16(w_hi + (c << 3));
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = ((s + u) << 2) + t;
#pragma unroll
      for (int j = 0; j < kColTiles; ++j) xv[u][j] = load_cached_16(x_row[j] + (c << 3));
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int j = 0; j < kColTiles; ++j) gemv_detail::mma_chunk<T>(acc[u & 1][j], wl[u], wh[u], xv[u][j]);
    }
  }
  // What is left: a partial batch of steps, and possibly a last step with fewer than 4 chunks.
  for (; s < end; s += kUnroll) {
    uint4 wl[kUnroll], wh[kUnroll], xv[kUnroll][kColTiles];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = ((s + u) << 2) + t;
      const bool ok = (s + u < end) && (c < chunks);
      wl[u] = load_stream_16_if(w_lo + (static_cast<int64_t>(c) << 3), ok);
      wh[u] = load_stream_16_if(w_hi + (static_cast<int64_t>(c) << 3), ok);
#pragma unroll
      for (int j = 0; j < kColTiles; ++j)
        xv[u][j] = load_cached_16_if(x_row[j] + (static_cast<int64_t>(c) << 3), ok);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int j = 0; j < kColTiles; ++j) gemv_detail::mma_chunk<T>(acc[u & 1][j], wl[u], wh[u], xv[u][j]);
    }
  }

  // Sum the warps' K ranges. Layout [warp][value][lane] keeps both the writes and the reads conflict-free.
  __shared__ float red[kGemvWarps][kColTiles * 4][32];
#pragma unroll
  for (int j = 0; j < kColTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) red[warp][j * 4 + e][lane] = acc[0][j][e] + acc[1][j][e];
  }
  __syncthreads();

  // Thread i finishes value i of the 16 x (8 * kColTiles) tile: fragment value v = i / 32 of lane i % 32.
  constexpr int kValues = kColTiles * 4 * 32;
  bool active = threadIdx.x < kValues;
  float v = 0.0f;
  int row = 0, col = 0;
  if (active) {
    const int vl = threadIdx.x & 31;
    const int vi = threadIdx.x >> 5;
#pragma unroll
    for (int wi = 0; wi < kGemvWarps; ++wi) v += red[wi][vi][vl];
    const int e = vi & 3;
    row = tile * kGemvTileRows + (vl >> 2) + ((e & 2) ? 8 : 0);  // C fragment: rows g, g+8
    col = (vi >> 2) * 8 + (vl & 3) * 2 + (e & 1);                // columns 2t, 2t+1 of column tile j
    active = row < n && col < m;
  }
  const T* bias = static_cast<const T*>(p.bias);
  T* y = static_cast<T*>(p.y);

  const float vs[1] = {v};
  const bool actives[1] = {active};
  const int cols[1] = {col}, rows[1] = {row};
  finish_tile<kGemvWarps * 32>(vs, actives, cols, rows, p.split_k, tile, blockIdx.y, m, n,
              [&](float sum, int) {
                if (bias != nullptr) sum += to_float(bias[row]);
                y[static_cast<int64_t>(col) * n + row] = from_float<T>(sum);
              });
}

}  // namespace tpq::kernels
