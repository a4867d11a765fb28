#pragma once
// Weight-only quantized GEMV for decode-sized M: y[m, n] = x[m, rows] · W[n, rows]ᵀ (+ bias), bf16 or f16
// activations, f32 accumulation, W given as packed integer codes with per-group zero points and scales
// (woq_params.hpp) and read through a format's kernel traits (e.g. kernels/gptq/kernel_traits.cuh).
//
// The shape follows the dense GEMV (dense_gemv.cuh): at small M the time is the time to stream the packed weight,
// so the kernel is built around its loads.
//  - A warp owns a quad of 32 output columns over a range of K. A block's 8 warps split K over one quad, or (the
//    grouped kernel, kColWarps 2, 4 or 8, the host's choice where 32-column blocks exceed a wave) stand side by
//    side over kColWarps quads and split K kWoqWarps / kColWarps ways. Lane (g, t) owns columns 4g..4g+3 of its
//    warp's quad and, per step, block of codes 4·step + t: one 16-byte load per packed word reads that block for
//    its 4 columns, and a warp's load covers 4 blocks × 32 columns = 4 full 128-byte lines.
//  - Many steps of loads are in flight per lane (the general kernel: kUnroll steps issued before the first is used;
//    the grouped one: batches of kSteps steps). The weights, zero points, scales and group indices are constant
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
//  - The warps' sums meet in shared memory; when the tiles leave resident blocks free, blocks also split K
//    (blockIdx.y) and the splits meet in split order (deterministic): two in a thread-block cluster on sm_90+,
//    otherwise through global partial sums and a counter (split_k.cuh).
// Requirements (checked by the host): n % 4 == 0, rows a multiple of the block, 16-byte aligned x and qweight
// (8-byte at 8 bits), 1 <= m <= 8 · kColTiles, every block (grouped: every step) inside one group.
//
// Measured on an H200 (bf16, graph-timed): up to s13 the grouped kernel streamed 4-bit g128 at 35–64 % of the read
// bandwidth at M = 1 (llama8b o 35 %, gate_up 64 %), 2.2–3.0x cuBLAS bf16; 8-bit at 48–70 %. Its group check inside
// a batch made ptxas give every global load of a warp one scoreboard, so the first use of a batch waited for every
// load the warp had issued: one batch in flight per warp, whatever the code asked for. That is why
// double-buffering, persistent blocks, stream-K, copy-engine (TMA) rings, x staged in shared memory, (s8) x shared
// by shuffles at M = 1 (16-step weight batches both) and (s12) a per-warp cp.async ring of 2-3 batches (0.48-0.80x)
// all measured slower or equal. s14: batches that each lie in one group (kPerBatch) need no check, and ptxas keeps
// two of them on separate scoreboards: 4-bit 1.07–1.25x at M = 1 (41–69 % of the read bandwidth), 1.06–1.30x at
// M = 8; L2 prefetches of the steps ahead on top ran 0.75–0.98x. At fixed N (s7) the
// extra bytes of a longer K stream at 68–71 % (FP8 GEMV: 87–90 %); one group over K (no meta loads, no flush in the
// loop) gives 73–78 %, and each wave of 32-column blocks costs 1.5–2 µs on top. What the step itself issues does
// count (s8, timing only): without the 4 activation permutes and the 2 Σx MMAs per step it runs 5–11 % faster at
// M = 1 and 7–15 % at M = 16, each about half. The permutes went with the GEMV order of the words (kAdjacentPairs:
// 3–6 % at M = 1, 4–8 % at M = 16, benchmarks/results/README.md). s9: two quads per block where 32-column blocks
// take more than a wave (llama8b gate_up 1.05–1.16x at M <= 8), two-way split-K in a cluster (o and down
// 1.02–1.15x); two quads with split-K, or splits in several waves, measured slower (s9 results file). s16: warps
// side by side over columns instead of two quads per warp (1.06–1.15x on gate_up at M 1–16); forced onto shapes
// whose 32-column blocks fit in a wave, 0.31–0.93x (more splits of K, through global memory beyond two).
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

// The 16-byte load(s) of a lane's block as its 4 columns' words, and the MMA B operands (x pairs) of pair group q
// for each column tile, in the order the traits' pair_bits / pair_field read the codes.
template <int kWords>
__device__ __forceinline__ void split_words(const uint4 (&raw)[kWords], uint32_t (&words)[4][kWords]) {
#pragma unroll
  for (int c = 0; c < 4; ++c) {
#pragma unroll
    for (int w = 0; w < kWords; ++w) words[c][w] = component(raw[w], c);
  }
}
// Pairs of adjacent codes (Traits::kAdjacentPairs) take the activations' registers as loaded; pairs p, p + kCodes/2
// take one permute each.
template <bool kAdjacent, int kCodes, int kColTiles>
__device__ __forceinline__ void x_operands(const uint32_t (&xr)[kColTiles][kCodes / 2], int q,
                                           uint32_t (&b0)[kColTiles], uint32_t (&b1)[kColTiles]) {
#pragma unroll
  for (int j = 0; j < kColTiles; ++j) {
    if constexpr (kAdjacent) {
      b0[j] = xr[j][2 * q];
      b1[j] = xr[j][2 * q + 1];
    } else {
      b0[j] = x_pair(xr[j], 2 * q, 2 * q + kCodes / 2);
      b1[j] = x_pair(xr[j], 2 * q + 1, 2 * q + 1 + kCodes / 2);
    }
  }
}

// The group of a step (4 blocks of kCodes codes) in kernels that need every step inside one group (the grouped GEMV,
// the GEMM): g_idx at the step's first row for act-order rows (sorted and padded to whole steps), else the step
// index shifted by log2(group_size / step rows) (power-of-two groups of whole steps, or 31 for one group).
template <int kCodes, bool kActOrder>
struct StepGroups {
  static constexpr int kStepRows = 4 * kCodes;
  static constexpr int kStepRowsLog2 = kStepRows == 16 ? 4 : kStepRows == 32 ? 5 : kStepRows == 64 ? 6 : 7;
  static_assert((1 << kStepRowsLog2) == kStepRows, "steps of 16, 32, 64 or 128 rows");
  const int32_t* g_idx;
  int shift;  // the host checks it is >= 0

  __device__ __forceinline__ explicit StepGroups(const WoqGemvParams& p)
      : g_idx(p.g_idx), shift(p.group_shift - kStepRowsLog2) {}
  __device__ __forceinline__ int operator()(int step) const {
    if constexpr (kActOrder) {
      return __ldg(g_idx + static_cast<int64_t>(step) * kStepRows);
    } else {
      return step >> shift;
    }
  }
};

// What both GEMVs derive from the launch before their loops: the lane's place in the MMA fragments (g, t), its 4
// columns in its warp's quad (clamped to the last 4 past n: real memory, results never stored), its x rows (clamped
// to the last row past m likewise), and the warp's range of steps [begin, end) within the block's split of K
// (starting at multiples of kAlign steps after the split's start).
template <typename T, int kCodes, int kColTiles, int kAlign = 1, int kColWarps = 1>
struct LaneWork {
  static constexpr int kSlices = kWoqWarps / kColWarps;  // warps that split K over the same columns
  int lane, warp, g, t;
  int64_t col;
  const T* x_row[kColTiles];
  int blocks, begin, end;

  __device__ __forceinline__ explicit LaneWork(const WoqGemvParams& p) {
    lane = threadIdx.x & 31;
    warp = threadIdx.x >> 5;
    g = lane >> 2;
    t = lane & 3;
    // Warp w takes quad w % kColWarps of the block's and K slice w / kColWarps of the block's split.
    col = min((static_cast<int>(blockIdx.x) * kColWarps + warp % kColWarps) * kWoqTileCols + 4 * g, p.n - 4);
    const T* x = static_cast<const T*>(p.x);
#pragma unroll
    for (int j = 0; j < kColTiles; ++j) x_row[j] = x + static_cast<int64_t>(min(j * 8 + g, p.m - 1)) * p.rows;
    blocks = p.rows / kCodes;
    const int steps = (blocks + 3) >> 2;
    const int split_begin = blockIdx.y * p.steps_per_split;
    const int split_end = min(steps, split_begin + p.steps_per_split);
    // Warp ranges start at multiples of kAlign steps after the split's start.
    const int per_warp = (split_end - split_begin + kSlices * kAlign - 1) / (kSlices * kAlign) * kAlign;
    begin = split_begin + warp / kColWarps * per_warp;
    end = min(split_end, begin + per_warp);
  }
};

// The end of both GEMVs: sum the warps' K ranges (and the split-K blocks'), add the bias, store. acc[j][tr][e]:
// column tile j, C fragment value e of row tile tr.
template <typename T, int kColTiles, int kColWarps = 1>
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

  // Thread i finishes values (i / 32) + kWoqWarps·r of lane i % 32, out of the kValues of each of the kColWarps
  // quads (value c·kValues + vi: quad c, summed over the warps c + kColWarps·slice).
  constexpr int kPerThread = kColWarps * kValues / kWoqWarps;
  static_assert(kColWarps * kValues % kWoqWarps == 0, "every thread finishes the same number of values");
  float v[kPerThread];
  int out_n[kPerThread], out_m[kPerThread];
  bool active[kPerThread];
#pragma unroll
  for (int r = 0; r < kPerThread; ++r) {
    const int cv = (threadIdx.x >> 5) + kWoqWarps * r, vl = threadIdx.x & 31;
    // (kColWarps == 1: c = 0 as a constant, so that the sum below unrolls with constant indices)
    const int c = kColWarps == 1 ? 0 : cv / kValues, vi = kColWarps == 1 ? cv : cv % kValues;
    v[r] = 0.0f;
#pragma unroll
    for (int sl = 0; sl < kWoqWarps / kColWarps; ++sl) v[r] += red[c + kColWarps * sl][vi][vl];
    const int j = vi >> 3, tr = (vi >> 2) & 1, e = vi & 3;
    // rows g / g+8 of the A fragment = columns 2tr / 2tr+1 of the lane's 4
    out_n[r] = (tile * kColWarps + c) * kWoqTileCols + 4 * (vl >> 2) + 2 * tr + (e >> 1);
    out_m[r] = j * 8 + 2 * (vl & 3) + (e & 1);
    active[r] = out_n[r] < n && out_m[r] < m;
  }
  const T* bias = static_cast<const T*>(p.bias);
  T* y = static_cast<T*>(p.y);

  finish_tile<kWoqWarps * 32>(v, active, out_m, out_n, p.split_k, tile, blockIdx.y, m, n,
              [&](float sum, int r) {
                if (bias != nullptr) sum += to_float(bias[out_n[r]]);
                y[static_cast<int64_t>(out_m[r]) * n + out_n[r]] = from_float<T>(sum);
              });
}

// The grouped GEMV's sums: codes enter the MMA as they are (MagicPlanes), zero points and scales are applied to
// the f32 sums once per group (y += s · (Σ x·(q + c) − (c + z) · Σ x), Σ x from one more MMA against ones).
template <class Traits, typename T, int kColTiles>
struct GroupedSums {
  using Planes = MagicPlanes<T, Traits::kBits>;
  static constexpr int kCodes = Traits::kCodes;
  static constexpr int kWords = Traits::kWords;
  static constexpr int kXRegs = kCodes / 2;
  static constexpr int kPlanes = Planes::kPlanes;

  float acc[kColTiles][2][4] = {};
  float gacc[kPlanes][kColTiles][2][4] = {};
  float xsum[kColTiles][4] = {};
  int group = -1;
  uint32_t group_zeros = 0;
  uint2 group_scales = {};

  // Applies the finished group, then starts the next from zero.
  __device__ __forceinline__ void flush() {
    if (group >= 0) flush(group_zeros, group_scales);
  }

  // Applies sums that all lie in one group, whose packed zero points and scales are given, then starts from zero.
  __device__ __forceinline__ void flush(uint32_t zeros, uint2 scales) {
    float sc[4], zc[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      sc[c] = half_to_float<T>(c < 2 ? scales.x : scales.y, c & 1);
      // Zero point c as the float 2^23 + z (its byte under the exponent bits of 2^23), then offset: both exact.
      zc[c] = __uint_as_float(__byte_perm(zeros, 0x4B000000u, 0x7650u + c)) - (8388608.0f - Planes::kOffset);
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
    }
#pragma unroll
    for (int j = 0; j < kColTiles; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) xsum[j][e] = 0.0f;
    }
  }

  // One step (4 blocks × 32 columns) of group `step_group`: switch groups if needed (warp-uniform; meta(group, zeros,
  // scales) gives the new group's packed zero points and scales), decode, MMA.
  template <class MetaOf>
  __device__ __forceinline__ void step(int step_group, const MetaOf& meta, const uint4 (&raw)[kWords],
                                       const uint32_t (&xr)[kColTiles][kXRegs]) {
    if (step_group != group) {
      flush();
      group = step_group;
      meta(group, group_zeros, group_scales);
    }
    mma(raw, xr);
  }

  // One step's MMAs into the current group's sums.
  __device__ __forceinline__ void mma(const uint4 (&raw)[kWords], const uint32_t (&xr)[kColTiles][kXRegs]) {
    uint32_t words[4][kWords];
    split_words(raw, words);
#pragma unroll
    for (int q = 0; q < kCodes / 4; ++q) {
      const int p0 = 2 * q, p1 = 2 * q + 1;
      uint32_t b0[kColTiles], b1[kColTiles];
      x_operands<Traits::kAdjacentPairs, kCodes>(xr, q, b0, b1);
#pragma unroll
      for (int j = 0; j < kColTiles; ++j)
        mma_m16n8k16<T>(xsum[j], Planes::kOnes, Planes::kOnes, Planes::kOnes, Planes::kOnes, b0[j], b1[j]);
#pragma unroll
      for (int tr = 0; tr < 2; ++tr) {
        const int lo = 2 * tr, hi = 2 * tr + 1;
        const uint32_t pair_lo0 = Traits::pair_field(words[lo], p0);
        const uint32_t pair_hi0 = Traits::pair_field(words[hi], p0);
        const uint32_t pair_lo1 = Traits::pair_field(words[lo], p1);
        const uint32_t pair_hi1 = Traits::pair_field(words[hi], p1);
#pragma unroll
        for (int pl = 0; pl < kPlanes; ++pl) {
          const uint32_t a0 = Planes::plane(pair_lo0, pl), a1 = Planes::plane(pair_hi0, pl);
          const uint32_t a2 = Planes::plane(pair_lo1, pl), a3 = Planes::plane(pair_hi1, pl);
#pragma unroll
          for (int j = 0; j < kColTiles; ++j) mma_m16n8k16<T>(gacc[pl][j][tr], a0, a1, a2, a3, b0[j], b1[j]);
        }
      }
    }
  }
};

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
      Decoder::columns(__ldg(reinterpret_cast<const uint32_t*>(p.zeros + group * n + col)),
                       __ldg(reinterpret_cast<const uint2*>(scales + group * n + col)), cols[u]);
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
      woq_detail::split_words(raw[u], words);
#pragma unroll
      for (int q = 0; q < kCodes / 4; ++q) {
        const int p0 = 2 * q, p1 = 2 * q + 1;
        uint32_t b0[kColTiles], b1[kColTiles];
        woq_detail::x_operands<Traits::kAdjacentPairs, kCodes>(xr[u], q, b0, b1);
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

// The grouped GEMV: the same tiles, loads and MMAs, with fewer instructions per weight, which is what bounds the
// general one at M = 1 (the weight stream needs about 35 weights per cycle per SM on an H200).
//  - The codes enter the MMA as they are, offset by a constant (MagicPlanes: one LOP3 per two weights, plus a shift
//    per word); zero points and scales are applied to the f32 sums once per group: y += s · (Σ x·(q + c) −
//    (c + z) · Σ x), with Σ x from one more MMA against ones.
//  - kColWarps warps side by side over columns (1, 2, 4 or 8 quads per block), the others splitting K: fewer,
//    longer blocks where 32-column ones would take several waves (s16; s9-s15 had two quads per warp there, each
//    warp's activations and Σx serving both: 0.91-0.94x of this on llama8b gate_up at M = 1 and 8).
//  - Batches of kSteps steps (weights, activations, act-order groups; kPerBatch: zero points and scales) loaded
//    together, then computed. Whole batches run without predicates on pointers that advance by a constant stride;
//    only a warp's last, partial batch checks every step.
//  - kPerStep and kActOrder: one batch per warp in flight, as large as the registers allow. The group check inside
//    a batch (a branch around the new group's loads) makes ptxas give every global load of the warp one scoreboard,
//    so the first use of a batch waits for every load the warp has issued: a second batch prefetched would be
//    waited for too (s13, SASS). A group's zero points and scales are loaded when the warp enters it.
//  - kPerBatch: batches of half that size in ping-pong, the next one's loads issued before the current one's MMAs;
//    with no branch inside a batch ptxas keeps the two on separate scoreboards (scripts/sass_scoreboards.py).
//  - kPerPair (two column tiles, groups of at least two batches): the same, with the sums applied once per pair of
//    batches (one group) instead of once per batch. At M 9..16 a batch is 2 steps, so that halves the flushes: 74
//    SASS instructions per step instead of 88 (4-bit), 1.05-1.16x on the Llama shapes (s17, H200).
//  - The warp asks L1 for the zero points and scales of its first kPrefetchGroups groups at its start, before the
//    programmatic-dependent-launch wait.
template <class Traits, typename T, int kColTiles, int kSteps, WoqGroups kGroups, int kColWarps>
__global__ void __launch_bounds__(kWoqWarps * 32, (Traits::kWords == 1 ? 16 : 8) / kWoqWarps)  // 16 warps/SM (3-bit 8)
    woq_gemv_grouped_kernel(const WoqGemvParams p) {
  constexpr int kCodes = Traits::kCodes;
  constexpr int kWords = Traits::kWords;
  constexpr int kXRegs = kCodes / 2;
  constexpr int kStepRows = 4 * kCodes;
  constexpr int kPrefetchGroups = 64;
  constexpr bool kActOrder = kGroups == WoqGroups::kActOrder;
  constexpr bool kPerPair = kGroups == WoqGroups::kPerPair;
  constexpr bool kPerBatch = kGroups == WoqGroups::kPerBatch || kPerPair;  // two batches in flight
  pdl_launch_dependents();

  const woq_detail::LaneWork<T, kCodes, kColTiles, kPerBatch ? kSteps * (kPerPair ? 2 : 1) : 1, kColWarps> lw(p);
  const int t = lw.t;
  const int n = p.n;
  const int64_t col = lw.col;
  const T* const(&x_row)[kColTiles] = lw.x_row;
  const T* scales = static_cast<const T*>(p.scales);
  const int blocks = lw.blocks, begin = lw.begin, end = lw.end;
  const int full_end = min(end, blocks >> 2);  // steps whose 4 blocks all exist

  // Word w of the lane's block in step s: qweight + ((4s + t) · kWords + w) · n + col.
  const uint32_t* w_lane = p.qweight + static_cast<int64_t>(t) * kWords * n + col;
  const int64_t w_step = static_cast<int64_t>(4) * kWords * n;

  const woq_detail::StepGroups<kCodes, kActOrder> group_of_step(p);
  // Zero points and scales of group gi at the lane's columns: 32-bit offsets (the host checks groups · n fits).
  const uint8_t* zeros_lane = p.zeros + col;
  const T* scales_lane = scales + col;
  const auto meta_at = [&](int gi) { return gi * n; };

  woq_detail::GroupedSums<Traits, T, kColTiles> sums;
  const auto load_meta = [&](int gi, uint32_t& zeros, uint2& group_scales) {
    zeros = __ldg(reinterpret_cast<const uint32_t*>(zeros_lane + meta_at(gi)));
    group_scales = __ldg(reinterpret_cast<const uint2*>(scales_lane + meta_at(gi)));
  };
  const auto compute = [&](int step, int act_group, const uint4 (&raw)[kWords],
                           const uint32_t (&xr)[kColTiles][kXRegs]) {
    sums.step(kActOrder ? act_group : group_of_step(step), load_meta, raw, xr);
  };

  // What one batch holds in registers between its loads and its compute.
  struct Batch {
    uint4 raw[kSteps][kWords];
    uint32_t xr[kSteps][kColTiles][kXRegs];
    int group[kSteps];  // kActOrder only
    uint32_t zeros;     // kPerBatch only: the batch's group's
    uint2 scales;
  };
  // A whole batch (every block of every step exists) starting at step s: weights (kPerBatch: and the group's zero
  // points and scales), then (after the wait) activations and groups.
  const auto load_weights = [&](Batch& b, int s) {
    const uint32_t* wp = w_lane + static_cast<int64_t>(s) * w_step;
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
#pragma unroll
      for (int w = 0; w < kWords; ++w) b.raw[u][w] = load_stream_16(wp + u * w_step + w * n);
    }
    if constexpr (kPerBatch) load_meta(group_of_step(s), b.zeros, b.scales);
  };
  const auto load_rest = [&](Batch& b, int s) {
    const int64_t k0 = (static_cast<int64_t>(s) * 4 + t) * kCodes;
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
#pragma unroll
      for (int j = 0; j < kColTiles; ++j) woq_detail::load_x<kCodes>(b.xr[u][j], x_row[j], k0 + u * kStepRows, true);
      if constexpr (kActOrder) b.group[u] = group_of_step(s + u);
    }
  };
  // kPerPair: `apply` is false for the first batch of a pair (its group's sums go on into the second).
  const auto compute_batch = [&](const Batch& b, int s, bool apply = true) {
    if constexpr (kPerBatch) {
#pragma unroll
      for (int u = 0; u < kSteps; ++u) sums.mma(b.raw[u], b.xr[u]);
      if (apply) sums.flush(b.zeros, b.scales);
    } else {
#pragma unroll
      for (int u = 0; u < kSteps; ++u) compute(s + u, kActOrder ? b.group[u] : 0, b.raw[u], b.xr[u]);
    }
  };

  int s = begin;
  const int batches = full_end > begin ? (full_end - begin) / kSteps : 0;
  Batch ba;
  if (batches > 0) load_weights(ba, s);
  // The meta of the warp's first groups into L1 (groups are monotone in the step).
  if (begin < end) {
    const int first = group_of_step(begin);
    const int last = min(group_of_step(end - 1), first + kPrefetchGroups - 1);
    for (int gi = first; gi <= last; ++gi) {
      asm volatile("prefetch.global.L1 [%0];" ::"l"(zeros_lane + meta_at(gi)));
      asm volatile("prefetch.global.L1 [%0];" ::"l"(scales_lane + meta_at(gi)));
    }
  }
  pdl_wait();
  if constexpr (kPerBatch) {
    // Ping-pong: batch i + 1's loads go out before batch i's MMAs. The loads in the loop are unconditional (a
    // conditional load would make ptxas wait for it where the branches join); the last one or two batches run after.
    Batch bb;
    if (batches > 0) load_rest(ba, s);
    int i = 0;
    for (; i + 2 < batches; i += 2) {
      load_weights(bb, s + kSteps);
      load_rest(bb, s + kSteps);
      compute_batch(ba, s, !kPerPair);
      load_weights(ba, s + 2 * kSteps);
      load_rest(ba, s + 2 * kSteps);
      compute_batch(bb, s + kSteps);
      s += 2 * kSteps;
    }
    if (i + 1 < batches) {
      load_weights(bb, s + kSteps);
      load_rest(bb, s + kSteps);
      compute_batch(ba, s, !kPerPair);
      compute_batch(bb, s + kSteps);
      s += 2 * kSteps;
    } else if (i < batches) {
      compute_batch(ba, s);
      s += kSteps;
    }
  } else {
    for (int i = 0; i < batches; ++i) {
      if (i > 0) load_weights(ba, s);
      load_rest(ba, s);
      compute_batch(ba, s);
      s += kSteps;
    }
  }
  // The last, partial batch: every step and block checked, groups checked per step.
  for (; s < end; s += kSteps) {
    Batch& b = ba;
    bool ok[kSteps];
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
      const int64_t block = static_cast<int64_t>(s + u) * 4 + t;
      ok[u] = (s + u < end) && block < blocks;
#pragma unroll
      for (int w = 0; w < kWords; ++w)
        b.raw[u][w] = load_stream_16_if(Traits::word(p.qweight, n, ok[u] ? block : 0, w, col), ok[u]);
#pragma unroll
      for (int j = 0; j < kColTiles; ++j) woq_detail::load_x<kCodes>(b.xr[u][j], x_row[j], block * kCodes, ok[u]);
      if constexpr (kActOrder) b.group[u] = s + u < end ? group_of_step(s + u) : 0;
    }
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
      if (s + u >= end) break;
      compute(s + u, kActOrder ? b.group[u] : 0, b.raw[u], b.xr[u]);
    }
  }
  sums.flush();

  woq_detail::finish<T, kColTiles, kColWarps>(sums.acc, p);
}

}  // namespace tpq::kernels
