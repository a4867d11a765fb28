#pragma once
// FP8 GEMM with 128 x 128 weight blocks and 1 x 128 activation groups, for sm_90a (WGMMA, the copy engine):
//   y[r, c] = Σ_b (Σ_{k in block b} x_q[r, k] · w_q[c, k]) · x_scale[b, r] · w_scale[c / 128, b]  (+ bias[c])
// The scales change every 128 K, so the tensor cores sum one block of K (four m64n128k32 WGMMAs, into registers
// zeroed by the first) and the lanes add that block's sum, scaled, to f32 accumulators: each block's partial sum is
// promoted to f32 at once, the scheme DeepSeek-V3's report describes for its FP8 training GEMMs.
//
// Persistent blocks of 512 threads, one per SM, each computing 192 x 128 output tiles in turn (parameters and the
// shared-memory budget: params.hpp):
//  - warp 0 (one lane) streams K in blocks of 128 through kFp8GemmStages stages: the 192 x 128 and 128 x 128 tiles
//    of x_q and W (128-byte swizzle, the layout WGMMA reads K-major operands in) and the tile rows' 192 activation
//    scales, each stage completing on its `full` barrier; it reuses a stage once the twelve consumer warps have
//    arrived on its `empty` barrier. Rows and columns past the ends of x_q and W, and K past k, arrive as zeros.
//  - warpgroups 1 to 3 each own 64 rows of the tile: per K block, wait for the stage, run four WGMMAs (32 K each;
//    both operands from shared memory), wait for them, release the stage, and promote.
// The consumer warpgroups take turns on the tensor cores: one promotes while the others' WGMMAs run. Three of them
// (192 rows) rather than two: 40 KB of tiles per K block for 192 x 128 outputs instead of 32 KB for 128 x 128, a
// sixth less traffic from L2 per output; their accumulators (two fragments of 64 floats per thread) fit in 160
// registers, which setmaxnreg moves from the producer warpgroup (24).
//
// Measured on an H200 (benchmarks/results/2026-11-25-h200-fp8-block-gemm-s10.txt): 0.81-0.92x cuBLASLt's
// BLK128x128 GEMM at M = 4096 (0.80-0.86x with 128 x 128 tiles), so cuBLASLt keeps the problems it takes and this
// kernel runs those it refuses (K % 128 != 0: 1.2-2.2x the dequantize + bf16 GEMM it replaces). ncu: the tensor
// pipe 55 % busy, L2 54 %, L1/TEX (shared memory) 60 %, the WGMMA wait the largest single stall (15 % of the
// samples). Two block sums per
// thread (the next block's WGMMAs running while this one is promoted, with two warpgroups) made ptxas serialize
// every WGMMA (C7514: accumulators read inside the pipeline stage), so it was not measured.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernels/common/float_convert.cuh"
#include "kernels/fp8/params.hpp"

namespace tpq::kernels {

namespace fp8_gemm {

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void barrier_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}

__device__ __forceinline__ void barrier_expect_bytes(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}

__device__ __forceinline__ void barrier_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}

// Returns once the barrier's phase of parity `parity` has completed.
__device__ __forceinline__ void barrier_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n\t.reg .pred p;\n\t"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\t"
        "selp.u32 %0, 1, 0, p;\n\t}"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (done == 0);
}

// A 2D box of `map` at (c0 inner, c1 outer) into shared memory at `dst`, completing `bytes` on `bar`.
__device__ __forceinline__ void copy_box(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0, int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];" ::"r"(
          dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1)
      : "memory");
}

// WGMMA's descriptor of a K-major operand in 128-byte swizzled rows (as the copy engine writes them): 8-row atoms
// of 1024 bytes (the stride), start address in units of 16 bytes, swizzle mode 1 (128 bytes). The start may move
// by 32 bytes along K within the atom: the swizzle is a function of the address bits, so the tile base must be
// 1024-byte aligned.
__device__ __forceinline__ uint64_t sw128_descriptor(uint32_t address) {
  return static_cast<uint64_t>((address & 0x3FFFF) >> 4) | (uint64_t{1} << 16) | (uint64_t{1024 >> 4} << 32) |
         (uint64_t{1} << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }

// Keeps the compiler from moving reads of `v` across the WGMMA wait (the asm above does not say it writes them).
__device__ __forceinline__ void register_fence(float& v) { asm volatile("" : "+f"(v)::"memory"); }

// d (64 x 128, the warpgroup's accumulator fragment) = A · Bᵀ (+ d when `accumulate`), A 64 x 32 and B 128 x 32
// e4m3, both K-major in shared memory.
__device__ __forceinline__ void wgmma_m64n128k32_e4m3(float (&d)[64], uint64_t desc_a, uint64_t desc_b,
                                                      int accumulate) {
  asm volatile(
      "{\n\t.reg .pred p;\n\t"
      "setp.ne.b32 p, %66, 0;\n\t"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, %64, %65, p, 1, 1;\n\t}"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}

// Two adjacent outputs (4-byte aligned) rounded to T.
template <typename T>
__device__ __forceinline__ void store_pair(T* dst, float v0, float v1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(v0, v1);
  } else {
    *reinterpret_cast<__half2*>(dst) = __floats2half2_rn(v0, v1);
  }
}

// The tile a block computes: row tiles in groups of kFp8GemmGroupM; within a group, its row tiles fastest, then
// column tiles.
struct TileOf {
  int m_tile, n_tile;
};
__device__ __forceinline__ TileOf tile_of(int t, int m_tiles, int n_tiles) {
  const int group_tiles = kFp8GemmGroupM * n_tiles;
  const int first_m = (t / group_tiles) * kFp8GemmGroupM;
  const int rows = min(m_tiles - first_m, kFp8GemmGroupM);
  const int in_group = t % group_tiles;
  return {first_m + in_group % rows, in_group / rows};
}

}  // namespace fp8_gemm

template <typename T>
__global__ void __launch_bounds__(kFp8GemmThreads, 1)
    fp8_block_gemm_kernel(const __grid_constant__ CUtensorMap x_map, const __grid_constant__ CUtensorMap w_map,
                          const __grid_constant__ CUtensorMap x_scale_map, const Fp8BlockGemmParams p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace fp8_gemm;
  constexpr int kStages = kFp8GemmStages;
  constexpr uint32_t kXTileBytes = kFp8GemmTileM * kFp8GemmTileK;
  constexpr uint32_t kWTileBytes = kFp8GemmTileN * kFp8GemmTileK;
  constexpr uint32_t kScaleBytes = kFp8GemmTileM * 4;
  constexpr int kConsumerWarps = 4 * kFp8GemmConsumers;
  static_assert(kFp8GemmTileN == 128 && kFp8GemmTileK == 128 && kXTileBytes % 1024 == 0, "the layout below");

  extern __shared__ uint8_t smem_raw[];
  const uint32_t raw = smem_address(smem_raw);
  const uint32_t base = (raw + 1023) & ~1023u;
  uint8_t* const smem = smem_raw + (base - raw);
  const uint32_t x_tiles = base;                              // [kStages][kFp8GemmTileM x 128]
  const uint32_t w_tiles = x_tiles + kStages * kXTileBytes;   // [kStages][128 x 128]
  const uint32_t scale_offset = kStages * (kXTileBytes + kWTileBytes);
  const float* const x_scales = reinterpret_cast<const float*>(smem + scale_offset);  // [kStages][kFp8GemmTileM]
  const uint32_t full = base + scale_offset + kStages * kScaleBytes;  // [kStages] u64
  const uint32_t empty = full + kStages * 8;                          // [kStages] u64

  const int m_tiles = (p.m + kFp8GemmTileM - 1) / kFp8GemmTileM;
  const int n_tiles = (p.n + kFp8GemmTileN - 1) / kFp8GemmTileN;
  const int tiles = m_tiles * n_tiles;
  const int k_blocks = (p.k + kFp8GemmTileK - 1) / kFp8GemmTileK;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      barrier_init(full + 8 * s, 1);
      barrier_init(empty + 8 * s, kConsumerWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  }
  __syncthreads();

  // Persistent: block b computes tiles b, b + gridDim.x, ...; the ring runs on across tiles (use u of stage
  // u % kStages, phase (u / kStages) & 1, counted over the block's whole life), so the next tile's first blocks of
  // K load while the consumers finish this one.
  if (warp < 4) {
    // Producer: one lane of warp 0 issues every copy. Its warpgroup gives registers to the consumers.
    asm volatile("setmaxnreg.dec.sync.aligned.u32 24;");
    if (warp == 0 && lane == 0) {
      uint32_t u = 0;
      for (int t = static_cast<int>(blockIdx.x); t < tiles; t += static_cast<int>(gridDim.x)) {
        const TileOf tile = tile_of(t, m_tiles, n_tiles);
        for (int kb = 0; kb < k_blocks; ++kb, ++u) {
          const uint32_t s = u % kStages;
          if (u >= kStages) barrier_wait(empty + 8 * s, ((u / kStages) - 1) & 1);
          const uint32_t bar = full + 8 * s;
          barrier_expect_bytes(bar, kXTileBytes + kWTileBytes + kScaleBytes);
          copy_box(x_tiles + s * kXTileBytes, &x_map, bar, kb * kFp8GemmTileK, tile.m_tile * kFp8GemmTileM);
          copy_box(w_tiles + s * kWTileBytes, &w_map, bar, kb * kFp8GemmTileK, tile.n_tile * kFp8GemmTileN);
          copy_box(smem_address(x_scales + s * kFp8GemmTileM), &x_scale_map, bar, tile.m_tile * kFp8GemmTileM, kb);
        }
      }
    }
    return;
  }

  // Consumers: warpgroup g owns rows [64 g, 64 g + 64) of the tile; in its fragment, lane l of warp q holds rows
  // 16 q + l / 4 and 16 q + l / 4 + 8, columns 8 j + 2 (l % 4) + {0, 1} for j < 16.
  asm volatile("setmaxnreg.inc.sync.aligned.u32 160;");
  const int g = warp / 4 - 1;
  const int row = 64 * g + 16 * (warp % 4) + lane / 4;  // within the tile
  T* const y = static_cast<T*>(p.y);
  const T* const bias = static_cast<const T*>(p.bias);
  const bool pairs = p.paired_stores != 0;
  uint32_t u = 0;
  for (int t = static_cast<int>(blockIdx.x); t < tiles; t += static_cast<int>(gridDim.x)) {
    const TileOf tile = tile_of(t, m_tiles, n_tiles);
    const float* const w_scale_row = p.w_scale + static_cast<int64_t>(tile.n_tile) * p.scale_ld;
    float acc[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
    float block_sum[64];
    for (int kb = 0; kb < k_blocks; ++kb, ++u) {
      const uint32_t s = u % kStages;
      const float w_scale = __ldg(w_scale_row + kb);  // issued before the wait, used after the WGMMAs
      barrier_wait(full + 8 * s, (u / kStages) & 1);
      const float* const stage_scales = x_scales + s * kFp8GemmTileM;
      const float x_scale_lo = stage_scales[row];
      const float x_scale_hi = stage_scales[row + 8];
      const uint32_t x_tile = x_tiles + s * kXTileBytes + g * 64 * kFp8GemmTileK;
      const uint32_t w_tile = w_tiles + s * kWTileBytes;
      wgmma_fence();
#pragma unroll
      for (int k = 0; k < kFp8GemmTileK / 32; ++k)
        wgmma_m64n128k32_e4m3(block_sum, sw128_descriptor(x_tile + 32 * k), sw128_descriptor(w_tile + 32 * k), k);
      wgmma_commit();
      wgmma_wait_all();
#pragma unroll
      for (int i = 0; i < 64; ++i) register_fence(block_sum[i]);
      if (lane == 0) barrier_arrive(empty + 8 * s);
      const float scale_lo = x_scale_lo * w_scale;
      const float scale_hi = x_scale_hi * w_scale;
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        acc[4 * j + 0] += block_sum[4 * j + 0] * scale_lo;
        acc[4 * j + 1] += block_sum[4 * j + 1] * scale_lo;
        acc[4 * j + 2] += block_sum[4 * j + 2] * scale_hi;
        acc[4 * j + 3] += block_sum[4 * j + 3] * scale_hi;
      }
    }

    // Epilogue: bias, rounding to T, stores of column pairs where the row length allows.
    const int m0 = tile.m_tile * kFp8GemmTileM;
    const int n0 = tile.n_tile * kFp8GemmTileN;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = m0 + row + 8 * half;
      if (r >= p.m) continue;
      T* const y_row = y + static_cast<int64_t>(r) * p.n;
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const int c = n0 + 8 * j + 2 * (lane % 4);
        float v0 = acc[4 * j + 2 * half];
        float v1 = acc[4 * j + 2 * half + 1];
        if (bias != nullptr) {
          if (c < p.n) v0 += to_float(bias[c]);
          if (c + 1 < p.n) v1 += to_float(bias[c + 1]);
        }
        if (pairs && c + 1 < p.n) {
          store_pair(y_row + c, v0, v1);
        } else {
          if (c < p.n) y_row[c] = from_float<T>(v0);
          if (c + 1 < p.n) y_row[c + 1] = from_float<T>(v1);
        }
      }
    }
  }
#else
  (void)x_map;
  (void)w_map;
  (void)x_scale_map;
  (void)p;
  __trap();  // the host launches this kernel only where fp8_block_gemm_prepare says the code has it
#endif
}

}  // namespace tpq::kernels
