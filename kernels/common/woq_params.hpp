#pragma once
// Launch parameters of the generic weight-only quantized kernels (woq_gemv.cuh, woq_dequant.cuh): plain structs
// shared by the host launchers (g++) and the kernels (nvcc), passed by value. A format's traits decide how the
// packed words are read; these say where everything is.
#include <cstdint>

namespace tpq::kernels {

// GEMV: blocks of 8 warps; lane (g, t) owns columns 4g..4g+3 of a tile of 32 output columns and, per step, block
// of codes 4·step + t. The general GEMV: one block per tile, its warps split K. The grouped GEMV: every warp
// streams its own range of (tile, batch of steps), see woq_gemv.cuh.
inline constexpr int kWoqWarps = 8;  // 4 measured slower on the H200 (70B shapes 25% vs 43% at M = 1)
inline constexpr int kWoqTileCols = 32;

// Floats of one partial-sum slot of the grouped GEMV: a warp's C fragments (kColTiles x 2 row tiles x 4 values
// per lane x 32 lanes). Each streaming warp owns two slots.
inline constexpr int woq_stream_slot_floats(int col_tiles) { return col_tiles * 2 * 4 * 32; }

struct WoqGemvParams {
  const void* x;               // [m, rows] (gathered by perm when the rows are reordered)
  const uint32_t* qweight;     // [words_for(rows), n], GPTQ packing
  const uint8_t* zeros;        // [groups, n]
  const void* scales;          // [groups, n], the activation dtype
  const int32_t* g_idx;        // [rows], or null: group = row / group_size
  const void* bias;            // [n] or null
  void* y;                     // [m, n]
  float* partials;             // general: [splits, m, n] f32 when splits > 1; grouped: 2 slots per streaming warp
  unsigned* tile_counters;     // general: [ceil(n / 32)]; grouped: [stream_warps]; zero on entry and on exit
  int m;
  int n;
  int rows;
  int group_size;
  int group_shift;      // log2(group_size) when a power of two, else -1
  int steps_per_split;  // general: steps (4 blocks of codes each) that one blockIdx.y covers
  int splits;           // general: blocks per tile (split-K)
  int stream_warps;     // grouped: the streaming warps (the launcher sets it, at most max_stream_warps)
  int max_stream_warps; // grouped: what the scratch and the GPU hold (slots, counters, resident warps)
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
