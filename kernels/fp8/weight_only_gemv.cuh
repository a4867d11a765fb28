#pragma once
// FP8 weight-only GEMV for decode-sized M: y[m, n] = x[m, k] · W[n, k]ᵀ (+ bias[n]) with W = e4m3 · scale
// (per tensor, per row or per block), x and y bf16 or f16, f32 accumulation. Activations are not quantized.
//
// At M <= 16 the time is the time to stream W once; FP8 halves those bytes against bf16. The shape follows the
// dense GEMV (kernels/common/dense_gemv.cuh):
//  - Each warp owns a tile of 16 rows of W and a contiguous range of K in units of 128 elements. Per unit, lane
//    (g = lane / 4, t = lane % 4) loads 16 bytes of rows g and g+8 at chunks 8u + t and 8u + 4 + t: 16 e4m3
//    weights of each row per load, two loads per row, kUnits units in flight before the first use.
//  - Weights are widened to the activation type exactly: an e4m3 code's bits, shifted into an f16, are the code's
//    value times 2^-8 (subnormals included, since both formats keep the same subnormal structure); for bf16 the
//    f16 pair goes through f32 (exact: at most 4 significant bits). The 2^8 returns in the epilogue.
//  - One m16n8k16 MMA per 4 weights of each row: W is the A operand (16 rows), x the B operand (8 rows of x per
//    column tile). As in the dense GEMV, a lane's physical K positions stand in for the logical ones of the
//    fragment layout, and x is read with the same mapping: no shuffles.
//  - Block-scaled weights: each unit (128 K, one weight block along K when block_k % 128 == 0) is summed on its
//    own and added with its block's scale; all 16 rows of a tile share one block row (block_n % 16 == 0).
//    Per-tensor and per-row scales are applied once, in the epilogue.
//  - The 8 warps of a block split K and one shared-memory pass sums them; blocks also split K (blockIdx.y) when
//    the tiles cannot fill the device, and the last block of a tile adds the partial sums in split order.
//  - Weights and scales are constant during a forward, so they are requested before the programmatic-dependent-
//    launch wait. x, the bias, the scratch and y are touched only after it.
// Requirements (checked by the host): k % 16 == 0, x and w 16-byte aligned, 1 <= m <= 8 * kColTiles.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

#include "kernels/common/float_convert.cuh"
#include "kernels/common/ptx_ops.cuh"
#include "kernels/common/split_k.cuh"
#include "kernels/fp8/params.hpp"
#include "kernels/fp8/traits.hpp"

namespace tpq::kernels {

namespace fp8_gemv_detail {

// 4 e4m3 codes (bytes b0..b3 of q) -> f16x2 words (b0, b1) and (b2, b3), each value e4m3 · 2^-8, exactly.
__device__ __forceinline__ void e4m3x4_to_f16x4(uint32_t q, uint32_t& lo, uint32_t& hi) {
  const uint32_t r = __byte_perm(q, 0u, 0x3120);  // b0 b2 b1 b3: the pairs (b0, b1), (b2, b3) sit 16 bits apart
  lo = ((r & 0x00800080u) << 8) | ((r & 0x007F007Fu) << 7);
  hi = (r & 0x80008000u) | ((r & 0x7F007F00u) >> 1);
}

// An f16x2 word in the MMA operand type T.
template <typename T>
__device__ __forceinline__ uint32_t from_f16x2(uint32_t h);
template <>
__device__ __forceinline__ uint32_t from_f16x2<__half>(uint32_t h) {
  return h;
}
template <>
__device__ __forceinline__ uint32_t from_f16x2<__nv_bfloat16>(uint32_t h) {
  __half2 h2;
  memcpy(&h2, &h, 4);
  const float2 f = __half22float2(h2);
  const __nv_bfloat162 b = __floats2bfloat162_rn(f.x, f.y);  // exact: <= 4 significant bits, in range
  uint32_t out;
  memcpy(&out, &b, 4);
  return out;
}

// The 4 MMAs of one 16-byte chunk: weights of rows g (lo) and g+8 (hi), x chunk xa (elements 0..7) and xb (8..15).
template <typename T>
__device__ __forceinline__ void mma_chunk(float (&acc)[4], const uint4& wl, const uint4& wh, const uint4& xa,
                                          const uint4& xb) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    uint32_t l0, l1, h0, h1;
    e4m3x4_to_f16x4(component(wl, i), l0, l1);
    e4m3x4_to_f16x4(component(wh, i), h0, h1);
    const uint4& xv = i < 2 ? xa : xb;
    const uint32_t b0 = component(xv, (i & 1) * 2), b1 = component(xv, (i & 1) * 2 + 1);
    mma_m16n8k16<T>(acc, from_f16x2<T>(l0), from_f16x2<T>(h0), from_f16x2<T>(l1), from_f16x2<T>(h1), b0, b1);
  }
}

}  // namespace fp8_gemv_detail

template <typename T, int kColTiles, int kUnits, bool kBlockScale>
__global__ void __launch_bounds__(kFp8GemvWarps * 32) fp8_weight_only_gemv_kernel(const Fp8GemvParams p) {
  pdl_launch_dependents();

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int tile = blockIdx.x;
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
  const int per_warp = (split_end - split_begin + kFp8GemvWarps - 1) / kFp8GemvWarps;
  const int begin = split_begin + warp * per_warp;
  const int end = min(split_end, begin + per_warp);

  float acc[kColTiles][4] = {};
  bool waited = false;
  for (int u0 = begin; u0 < end; u0 += kUnits) {
    // Loads for kUnits units: chunk 8u + 4s + t of rows g and g+8, s = 0, 1.
    uint4 wl[kUnits][2], wh[kUnits][2];
    bool ok[kUnits][2];
    float sc[kUnits];
#pragma unroll
    for (int uu = 0; uu < kUnits; ++uu) {
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        const int c = (u0 + uu) * 8 + s * 4 + t;
        ok[uu][s] = (u0 + uu < end) && (c < chunks);
        wl[uu][s] = load_stream_16_if(w_lo + static_cast<int64_t>(c) * 16, ok[uu][s]);
        wh[uu][s] = load_stream_16_if(w_hi + static_cast<int64_t>(c) * 16, ok[uu][s]);
      }
      if constexpr (kBlockScale) {
        sc[uu] = u0 + uu < end ? __ldg(block_scales + ((u0 + uu) * kFp8GemvUnitK) / p.block_k) : 0.0f;
      } else {
        sc[uu] = 1.0f;
      }
    }
    if (!waited) {
      pdl_wait();
      waited = true;
    }
    uint4 xv[kUnits][2][kColTiles][2];
#pragma unroll
    for (int uu = 0; uu < kUnits; ++uu) {
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        const int64_t e = (static_cast<int64_t>(u0 + uu) * 8 + s * 4 + t) * 16;  // first K element of the chunk
#pragma unroll
        for (int j = 0; j < kColTiles; ++j) {
          xv[uu][s][j][0] = ok[uu][s] ? load_cached_16(x_row[j] + e) : make_uint4(0, 0, 0, 0);
          xv[uu][s][j][1] = ok[uu][s] ? load_cached_16(x_row[j] + e + 8) : make_uint4(0, 0, 0, 0);
        }
      }
    }
#pragma unroll
    for (int uu = 0; uu < kUnits; ++uu) {
      // Two partial sums (one per half-unit) halve the chain of dependent MMAs.
      float part[2][kColTiles][4] = {};
#pragma unroll
      for (int s = 0; s < 2; ++s) {
#pragma unroll
        for (int j = 0; j < kColTiles; ++j)
          fp8_gemv_detail::mma_chunk<T>(part[s][j], wl[uu][s], wh[uu][s], xv[uu][s][j][0], xv[uu][s][j][1]);
      }
#pragma unroll
      for (int j = 0; j < kColTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          if constexpr (kBlockScale) {
            acc[j][e] = fmaf(part[0][j][e] + part[1][j][e], sc[uu], acc[j][e]);
          } else {
            acc[j][e] += part[0][j][e] + part[1][j][e];
          }
        }
      }
    }
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

  // Value i of the 16 x (8 * kColTiles) tile (fragment value i / 32 of lane i % 32) is finished by thread
  // i % blockDim.x.
  constexpr int kValues = kColTiles * 4 * 32;
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
      const int vl = i & 31, vi = i >> 5;
#pragma unroll
      for (int wi = 0; wi < kFp8GemvWarps; ++wi) v[j] += red[wi][vi][vl];
      const int e = vi & 3;
      row[j] = tile * kFp8GemvTileRows + (vl >> 2) + ((e & 2) ? 8 : 0);  // C fragment: rows g, g+8
      col[j] = (vi >> 2) * 8 + (vl & 3) * 2 + (e & 1);                    // columns 2t, 2t+1 of column tile
      active[j] = row[j] < n && col[j] < m;
    }
  }
  const T* bias = static_cast<const T*>(p.bias);
  T* y = static_cast<T*>(p.y);
  const auto finish = [&](float sum, int r, int c) {
    float scale = kFp8GemvWeightFactor;
    if (p.scale_kind == static_cast<int>(Fp8ScaleKind::kTensor)) scale *= __ldg(p.w_scale);
    if (p.scale_kind == static_cast<int>(Fp8ScaleKind::kRow)) scale *= __ldg(p.w_scale + r);
    float out = sum * scale;
    if (bias != nullptr) out += to_float(bias[r]);
    y[static_cast<int64_t>(c) * n + r] = from_float<T>(out);
  };

  finish_tile(v, active, col, row, p.split_k, tile, blockIdx.y, m, n,
              [&](float sum, int j) { finish(sum, row[j], col[j]); });
}

}  // namespace tpq::kernels
