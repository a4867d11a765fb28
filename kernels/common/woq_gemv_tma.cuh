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
inline constexpr int kWoqTmaStageRows = 4 * kWoqTmaStageSteps;                // word rows per stage (one per block)
inline constexpr int kWoqTmaStageBytes = kWoqTmaStageRows * kWoqTileCols * 4;  // 4 KB of weights
inline constexpr int kWoqTmaStages = 3;
inline constexpr int kWoqTmaXBox = 256;  // activations per row of one x box (the most a box dimension takes)

// The activations of one stage: 4 · kCodes per step.
constexpr int woq_tma_stage_x(int codes) { return kWoqTmaStageSteps * 4 * codes; }
// Rows of x the stages hold for m rows of M (one launch covers at most 16).
constexpr int woq_tma_x_rows(int m) { return m < 16 ? m : 16; }
// Bytes of one warp stage's activations, 128-byte aligned.
constexpr int woq_tma_x_bytes(int codes, int m) { return (woq_tma_x_rows(m) * woq_tma_stage_x(codes) * 2 + 127) / 128 * 128; }
// Dynamic shared memory of one block: the warps' weight rings (aligned to the 1024 bytes of the 128-byte swizzle,
// hence the extra 1 KB), then their activation rings.
constexpr int woq_tma_smem_bytes(int codes, int m) {
  return kWoqWarps * kWoqTmaStages * (kWoqTmaStageBytes + woq_tma_x_bytes(codes, m)) + 1024;
}

template <class Traits, typename T, int kColTiles, bool kActOrder>
__global__ void __launch_bounds__(kWoqWarps * 32, 2)
    woq_gemv_tma_kernel(const __grid_constant__ WoqGemvParams p) {
  static_assert(Traits::kWords == 1, "one word per block: a step is 4 word rows");
  constexpr int kCodes = Traits::kCodes;
  constexpr int kXRegs = kCodes / 2;
  constexpr int kStepRows = 4 * kCodes;
  constexpr int kStepRowsLog2 = kStepRows == 16 ? 4 : kStepRows == 32 ? 5 : kStepRows == 64 ? 6 : 7;
  static_assert((1 << kStepRowsLog2) == kStepRows, "steps of 16, 32, 64 or 128 rows");
  constexpr int kStageX = woq_tma_stage_x(kCodes);
  constexpr int kXBoxes = (kStageX + kWoqTmaXBox - 1) / kWoqTmaXBox;
  constexpr int kXBox = kStageX / kXBoxes;
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
  const int x_rows = woq_tma_x_rows(p.m);
  const int x_stage_bytes = woq_tma_x_bytes(kCodes, p.m);
  const uint32_t stage_bytes = kWoqTmaStageBytes + x_rows * kStageX * 2;

  // The warp's rings, as shared-memory addresses (so that their reads are LDS, not generic loads that ptxas would
  // track with the global ones): weights aligned to the swizzle's 1024 bytes, then activations.
  const uint32_t base = (shared_address(tma_smem) + 1023u) & ~1023u;
  const uint32_t w_ring = base + warp * kWoqTmaStages * kWoqTmaStageBytes;
  const uint32_t x_ring = base + kWoqWarps * kWoqTmaStages * kWoqTmaStageBytes + warp * kWoqTmaStages * x_stage_bytes;

  // The producer (lane 0): the warp's stages over the block's units in order, kStages ahead of the consumer. A
  // stage is the weight box of its 8 steps plus the activation boxes of the same K range (all rows of M).
  int produced = 0, consumed = 0;  // stages issued / read by the warp, over all its units
  int prod_unit = blockIdx.x, prod_stage = 0, prod_begin = 0, prod_end = 0;
  const auto warp_steps = [&](int unit, int& begin, int& end) {
    const woq_detail::LaneWork<T, kCodes, kColTiles> lw(p, unit % tiles, unit / tiles);
    begin = lw.begin;
    end = lw.end;
  };
  if (prod_unit < units) warp_steps(prod_unit, prod_begin, prod_end);
  const auto produce = [&]() {
    while (produced - consumed < kWoqTmaStages && prod_unit < units) {
      if (prod_begin + prod_stage * kWoqTmaStageSteps < prod_end) {
        const int slot = produced % kWoqTmaStages;
        const int step0 = prod_begin + prod_stage * kWoqTmaStageSteps;
        uint64_t* bar = &full[warp][slot];
        mbarrier_expect_bytes(bar, stage_bytes);
        tma_load_2d(w_ring + slot * kWoqTmaStageBytes, &p.qweight_map, (prod_unit % tiles) * kWoqTileCols, 4 * step0,
                    bar);
#pragma unroll
        for (int b = 0; b < kXBoxes; ++b) {
          tma_load_2d(x_ring + slot * x_stage_bytes + b * kXBox * 2 * x_rows, &p.x_map, step0 * kStepRows + b * kXBox,
                      0, bar);
        }
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
  }
  __syncwarp();
  pdl_wait();  // x comes with every stage, so the first stages wait too
  if (lane == 0) produce();

  for (int unit = blockIdx.x; unit < units; unit += gridDim.x) {
    const int tile = unit % tiles, split = unit / tiles;
    const woq_detail::LaneWork<T, kCodes, kColTiles> lw(p, tile, split);
    const int g = lw.g, t = lw.t;
    const int64_t col = lw.col;
    const int begin = lw.begin, end = lw.end;

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
    // A group's zero points and scales are loaded when the warp enters it (the only global loads of the loop).
    const auto load_meta = [&](int gi, uint32_t& zeros, uint2& group_scales) {
      zeros = __ldg(reinterpret_cast<const uint32_t*>(p.zeros + meta_at(gi)));
      group_scales = __ldg(reinterpret_cast<const uint2*>(scales + meta_at(gi)));
    };
    // The lane's x rows in the stage (clamped to the last row of M, as LaneWork's), byte offsets.
    uint32_t x_off[kColTiles];
#pragma unroll
    for (int j = 0; j < kColTiles; ++j) x_off[j] = min(j * 8 + g, p.m - 1) * (kXBox * 2);

    woq_detail::GroupedSums<Traits, T, kColTiles> sums;
    for (int s = begin; s < end; s += kWoqTmaStageSteps) {
      const int q = consumed;
      mbarrier_wait(&full[warp][q % kWoqTmaStages], (q / kWoqTmaStages) & 1);
      const uint32_t w_stage = w_ring + (q % kWoqTmaStages) * kWoqTmaStageBytes;
      const uint32_t x_stage = x_ring + (q % kWoqTmaStages) * x_stage_bytes;
      int act_group[kActOrder ? kWoqTmaStageSteps : 1];  // act-order: the steps' groups, loaded together
      if constexpr (kActOrder) {
#pragma unroll
        for (int u = 0; u < kWoqTmaStageSteps; ++u) act_group[u] = s + u < end ? group_of_step(s + u) : 0;
      }
#pragma unroll
      for (int u = 0; u < kWoqTmaStageSteps; ++u) {
        if (s + u < end) {
          const int row = 4 * u + t;
          const uint4 raw[1] = {load_shared_16(w_stage + row * 128 + ((g ^ (row & 7)) << 4))};
          // Activations [box][row of M][kXBox]: the lane's kCodes at element row · kCodes of the stage.
          const int e = row * kCodes;
          const uint32_t x_at = x_stage + (e / kXBox) * (kXBox * 2 * x_rows) + (e % kXBox) * 2;
          uint32_t xr[kColTiles][kXRegs];
#pragma unroll
          for (int j = 0; j < kColTiles; ++j) load_shared_regs<kXRegs>(xr[j], x_at + x_off[j]);
          sums.step(kActOrder ? act_group[kActOrder ? u : 0] : (s + u) >> step_shift, load_meta, raw, xr);
        }
      }
      // The stage is read: the producer may reuse its slot.
      __syncwarp();
      consumed = q + 1;
      if (lane == 0) {
        fence_proxy_async_shared();
        produce();
      }
    }
    sums.flush();
    woq_detail::finish<T, kColTiles>(sums.acc, p, tile, split);
    __syncthreads();  // the reduction's shared memory is reused by the next unit
  }
}

}  // namespace tpq::kernels
