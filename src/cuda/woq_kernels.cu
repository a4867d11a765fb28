// Launchers of the weight-only kernels: the only place their templates are instantiated, for the GPTQ packing
// (kernels/gptq/kernel_traits.cuh) at 2, 3, 4 and 8 bits. No tpq error headers (fmt does not build under nvcc):
// launchers return the CUDA status and woq.cpp turns it into a tpq::Error.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <bit>

#include "kernels/common/launch.cuh"
#include "kernels/common/woq_dequant.cuh"
#include "kernels/common/woq_gemm.cuh"
#include "kernels/common/woq_gemv.cuh"
#include "kernels/gptq/kernel_traits.cuh"
#include "src/cuda/dense_dispatch.cuh"
#include "src/cuda/occupancy.hpp"
#include "src/cuda/woq_kernels.hpp"

namespace tpq::detail {

namespace {

// The general GEMV: steps of loads in flight per lane (kWords 16-byte weight loads each, plus kCodes activations
// per column tile) held in registers, chosen to stay near 100 registers.
constexpr int unroll_for(int bits, int col_tiles) {
  const int base = bits == 3 || bits == 2 ? 2 : 4;
  return col_tiles == 1 || base == 2 ? base : base / 2;
}

// The grouped GEMV decodes with one LOP3 per pair. With one batch of steps in flight per lane (kPerStep,
// kActOrder): 8 steps of one column tile, halved for two column tiles; 4 for the 16-code 2-bit blocks, 2 for the
// 3-word 3-bit blocks; near 128 registers. With two (kPerBatch): half of that each, so that one batch of one tile is
// 128 rows at every width (a g128 group).
constexpr int grouped_steps_for(int bits, int col_tiles, bool two_batches) {
  const int base = (bits == 3 ? 2 : bits == 2 ? 4 : 8) / (two_batches ? 2 : 1);
  return base / col_tiles > 0 ? base / col_tiles : 1;
}
// The steps of a kPerBatch batch, or 0 where there is no kPerBatch kernel (s14, H200, against kPerStep): batches of
// one step (3-bit, and 2-bit with two column tiles) and 8-bit with two column tiles (0.90-0.96x at M = 16, where
// ptxas spills) stay with kPerStep.
constexpr int per_batch_steps(int bits, int col_tiles) {
  const int steps = grouped_steps_for(bits, col_tiles, true);
  return steps >= 2 && (bits != 8 || col_tiles == 1) ? steps : 0;
}
// Batches per flush of the two-batch kernel: 2 (kPerPair) where it has two column tiles, whose 2-step batches are
// half a g128 group (s17, H200: 1.05-1.16x at M 9..16), else 1; 0 where there is no two-batch kernel.
constexpr int flush_batches(int bits, int col_tiles) {
  return per_batch_steps(bits, col_tiles) == 0 ? 0 : col_tiles == 2 ? 2 : 1;
}

template <int kBits, typename T, int kColTiles, bool kGrouped, int kColWarps = 1,
          kernels::WoqGroups kGroups = kernels::WoqGroups::kPerStep>
auto gemv_kernel() {
  using Traits = kernels::gptq::KernelTraits<kBits>;
  if constexpr (kGrouped) {
    constexpr int kSteps = grouped_steps_for(
        kBits, kColTiles, kGroups == kernels::WoqGroups::kPerBatch || kGroups == kernels::WoqGroups::kPerPair);
    return kernels::woq_gemv_grouped_kernel<Traits, T, kColTiles, kSteps, kGroups, kColWarps>;
  } else {
    return kernels::woq_gemv_kernel<Traits, T, kColTiles, unroll_for(kBits, kColTiles)>;
  }
}

// Resident blocks per SM of one instantiation.
template <int kBits, typename T, int kColTiles, bool kGrouped, int kColWarps>
int blocks_per_sm(int device) {
  return resident_blocks_per_sm(reinterpret_cast<const void*>(gemv_kernel<kBits, T, kColTiles, kGrouped, kColWarps>()),
                                kernels::kWoqWarps * 32, device);
}

// Which grouped GEMV kernel serves p: kPerPair / kPerBatch where every pair of batches / batch lies in one group
// (groups of whole ones, group_shift 31 for one group) and the splits are whole ones.
template <int kBits, int kColTiles>
kernels::WoqGroups groups_for(const kernels::WoqGemvParams& p) {
  using kernels::WoqGroups;
  if (p.g_idx != nullptr) return WoqGroups::kActOrder;
  constexpr int kBatchSteps = per_batch_steps(kBits, kColTiles);
  constexpr int kStepRows = 4 * kernels::gptq::KernelTraits<kBits>::kCodes;
  const auto whole = [&](int steps) {
    return p.group_shift >= std::bit_width(static_cast<unsigned>(steps * kStepRows)) - 1 &&
           (p.split_k.splits == 1 || p.steps_per_split % steps == 0);
  };
  if (flush_batches(kBits, kColTiles) == 2 && whole(2 * kBatchSteps)) return WoqGroups::kPerPair;
  if (kBatchSteps > 0 && whole(kBatchSteps)) return WoqGroups::kPerBatch;
  return WoqGroups::kPerStep;
}

template <int kBits, typename T, int kColTiles, bool kGrouped, int kColWarps>
cudaError_t launch_gemv_kernel(const kernels::WoqGemvParams& p, cudaStream_t stream, bool pdl) {
  const int tile_cols = kernels::kWoqTileCols * kColWarps;
  const dim3 grid(static_cast<unsigned>((p.n + tile_cols - 1) / tile_cols), static_cast<unsigned>(p.split_k.splits),
                  1);
  const kernels::LaunchOptions options{.pdl = pdl, .cluster_y = kernels::cluster_height(p.split_k)};
  const auto launch = [&](auto kernel) {
    return kernels::launch_kernel(kernel, grid, dim3(kernels::kWoqWarps * 32), 0, stream, options, p);
  };
  if constexpr (kGrouped) {
    using kernels::WoqGroups;
    switch (groups_for<kBits, kColTiles>(p)) {
      case WoqGroups::kActOrder:
        return launch(gemv_kernel<kBits, T, kColTiles, true, kColWarps, WoqGroups::kActOrder>());
      case WoqGroups::kPerBatch:
        if constexpr (per_batch_steps(kBits, kColTiles) > 0)
          return launch(gemv_kernel<kBits, T, kColTiles, true, kColWarps, WoqGroups::kPerBatch>());
        break;
      case WoqGroups::kPerPair:
        if constexpr (flush_batches(kBits, kColTiles) == 2)
          return launch(gemv_kernel<kBits, T, kColTiles, true, kColWarps, WoqGroups::kPerPair>());
        break;
      case WoqGroups::kPerStep: break;
    }
  }
  return launch(gemv_kernel<kBits, T, kColTiles, kGrouped, kColWarps>());
}

// Calls f.template operator()<kColTiles, kGrouped, kColWarps>() for the instantiation that serves (m, grouped,
// col_warps); col_warps as woq_gemv_col_warps_exist allows (the callers check it first).
template <int kBits, class F>
auto with_gemv_config(int m, bool grouped, int col_warps, F&& f) {
  const auto with_tiles = [&]<bool kGrouped, int kColWarps>() {
    return m > 8 ? f.template operator()<2, kGrouped, kColWarps>() : f.template operator()<1, kGrouped, kColWarps>();
  };
  if (!grouped) return with_tiles.template operator()<false, 1>();
  if constexpr (kBits != 3) {
    switch (col_warps) {
      case 2: return with_tiles.template operator()<true, 2>();
      case 4: return with_tiles.template operator()<true, 4>();
      case 8: return with_tiles.template operator()<true, 8>();
      default: break;
    }
  }
  return with_tiles.template operator()<true, 1>();
}

// Calls f.template operator()<kBits>() for bits 2, 3, 4 and 8 (anything else: 8; callers check known_bits first).
template <class F>
auto with_bits(int bits, F&& f) {
  switch (bits) {
    case 2: return f.template operator()<2>();
    case 3: return f.template operator()<3>();
    case 4: return f.template operator()<4>();
    default: return f.template operator()<8>();
  }
}

template <typename T>
cudaError_t launch_gemv_for_bits(int bits, const kernels::WoqGemvParams& p, bool grouped, cudaStream_t stream,
                                 bool pdl) {
  return with_bits(bits, [&]<int kBits>() {
    return with_gemv_config<kBits>(p.m, grouped, p.col_warps, [&]<int kColTiles, bool kGrouped, int kColWarps>() {
      return launch_gemv_kernel<kBits, T, kColTiles, kGrouped, kColWarps>(p, stream, pdl);
    });
  });
}

template <typename T>
int blocks_per_sm_for_bits(int bits, int m, bool grouped, int col_warps, int device) {
  return with_bits(bits, [&]<int kBits>() {
    return with_gemv_config<kBits>(m, grouped, col_warps, [&]<int kColTiles, bool kGrouped, int kColWarps>() {
      return blocks_per_sm<kBits, T, kColTiles, kGrouped, kColWarps>(device);
    });
  });
}

bool known_bits(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 8; }

template <int kBits>
int batch_steps_for(int m) {
  return with_gemv_config<kBits>(m, true, 1, [&]<int kColTiles, bool, int>() {
    return std::max(1, per_batch_steps(kBits, kColTiles) * flush_batches(kBits, kColTiles));
  });
}

template <int kBits, typename T, bool kActOrder>
auto gemm_kernel() {
  return kernels::woq_gemm_kernel<kernels::gptq::KernelTraits<kBits>, T, kActOrder>;
}

template <int kBits>
constexpr int gemm_smem_bytes() {
  using Traits = kernels::gptq::KernelTraits<kBits>;
  return kernels::WoqGemmStage{Traits::kCodes, Traits::kWords}.smem_bytes();
}

// Calls f.template operator()<T, kActOrder>() for every dtype and act-order flag of the GEMM.
template <class F>
bool for_each_gemm_config(F&& f) {
  return f.template operator()<__nv_bfloat16, false>() && f.template operator()<__nv_bfloat16, true>() &&
         f.template operator()<__half, false>() && f.template operator()<__half, true>();
}

template <int kBits, typename T>
cudaError_t launch_dequant_typed(const kernels::WoqDequantParams& p, cudaStream_t stream) {
  using Traits = kernels::gptq::KernelTraits<kBits>;
  const int64_t blocks = (p.rows + Traits::kCodes - 1) / Traits::kCodes;
  const int64_t grid_x = (p.n + kernels::kWoqDequantCols - 1) / kernels::kWoqDequantCols;
  const int64_t grid_y = std::min<int64_t>((blocks + kernels::kWoqDequantBlocks - 1) / kernels::kWoqDequantBlocks, 65535);
  if (grid_x > 0x7fffffff || grid_x == 0 || grid_y == 0) return grid_x == 0 || grid_y == 0 ? cudaSuccess : cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y));
  const dim3 block(kernels::kWoqDequantCols, kernels::kWoqDequantBlocks);
  // The tiled kernel writes whole 16-byte chunks of rows in checkpoint order; everything else is scattered.
  const bool tiled = p.perm == nullptr && p.g_idx == nullptr && p.rows == p.k && p.group_size % Traits::kCodes == 0 &&
                     (p.k * static_cast<int64_t>(sizeof(T))) % 16 == 0 &&
                     reinterpret_cast<uintptr_t>(p.out) % 16 == 0;
  if (tiled) {
    kernels::woq_dequant_kernel<Traits, T, T><<<grid, block, 0, stream>>>(p);
  } else {
    kernels::woq_dequant_scatter_kernel<Traits, T, T><<<grid, block, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_dequant_for_bits(int bits, const kernels::WoqDequantParams& p, cudaStream_t stream) {
  if (!known_bits(bits)) return cudaErrorInvalidValue;
  return with_bits(bits, [&]<int kBits>() { return launch_dequant_typed<kBits, T>(p, stream); });
}

}  // namespace

bool woq_gemv_col_warps_exist(int bits, bool grouped, int col_warps) {
  return col_warps == 1 ||
         (bits != 3 && grouped && (col_warps == 2 || col_warps == 4 || col_warps == kernels::kWoqWarps));
}

namespace {
// An instantiation exists for (bits, m, grouped, col_warps).
bool gemv_config_exists(int bits, int m, bool grouped, int col_warps) {
  return known_bits(bits) && m >= 1 && m <= kWoqGemvPassRows && woq_gemv_col_warps_exist(bits, grouped, col_warps);
}
}  // namespace

int woq_gemv_batch_steps(int bits, int m) {
  if (!gemv_config_exists(bits, m, true, 1)) return 1;
  return with_bits(bits, [&]<int kBits>() { return batch_steps_for<kBits>(m); });
}

kernels::WoqGroups woq_gemv_groups(int bits, const kernels::WoqGemvParams& p) {
  if (!gemv_config_exists(bits, p.m, true, 1)) return kernels::WoqGroups::kPerStep;
  return with_bits(bits, [&]<int kBits>() {
    return with_gemv_config<kBits>(p.m, true, 1, [&]<int kColTiles, bool, int>() {
      return groups_for<kBits, kColTiles>(p);
    });
  });
}

cudaError_t launch_woq_gemv(int bits, DenseType dtype, const kernels::WoqGemvParams& p, bool grouped,
                            cudaStream_t stream, bool pdl) {
  if (!gemv_config_exists(bits, p.m, grouped, p.col_warps) || p.n < 4 || p.n % 4 != 0) return cudaErrorInvalidValue;
  return with_dense_type<false>(dtype,
                                [&]<typename T>() { return launch_gemv_for_bits<T>(bits, p, grouped, stream, pdl); });
}

int woq_gemv_blocks_per_sm(int bits, DenseType dtype, int m, bool grouped, int col_warps, int device) {
  if (!gemv_config_exists(bits, m, grouped, col_warps)) return 1;
  return dtype == DenseType::kF16 ? blocks_per_sm_for_bits<__half>(bits, m, grouped, col_warps, device)
                                  : blocks_per_sm_for_bits<__nv_bfloat16>(bits, m, grouped, col_warps, device);
}

bool woq_gemm_prepare() {
  bool ok = true;
  for (int bits : {2, 3, 4, 8}) {
    ok = ok && with_bits(bits, [&]<int kBits>() {
      return for_each_gemm_config([&]<typename T, bool kActOrder>() {
        return cudaFuncSetAttribute(gemm_kernel<kBits, T, kActOrder>(), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    gemm_smem_bytes<kBits>()) == cudaSuccess;
      });
    });
  }
  if (!ok) (void)cudaGetLastError();
  return ok;
}

int woq_gemm_stage_steps(int bits) {
  const kernels::gptq::PackLayout layout{bits};
  return kernels::WoqGemmStage{layout.block_codes(), layout.block_words()}.steps();
}

cudaError_t launch_woq_gemm(int bits, DenseType dtype, const kernels::WoqGemvParams& p, cudaStream_t stream,
                            bool pdl) {
  if (!known_bits(bits) || p.m < 1 || p.n < 4 || p.n % 4 != 0 || p.rows % 8 != 0 ||
      p.steps_per_split % woq_gemm_stage_steps(bits) != 0 || p.split_k.cluster)
    return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>((p.m + kernels::kWoqGemmRows - 1) / kernels::kWoqGemmRows),
                  static_cast<unsigned>((p.n + kernels::kWoqGemmCols - 1) / kernels::kWoqGemmCols),
                  static_cast<unsigned>(p.split_k.splits));
  const kernels::LaunchOptions options{.pdl = pdl};
  const bool act_order = p.g_idx != nullptr;
  return with_bits(bits, [&]<int kBits>() {
    return with_dense_type<false>(dtype, [&]<typename T>() {
      const auto kernel = act_order ? gemm_kernel<kBits, T, true>() : gemm_kernel<kBits, T, false>();
      return kernels::launch_kernel(kernel, grid, dim3(kernels::kWoqGemmWarps * 32), gemm_smem_bytes<kBits>(), stream,
                                    options, p);
    });
  });
}

cudaError_t launch_woq_dequant(int bits, DenseType dtype, const kernels::WoqDequantParams& p, cudaStream_t stream) {
  return with_dense_type<true>(dtype, [&]<typename T>() { return launch_dequant_for_bits<T>(bits, p, stream); });
}

cudaError_t launch_woq_gather(DenseType dtype, const kernels::WoqGatherParams& p, int sm_count, cudaStream_t stream,
                              bool pdl) {
  constexpr int kThreads = 256;
  const int64_t chunks = p.m * (p.rows / 8);
  if (p.rows % 8 != 0 || reinterpret_cast<uintptr_t>(p.out) % 16 != 0 || reinterpret_cast<uintptr_t>(p.perm) % 16 != 0)
    return cudaErrorInvalidValue;
  if (chunks == 0) return cudaSuccess;
  const unsigned grid =
      static_cast<unsigned>(std::clamp<int64_t>((chunks + kThreads - 1) / kThreads, 1, int64_t{sm_count} * 8));
  return with_dense_type<true>(dtype, [&]<typename T>() {
    return kernels::launch_kernel(kernels::woq_gather_kernel<T>, dim3(grid), dim3(kThreads), 0, stream,
                                  kernels::LaunchOptions{.pdl = pdl}, p);
  });
}

}  // namespace tpq::detail
