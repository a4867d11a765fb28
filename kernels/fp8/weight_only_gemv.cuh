#pragma once
// FP8 weight-only GEMV for decode-sized M: y[m, n] = x[m, k] · W[n, k]ᵀ (+ bias[n]) with W = e4m3 · scale
// (per tensor, per row or per block), x and y bf16 or f16, f32 accumulation. Activations are not quantized.
//
// At M <= 16 the time is the time to stream W once; FP8 halves those bytes against bf16. The shape follows the
// dense GEMV (kernels/common/dense_gemv.cuh):
//  - Each warp owns a tile of 16 rows of W and a contiguous range of K in units of 128 elements. Per unit, lane
//    (g = lane / 4, t = lane % 4) loads 16 bytes of rows g and g+8 at chunks 8u + t and 8u + 4 + t: 16 e4m3
//    weights of each row per load, two loads per row, kUnits units in flight before the first use. With
//    kTwoBatches, two such batches alternate: the next one's loads go out before the current one's MMAs.
//  - Weights are widened to the activation type exactly, subnormals included (e4m3x4_to): one conversion
//    instruction per pair of codes for f16 on sm_89+; elsewhere a byte permute, a shift and a select per pair, as
//    e4m3 * 2^-8, and for bf16 one multiply by a power of two. The epilogue takes any power of two back.
//  - One m16n8k16 MMA per 4 weights of each row: W is the A operand (16 rows), x the B operand (8 rows of x per
//    column tile). As in the dense GEMV, a lane's physical K positions stand in for the logical ones of the
//    fragment layout, and x is read with the same mapping: no shuffles.
//  - Block-scaled weights: each unit (128 K, one weight block along K when block_k % 128 == 0) is summed on its
//    own and added with its block's scale; all 16 rows of a tile share one block row (block_n % 16 == 0).
//    Per-tensor and per-row scales are applied once, in the epilogue.
//  - The 8 warps of a block split K and one shared-memory pass sums them; blocks also split K (blockIdx.y) when
//    the tiles cannot fill the device, and the last block of a tile adds the partial sums in split order. With
//    kColWarps = 2 (the host's choice where that brings the tiles within one wave) the warps stand two side by side
//    over two tiles and four split K.
//  - Weights and scales are constant during a forward, so they are requested before the programmatic-dependent-
//    launch wait. x, the bias, the scratch and y are touched only after it.
// Requirements (checked by the host): k % 16 == 0, x and w 16-byte aligned, 1 <= m <= 8 * kColTiles.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "kernels/common/float_convert.cuh"
#include "kernels/common/ptx_ops.cuh"
#include "kernels/common/split_k.cuh"
#include "kernels/fp8/params.hpp"
#include "kernels/fp8/traits.hpp"

namespace tpq::kernels {

namespace fp8_gemv_detail {

// 4 e4m3 codes (bytes b0..b3 of q) -> operand words of T holding (b0, b1) and (b2, b3), each value the code's
// times widened_factor<T>()^-1, exactly. sm_89+ has an instruction for f16 pairs. Elsewhere, a byte permute puts
// each pair's codes in the high bytes of its two 16-bit halves (sign at bit 15); one shift and one bitwise select
// then place the 7 magnitude bits:
//  - f16: exponent and mantissa 1 bit lower (bits 13..7). The value is the code's times 2^(7 - 15) = 2^-8, and an
//    e4m3 subnormal (exponent 0) lands on an f16 subnormal of the same scaled value.
//  - bf16: 4 bits lower (bits 10..4), the code's value times 2^(7 - 127) = 2^-120 (subnormals again the same), and
//    one bf16x2 multiply by 2^112 gives e4m3 * 2^-8: exact, a power of two in range.
// The epilogue multiplies the factor back. The NaN codes (0x7F, 0xFF) are not e4m3 values a checkpoint holds: the
// conversion instruction makes them NaN, the bit tricks +-480 (as the dequantize kernel does), times 2^-8.
template <typename T>
__device__ __forceinline__ constexpr float widened_factor() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  if constexpr (std::is_same_v<T, __half>) return 1.0f;
#endif
  return 256.0f;
}
template <typename T>
__device__ __forceinline__ void e4m3x4_to(uint32_t q, uint32_t& lo, uint32_t& hi);
template <>
__device__ __forceinline__ void e4m3x4_to<__half>(uint32_t q, uint32_t& lo, uint32_t& hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  // sm_89+ converts a pair in one instruction, exactly (every e4m3 value is an f16), without the 2^-8.
  asm("{\n\t.reg .b16 l, h;\n\tmov.b32 {l, h}, %2;\n\t"
      "cvt.rn.f16x2.e4m3x2 %0, l;\n\tcvt.rn.f16x2.e4m3x2 %1, h;\n\t}"
      : "=r"(lo), "=r"(hi)
      : "r"(q));
#else
  const uint32_t a = __byte_perm(q, 0u, 0x1404), b = __byte_perm(q, 0u, 0x3424);
  lo = (a & 0x80008000u) | ((a >> 1) & 0x3F803F80u);
  hi = (b & 0x80008000u) | ((b >> 1) & 0x3F803F80u);
#endif
}
template <>
__device__ __forceinline__ void e4m3x4_to<__nv_bfloat16>(uint32_t q, uint32_t& lo, uint32_t& hi) {
  const uint32_t a = __byte_perm(q, 0u, 0x1404), b = __byte_perm(q, 0u, 0x3424);
  lo = bf16x2_mul(((a & 0x80008000u) | ((a >> 4) & 0x07F007F0u)), 0x77807780u);  // 0x7780 = 2^112
  hi = bf16x2_mul(((b & 0x80008000u) | ((b >> 4) & 0x07F007F0u)), 0x77807780u);
}

// The 4 MMAs of one 16-byte chunk: weights of rows g (lo) and g+8 (hi), x chunk xa (elements 0..7) and xb (8..15).
template <typename T>
__device__ __forceinline__ void mma_chunk(float (&acc)[4], const uint4& wl, const uint4& wh, const uint4& xa,
                                          const uint4& xb) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    uint32_t l0, l1, h0, h1;
    e4m3x4_to<T>(component(wl, i), l0, l1);
    e4m3x4_to<T>(component(wh, i), h0, h1);
    const uint4& xv = i < 2 ? xa : xb;
    const uint32_t b0 = component(xv, (i & 1) * 2), b1 = component(xv, (i & 1) * 2 + 1);
    mma_m16n8k16<T>(acc, l0, h0, l1, h1, b0, b1);
  }
}

}  // namespace fp8_gemv_detail

// Register bounds: ptxas's own choice (68-80 registers for one- and two-unit batches, three blocks per SM, but 84
// and two for the f16 block-scaled one with two column tiles; 124-128 for four units, two blocks) except for
// block-scaled four-unit batches and f16 two-batch ones, held to two blocks per SM (128 registers; 82 bytes spilled
// in the f16 block-scaled four-unit one, which would take 146 and run one block per SM; the f16 two-batch ones would
// take 140 and 160, and spill 8 and 56 bytes; the bf16 ones take 128 by themselves, and 8 bytes spilled in the
// per-tensor one when held). Asking for a minimum of blocks
// elsewhere made ptxas take more registers, not fewer (108-131 for two units, two blocks per SM; Llama-3-8B qkv at
// M = 1 took 9.2 us against 7.8 us in the run before on an H200).
template <typename T, int kColTiles, int kUnits, bool kBlockScale, bool kTwoBatches = false, int kColWarps = 1>
__global__ void __launch_bounds__(kFp8GemvWarps * 32,
                                  (kUnits >= 4 && kBlockScale) || (kTwoBatches && std::is_same_v<T, __half>) ? 2 : 0)
    fp8_weight_only_gemv_kernel(const Fp8GemvParams p) {
  pdl_launch_dependents();

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int g = lane >> 2;
  const int t = lane & 3;
  // Warp w streams tile w % kColWarps of the block's kColWarps tiles over K slice w / kColWarps of its split.
  constexpr int kSlices = kFp8GemvWarps / kColWarps;
  const int tile = static_cast<int>(blockIdx.x) * kColWarps + warp % kColWarps;
  const int m = p.m, n = p.n, k = p.k;

  // Rows past n (and x rows past m) are clamped to the last valid one: loads stay in bounds without a predicate,
  // and the clamped results are never stored.
  const uint8_t* w_lo = p.w + static_cast<int64_t>(min(tile * kFp8GemvTileRows + g, n - 1)) * k;
  const uint8_t* w_hi = p.w + static_cast<int64_t>(min(tile * kFp8GemvTileRows + g + 8, n - 1)) * k;
  const T* x = static_cast<const T*>(p.x);
  const T* x_row[kColTiles];
#pragma unroll
  for (int j = 0; j < kColTiles; ++j) x_row[j] = x + static_cast<int64_t>(min(j * 8 + g, m - 1)) * k;
  const float* block_scales = nullptr;
  if constexpr (kBlockScale) {
    block_scales = p.w_scale + static_cast<int64_t>((tile * kFp8GemvTileRows) / p.block_n) * p.scale_ld;
  }

  const int chunks = k >> 4;  // 16-byte chunks per weight row
  const int units = (k + kFp8GemvUnitK - 1) / kFp8GemvUnitK;
  const int split_begin = blockIdx.y * p.units_per_split;
  const int split_end = min(units, split_begin + p.units_per_split);
  const int per_warp = (split_end - split_begin + kSlices - 1) / kSlices;
  const int begin = split_begin + warp / kColWarps * per_warp;
  const int end = min(split_end, begin + per_warp);

  // Two MMA chains (one per half-unit) halve the dependent MMAs. Per-tensor and per-row scales: they run through
  // the whole K range and add up at the end; block scales: they restart every unit, which adds its sum to `acc`
  // with its block's scale.
  float acc[kColTiles][4] = {};
  float chain[2][kColTiles][4] = {};
  bool waited = false;
  // A batch: kUnits units' weights, activations and block scales in registers.
  struct Batch {
    uint4 wl[kUnits][2], wh[kUnits][2];
    uint4 xv[kUnits][2][kColTiles][2];
    bool ok[kUnits][2];
    float sc[kUnits];
  };
  // `checked` (std::true_type): units past the warp's range and chunks past k read the row's last chunk instead (no
  // predicate, no zeroed registers) and get zero activations, so they add nothing (a NaN code there is in the row's
  // own sum already). std::false_type: the caller knows every chunk of the batch exists.
  const auto load_weights = [&](Batch& b, int u0, auto checked) {
#pragma unroll
    for (int uu = 0; uu < kUnits; ++uu) {
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        const int c = (u0 + uu) * 8 + s * 4 + t;
        b.ok[uu][s] = !decltype(checked)::value || ((u0 + uu < end) && (c < chunks));
        const int64_t cw = b.ok[uu][s] ? c : chunks - 1;
        b.wl[uu][s] = load_stream_16(w_lo + cw * 16);
        b.wh[uu][s] = load_stream_16(w_hi + cw * 16);
      }
      if constexpr (kBlockScale) {
        b.sc[uu] = !decltype(checked)::value || u0 + uu < end
                       ? __ldg(block_scales + ((u0 + uu) * kFp8GemvUnitK) / p.block_k)
                       : 0.0f;
      } else {
        b.sc[uu] = 1.0f;
      }
    }
  };
  const auto load_x = [&](Batch& b, int u0) {
#pragma unroll
    for (int uu = 0; uu < kUnits; ++uu) {
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        const int64_t e = (static_cast<int64_t>(u0 + uu) * 8 + s * 4 + t) * 16;  // first K element of the chunk
#pragma unroll
        for (int j = 0; j < kColTiles; ++j) {
          b.xv[uu][s][j][0] = b.ok[uu][s] ? load_cached_16(x_row[j] + e) : make_uint4(0, 0, 0, 0);
          b.xv[uu][s][j][1] = b.ok[uu][s] ? load_cached_16(x_row[j] + e + 8) : make_uint4(0, 0, 0, 0);
        }
      }
    }
  };
  const auto compute = [&](const Batch& b) {
#pragma unroll
    for (int uu = 0; uu < kUnits; ++uu) {
      if constexpr (kBlockScale) {
#pragma unroll
        for (int s = 0; s < 2; ++s)
#pragma unroll
          for (int j = 0; j < kColTiles; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) chain[s][j][e] = 0.0f;
      }
#pragma unroll
      for (int s = 0; s < 2; ++s) {
#pragma unroll
        for (int j = 0; j < kColTiles; ++j)
          fp8_gemv_detail::mma_chunk<T>(chain[s][j], b.wl[uu][s], b.wh[uu][s], b.xv[uu][s][j][0], b.xv[uu][s][j][1]);
      }
      if constexpr (kBlockScale) {
#pragma unroll
        for (int j = 0; j < kColTiles; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[j][e] = fmaf(chain[0][j][e] + chain[1][j][e], b.sc[uu], acc[j][e]);
      }
    }
  };
  using Checked = std::true_type;
  using Whole = std::false_type;
  // Two batches in flight (kTwoBatches): whole batches (every chunk exists) alternate between two register sets, and
  // the next one's loads are issued before the current one's MMAs, so a warp always has a batch of loads
  // outstanding. What is left (units with chunks past k) runs one batch at a time, as every batch does otherwise.
  int u0 = begin;
  if constexpr (kTwoBatches) {
    const int full_end = min(end, chunks >> 3);  // units whose 8 chunks all exist
    const int batches = full_end > begin ? (full_end - begin) / kUnits : 0;
    Batch ba, bb;
    if (batches > 0) load_weights(ba, u0, Whole{});
    pdl_wait();
    waited = true;
    if (batches > 0) load_x(ba, u0);
    int i = 0;
    for (; i + 2 < batches; i += 2) {
      load_weights(bb, u0 + kUnits, Whole{});
      load_x(bb, u0 + kUnits);
      compute(ba);
      load_weights(ba, u0 + 2 * kUnits, Whole{});
      load_x(ba, u0 + 2 * kUnits);
      compute(bb);
      u0 += 2 * kUnits;
    }
    if (i + 1 < batches) {
      load_weights(bb, u0 + kUnits, Whole{});
      load_x(bb, u0 + kUnits);
      compute(ba);
      compute(bb);
      u0 += 2 * kUnits;
    } else if (i < batches) {
      compute(ba);
      u0 += kUnits;
    }
  }
  for (; u0 < end; u0 += kUnits) {
    Batch b;
    load_weights(b, u0, Checked{});
    if (!waited) {
      pdl_wait();
      waited = true;
    }
    load_x(b, u0);
    compute(b);
  }
  if constexpr (!kBlockScale) {
#pragma unroll
    for (int j = 0; j < kColTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[j][e] = chain[0][j][e] + chain[1][j][e];
  }
  if (!waited) pdl_wait();  // warps with no units still write outputs below

  // Sum the warps' K ranges. Layout [warp][value][lane] keeps both the writes and the reads conflict-free.
  __shared__ float red[kFp8GemvWarps][kColTiles * 4][32];
#pragma unroll
  for (int j = 0; j < kColTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) red[warp][j * 4 + e][lane] = acc[j][e];
  }
  __syncthreads();

  // Value i of the kColWarps 16 x (8 * kColTiles) tiles (tile i / (32 kTileValues), fragment value i / 32 % kTileValues
  // of lane i % 32, summed over the warps of its K slices) is finished by thread i % blockDim.x.
  constexpr int kTileValues = kColTiles * 4;
  constexpr int kValues = kColWarps * kTileValues * 32;
  constexpr int kThreads = kFp8GemvWarps * 32;
  constexpr int kPerThread = (kValues + kThreads - 1) / kThreads;
  float v[kPerThread];
  int row[kPerThread], col[kPerThread];
  bool active[kPerThread];
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int i = threadIdx.x + j * kThreads;
    active[j] = i < kValues;
    v[j] = 0.0f;
    row[j] = col[j] = 0;
    if (active[j]) {
      // (kColWarps == 1: c = 0 as a constant, so that the sum below unrolls with constant indices)
      const int vl = i & 31, c = kColWarps == 1 ? 0 : (i >> 5) / kTileValues;
      const int vi = kColWarps == 1 ? i >> 5 : (i >> 5) % kTileValues;
#pragma unroll
      for (int sl = 0; sl < kSlices; ++sl) v[j] += red[c + kColWarps * sl][vi][vl];
      const int e = vi & 3;
      // C fragment: rows g, g+8 of the warp's tile; columns 2t, 2t+1 of column tile vi / 4.
      row[j] = (static_cast<int>(blockIdx.x) * kColWarps + c) * kFp8GemvTileRows + (vl >> 2) + ((e & 2) ? 8 : 0);
      col[j] = (vi >> 2) * 8 + (vl & 3) * 2 + (e & 1);
      active[j] = row[j] < n && col[j] < m;
    }
  }
  const T* bias = static_cast<const T*>(p.bias);
  T* y = static_cast<T*>(p.y);
  const auto finish = [&](float sum, int r, int c) {
    float scale = fp8_gemv_detail::widened_factor<T>();
    if (p.scale_kind == static_cast<int>(Fp8ScaleKind::kTensor)) scale *= __ldg(p.w_scale);
    if (p.scale_kind == static_cast<int>(Fp8ScaleKind::kRow)) scale *= __ldg(p.w_scale + r);
    float out = sum * scale;
    if (bias != nullptr) out += to_float(bias[r]);
    y[static_cast<int64_t>(c) * n + r] = from_float<T>(out);
  };

  finish_tile<kFp8GemvWarps * 32>(v, active, col, row, p.split_k, blockIdx.x, blockIdx.y, m, n,
              [&](float sum, int j) { finish(sum, row[j], col[j]); });
}

}  // namespace tpq::kernels
