#pragma once
// Weight-only quantized GEMV for decode-sized M: y[m, n] = x[m, rows] · W[n, rows]ᵀ (+ bias), bf16 or f16
// activations, f32 accumulation, W given as packed integer codes with per-group zero points and scales
// (woq_params.hpp) and read through a format's kernel traits (e.g. kernels/gptq/kernel_traits.cuh).
//
// The shape follows the dense GEMV (dense_gemv.cuh): at small M the time is the time to stream the packed weight,
// so the kernel is built around its loads.
//  - A block owns a tile of 32 output columns; its 8 warps split K. Lane (g, t) owns columns 4g..4g+3 of the tile
//    and, per step, block of codes 4·step + t: one 16-byte load per packed word reads that block for its 4
//    columns, and a warp's load covers 4 blocks × 32 columns = 4 full 128-byte lines.
//  - Many steps of loads are in flight per lane (the general kernel: kUnroll steps issued before the first is used;
//    the grouped one: double-buffered batches). The weights, zero points, scales and group indices are constant
//    during a forward, so the first of them are requested before the programmatic-dependent-launch wait.
//  - Codes become bf16/f16 pairs (woq_decode.cuh) and go through m16n8k16 tensor-core MMAs: W is the A operand (16
//    rows = the lane's columns 0/1, then 2/3, for lanes g = 0..7), x the B operand (8 rows of M per column tile; a
//    second tile for M in 9..16). A dot product does not care in which order K is
//    summed, so each lane feeds its own block's codes as the K positions the fragment layout gives it and reads x
//    in the same order: no shuffles, and M up to 16 costs almost nothing more than M = 1.
//  - Two kernels. woq_gemv_grouped_kernel (the usual one) feeds the codes themselves to the MMA and applies zero
//    points and scales once per group to the sums; it needs every step (4 blocks) in one group. woq_gemv_kernel
//    (the general one) decodes w = s·(q − z) per pair, so it only needs every block in one group (3-bit g64,
//    2-bit g32), at about twice the instructions per weight.
//  - The warps' sums meet in shared memory; when there are fewer tiles than SMs, blocks also split K (blockIdx.y)
//    and the last block of a tile adds the partial sums in split order (deterministic) and resets its counter.
// Requirements (checked by the host): n % 4 == 0, rows a multiple of the block, 16-byte aligned x and qweight
// (8-byte at 8 bits), 1 <= m <= 8 · kColTiles, every block (grouped: every step) inside one group.
//
// Measured on an H200 (bf16, graph-timed): the grouped kernel streams 4-bit g128 at about 29–52 % of the read
// bandwidth at M = 1 (llama8b o 29 %, gate_up 52 %), 1.9–2.4x cuBLAS bf16; 8-bit at 43–67 %. A block takes about
// 1 µs per batch of 4 steps plus about 2.5 µs that does not shrink with fewer batches; two persistent variants
// (the next unit prefetched into registers, or into L2) were slower (git history: "Experiment: persistent grouped
// GEMV", benchmarks/results/README.md).
#include <cstdint>

#include "kernels/common/float_convert.cuh"
#include "kernels/common/ptx_ops.cuh"
#include "kernels/common/split_k.cuh"
#include "kernels/common/woq_decode.cuh"
#include "kernels/common/woq_params.hpp"

namespace tpq::kernels {

namespace woq_detail {

// Halves i and j (both of the same parity) of the lane's activations, as one pair.
template <int kRegs>
__device__ __forceinline__ uint32_t x_pair(const uint32_t (&xr)[kRegs], int i, int j) {
  const uint32_t sel = (i & 1) ? 0x7632u : 0x5410u;
  return __byte_perm(xr[i >> 1], xr[j >> 1], sel);
}

// The lane's kCodes activations of one x row starting at element `k0` (16-byte aligned for kCodes >= 8).
template <int kCodes, typename T>
__device__ __forceinline__ void load_x(uint32_t (&xr)[kCodes / 2], const T* row, int64_t k0, bool ok) {
  if constexpr (kCodes >= 8) {
#pragma unroll
    for (int c = 0; c < kCodes / 8; ++c) {
      const uint4 v = ok ? load_cached_16(row + k0 + 8 * c) : make_uint4(0, 0, 0, 0);
      xr[4 * c + 0] = v.x;
      xr[4 * c + 1] = v.y;
      xr[4 * c + 2] = v.z;
      xr[4 * c + 3] = v.w;
    }
  } else {
    static_assert(kCodes == 4, "blocks of 4, 8, 16 or 32 codes");
    const uint2 v = ok ? __ldg(reinterpret_cast<const uint2*>(row + k0)) : make_uint2(0, 0);
    xr[0] = v.x;
    xr[1] = v.y;
  }
}

// What both GEMVs derive from the launch before their loops: the lane's place in the MMA fragments (g, t), its 4
// columns (clamped to the last 4 past n: real memory, results never stored), its x rows (clamped to the last row
// past m likewise), and the warp's range of steps [begin, end) within the block's split of K.
template <typename T, int kCodes, int kColTiles>
struct LaneWork {
  int lane, warp, g, t;
  int64_t col;
  const T* x_row[kColTiles];
  int blocks, begin, end;

  __device__ __forceinline__ explicit LaneWork(const WoqGemvParams& p) {
    lane = threadIdx.x & 31;
    warp = threadIdx.x >> 5;
    g = lane >> 2;
    t = lane & 3;
    col = min(static_cast<int>(blockIdx.x) * kWoqTileCols + 4 * g, p.n - 4);
    const T* x = static_cast<const T*>(p.x);
#pragma unroll
    for (int j = 0; j < kColTiles; ++j) x_row[j] = x + static_cast<int64_t>(min(j * 8 + g, p.m - 1)) * p.rows;
    blocks = p.rows / kCodes;
    const int steps = (blocks + 3) >> 2;
    const int split_begin = blockIdx.y * p.steps_per_split;
    const int split_end = min(steps, split_begin + p.steps_per_split);
    const int per_warp = (split_end - split_begin + kWoqWarps - 1) / kWoqWarps;
    begin = split_begin + warp * per_warp;
    end = min(split_end, begin + per_warp);
  }
};

// The end of both GEMVs: sum the warps' K ranges (and the split-K blocks'), add the bias, store.
template <typename T, int kColTiles>
__device__ __forceinline__ void finish(const float (&acc)[kColTiles][2][4], const WoqGemvParams& p) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int tile = blockIdx.x;
  const int m = p.m, n = p.n;
  // Layout [warp][value][lane] keeps both the writes and the reads conflict-free.
  constexpr int kValues = kColTiles * 8;
  __shared__ float red[kWoqWarps][kValues][32];
#pragma unroll
  for (int j = 0; j < kColTiles; ++j) {
#pragma unroll
    for (int tr = 0; tr < 2; ++tr) {
#pragma unroll
      for (int e = 0; e < 4; ++e) red[warp][j * 8 + tr * 4 + e][lane] = acc[j][tr][e];
    }
  }
  __syncthreads();

  // Thread i finishes values (i / 32) + kWoqWarps·r of lane i % 32: C fragment value e of row tile tr, column
  // tile j.
  constexpr int kPerThread = kValues / kWoqWarps;
  static_assert(kValues % kWoqWarps == 0, "every thread finishes the same number of values");
  float v[kPerThread];
  int out_n[kPerThread], out_m[kPerThread];
  bool active[kPerThread];
#pragma unroll
  for (int r = 0; r < kPerThread; ++r) {
    const int vi = (threadIdx.x >> 5) + kWoqWarps * r, vl = threadIdx.x & 31;
    v[r] = 0.0f;
#pragma unroll
    for (int wi = 0; wi < kWoqWarps; ++wi) v[r] += red[wi][vi][vl];
    const int j = vi >> 3, tr = (vi >> 2) & 1, e = vi & 3;
    out_n[r] = tile * kWoqTileCols + 4 * (vl >> 2) + 2 * tr + (e >> 1);  // rows g / g+8 = columns 2tr / 2tr+1
    out_m[r] = j * 8 + 2 * (vl & 3) + (e & 1);
    active[r] = out_n[r] < n && out_m[r] < m;
  }
  const T* bias = static_cast<const T*>(p.bias);
  T* y = static_cast<T*>(p.y);

  finish_tile(v, active, out_m, out_n, p.partials, p.tile_counters, tile, blockIdx.y, p.splits, m, n,
              [&](float sum, int r) {
                if (bias != nullptr) sum += to_float(bias[out_n[r]]);
                y[static_cast<int64_t>(out_m[r]) * n + out_n[r]] = from_float<T>(sum);
              });
}

}  // namespace woq_detail

template <class Traits, typename T, int kColTiles, int kUnroll>
__global__ void __launch_bounds__(kWoqWarps * 32) woq_gemv_kernel(const WoqGemvParams p) {
  using Decoder = PairDecoder<T, Traits::kBits>;
  constexpr int kCodes = Traits::kCodes;
  constexpr int kWords = Traits::kWords;
  constexpr int kXRegs = kCodes / 2;
  pdl_launch_dependents();

  const woq_detail::LaneWork<T, kCodes, kColTiles> lw(p);
  const int t = lw.t;
  const int n = p.n;
  const int64_t col = lw.col;
  const T* const(&x_row)[kColTiles] = lw.x_row;
  const T* scales = static_cast<const T*>(p.scales);
  const int blocks = lw.blocks, begin = lw.begin, end = lw.end;

  float acc[kColTiles][2][4] = {};
  bool waited = false;

  for (int s = begin; s < end; s += kUnroll) {
    uint4 raw[kUnroll][kWords];
    typename Decoder::Column cols[kUnroll][4];
    bool ok[kUnroll];
    int64_t k0[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t block = static_cast<int64_t>(s + u) * 4 + t;
      ok[u] = (s + u < end) && block < blocks;
      k0[u] = block * kCodes;
#pragma unroll
      for (int w = 0; w < kWords; ++w)
        raw[u][w] = load_stream_16_if(Traits::word(p.qweight, n, ok[u] ? block : 0, w, col), ok[u]);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      int64_t group = 0;
      if (ok[u]) {
        group = p.g_idx != nullptr    ? __ldg(p.g_idx + k0[u])
                : p.group_shift >= 0 ? k0[u] >> p.group_shift
                                     : k0[u] / p.group_size;
      }
      const uint32_t z4 = __ldg(reinterpret_cast<const uint32_t*>(p.zeros + group * n + col));
      const uint2 s4 = __ldg(reinterpret_cast<const uint2*>(scales + group * n + col));
      const uint32_t sw[2] = {s4.x, s4.y};
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const uint16_t sb = static_cast<uint16_t>(sw[c >> 1] >> (16 * (c & 1)));
        cols[u][c] = Decoder::column((z4 >> (8 * c)) & 0xFFu, reinterpret_cast<const T&>(sb));
      }
    }
    if (!waited) {
      pdl_wait();
      waited = true;
    }
    uint32_t xr[kUnroll][kColTiles][kXRegs];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int j = 0; j < kColTiles; ++j) woq_detail::load_x<kCodes>(xr[u][j], x_row[j], k0[u], ok[u]);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      uint32_t words[4][kWords];
#pragma unroll
      for (int c = 0; c < 4; ++c) {
#pragma unroll
        for (int w = 0; w < kWords; ++w) words[c][w] = component(raw[u][w], c);
      }
#pragma unroll
      for (int q = 0; q < kCodes / 4; ++q) {
        const int p0 = 2 * q, p1 = 2 * q + 1;
        uint32_t b0[kColTiles], b1[kColTiles];
#pragma unroll
        for (int j = 0; j < kColTiles; ++j) {
          b0[j] = woq_detail::x_pair(xr[u][j], p0, p0 + kCodes / 2);
          b1[j] = woq_detail::x_pair(xr[u][j], p1, p1 + kCodes / 2);
        }
#pragma unroll
        for (int tr = 0; tr < 2; ++tr) {
          const int lo = 2 * tr, hi = 2 * tr + 1;
          const uint32_t a0 = Decoder::apply(Traits::pair_bits(words[lo], p0), cols[u][lo]);
          const uint32_t a1 = Decoder::apply(Traits::pair_bits(words[hi], p0), cols[u][hi]);
          const uint32_t a2 = Decoder::apply(Traits::pair_bits(words[lo], p1), cols[u][lo]);
          const uint32_t a3 = Decoder::apply(Traits::pair_bits(words[hi], p1), cols[u][hi]);
#pragma unroll
          for (int j = 0; j < kColTiles; ++j) mma_m16n8k16<T>(acc[j][tr], a0, a1, a2, a3, b0[j], b1[j]);
        }
      }
    }
  }
  if (!waited) pdl_wait();  // warps with no steps still write outputs below

  woq_detail::finish<T, kColTiles>(acc, p);
}

// The grouped GEMV: the same lane layout, loads and MMAs, with fewer instructions per weight and with every warp
// streaming one long, contiguous range of the weight.
//  - The codes enter the MMA as they are, offset by a constant (MagicPlanes: one LOP3 per two weights, plus a shift
//    per word); zero points and scales are applied to the f32 sums once per group: y += s · (Σ x·(q + c) −
//    (c + z) · Σ x), with Σ x from one more MMA against ones.
//  - A step (4 blocks of codes × 32 columns) must lie in one group: power-of-two group sizes that are multiples of
//    4 · kCodes (the group of a step is a shift of its index), one group, or act-order rows sorted and padded to
//    whole steps (kActOrder: the group of a step is g_idx at its first row, read once per block into shared
//    memory).
//  - Scheduling (stream-K over warps): the weight is cut into batches of kSteps steps of one 32-column tile, in
//    tile-major order, and warp w of the p.stream_warps takes batches [w·B/W, (w+1)·B/W). Warps never wait for
//    each other while they stream: a warp that covers a whole tile stores its outputs; a warp that covers part of
//    a tile (at most its first and its last) leaves its partial sums in slot 2w (first tile) or 2w + 1 (last
//    tile) of p.partials, and after its last batch counts itself in on the tile's counter (indexed by the tile's
//    first warp); the last of a tile's warps adds the slots up in warp order (deterministic), stores and resets the
//    counter. The fence this needs runs once per warp, after its loads are done.
//  - Double-buffered batches: the loads of batch i + 1 (weights, the zero points and scales of its first group,
//    activations) are issued before batch i is computed, also across tile boundaries. Whole batches run without
//    predicates on pointers that advance by a constant stride; only a tile's last, partial batch checks its blocks.
// The host (woq_kernels.cu) sizes the grid: stream_warps <= B, two slots of kStreamSlotFloats(kColTiles) floats and
// one counter per warp.
template <class Traits, typename T, int kColTiles, int kSteps, bool kActOrder>
__global__ void __launch_bounds__(kWoqWarps * 32, (Traits::kWords == 1 ? 16 : 8) / kWoqWarps)  // 16 warps/SM (3-bit 8)
    woq_gemv_grouped_kernel(const WoqGemvParams p) {
  using Planes = MagicPlanes<T, Traits::kBits>;
  constexpr int kCodes = Traits::kCodes;
  constexpr int kWords = Traits::kWords;
  constexpr int kXRegs = kCodes / 2;
  constexpr int kPlanes = Planes::kPlanes;
  constexpr int kStepRows = 4 * kCodes;
  constexpr int kStepRowsLog2 = kStepRows == 16 ? 4 : kStepRows == 32 ? 5 : kStepRows == 64 ? 6 : 7;
  static_assert((1 << kStepRowsLog2) == kStepRows, "steps of 16, 32, 64 or 128 rows");
  constexpr int kSlotFloats = woq_stream_slot_floats(kColTiles);
  pdl_launch_dependents();

  const int lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int n = p.n, m = p.m;
  const int blocks = p.rows / kCodes;
  const int steps = (blocks + 3) >> 2;
  const int tile_batches = (steps + kSteps - 1) / kSteps;
  const int full_batches = (blocks >> 2) / kSteps;  // batches whose blocks all exist
  const int total = (n + kWoqTileCols - 1) / kWoqTileCols * tile_batches;  // the host checks it fits
  const int warps = p.stream_warps;
  const int warp = blockIdx.x * kWoqWarps + (threadIdx.x >> 5);
  const int step_shift = p.group_shift - kStepRowsLog2;  // regular groups (the host checks it is >= 0)

  extern __shared__ int step_groups[];  // kActOrder: the group of every step
  if constexpr (kActOrder) {
    for (int s = threadIdx.x; s < steps; s += blockDim.x) step_groups[s] = __ldg(p.g_idx + static_cast<int64_t>(s) * kStepRows);
    __syncthreads();
  }
  if (warp >= warps) return;

  // The warp's batches [b_begin, b_end) (batch b: tile b / tile_batches, batch b % tile_batches of it).
  const auto first_batch = [&](int w) { return static_cast<int>(static_cast<int64_t>(w) * total / warps); };
  const int b_begin = first_batch(warp), b_end = first_batch(warp + 1);
  const int first_tile = b_begin / tile_batches;

  // The lane's x rows, as element offsets (rows clamped to the last past m; 32 bits: the host keeps 16 rows < 2^31).
  int x_off[kColTiles];
#pragma unroll
  for (int j = 0; j < kColTiles; ++j) x_off[j] = min(j * 8 + g, m - 1) * p.rows;
  const T* scales = static_cast<const T*>(p.scales);
  const int64_t w_step = static_cast<int64_t>(4) * kWords * n;  // one step further down the packed rows
  // The lane's 4 columns of a tile (clamped to the last 4 past n: real memory, results never stored).
  const auto col_of = [&](int tile) { return static_cast<int64_t>(min(tile * kWoqTileCols + 4 * g, n - 4)); };
  const auto group_of_step = [&](int step) -> int {
    if constexpr (kActOrder) {
      return step_groups[step];
    } else {
      return step >> step_shift;
    }
  };

  float acc[kColTiles][2][4] = {};
  float gacc[kPlanes][kColTiles][2][4] = {};
  float xsum[kColTiles][4] = {};
  int group = -1;
  uint32_t group_zeros = 0;
  uint2 group_scales = make_uint2(0, 0);

  // Applies the finished group, then starts the next from zero.
  const auto flush = [&]() {
    if (group < 0) return;
    float sc[4], zc[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const uint16_t sb = static_cast<uint16_t>((c < 2 ? group_scales.x : group_scales.y) >> (16 * (c & 1)));
      sc[c] = to_float(reinterpret_cast<const T&>(sb));
      zc[c] = Planes::kOffset + static_cast<float>((group_zeros >> (8 * c)) & 0xFFu);
    }
#pragma unroll
    for (int j = 0; j < kColTiles; ++j) {
#pragma unroll
      for (int tr = 0; tr < 2; ++tr) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int c = 2 * tr + (e >> 1);
          float planes[kPlanes];
#pragma unroll
          for (int pl = 0; pl < kPlanes; ++pl) {
            planes[pl] = gacc[pl][j][tr][e];
            gacc[pl][j][tr][e] = 0.0f;
          }
          const float dot = fmaf(-zc[c], xsum[j][e & 1], Planes::combine(planes));
          acc[j][tr][e] = fmaf(sc[c], dot, acc[j][tr][e]);
        }
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) xsum[j][e] = 0.0f;
    }
  };

  // Stores a tile's sums (C fragments: value e of row tile tr, column tile j) as y, with the bias.
  const T* bias = static_cast<const T*>(p.bias);
  T* y = static_cast<T*>(p.y);
  const auto store = [&](const float (&v)[kColTiles][2][4], int tile) {
#pragma unroll
    for (int j = 0; j < kColTiles; ++j) {
#pragma unroll
      for (int tr = 0; tr < 2; ++tr) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int out_n = tile * kWoqTileCols + 4 * g + 2 * tr + (e >> 1);  // rows g / g+8: columns 2tr / 2tr+1
          const int out_m = j * 8 + 2 * t + (e & 1);
          if (out_n >= n || out_m >= m) continue;
          float sum = v[j][tr][e];
          if (bias != nullptr) sum += to_float(bias[out_n]);
          y[static_cast<int64_t>(out_m) * n + out_n] = from_float<T>(sum);
        }
      }
    }
  };
  // Slot `slot` of the partial sums: float4 (j, tr) of each lane, lanes adjacent.
  const auto slot_at = [&](int slot, int j, int tr) {
    return reinterpret_cast<float4*>(p.partials + static_cast<int64_t>(slot) * kSlotFloats) + (j * 2 + tr) * 32 + lane;
  };
  // The warp's part of a tile ends: store it if it is the whole tile, else leave it in the tile's slot (2·warp for
  // the warp's first tile, 2·warp + 1 for its last).
  int tile = -1;                 // the tile being computed
  bool tile_from_start = false;  // whether the warp computed it from its first batch
  bool first_of_warp = true;     // whether it is the warp's first tile
  const auto end_tile = [&](bool to_end) {
    flush();
    group = -1;
    if (tile_from_start && to_end) {
      store(acc, tile);
    } else {
      const int slot = 2 * warp + (first_of_warp ? 0 : 1);
#pragma unroll
      for (int j = 0; j < kColTiles; ++j) {
#pragma unroll
        for (int tr = 0; tr < 2; ++tr)
          __stcg(slot_at(slot, j, tr), make_float4(acc[j][tr][0], acc[j][tr][1], acc[j][tr][2], acc[j][tr][3]));
      }
    }
#pragma unroll
    for (int j = 0; j < kColTiles; ++j) {
#pragma unroll
      for (int tr = 0; tr < 2; ++tr) {
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[j][tr][e] = 0.0f;
      }
    }
  };

  // One step: switch groups if needed (warp-uniform; a batch's first group was switched to by start_batch, with
  // the zero points and scales that came with the batch), decode, MMA.
  const auto compute = [&](int step, int64_t col, const uint4 (&raw)[kWords], const uint32_t (&xr)[kColTiles][kXRegs]) {
    const int step_group = group_of_step(step);
    if (step_group != group) {
      flush();
      group = step_group;
      group_zeros = __ldg(reinterpret_cast<const uint32_t*>(p.zeros + static_cast<int64_t>(group) * n + col));
      group_scales = __ldg(reinterpret_cast<const uint2*>(scales + static_cast<int64_t>(group) * n + col));
    }
    uint32_t words[4][kWords];
#pragma unroll
    for (int c = 0; c < 4; ++c) {
#pragma unroll
      for (int w = 0; w < kWords; ++w) words[c][w] = component(raw[w], c);
    }
#pragma unroll
    for (int q = 0; q < kCodes / 4; ++q) {
      const int p0 = 2 * q, p1 = 2 * q + 1;
      uint32_t b0[kColTiles], b1[kColTiles];
#pragma unroll
      for (int j = 0; j < kColTiles; ++j) {
        b0[j] = woq_detail::x_pair(xr[j], p0, p0 + kCodes / 2);
        b1[j] = woq_detail::x_pair(xr[j], p1, p1 + kCodes / 2);
        mma_m16n8k16<T>(xsum[j], Planes::kOnes, Planes::kOnes, Planes::kOnes, Planes::kOnes, b0[j], b1[j]);
      }
#pragma unroll
      for (int tr = 0; tr < 2; ++tr) {
        const int lo = 2 * tr, hi = 2 * tr + 1;
        const uint32_t pair_lo0 = Traits::pair_field(words[lo], p0), pair_hi0 = Traits::pair_field(words[hi], p0);
        const uint32_t pair_lo1 = Traits::pair_field(words[lo], p1), pair_hi1 = Traits::pair_field(words[hi], p1);
#pragma unroll
        for (int pl = 0; pl < kPlanes; ++pl) {
          const uint32_t a0 = Planes::plane(pair_lo0, pl), a1 = Planes::plane(pair_hi0, pl);
          const uint32_t a2 = Planes::plane(pair_lo1, pl), a3 = Planes::plane(pair_hi1, pl);
#pragma unroll
          for (int j = 0; j < kColTiles; ++j) mma_m16n8k16<T>(gacc[pl][j][tr], a0, a1, a2, a3, b0[j], b1[j]);
        }
      }
    }
  };

  // What one batch holds in registers between its loads and its compute.
  struct Batch {
    uint4 raw[kSteps][kWords];
    uint32_t xr[kSteps][kColTiles][kXRegs];
    uint32_t zeros;  // of the group of the batch's first step
    uint2 scales;
  };
  // The next batch to load (tile lt, batch lb of it) and to compute (batch cb of `tile`).
  int lt = first_tile, lb = b_begin - first_tile * tile_batches, cb = lb;
  // The weights of the next batch and its first group's zero points and scales (constant during a forward: may be
  // requested before the programmatic-dependent-launch wait).
  const auto load_weights = [&](Batch& bt) {
    const int64_t col = col_of(lt);
    const int s0 = lb * kSteps;
    if (lb < full_batches) {
      const uint32_t* wp = p.qweight + (static_cast<int64_t>(s0) * 4 + t) * kWords * n + col;
#pragma unroll
      for (int u = 0; u < kSteps; ++u) {
#pragma unroll
        for (int w = 0; w < kWords; ++w) bt.raw[u][w] = load_stream_16(wp + u * w_step + w * n);
      }
    } else {
#pragma unroll
      for (int u = 0; u < kSteps; ++u) {
        const int64_t block = static_cast<int64_t>(s0 + u) * 4 + t;
        const bool ok = block < blocks;
#pragma unroll
        for (int w = 0; w < kWords; ++w)
          bt.raw[u][w] = load_stream_16_if(Traits::word(p.qweight, n, ok ? block : 0, w, col), ok);
      }
    }
    const int64_t meta = static_cast<int64_t>(group_of_step(s0)) * n + col;
    bt.zeros = __ldg(reinterpret_cast<const uint32_t*>(p.zeros + meta));
    bt.scales = __ldg(reinterpret_cast<const uint2*>(scales + meta));
  };
  // Its activations; then on to the batch after it.
  const auto load_rest = [&](Batch& bt) {
    const int s0 = lb * kSteps;
    const bool full = lb < full_batches;
    const int64_t k0 = (static_cast<int64_t>(s0) * 4 + t) * kCodes;
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
      const bool ok = full || (s0 + u) * 4 + t < blocks;
#pragma unroll
      for (int j = 0; j < kColTiles; ++j)
        woq_detail::load_x<kCodes>(bt.xr[u][j], static_cast<const T*>(p.x) + x_off[j], k0 + u * kStepRows, ok);
    }
    if (++lb == tile_batches) {
      lb = 0;
      ++lt;
    }
  };
  // A batch begins: a new tile, and the group of its first step (whose meta came with it). Done before the next
  // batch's loads are issued, so only one batch's meta is in flight.
  const auto start_batch = [&](const Batch& bt) {
    if (tile < 0 || cb == 0) {
      if (tile >= 0) {
        end_tile(true);
        first_of_warp = false;
      }
      tile = tile < 0 ? first_tile : tile + 1;
      tile_from_start = cb == 0;
    }
    const int first_group = group_of_step(cb * kSteps);
    if (first_group != group) {
      flush();
      group = first_group;
      group_zeros = bt.zeros;
      group_scales = bt.scales;
    }
  };
  const auto compute_batch = [&](const Batch& bt) {
    const int64_t col = col_of(tile);
    const int s0 = cb * kSteps;
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
      if (s0 + u >= steps) break;  // past a tile's last step (its last batch only)
      compute(s0 + u, col, bt.raw[u], bt.xr[u]);
    }
    if (++cb == tile_batches) cb = 0;
  };

  // One batch in flight per warp: every global load of a warp shares one scoreboard in the SASS ptxas emits, so
  // the first use of a batch waits for every load issued before it; a second buffer would only add registers.
  Batch ba;
  int left = b_end - b_begin;  // batches not yet computed (at least 1: the host keeps warps <= total)
  load_weights(ba);
  pdl_wait();
  load_rest(ba);
  while (true) {
    start_batch(ba);
    compute_batch(ba);
    if (--left == 0) break;
    load_weights(ba);
    load_rest(ba);
  }
  end_tile(cb == 0);

  // The tiles this warp covered in part (at most its first and its last): count in, and the last warp of a tile
  // adds up the tile's slots in warp order.
  const int last_tile = (b_end - 1) / tile_batches;
  const bool first_part = b_begin % tile_batches != 0 || (last_tile == first_tile && b_end % tile_batches != 0);
  const bool last_part = last_tile != first_tile && b_end % tile_batches != 0;
  if (!first_part && !last_part) return;
  const auto owner = [&](int b) { return static_cast<int>(((static_cast<int64_t>(b) + 1) * warps - 1) / total); };
  __threadfence();
  __syncwarp();
#pragma unroll 1
  for (int i = 0; i < 2; ++i) {
    if (!(i == 0 ? first_part : last_part)) continue;
    const int part_tile = i == 0 ? first_tile : last_tile;
    const int tile_begin = part_tile * tile_batches;
    const int w_first = owner(tile_begin), w_last = owner(tile_begin + tile_batches - 1);
    unsigned arrived = 0;
    if (lane == 0) arrived = atomicAdd(p.tile_counters + w_first, 1u);
    arrived = __shfl_sync(0xFFFFFFFFu, arrived, 0);
    if (arrived != static_cast<unsigned>(w_last - w_first)) continue;
    __threadfence();
    // The tile's warps after the first all start inside it (slot 2w); the first starts inside it only when it
    // starts at the tile's first batch. Slots in batches of kSlotBatch, all loads of a batch in flight at once,
    // added in warp order.
    const int first_slot = 2 * w_first + (first_batch(w_first) == tile_begin ? 0 : 1);
    constexpr int kSlotBatch = 8 / kColTiles;
    float sum[kColTiles][2][4] = {};
#pragma unroll 1
    for (int w0 = w_first; w0 <= w_last; w0 += kSlotBatch) {
      float4 v[kSlotBatch][kColTiles][2];
#pragma unroll
      for (int i = 0; i < kSlotBatch; ++i) {
        const int w = min(w0 + i, w_last);
        const int slot = w == w_first ? first_slot : 2 * w;
#pragma unroll
        for (int j = 0; j < kColTiles; ++j) {
#pragma unroll
          for (int tr = 0; tr < 2; ++tr) v[i][j][tr] = __ldcg(slot_at(slot, j, tr));
        }
      }
#pragma unroll
      for (int i = 0; i < kSlotBatch; ++i) {
        if (w0 + i > w_last) break;
#pragma unroll
        for (int j = 0; j < kColTiles; ++j) {
#pragma unroll
          for (int tr = 0; tr < 2; ++tr) {
            sum[j][tr][0] += v[i][j][tr].x;
            sum[j][tr][1] += v[i][j][tr].y;
            sum[j][tr][2] += v[i][j][tr].z;
            sum[j][tr][3] += v[i][j][tr].w;
          }
        }
      }
    }
    store(sum, part_tile);
    if (lane == 0) p.tile_counters[w_first] = 0;  // ready for the next launch
  }
}

}  // namespace tpq::kernels
