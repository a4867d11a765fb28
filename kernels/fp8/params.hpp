#pragma once
// Launch parameters of the FP8 kernels: plain structs shared by the host launchers (g++) and the kernels (nvcc),
// passed to the kernels by value.
#include <cstddef>
#include <cstdint>

#include "kernels/common/split_k_params.hpp"

namespace tpq::kernels {

// Weight-only GEMV (weight_only_gemv.cuh): 16 output rows per block, 8 warps splitting K in units of 128 K
// elements, 8 output columns (rows of x) per MMA column tile, two column tiles at most.
inline constexpr int kFp8GemvTileRows = 16;
inline constexpr int kFp8GemvWarps = 8;
inline constexpr int kFp8GemvUnitK = 128;
inline constexpr int kFp8GemvColTileRows = 8;
inline constexpr int kFp8GemvMaxM = 16;
inline constexpr int kFp8GemvTwoBatchUnits = 2;  // units per batch where two batches are in flight

struct Fp8GemvParams {
  const void* x;            // [m, k] bf16 / f16
  const uint8_t* w;         // e4m3 [n, k]
  const float* w_scale;     // [1] | [n] | [ceil(n / block_n), scale_ld]
  const void* bias;         // [n] or null
  void* y;                  // [m, n]
  SplitK split_k;           // tiles of 16 rows of w
  int m;
  int n;
  int k;                    // k % 16 == 0
  int scale_kind;           // Fp8ScaleKind
  int scale_ld;             // kBlock
  int block_n;              // kBlock: a multiple of 16
  int block_k;              // kBlock: a multiple of 128
  int units_per_split;      // 128-K units each blockIdx.y covers
  int units_in_flight;      // M <= 8: 128-K units each warp loads before using them, 2 or 4 (host heuristic)
  int two_batches;          // M <= 8: two batches of kFp8GemvTwoBatchUnits in flight per warp (host heuristic;
                            // units_in_flight is then not read)
  int col_warps = 1;        // warps side by side over tiles (1, or 2 at M <= 8; blockIdx.x covers col_warps tiles),
                            // the other kFp8GemvWarps / col_warps splitting K
};

// Activation quantization (act_quant.cuh): one block per row of x; the dynamic per-tensor amax pass in at most
// kFp8AmaxMaxBlocks blocks (each quantization block reduces their partial maxima: 4 loads per thread at most).
inline constexpr int kFp8QuantThreads = 256;
inline constexpr int kFp8AmaxMaxBlocks = 4 * kFp8QuantThreads;
inline constexpr int kFp8AmaxUnroll = 4;

// Where the activation scales go, in the layout the GEMM reads them.
enum class Fp8ScaleLayout : int {
  kScalar = 0,   // scales[0] (dynamic per-tensor only: the static scale is the layer's own tensor)
  kPerRow = 1,   // scales[m]: cuBLASLt OUTER_VEC for the rows of x
  kGrouped = 2,  // scales[g * m_pad + row], g < ceil(k / 128): cuBLASLt VEC128 (M contiguous per K group)
};

struct Fp8ActQuantParams {
  const void* x;               // [m, k] bf16 / f16
  uint8_t* q;                  // e4m3 [m, k]
  float* scales;               // by layout
  const float* static_scale;   // kStaticTensor: the layer's input_scale [1]
  const float* amax_partials;  // kDynamicTensor: the amax pass's per-block maxima (fp8_amax_kernel)
  int amax_blocks;             // how many
  int64_t m;
  int64_t m_pad;               // rows quantized (>= m): rows m..m_pad-1 get zero codes and scale 1, for cuBLASLt
                               // layouts that want M padded (VEC128 scales: M % 4 == 0)
  int64_t k;
  int scheme;                  // Fp8ActScheme
  int ue8m0;
  float scale_ub;
  int group;                   // kDynamicGroup
  int layout;                  // Fp8ScaleLayout
  int layout_groups;           // kGrouped: ceil(k / 128)
};

// Block-scaled GEMM on sm_90a (block_gemm.cuh): y = Σ over 128-K blocks of (x_q · W_qᵀ) · x_scale · w_scale, for
// 128 x 128 weight blocks and 1 x 128 activation groups. Tiles of 192 x 128 outputs, K in blocks of 128 through
// a ring of shared-memory stages that the copy engine fills (one producer warp) and three warpgroups consume with
// WGMMA, each 64 rows of the tile. One block per SM walks the tiles in groups of kFp8GemmGroupM row tiles, so the
// blocks in flight share W's tiles in L2.
inline constexpr int kFp8GemmConsumers = 3;  // warpgroups of 64 rows each
inline constexpr int kFp8GemmTileM = 64 * kFp8GemmConsumers;
inline constexpr int kFp8GemmTileN = 128;
inline constexpr int kFp8GemmTileK = 128;
inline constexpr int kFp8GemmStages = 5;
inline constexpr int kFp8GemmThreads = 128 * (1 + kFp8GemmConsumers);  // a producer warpgroup first
inline constexpr int kFp8GemmGroupM = 8;

// Dynamic shared memory of one block: the stages (x and W tiles, x's scales), their barriers, and slack to align
// the stages to 1024 bytes (128-byte swizzle).
constexpr size_t fp8_block_gemm_smem_bytes() {
  const size_t stage = size_t{kFp8GemmTileM + kFp8GemmTileN} * kFp8GemmTileK + size_t{kFp8GemmTileM} * 4;
  return 1024 + kFp8GemmStages * (stage + 16);
}

struct Fp8BlockGemmParams {
  const uint8_t* x_q;      // e4m3 [m_pad, k]
  const float* x_scales;   // [ceil(k / 128)][m_pad] (Fp8ScaleLayout::kGrouped)
  const uint8_t* w;        // e4m3 [n, k]
  const float* w_scale;    // [ceil(n / 128)][scale_ld]
  const void* bias;        // [n] or null
  void* y;                 // [m, n]
  int m;
  int m_pad;               // m_pad % 4 == 0 (16-byte rows of x_scales)
  int n;
  int k;                   // k % 16 == 0 (16-byte rows of x_q and w)
  int scale_ld;            // >= ceil(k / 128)
  int paired_stores;       // 1: n even and y 4-byte aligned (two outputs per store)
};

// Dequantization to bf16 / f16 / f32 (dequant.cuh), for GPUs and shapes the FP8 paths do not take.
struct Fp8DequantParams {
  const uint8_t* w;      // e4m3 [n, k]
  const float* scale;    // as Fp8GemvParams::w_scale
  void* out;             // [n, k]
  int64_t n;
  int64_t k;
  int scale_kind;
  int64_t scale_ld;
  int64_t block_n;
  int64_t block_k;
};

}  // namespace tpq::kernels
