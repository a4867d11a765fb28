#pragma once
// Launch parameters of the generic weight-only quantized kernels (woq_gemv.cuh, woq_dequant.cuh): plain structs
// shared by the host launchers (g++) and the kernels (nvcc), passed by value. A format's traits decide how the
// packed words are read; these say where everything is.
#include <cstdint>

#include "kernels/common/split_k_params.hpp"

namespace tpq::kernels {

// GEMV: one block = 8 warps that split K over one quad of 32 output columns, or (col_warps 2, 4, 8) stand side by
// side over col_warps quads and split K 8 / col_warps ways; lane (g, t) owns columns 4g..4g+3 of its warp's quad
// and, per step, block of codes 4·step + t of its warp's K range.
inline constexpr int kWoqWarps = 8;  // 4 measured slower on the H200 (70B shapes 25% vs 43% at M = 1)
inline constexpr int kWoqTileCols = 32;

struct WoqGemvParams {
  const void* x;               // [m, rows] (gathered by perm when the rows are reordered)
  const uint32_t* qweight;     // [words_for(rows), n], GPTQ packing
  const uint8_t* zeros;        // [groups, n]
  const void* scales;          // [groups, n], the activation dtype
  const int32_t* g_idx;        // [rows], or null: group = row / group_size
  const void* bias;            // [n] or null
  void* y;                     // [m, n]
  SplitK split_k;              // one tile per blockIdx.x
  int m;
  int n;
  int rows;
  int group_size;
  int group_shift;      // log2(group_size) when a power of two, else -1
  int steps_per_split;  // steps (4 blocks of codes each) that one blockIdx.y covers
  int col_warps = 1;    // GEMV: warps side by side over columns (blockIdx.x covers 32 · col_warps columns)
};

// How the grouped GEMV finds the group of its steps (every step of 4 blocks lies in one group):
//  - kPerStep: power-of-two groups of whole steps, or one group; the warp checks every step's group and switches
//    (applies the finished group's sums, loads the next group's zero points and scales) where it changes.
//  - kActOrder: the same, with the group of a step read from g_idx (rows sorted and padded to whole steps).
//  - kPerBatch: power-of-two groups of whole batches, or one group, and warp ranges (splits) starting at multiples of
//    a batch: each batch lies in one group, so it carries its group's zero points and scales and applies its sums at
//    its end, with no check and no branch; two batches are in flight per warp (woq_gemv.cuh).
//  - kPerPair: the same where groups (and warp ranges) are whole pairs of batches: the two batches in flight are one
//    group, and its sums are applied once, at the second's end.
enum class WoqGroups { kPerStep, kActOrder, kPerBatch, kPerPair };

// GEMM for mid-size M (woq_gemm.cuh): a block of kWoqGemmWarps warps covers kWoqGemmRows rows of M (blockIdx.x)
// and kWoqGemmCols output columns (blockIdx.y; each warp kWoqGemmQuads 32-column quads), over one split of K
// (blockIdx.z). Its parameters are WoqGemvParams with m the whole M and steps_per_split a multiple of a stage.
inline constexpr int kWoqGemmWarps = 8;
inline constexpr int kWoqGemmQuads = 1;
inline constexpr int kWoqGemmCols = kWoqGemmWarps * kWoqGemmQuads * kWoqTileCols;  // 256
inline constexpr int kWoqGemmMTiles = 4;                                          // 8-row MMA tiles of M
inline constexpr int kWoqGemmRows = 8 * kWoqGemmMTiles;                            // 32
inline constexpr int kWoqGemmStages = 3;                                           // shared-memory ring

// One stage of the GEMM's ring for a packing of `codes` codes in `words` words per column and block: 16 blocks of
// codes (4 steps; 3-bit: 4 blocks, one step) of the block's 256 columns, the matching rows of x, and the zero
// points and scales of the groups its steps enter. Rows are padded so that the warps' shared-memory reads of one
// step hit distinct banks (woq_gemm.cuh).
struct WoqGemmStage {
  int codes;
  int words;
  constexpr int blocks() const { return words == 1 ? 16 : 4; }
  constexpr int steps() const { return blocks() / 4; }
  constexpr int rows() const { return blocks() * codes; }  // rows of K
  constexpr int w_row_bytes() const { return kWoqGemmCols * 4 + 32; }
  constexpr int w_bytes() const { return blocks() * words * w_row_bytes(); }
  constexpr int x_row_bytes() const { return rows() * 2 + (codes == 8 ? 64 : codes == 4 ? 32 : 16); }
  constexpr int x_bytes() const { return kWoqGemmRows * x_row_bytes(); }
  static constexpr int kMetaBytes = kWoqGemmCols * 3;  // zero points (1 byte) and scales (2 bytes) of one group
  constexpr int meta_bytes() const { return steps() * kMetaBytes; }
  constexpr int bytes() const { return w_bytes() + x_bytes() + meta_bytes() + 16; }  // + the steps' group indices
  constexpr int smem_bytes() const { return kWoqGemmStages * bytes(); }
};

// Dequantization to a dense [n, k] weight: W[c, col(r)] for every stored row r.
struct WoqDequantParams {
  const uint32_t* qweight;
  const uint8_t* zeros;
  const void* scales;
  const int32_t* g_idx;  // or null
  const int32_t* perm;   // or null: col(r) = r
  void* out;             // [n, k]
  int64_t n;
  int64_t k;
  int64_t rows;
  int64_t group_size;
};

// x_out[i, r] = x[i, perm[r]], or 0 where perm[r] < 0.
struct WoqGatherParams {
  const void* x;   // [m, k]
  const int32_t* perm;
  void* out;       // [m, rows]
  int64_t m;
  int64_t k;
  int64_t rows;
};

}  // namespace tpq::kernels
