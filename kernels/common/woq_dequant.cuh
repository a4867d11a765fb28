#pragma once
// Dequantization of a weight-only quantized weight to a dense [n, k] matrix (bf16, f16 or f32), and the x gather
// that pairs with row-reordered (act-order) weights. Both read a format through its kernel traits.
//
// Dequantize (woq_dequant_kernel): thread (tx, ty) of a 32 x 8 block decodes column n0 + tx, block of codes b0 + ty
// (reads coalesced across tx) into a shared tile of 32 rows of W x 8 blocks; the block then writes the tile row by
// row with 16-byte stores (writes coalesced along K). Rows in checkpoint order, K a multiple of 16 bytes of output.
// woq_dequant_scatter_kernel takes everything else (act-order rows, odd K): one scalar store per value.
// Values: s · (q − z) computed in f32 and rounded once, exactly as the CPU reference and the GEMV's decoder.
#include <cstdint>

#include "kernels/common/float_convert.cuh"
#include "kernels/common/ptx_ops.cuh"
#include "kernels/common/woq_params.hpp"

namespace tpq::kernels {

inline constexpr int kWoqDequantCols = 32;
inline constexpr int kWoqDequantBlocks = 8;

template <class Traits, typename Out, typename Scale>
__global__ void __launch_bounds__(kWoqDequantCols * kWoqDequantBlocks) woq_dequant_kernel(const WoqDequantParams p) {
  constexpr int kCodes = Traits::kCodes;
  constexpr int kWords = Traits::kWords;
  constexpr int kBlockWords = kCodes * static_cast<int>(sizeof(Out)) / 4;  // 32-bit words of one block's outputs
  constexpr int kRowWords = kWoqDequantBlocks * kBlockWords;
  constexpr int kChunksPerRow = kRowWords / 4;
  static_assert(kBlockWords * 4 == kCodes * static_cast<int>(sizeof(Out)), "whole words per block");
  __shared__ uint32_t tile[kWoqDequantCols][kRowWords + 1];  // +1: column-wise writes hit distinct banks

  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kWoqDequantCols;
  const int64_t blocks = p.rows / kCodes;
  const Scale* scales = static_cast<const Scale*>(p.scales);
  Out* out = static_cast<Out*>(p.out);
  for (int64_t b0 = static_cast<int64_t>(blockIdx.y) * kWoqDequantBlocks; b0 < blocks;
       b0 += static_cast<int64_t>(gridDim.y) * kWoqDequantBlocks) {
    const int64_t col = n0 + tx, b = b0 + ty;
    if (col < p.n && b < blocks) {
      uint32_t w[kWords];
#pragma unroll
      for (int j = 0; j < kWords; ++j) w[j] = __ldg(Traits::word(p.qweight, p.n, b, j, col));
      const int64_t group = (b * kCodes) / p.group_size;  // a block never straddles a group here (host-checked)
      const float s = to_float(scales[group * p.n + col]);
      const int z = p.zeros[group * p.n + col];
      Out v[kCodes];
#pragma unroll
      for (int i = 0; i < kCodes; ++i)
        v[i] = from_float<Out>(static_cast<float>(static_cast<int>(Traits::code(w, i)) - z) * s);
      uint32_t packed[kBlockWords];
      memcpy(packed, v, sizeof(v));
#pragma unroll
      for (int i = 0; i < kBlockWords; ++i) tile[tx][ty * kBlockWords + i] = packed[i];
    }
    __syncthreads();
    const int64_t left = (blocks - b0) * kBlockWords;
    const int64_t valid_words = left < kRowWords ? left : kRowWords;
    for (int c = ty * kWoqDequantCols + tx; c < kWoqDequantCols * kChunksPerRow; c += kWoqDequantCols * kWoqDequantBlocks) {
      const int r = c / kChunksPerRow, chunk = c % kChunksPerRow;
      if (n0 + r >= p.n || chunk * 4 >= valid_words) continue;
      const uint4 v = make_uint4(tile[r][chunk * 4], tile[r][chunk * 4 + 1], tile[r][chunk * 4 + 2], tile[r][chunk * 4 + 3]);
      char* dst = reinterpret_cast<char*>(out + (n0 + r) * p.k + b0 * kCodes) + chunk * 16;
      *reinterpret_cast<uint4*>(dst) = v;
    }
    __syncthreads();
  }
}

template <class Traits, typename Out, typename Scale>
__global__ void __launch_bounds__(kWoqDequantCols * kWoqDequantBlocks)
    woq_dequant_scatter_kernel(const WoqDequantParams p) {
  constexpr int kCodes = Traits::kCodes;
  constexpr int kWords = Traits::kWords;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kWoqDequantCols + threadIdx.x;
  if (col >= p.n) return;
  const int64_t blocks = (p.rows + kCodes - 1) / kCodes;
  const Scale* scales = static_cast<const Scale*>(p.scales);
  Out* out = static_cast<Out*>(p.out);
  for (int64_t b = static_cast<int64_t>(blockIdx.y) * kWoqDequantBlocks + threadIdx.y; b < blocks;
       b += static_cast<int64_t>(gridDim.y) * kWoqDequantBlocks) {
    uint32_t w[kWords];
#pragma unroll
    for (int j = 0; j < kWords; ++j) w[j] = __ldg(Traits::word(p.qweight, p.n, b, j, col));
    const int64_t r0 = b * kCodes;
    Out* row = out + col * p.k;
    int64_t group = p.g_idx != nullptr ? __ldg(p.g_idx + r0) : r0 / p.group_size;
    float s = to_float(scales[group * p.n + col]);
    int z = p.zeros[group * p.n + col];
#pragma unroll
    for (int i = 0; i < kCodes; ++i) {
      const int64_t r = r0 + i;
      if (r >= p.rows) continue;
      if (p.g_idx != nullptr || (p.group_size % kCodes != 0 && r % p.group_size == 0)) {
        // Blocks of sorted act-order rows share one group; general group sizes may change group inside a block.
        const int64_t gr = p.g_idx != nullptr ? __ldg(p.g_idx + r) : r / p.group_size;
        if (gr != group) {
          group = gr;
          s = to_float(scales[group * p.n + col]);
          z = p.zeros[group * p.n + col];
        }
      }
      const int64_t c = p.perm != nullptr ? __ldg(p.perm + r) : r;
      if (c < 0 || c >= p.k) continue;
      const float v = static_cast<float>(static_cast<int>(Traits::code(w, i)) - z) * s;
      row[c] = from_float<Out>(v);
    }
  }
}

// Launched with programmatic stream serialization where the host allows it: the GEMV after it starts at once and
// streams its weights while this runs (its griddepcontrol.wait waits for this grid), and perm, constant during a
// forward, is read before this kernel's own wait for x.
// Each thread gathers 8 consecutive stored rows of one row of x (rows % 8 == 0, out 16-byte aligned: host-checked):
// two 16-byte loads of perm, eight loads of x (scattered within its row, which L1 holds), 16-byte stores.
template <typename T>
__global__ void woq_gather_kernel(const WoqGatherParams p) {
  constexpr int kStores = static_cast<int>(sizeof(T)) / 2;  // 16-byte stores of the 8 values: 1 (16-bit), 2 (f32)
  pdl_launch_dependents();
  const T* x = static_cast<const T*>(p.x);
  const int64_t chunks = p.m * (p.rows / 8);
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const auto perm_of = [&](int64_t i, int (&c)[8]) {
    const int4* pp = reinterpret_cast<const int4*>(p.perm + (i % (p.rows / 8)) * 8);
    const int4 a = __ldg(pp), b = __ldg(pp + 1);
    c[0] = a.x, c[1] = a.y, c[2] = a.z, c[3] = a.w, c[4] = b.x, c[5] = b.y, c[6] = b.z, c[7] = b.w;
  };
  int c[8];
  if (first < chunks) perm_of(first, c);  // perm is constant during a forward: read before the wait
  pdl_wait();
  for (int64_t i = first; i < chunks; i += stride) {
    if (i != first) perm_of(i, c);
    const T* row = x + (i / (p.rows / 8)) * p.k;
    T v[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = c[e] >= 0 ? row[c[e]] : from_float<T>(0.0f);
    uint4 packed[kStores];
    memcpy(packed, v, sizeof(packed));
#pragma unroll
    for (int q = 0; q < kStores; ++q) reinterpret_cast<uint4*>(p.out)[i * kStores + q] = packed[q];
  }
}

}  // namespace tpq::kernels
