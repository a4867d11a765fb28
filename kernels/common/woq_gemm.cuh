#pragma once
// Weight-only quantized GEMM for mid-size M (a few dozen to a few hundred rows: batched decode, short prefill
// chunks): y[m, n] = x[m, rows] · W[n, rows]ᵀ (+ bias), bf16 or f16, f32 accumulation, W read through a format's
// kernel traits (kernels/gptq/kernel_traits.cuh) as the GEMV reads it (woq_gemv.cuh).
//
// Between the GEMV (M <= 16: one weight stream, the activations from L1) and dequantize + cuBLAS (a bf16 copy of W
// written and read again, four times the packed bytes), this kernel reads the packed weight once per 32 rows of M
// and decodes it in registers:
//  - A block of 8 warps owns 32 rows of M × 256 output columns (each warp one 32-column quad; 4 warps of two quads
//    measured slower, fewer warps to hide latency) and one split of K. A ring of 3 shared-memory stages, filled
//    with cp.async by every thread, holds per stage 16 blocks of codes of the 256 columns (128 rows of K at 4
//    bits), the same rows of x, and the zero points and scales of the groups its steps enter. Copies to shared
//    memory do not occupy the registers' load scoreboard that bounds the GEMV (its batch of loads is waited for as
//    a whole).
//  - Each step (4 blocks of codes) a lane reads its quads' words of block 4·step + t as the GEMV loads them (one
//    16-byte read per quad and word), and the matching kCodes activations of its rows g, g + 8, ... of M: the K order
//    inside an MMA is the lane's own, as in the GEMV, so no shuffles. Codes become bf16/f16 pairs with the scale
//    applied (PairDecoder: w = s · (q − z) rounded once, the dequantize kernel's values), then m16n8k16 MMAs: W as
//    the A operand (16 rows = two of the lane's columns), x as B (8 rows of M per tile, 4 tiles).
//  - Zero points and scales live with the stage; a warp rebuilds its columns' decoders only when a step enters a
//    new group (the loader copies a group's meta only for such steps).
//  - Splits of K (when the tiles alone leave SMs idle) meet through global partial sums in split order
//    (split_k.cuh, deterministic).
// Status (H200, s11): correct on every test, but slower than the GEMV in passes and than dequantize + cuBLASLt on
// most Llama shapes (0.35-0.98x; faster only on llama8b gate_up at M 64-128, 1.04-1.57x), so the host runs it only
// when asked (TPQ_WOQ_GEMM). ncu: a stage (128 rows of K) takes 1.6-2.7 us against about 0.5 us of MMA issue at
// mma.sync rates (0.5 issued warps per scheduler, 2-4 warps per scheduler); and with split-K the SMs sit idle 70 %
// of the launch (llama8b o, M = 32: 32K active of 106K cycles) while the last blocks run the reduction, whose fully
// unrolled 32-value epilogue (most of the kernel's 10K SASS instructions) stalls on instruction fetch and the
// fence. Next: a compact, coalesced split-K reduction; fewer instructions per MMA (decode once per group as the
// grouped GEMV does); then wgmma.
// Requirements (checked by the host): n % 4 == 0, rows % 8 == 0, every step in one group (the grouped GEMV's
// condition), 16-byte aligned x and qweight, 8-byte aligned scales, 4-byte aligned zeros, steps_per_split a multiple
// of a stage's steps, groups · n and rows within int.
#include <cstdint>

#include "kernels/common/float_convert.cuh"
#include "kernels/common/ptx_ops.cuh"
#include "kernels/common/split_k.cuh"
#include "kernels/common/woq_decode.cuh"
#include "kernels/common/woq_gemv.cuh"
#include "kernels/common/woq_params.hpp"

namespace tpq::kernels {

template <class Traits, typename T, bool kActOrder>
__global__ void __launch_bounds__(kWoqGemmWarps * 32, 2) woq_gemm_kernel(const WoqGemvParams p) {
  using Decoder = PairDecoder<T, Traits::kBits>;
  constexpr int kCodes = Traits::kCodes;
  constexpr int kWords = Traits::kWords;
  constexpr int kQuads = kWoqGemmQuads;
  constexpr int kMTiles = kWoqGemmMTiles;
  constexpr int kThreads = kWoqGemmWarps * 32;
  constexpr WoqGemmStage kStage{kCodes, kWords};
  constexpr int kSteps = kStage.steps();
  constexpr int kStepRows = 4 * kCodes;
  static_assert(kStage.w_bytes() % 16 == 0 && kStage.x_bytes() % 16 == 0 && kStage.meta_bytes() % 16 == 0,
                "16-byte aligned regions");
  extern __shared__ __align__(16) unsigned char smem[];
  pdl_launch_dependents();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int m = p.m, n = p.n, rows = p.rows;
  const int m0 = static_cast<int>(blockIdx.x) * kWoqGemmRows;
  const int n0 = static_cast<int>(blockIdx.y) * kWoqGemmCols;
  const int blocks = rows / kCodes;
  const int steps = (blocks + 3) >> 2;
  const int split_begin = static_cast<int>(blockIdx.z) * p.steps_per_split;
  const int split_end = min(steps, split_begin + p.steps_per_split);
  const int stages = (split_end - split_begin + kSteps - 1) / kSteps;
  const T* x = static_cast<const T*>(p.x);
  const T* scales = static_cast<const T*>(p.scales);

  // Stage slot s: [W rows][x rows][meta per step][group index per step].
  const auto w_of = [&](int s) { return smem + s * kStage.bytes(); };
  const auto x_of = [&](int s) { return w_of(s) + kStage.w_bytes(); };
  const auto meta_of = [&](int s) { return x_of(s) + kStage.x_bytes(); };
  const auto gid_of = [&](int s) { return reinterpret_cast<int*>(meta_of(s) + kStage.meta_bytes()); };

  const woq_detail::StepGroups<kCodes, kActOrder> group_of(p);

  // kRows rows of kChunksPerRow 16-byte chunks into `dst` (rows `row_bytes` apart), each thread its share:
  // source(row, chunk, ok) gives a chunk's address and whether it exists (else zeros are written).
  const auto copy_rows = [&]<int kRows, int kChunksPerRow>(unsigned char* dst, int row_bytes, const auto& source) {
    constexpr int kChunks = kRows * kChunksPerRow;
    static_assert(kChunks % kThreads == 0, "whole rounds of copies");
#pragma unroll
    for (int r = 0; r < kChunks / kThreads; ++r) {
      const int c = threadIdx.x + r * kThreads;
      const int row = c / kChunksPerRow, chunk = c % kChunksPerRow;
      bool ok = false;
      const void* src = source(row, chunk, ok);
      cp_async<16>(dst + row * row_bytes + chunk * 16, src, ok);
    }
  };

  // The weights and meta of stage `si` of the split into slot `slot` (constant during a forward: may run before the
  // programmatic-dependent-launch wait). Words past the last block or column are zeros (their activations are too).
  const auto load_weights = [&](int si, int slot) {
    const int step0 = split_begin + si * kSteps;
    constexpr int kChunksPerRow = kWoqGemmCols / 4;
    copy_rows.template operator()<kStage.blocks() * kWords, kChunksPerRow>(
        w_of(slot), kStage.w_row_bytes(), [&](int row, int chunk, bool& ok) -> const void* {
          const int block = step0 * 4 + row / kWords, word = row % kWords;
          const int col = n0 + 4 * chunk;
          ok = block < blocks && col < n;
          return ok ? p.qweight + (static_cast<int64_t>(block) * kWords + word) * n + col : p.qweight;
        });
    // Meta: a group's zero points (threads 0..63: 4 columns each) and scales (64..127) for every step that enters
    // a group the step before it (in this stage) was not in.
    static_assert(kThreads >= 2 * kChunksPerRow, "one meta copy per thread");
    unsigned char* meta = meta_of(slot);
    int* gid = gid_of(slot);
    const int mc = threadIdx.x % kChunksPerRow;
    const int mcol = n0 + 4 * mc;
    const bool mok = mcol < n;
    int previous = -1;
#pragma unroll
    for (int i = 0; i < kSteps; ++i) {
      const int step = step0 + i;
      if (step >= split_end) break;
      const int gi = group_of(step);
      if (threadIdx.x == 0) gid[i] = gi;
      if (gi != previous && threadIdx.x < 2 * kChunksPerRow) {
        const int64_t at = static_cast<int64_t>(gi) * n + mcol;
        unsigned char* dst = meta + i * WoqGemmStage::kMetaBytes;
        if (threadIdx.x < kChunksPerRow) {
          cp_async<4>(dst + 4 * mc, mok ? p.zeros + at : p.zeros, mok);
        } else {
          cp_async<8>(dst + kWoqGemmCols + 8 * mc, mok ? scales + at : scales, mok);
        }
      }
      previous = gi;
    }
  };
  // x's rows of the block for stage `si` (after the wait): zeros past m and past the stored rows.
  const auto load_x = [&](int si, int slot) {
    const int k0 = (split_begin + si * kSteps) * kStepRows;
    copy_rows.template operator()<kWoqGemmRows, kStage.rows() * 2 / 16>(
        x_of(slot), kStage.x_row_bytes(), [&](int row, int chunk, bool& ok) -> const void* {
          const int k = k0 + 8 * chunk;
          ok = m0 + row < m && k < rows;
          return ok ? x + static_cast<int64_t>(m0 + row) * rows + k : x;
        });
  };

  float acc[kQuads][kMTiles][2][4] = {};
  typename Decoder::Column cols[kQuads][4];
  int group = -1;
  const int lane_col = warp * (kQuads * kWoqTileCols) + 4 * g;  // the lane's first column in the block, quad 0

  // One stage from slot `slot`: every step of it inside the split.
  const auto compute = [&](int si, int slot) {
    const int step0 = split_begin + si * kSteps;
    const unsigned char* w_smem = w_of(slot);
    const unsigned char* x_smem = x_of(slot);
    const unsigned char* meta = meta_of(slot);
    const int* gid = gid_of(slot);
#pragma unroll
    for (int i = 0; i < kSteps; ++i) {
      if (step0 + i >= split_end) break;
      const int gi = gid[i];
      if (gi != group) {  // warp-uniform; the loader copied this group's meta for step i
        group = gi;
        const unsigned char* mrow = meta + i * WoqGemmStage::kMetaBytes;
#pragma unroll
        for (int qd = 0; qd < kQuads; ++qd) {
          const int cl = lane_col + qd * kWoqTileCols;
          Decoder::columns(*reinterpret_cast<const uint32_t*>(mrow + cl),
                           *reinterpret_cast<const uint2*>(mrow + kWoqGemmCols + 2 * cl), cols[qd]);
        }
      }
      const int block = 4 * i + t;  // within the stage
      uint32_t words[kQuads][4][kWords];
#pragma unroll
      for (int qd = 0; qd < kQuads; ++qd) {
        uint4 raw[kWords];
#pragma unroll
        for (int w = 0; w < kWords; ++w)
          raw[w] = *reinterpret_cast<const uint4*>(w_smem + (block * kWords + w) * kStage.w_row_bytes() +
                                                   (lane_col + qd * kWoqTileCols) * 4);
        woq_detail::split_words(raw, words[qd]);
      }
      uint32_t xr[kMTiles][kCodes / 2];
#pragma unroll
      for (int j = 0; j < kMTiles; ++j) {
        const unsigned char* xp = x_smem + (8 * j + g) * kStage.x_row_bytes() + block * kCodes * 2;
        if constexpr (kCodes >= 8) {
#pragma unroll
          for (int c = 0; c < kCodes / 8; ++c) {
            const uint4 v = *reinterpret_cast<const uint4*>(xp + 16 * c);
            xr[j][4 * c + 0] = v.x;
            xr[j][4 * c + 1] = v.y;
            xr[j][4 * c + 2] = v.z;
            xr[j][4 * c + 3] = v.w;
          }
        } else {
          const uint2 v = *reinterpret_cast<const uint2*>(xp);
          xr[j][0] = v.x;
          xr[j][1] = v.y;
        }
      }
#pragma unroll
      for (int q = 0; q < kCodes / 4; ++q) {
        const int p0 = 2 * q, p1 = 2 * q + 1;
        uint32_t b0[kMTiles], b1[kMTiles];
        woq_detail::x_operands<Traits::kAdjacentPairs, kCodes>(xr, q, b0, b1);
#pragma unroll
        for (int qd = 0; qd < kQuads; ++qd) {
#pragma unroll
          for (int tr = 0; tr < 2; ++tr) {
            const int lo = 2 * tr, hi = 2 * tr + 1;
            const uint32_t a0 = Decoder::apply_field(Traits::pair_field(words[qd][lo], p0), cols[qd][lo]);
            const uint32_t a1 = Decoder::apply_field(Traits::pair_field(words[qd][hi], p0), cols[qd][hi]);
            const uint32_t a2 = Decoder::apply_field(Traits::pair_field(words[qd][lo], p1), cols[qd][lo]);
            const uint32_t a3 = Decoder::apply_field(Traits::pair_field(words[qd][hi], p1), cols[qd][hi]);
#pragma unroll
            for (int j = 0; j < kMTiles; ++j) mma_m16n8k16<T>(acc[qd][j][tr], a0, a1, a2, a3, b0[j], b1[j]);
          }
        }
      }
    }
  };

  // The ring: stages 0 .. kWoqGemmStages - 2 in flight before the first is used; one commit group per stage (the
  // first also holds the weights of the others, copied before the wait).
  constexpr int kRing = kWoqGemmStages;
#pragma unroll
  for (int s = 0; s < kRing - 1; ++s)
    if (s < stages) load_weights(s, s);
  pdl_wait();
#pragma unroll
  for (int s = 0; s < kRing - 1; ++s) {
    if (s < stages) load_x(s, s);
    cp_async_commit();
  }
  for (int si = 0; si < stages; ++si) {
    cp_async_wait<kRing - 2>();
    __syncthreads();  // stage si visible to all; every warp is done with the slot refilled below (stage si - 1)
    const int next = si + kRing - 1;
    if (next < stages) {
      load_weights(next, next % kRing);
      load_x(next, next % kRing);
    }
    cp_async_commit();
    compute(si, si % kRing);
  }
  cp_async_wait<0>();

  // acc[qd][j][tr][e]: column 4g + 2tr + (e >> 1) of quad qd, row 8j + 2t + (e & 1) of M (the C fragment).
  constexpr int kValues = kQuads * kMTiles * 8;
  float v[kValues];
  int out_m[kValues], out_n[kValues];
  bool active[kValues];
#pragma unroll
  for (int qd = 0; qd < kQuads; ++qd) {
#pragma unroll
    for (int j = 0; j < kMTiles; ++j) {
#pragma unroll
      for (int tr = 0; tr < 2; ++tr) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = ((qd * kMTiles + j) * 2 + tr) * 4 + e;
          v[i] = acc[qd][j][tr][e];
          out_n[i] = n0 + lane_col + qd * kWoqTileCols + 2 * tr + (e >> 1);
          out_m[i] = m0 + 8 * j + 2 * t + (e & 1);
          active[i] = out_n[i] < n && out_m[i] < m;
        }
      }
    }
  }
  const T* bias = static_cast<const T*>(p.bias);
  T* y = static_cast<T*>(p.y);
  finish_tile<kThreads, kValues, false>(v, active, out_m, out_n, p.split_k,
                                         static_cast<int>(blockIdx.x + gridDim.x * blockIdx.y),
                                         static_cast<int>(blockIdx.z), m, n, [&](float sum, int i) {
                                           if (bias != nullptr) sum += to_float(bias[out_n[i]]);
                                           y[static_cast<int64_t>(out_m[i]) * n + out_n[i]] = from_float<T>(sum);
                                         });
}

}  // namespace tpq::kernels
