#pragma once
// Launch parameters of the generic weight-only quantized kernels (woq_gemv.cuh, woq_dequant.cuh): plain structs
// shared by the host launchers (g++) and the kernels (nvcc), passed by value. A format's traits decide how the
// packed words are read; these say where everything is.
#include <cstdint>

#include "kernels/common/split_k_params.hpp"

namespace tpq::kernels {

// GEMV: one block = 8 warps that split K over one tile of 32 output columns (or two such quads); lane (g, t) owns
// columns 4g..4g+3 of each quad and, per step, block of codes 4·step + t of its warp's K range.
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
  int quads;            // 32-column quads per block (blockIdx.x covers 32 · quads columns)
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
