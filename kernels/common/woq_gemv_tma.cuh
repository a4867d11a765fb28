#pragma once
// The grouped weight-only GEMV with its weights streamed by the copy engine (TMA, sm_90+), for packings of one word
// per block (2, 4 and 8 bits). Same tiles, lanes, steps and sums as woq_gemv_grouped_kernel (woq_gemv.cuh); what
// changes is how the weight reaches the lanes, because that is what bounded the register kernel: ptxas tracks every
// global load of a warp on one scoreboard, so a warp there had one batch of weights in flight at a time and none
// while it computed.
//  - Each warp owns a ring of kStages shared-memory stages of kStageSteps steps (32 word rows × 32 columns, 4 KB,
//    one TMA box with the 128-byte swizzle) and an mbarrier per stage. Lane 0 issues the warp's first kStages boxes
//    at its start (before the programmatic-dependent-launch wait: the weight is constant) and refills a stage as
//    soon as the warp has read it, so the weight streams while the warp computes, and no register holds it in flight.
//  - Lane (g, t) reads its block of step u as 16 bytes of row 4u + t, chunk g of the stage (chunk g ^ (row & 7)
//    after the swizzle).
//  - Activations, groups and the groups' zero points and scales still come through the lanes' registers, in
//    batches of kBatch steps, two batches per warp: the next batch's loads are issued only once the current batch
//    has arrived (its addresses carry a zero computed from the current batch: p.zero), so they travel while the
//    current batch is computed and no use of the current batch waits for them. Act-order: the batch also carries
//    the next batch's groups, so the next batch's meta loads need not wait for its g_idx.
// Requirements: those of the grouped kernel, kWords == 1, and a qweight tensor map (p.qweight_map) of u32
// [word rows, n] with boxes of 32 columns × kStageRows rows, 128-byte swizzle, zeros outside.
#include <cuda.h>

#include <cstdint>

#include "kernels/common/tma.cuh"
#include "kernels/common/woq_gemv.cuh"

namespace tpq::kernels {

inline constexpr int kWoqTmaStageSteps = 8;
inline constexpr int kWoqTmaStageRows = 4 * kWoqTmaStageSteps;         // word rows per stage (one per block)
inline constexpr int kWoqTmaStageBytes = kWoqTmaStageRows * kWoqTileCols * 4;  // 4 KB
inline constexpr int kWoqTmaStages = 3;
// Dynamic shared memory of one block: the warps' rings, plus the 1 KB the kernel may skip to align them to the
// 1024-byte pattern of the 128-byte swizzle.
inline constexpr int kWoqTmaSmemBytes = kWoqWarps * kWoqTmaStages * kWoqTmaStageBytes + 1024;

template <class Traits, typename T, int kColTiles, bool kActOrder>
__global__ void __launch_bounds__(kWoqWarps * 32, 2)
    woq_gemv_tma_kernel(const __grid_constant__ WoqGemvParams p) {
  static_assert(Traits::kWords == 1, "one word per block: a step is 4 word rows");
  constexpr int kCodes = Traits::kCodes;
  constexpr int kXRegs = kCodes / 2;
  constexpr int kStepRows = 4 * kCodes;
  constexpr int kStepRowsLog2 = kStepRows == 16 ? 4 : kStepRows == 32 ? 5 : kStepRows == 64 ? 6 : 7;
  static_assert((1 << kStepRowsLog2) == kStepRows, "steps of 16, 32, 64 or 128 rows");
  // Steps of activations per batch: 4 (16-code 2-bit blocks 2), halved with two column tiles.
  constexpr int kBatch = (kCodes >= 16 ? 2 : 4) / kColTiles;
  static_assert(kWoqTmaStageSteps % kBatch == 0, "batches do not straddle stages");
  constexpr int kPrefetchGroups = 64;
  pdl_launch_dependents();

  extern __shared__ uint8_t tma_smem[];
  __shared__ __align__(8) uint64_t full[kWoqWarps][kWoqTmaStages];

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n = p.n;
  const T* scales = static_cast<const T*>(p.scales);
  const int step_shift = p.group_shift - kStepRowsLog2;
  const int tiles = (n + kWoqTileCols - 1) / kWoqTileCols;
  const int units = tiles * p.split_k.splits;  // unit = split · tiles + tile

  // The warp's ring, as a shared-memory address (so that its reads are LDS, not generic loads that ptxas would
  // track with the global ones), aligned to the swizzle's 1024 bytes.
  const uint32_t ring = ((shared_address(tma_smem) + 1023u) & ~1023u) + warp * kWoqTmaStages * kWoqTmaStageBytes;

  // The producer (lane 0): the warp's stages over the block's units in order, kStages ahead of the consumer.
  int produced = 0, consumed = 0;  // stages issued / read by the warp, over all its units
  int prod_unit = blockIdx.x, prod_stage = 0;
  const auto warp_steps = [&](int unit, int& begin, int& end) {
    const woq_detail::LaneWork<T, kCodes, kColTiles> lw(p, unit % tiles, unit / tiles);
    begin = lw.begin;
    end = lw.end;
  };
  int prod_begin = 0, prod_end = 0;
  if (prod_unit < units) warp_steps(prod_unit, prod_begin, prod_end);
  const auto produce = [&]() {
    while (produced - consumed < kWoqTmaStages && prod_unit < units) {
      if (prod_begin + prod_stage * kWoqTmaStageSteps < prod_end) {
        uint64_t* bar = &full[warp][produced % kWoqTmaStages];
        mbarrier_expect_bytes(bar, kWoqTmaStageBytes);
        tma_load_2d(ring + (produced % kWoqTmaStages) * kWoqTmaStageBytes, &p.qweight_map,
                    (prod_unit % tiles) * kWoqTileCols, 4 * (prod_begin + prod_stage * kWoqTmaStageSteps), bar);
        ++produced;
        ++prod_stage;
      } else {
        prod_unit += gridDim.x;
        prod_stage = 0;
        if (prod_unit < units) warp_steps(prod_unit, prod_begin, prod_end);
      }
    }
  };
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < kWoqTmaStages; ++i) mbarrier_init(&full[warp][i]);
    produce();
  }
  __syncwarp();
  pdl_wait();

  for (int unit = blockIdx.x; unit < units; unit += gridDim.x) {
    const int tile = unit % tiles, split = unit / tiles;
    const woq_detail::LaneWork<T, kCodes, kColTiles> lw(p, tile, split);
    const int g = lw.g, t = lw.t;
    const int64_t col = lw.col;
    const T* const(&x_row)[kColTiles] = lw.x_row;
    const int blocks = lw.blocks, begin = lw.begin, end = lw.end;

    const auto group_of_step = [&](int step) -> int {
      if constexpr (kActOrder) {
        return __ldg(p.g_idx + static_cast<int64_t>(step) * kStepRows);
      } else {
        return step >> step_shift;
      }
    };
    const auto meta_at = [&](int gi) { return static_cast<int64_t>(gi) * n + col; };
    if (begin < end) {  // the meta of the warp's first groups into L1 (groups are monotone in the step)
      const int first = group_of_step(begin);
      const int last = min(group_of_step(end - 1), first + kPrefetchGroups - 1);
      for (int gi = first; gi <= last; ++gi) {
        asm volatile("prefetch.global.L1 [%0];" ::"l"(p.zeros + meta_at(gi)));
        asm volatile("prefetch.global.L1 [%0];" ::"l"(scales + meta_at(gi)));
      }
    }

    // One batch of steps [s, s + kBatch): activations, groups and the groups' meta, in registers.
    struct Batch {
      uint32_t xr[kBatch][kColTiles][kXRegs];
      uint32_t zeros[kBatch];
      uint2 scales[kBatch];
      int group[kActOrder ? kBatch : 1];  // act-order: the steps' groups (else a shift of the step)
      int next_group[kActOrder ? kBatch : 1];
    };
    // `groups`: act-order, the batch's groups (loaded with the batch before); `gate`: a zero that orders these
    // loads after the previous batch's arrival.
    const auto load_batch = [&](Batch& b, int s, const int (&groups)[kBatch], int gate) {
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int step = s + u;
        const int64_t block = static_cast<int64_t>(step) * 4 + t;
        const bool ok = step < end && block < blocks;
#pragma unroll
        for (int j = 0; j < kColTiles; ++j)
          woq_detail::load_x<kCodes>(b.xr[u][j], x_row[j], block * kCodes + gate, ok);
        const int group = step < end ? (kActOrder ? groups[u] : step >> step_shift) : 0;
        if constexpr (kActOrder) b.group[u] = group;
        const int64_t meta = meta_at(group) + gate;
        b.zeros[u] = step < end ? __ldg(reinterpret_cast<const uint32_t*>(p.zeros + meta)) : 0u;
        b.scales[u] = step < end ? __ldg(reinterpret_cast<const uint2*>(scales + meta)) : make_uint2(0, 0);
        if constexpr (kActOrder) b.next_group[u] = step + kBatch < end ? group_of_step(step + kBatch + gate) : 0;
      }
    };

    woq_detail::GroupedSums<Traits, T, kColTiles> sums;
    const int batches = end > begin ? (end - begin + kBatch - 1) / kBatch : 0;
    const int first_stage = consumed;
    // Runs batch i (in `cur`) after issuing batch i + 1 (into `next`).
    const auto run = [&](Batch& cur, Batch& next, int i) {
      const int s = begin + i * kBatch;
      // Unconditionally (past the last batch every load is predicated off): ptxas only knows the current batch
      // has arrived after this wait if no path skips it.
      {
        const int gate = static_cast<int>(cur.xr[0][0][0] & static_cast<uint32_t>(p.zero));
        int groups[kBatch];
#pragma unroll
        for (int u = 0; u < kBatch; ++u) groups[u] = kActOrder ? cur.next_group[u] : 0;
        load_batch(next, s + kBatch, groups, gate);
      }
      const int q = first_stage + (i * kBatch) / kWoqTmaStageSteps;
      if ((i * kBatch) % kWoqTmaStageSteps == 0) mbarrier_wait(&full[warp][q % kWoqTmaStages], (q / kWoqTmaStages) & 1);
      const uint32_t stage = ring + (q % kWoqTmaStages) * kWoqTmaStageBytes;
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        if (s + u < end) {
          const int row = 4 * ((i * kBatch + u) % kWoqTmaStageSteps) + t;
          const uint4 raw[1] = {load_shared_16(stage + row * 128 + ((g ^ (row & 7)) << 4))};
          const auto meta = [&](int, uint32_t& zeros, uint2& group_scales) {
            zeros = cur.zeros[u];
            group_scales = cur.scales[u];
          };
          sums.step(kActOrder ? cur.group[kActOrder ? u : 0] : (s + u) >> step_shift, meta, raw, cur.xr[u]);
        }
      }
      // The stage is read: the producer may reuse its slot.
      if (((i + 1) * kBatch) % kWoqTmaStageSteps == 0 || i + 1 == batches) {
        __syncwarp();
        consumed = q + 1;
        if (lane == 0) {
          fence_proxy_async_shared();
          produce();
        }
      }
    };

    Batch b0, b1;
    if (batches > 0) {
      int groups[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) groups[u] = kActOrder && begin + u < end ? group_of_step(begin + u) : 0;
      load_batch(b0, begin, groups, 0);
    }
    for (int i = 0; i < batches; i += 2) {
      run(b0, b1, i);
      if (i + 1 < batches) run(b1, b0, i + 1);
    }
    sums.flush();
    woq_detail::finish<T, kColTiles>(sums.acc, p, tile, split);
    __syncthreads();  // the reduction's shared memory is reused by the next unit
  }
}

}  // namespace tpq::kernels
