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
//  - kUnroll steps of loads are issued before the first is used; the weights, zero points, scales and group
//    indices are constant during a forward, so they are requested before the programmatic-dependent-launch wait.
//  - Codes become bf16/f16 pairs (woq_decode.cuh) and go through m16n8k16 tensor-core MMAs: W is the A operand (16 rows = the lane's columns 0/1, then 2/3, for lanes g = 0..7), x the B operand
//    (8 rows of M per column tile; a second tile for M in 9..16). A dot product does not care in which order K is
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
// Measured on an H200 (bf16, graph-timed, llama8b shapes): the grouped kernel streams 4-bit g128 at about 35–43 %
// of the read bandwidth at M = 1, 1.7–1.8x cuBLAS bf16. It is bound by instructions issued per weight, not by the
// access pattern (the same loads alone reach about 85 %): the next step is a load-time repack that makes one LOP3
// yield an MMA-ready register with no shifts (Marlin's interleave), and fewer address/predicate instructions.
#include <cstdint>

#include "kernels/common/float_convert.cuh"
#include "kernels/common/ptx_ops.cuh"
#include "kernels/common/woq_decode.cuh"
#include "kernels/common/woq_params.hpp"

namespace tpq::kernels {

namespace woq_detail {

__device__ __forceinline__ uint32_t component(const uint4& v, int c) {
  return c == 0 ? v.x : c == 1 ? v.y : c == 2 ? v.z : v.w;
}

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

// What both GEMVs derive from the thread: the lane's place in the MMA fragments (g, t), its x rows (clamped to the
// last row past m: real memory, results never stored) and the number of blocks of codes along K.
template <typename T, int kCodes, int kColTiles>
struct Lane {
  int warp, g, t, blocks;
  const T* x_row[kColTiles];

  __device__ __forceinline__ explicit Lane(const WoqGemvParams& p) {
    const int lane = threadIdx.x & 31;
    warp = threadIdx.x >> 5;
    g = lane >> 2;
    t = lane & 3;
    blocks = p.rows / kCodes;
    const T* x = static_cast<const T*>(p.x);
#pragma unroll
    for (int j = 0; j < kColTiles; ++j) x_row[j] = x + static_cast<int64_t>(min(j * 8 + g, p.m - 1)) * p.rows;
  }
};

// One unit of work (a tile of 32 columns and a split of K) for one lane: its 4 columns (clamped to the last 4 past
// n, like the rows), and its warp's range of steps [begin, end) within the split, of which [begin, full_end) have
// all 4 blocks.
struct Unit {
  int col, begin, end, full_end;

  template <class L>
  __device__ __forceinline__ Unit(const WoqGemvParams& p, const L& lane, int tile, int split) {
    col = min(tile * kWoqTileCols + 4 * lane.g, p.n - 4);
    const int steps = (lane.blocks + 3) >> 2;
    const int split_begin = split * p.steps_per_split;
    const int split_end = min(steps, split_begin + p.steps_per_split);
    const int per_warp = (split_end - split_begin + kWoqWarps - 1) / kWoqWarps;
    begin = split_begin + lane.warp * per_warp;
    end = min(split_end, begin + per_warp);
    full_end = min(end, lane.blocks >> 2);
  }
};

// The end of a unit of both GEMVs: sum the warps' K ranges (and the split-K blocks'), add the bias, store. The
// shared buffer alternates between units (`parity`), so a block that goes on to its next unit needs no barrier
// besides the one in here: a warp can only write a buffer again once every warp has passed this unit's barrier.
template <typename T, int kColTiles>
__device__ __forceinline__ void finish(const float (&acc)[kColTiles][2][4], const WoqGemvParams& p, int tile,
                                       int split, int parity) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int m = p.m, n = p.n;
  // Layout [warp][value][lane] keeps both the writes and the reads conflict-free.
  constexpr int kValues = kColTiles * 8;
  __shared__ float red_buffers[2][kWoqWarps][kValues][32];
  float(&red)[kWoqWarps][kValues][32] = red_buffers[parity];
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

  if (p.splits == 1) {
#pragma unroll
    for (int r = 0; r < kPerThread; ++r) {
      if (!active[r]) continue;
      float o = v[r];
      if (bias != nullptr) o += to_float(bias[out_n[r]]);
      y[static_cast<int64_t>(out_m[r]) * n + out_n[r]] = from_float<T>(o);
    }
    return;
  }

  // Split-K: publish this block's partial sums, and let the last block of the tile add them up.
#pragma unroll
  for (int r = 0; r < kPerThread; ++r)
    if (active[r]) p.partials[(static_cast<int64_t>(split) * m + out_m[r]) * n + out_n[r]] = v[r];
  __threadfence();
  __syncthreads();
  __shared__ bool is_last;
  if (threadIdx.x == 0) is_last = atomicAdd(&p.tile_counters[tile], 1u) == static_cast<unsigned>(p.splits - 1);
  __syncthreads();
  if (!is_last) return;
  __threadfence();
#pragma unroll
  for (int r = 0; r < kPerThread; ++r) {
    if (!active[r]) continue;
    float sum = 0.0f;
    for (int sp = 0; sp < p.splits; ++sp)
      sum += __ldcg(&p.partials[(static_cast<int64_t>(sp) * m + out_m[r]) * n + out_n[r]]);
    if (bias != nullptr) sum += to_float(bias[out_n[r]]);
    y[static_cast<int64_t>(out_m[r]) * n + out_n[r]] = from_float<T>(sum);
  }
  if (threadIdx.x == 0) p.tile_counters[tile] = 0;  // ready for the next launch
}

}  // namespace woq_detail

template <class Traits, typename T, int kColTiles, int kUnroll>
__global__ void __launch_bounds__(kWoqWarps * 32) woq_gemv_kernel(const WoqGemvParams p) {
  using Decoder = PairDecoder<T, Traits::kBits>;
  constexpr int kCodes = Traits::kCodes;
  constexpr int kWords = Traits::kWords;
  constexpr int kXRegs = kCodes / 2;
  pdl_launch_dependents();

  const woq_detail::Lane<T, kCodes, kColTiles> lane(p);
  const woq_detail::Unit unit(p, lane, blockIdx.x, blockIdx.y);
  const int t = lane.t;
  const int n = p.n;
  const int64_t col = unit.col;
  const T* const(&x_row)[kColTiles] = lane.x_row;
  const T* scales = static_cast<const T*>(p.scales);
  const int blocks = lane.blocks, begin = unit.begin, end = unit.end;

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
        for (int w = 0; w < kWords; ++w) words[c][w] = woq_detail::component(raw[u][w], c);
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

  woq_detail::finish<T, kColTiles>(acc, p, blockIdx.x, blockIdx.y, 0);
}

// The grouped GEMV: the same tiles, loads and MMAs, with fewer instructions per weight, which is what bounds the
// general one at M = 1 (the weight stream needs about 35 weights per cycle per SM on an H200).
//  - The codes enter the MMA as they are, offset by a constant (MagicPlanes: one LOP3 per two weights, plus a shift
//    per word); zero points and scales are applied to the f32 sums once per group: y += s · (Σ x·(q + c) −
//    (c + z) · Σ x), with Σ x from one more MMA against ones.
//  - A step (4 blocks of codes × 32 columns) must lie in one group: power-of-two group sizes that are multiples of
//    4 · kCodes (the group of a step is a shift of its index), one group, or act-order rows sorted and padded to
//    whole steps (kActOrder: the group of a step is g_idx at its first row).
//  - Persistent: the grid is at most the blocks that fit on the GPU at once, and each block runs units of work
//    (tile, split of K) blockIdx.x, blockIdx.x + gridDim.x, ... The first batch of loads of a block's next unit is
//    issued before the current unit's reduction, so the DRAM latency at the start of a unit, and the reduction at
//    its end, are hidden behind the stream (on an H200 they cost about 2.5 µs per non-persistent block).
//  - Double-buffered batches of kSteps steps: the loads of batch i + 1 (weights, activations, act-order groups) are
//    issued before batch i is computed. Batches that reach past the warp's last whole step load with predicates
//    (zeros) and compute the missing steps as zeros, which add nothing.
//  - A group's zero points and scales are loaded when the warp enters the group and used when it leaves it; the
//    warp asks L1 for those of its first kPrefetchGroups groups when it starts a unit.
template <class Traits, typename T, int kColTiles, int kSteps, bool kActOrder>
__global__ void __launch_bounds__(kWoqWarps * 32, (Traits::kWords == 1 ? 16 : 8) / kWoqWarps)  // 16 warps/SM (3-bit 8)
    woq_gemv_grouped_kernel(const WoqGemvParams p) {
  using Planes = MagicPlanes<T, Traits::kBits>;
  using Work = woq_detail::Unit;
  constexpr int kCodes = Traits::kCodes;
  constexpr int kWords = Traits::kWords;
  constexpr int kXRegs = kCodes / 2;
  constexpr int kPlanes = Planes::kPlanes;
  constexpr int kStepRows = 4 * kCodes;
  constexpr int kStepRowsLog2 = kStepRows == 16 ? 4 : kStepRows == 32 ? 5 : kStepRows == 64 ? 6 : 7;
  static_assert((1 << kStepRowsLog2) == kStepRows, "steps of 16, 32, 64 or 128 rows");
  constexpr int kPrefetchGroups = 64;
  pdl_launch_dependents();

  const woq_detail::Lane<T, kCodes, kColTiles> lane(p);
  const int n = p.n;
  const int units = (n + kWoqTileCols - 1) / kWoqTileCols * p.splits;
  const T* scales = static_cast<const T*>(p.scales);
  const int step_shift = p.group_shift - kStepRowsLog2;  // regular groups (the host checks it is >= 0)
  const int64_t w_step = static_cast<int64_t>(4) * kWords * n;

  const auto group_of_step = [&](int step) -> int {
    if constexpr (kActOrder) {
      return __ldg(p.g_idx + static_cast<int64_t>(step) * kStepRows);
    } else {
      return step >> step_shift;
    }
  };

  // What one batch holds in registers between its loads and its compute.
  struct Batch {
    uint4 raw[kSteps][kWords];
    uint32_t xr[kSteps][kColTiles][kXRegs];
    int group[kSteps];  // act-order only
  };
  // Batch [s, s + kSteps) of unit `w`: weights (before the programmatic-dependent-launch wait, when `weights_only`:
  // they do not depend on the previous kernel), activations, groups.
  const auto load_weights = [&](Batch& b, const Work& w, int s) {
    // Word j of the lane's block in step s: qweight + ((4s + t) · kWords + j) · n + col.
    if (s + kSteps <= w.full_end) {
      const uint32_t* wp = p.qweight + (static_cast<int64_t>(s) * 4 + lane.t) * kWords * n + w.col;
#pragma unroll
      for (int u = 0; u < kSteps; ++u) {
#pragma unroll
        for (int j = 0; j < kWords; ++j) b.raw[u][j] = load_stream_16(wp + u * w_step + j * n);
      }
    } else {
#pragma unroll
      for (int u = 0; u < kSteps; ++u) {
        const int64_t block = static_cast<int64_t>(s + u) * 4 + lane.t;
        const bool ok = s + u < w.end && block < lane.blocks;
#pragma unroll
        for (int j = 0; j < kWords; ++j)
          b.raw[u][j] = load_stream_16_if(Traits::word(p.qweight, n, ok ? block : 0, j, w.col), ok);
      }
    }
  };
  const auto load_rest = [&](Batch& b, const Work& w, int s) {
    if (s + kSteps <= w.full_end) {
      const int64_t k0 = (static_cast<int64_t>(s) * 4 + lane.t) * kCodes;
#pragma unroll
      for (int u = 0; u < kSteps; ++u) {
#pragma unroll
        for (int j = 0; j < kColTiles; ++j) woq_detail::load_x<kCodes>(b.xr[u][j], lane.x_row[j], k0 + u * kStepRows, true);
        if constexpr (kActOrder) b.group[u] = group_of_step(s + u);
      }
    } else {
#pragma unroll
      for (int u = 0; u < kSteps; ++u) {
        const int64_t block = static_cast<int64_t>(s + u) * 4 + lane.t;
        const bool ok = s + u < w.end && block < lane.blocks;
#pragma unroll
        for (int j = 0; j < kColTiles; ++j) woq_detail::load_x<kCodes>(b.xr[u][j], lane.x_row[j], block * kCodes, ok);
        if constexpr (kActOrder) b.group[u] = group_of_step(min(s + u, w.end - 1));
      }
    }
  };

  float acc[kColTiles][2][4];
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

  // One step of unit `w`: switch groups if needed (warp-uniform), decode, MMA. Steps past the warp's range (in a
  // predicated batch) keep the last step's group and add zeros.
  const auto compute = [&](const Work& w, int step, int act_group, const uint4 (&raw)[kWords],
                           const uint32_t (&xr)[kColTiles][kXRegs]) {
    const int step_group = kActOrder ? act_group : min(step, w.end - 1) >> step_shift;
    if (step_group != group) {
      flush();
      group = step_group;
      const int64_t meta = static_cast<int64_t>(group) * n + w.col;
      group_zeros = __ldg(reinterpret_cast<const uint32_t*>(p.zeros + meta));
      group_scales = __ldg(reinterpret_cast<const uint2*>(scales + meta));
    }
    uint32_t words[4][kWords];
#pragma unroll
    for (int c = 0; c < 4; ++c) {
#pragma unroll
      for (int j = 0; j < kWords; ++j) words[c][j] = woq_detail::component(raw[j], c);
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
  const auto compute_batch = [&](const Work& w, const Batch& b, int s) {
#pragma unroll
    for (int u = 0; u < kSteps; ++u) compute(w, s + u, kActOrder ? b.group[u] : 0, b.raw[u], b.xr[u]);
  };

  Batch ba, bb;
  int unit = blockIdx.x;
  if (unit >= units) {  // the host never launches more blocks than units
    pdl_wait();
    return;
  }
  Work work(p, lane, unit / p.splits, unit % p.splits);
  if (work.begin < work.end) load_weights(ba, work, work.begin);
  pdl_wait();
  if (work.begin < work.end) load_rest(ba, work, work.begin);
  for (int parity = 0; unit < units; parity ^= 1) {
    const int next_unit = unit + static_cast<int>(gridDim.x);
    const bool has_next = next_unit < units;
    const Work next(p, lane, (has_next ? next_unit : unit) / p.splits, (has_next ? next_unit : unit) % p.splits);
    const bool prefetch_next = has_next && next.begin < next.end;
    if (work.begin < work.end) {  // the meta of the warp's first groups into L1 (groups are monotone in the step)
      const int first = group_of_step(work.begin);
      const int last = min(group_of_step(work.end - 1), first + kPrefetchGroups - 1);
      for (int gi = first; gi <= last; ++gi) {
        const int64_t meta = static_cast<int64_t>(gi) * n + work.col;
        asm volatile("prefetch.global.L1 [%0];" ::"l"(p.zeros + meta));
        asm volatile("prefetch.global.L1 [%0];" ::"l"(scales + meta));
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
    group = -1;

    // Batch i of this unit sits in ba for even i, bb for odd i; the next unit's first batch goes to ba as soon as
    // ba is free.
    const int batches = (work.end - work.begin + kSteps - 1) / kSteps;  // <= 0: no steps
    int s = work.begin;
    for (int i = 0; i < batches; i += 2) {
      if (i + 1 < batches) {
        load_weights(bb, work, s + kSteps);
        load_rest(bb, work, s + kSteps);
      }
      compute_batch(work, ba, s);
      s += kSteps;
      if (i + 1 >= batches) break;
      if (i + 2 < batches) {
        load_weights(ba, work, s + kSteps);
        load_rest(ba, work, s + kSteps);
      } else if (prefetch_next) {
        load_weights(ba, next, next.begin);
        load_rest(ba, next, next.begin);
      }
      compute_batch(work, bb, s);
      s += kSteps;
    }
    if (prefetch_next && (batches <= 0 || (batches & 1) != 0)) {  // ba was busy until now
      load_weights(ba, next, next.begin);
      load_rest(ba, next, next.begin);
    }
    flush();
    woq_detail::finish<T, kColTiles>(acc, p, unit / p.splits, unit % p.splits, parity);
    unit = next_unit;
    work = next;
  }
}

}  // namespace tpq::kernels
