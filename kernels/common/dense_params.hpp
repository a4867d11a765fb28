#pragma once
// Launch parameters of the dense (unquantized) kernels: plain structs shared by the host launchers (g++) and the
// kernels (nvcc), passed to the kernels by value.
#include <cstdint>

#include "kernels/common/split_k_params.hpp"

namespace tpq::kernels {

// Dense GEMV (dense_gemv.cuh): 16 output rows per block, 8 warps splitting K, 32 K elements per warp step.
inline constexpr int kGemvTileRows = 16;
inline constexpr int kGemvWarps = 8;
inline constexpr int kGemvStepElems = 32;

struct DenseGemvParams {
  const void* x;            // [m, k]
  const void* w;            // [n, k]
  const void* bias;         // [n] or null
  void* y;                  // [m, n]
  SplitK split_k;           // tiles of 16 rows of w
  int m;
  int n;
  int k;
  int steps_per_split;  // K steps (of kGemvStepElems) each blockIdx.y covers
};

// Tiled SIMT GEMM (simt_gemm.cuh): any shape and alignment.
inline constexpr int kSimtTileM = 64;
inline constexpr int kSimtTileN = 64;
inline constexpr int kSimtTileK = 16;
inline constexpr int kSimtThreads = 256;  // 16 x 16 threads, each a 4 x 4 block of outputs

struct SimtGemmParams {
  const void* x;     // [m, k]
  const void* w;     // [n, k]
  const void* bias;  // [n] or null
  void* y;           // [m, n]
  int64_t m;
  int64_t n;
  int64_t k;
};

}  // namespace tpq::kernels
