// Launchers of the weight-only kernels: the only place their templates are instantiated, for the GPTQ packing
// (kernels/gptq/kernel_traits.cuh) at 2, 3, 4 and 8 bits. No tpq error headers (fmt does not build under nvcc):
// launchers return the CUDA status and woq.cpp turns it into a tpq::Error.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <type_traits>

#include "kernels/common/launch.cuh"
#include "kernels/common/woq_dequant.cuh"
#include "kernels/common/woq_gemv.cuh"
#include "kernels/common/woq_gemv_tma.cuh"
#include "kernels/gptq/kernel_traits.cuh"
#include "src/cuda/woq_kernels.hpp"

namespace tpq::detail {

namespace {

// The general GEMV: steps of loads in flight per lane (kWords 16-byte weight loads each, plus kCodes activations
// per column tile) held in registers, chosen to stay near 100 registers.
constexpr int unroll_for(int bits, int col_tiles) {
  const int base = bits == 3 || bits == 2 ? 2 : 4;
  return col_tiles == 1 || base == 2 ? base : base / 2;
}

// The grouped GEMV decodes with one LOP3 per pair and keeps one batch of steps in flight per lane: 8 steps (4 with
// two column tiles; 4 / 2 for the 16-code 2-bit blocks, 2 / 1 for the 3-word 3-bit blocks), near 128 registers.
constexpr int grouped_steps_for(int bits, int col_tiles) {
  const int base = bits == 3 ? 2 : bits == 2 ? 4 : 8;
  return col_tiles == 1 || base == 1 ? base : base / 2;
}

using Kind = WoqGemvKind;

template <int kBits, typename T, int kColTiles, Kind kKind, bool kActOrder = false>
auto gemv_kernel() {
  using Traits = kernels::gptq::KernelTraits<kBits>;
  if constexpr (kKind == Kind::kStreamed) {
    return kernels::woq_gemv_tma_kernel<Traits, T, kColTiles, kActOrder>;
  } else if constexpr (kKind == Kind::kGrouped) {
    return kernels::woq_gemv_grouped_kernel<Traits, T, kColTiles, grouped_steps_for(kBits, kColTiles), kActOrder>;
  } else {
    return kernels::woq_gemv_kernel<Traits, T, kColTiles, unroll_for(kBits, kColTiles)>;
  }
}

// Dynamic shared memory of a launch for m rows; the streamed GEMV's grows with m (its activation stages).
template <int kBits, Kind kKind>
constexpr int dynamic_smem(int m) {
  return kKind == Kind::kStreamed ? kernels::woq_tma_smem_bytes(kernels::gptq::KernelTraits<kBits>::kCodes, m) : 0;
}

// Opts the kernel in to its dynamic shared memory for any m (above the 48 KB default), once per instantiation.
template <class Kernel>
cudaError_t allow_smem(Kernel kernel, int bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}
template <int kBits, typename T, int kColTiles, Kind kKind, bool kActOrder>
cudaError_t prepare_kernel() {
  static const cudaError_t status =
      allow_smem(gemv_kernel<kBits, T, kColTiles, kKind, kActOrder>(), dynamic_smem<kBits, kKind>(kColTiles * 8));
  return status;
}

// Resident blocks per SM of one instantiation at m rows, asked once per m.
template <int kBits, typename T, int kColTiles, Kind kKind>
int blocks_per_sm(int m) {
  static int cached[kernels::kWoqTileCols + 1] = {};  // by m (1..16); 0: not asked yet
  const int key = std::clamp(m, 1, kernels::kWoqTileCols);
  if (cached[key] == 0) {
    int b = 0;
    if (prepare_kernel<kBits, T, kColTiles, kKind, false>() != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, gemv_kernel<kBits, T, kColTiles, kKind>(),
                                                      kernels::kWoqWarps * 32, dynamic_smem<kBits, kKind>(m)) !=
            cudaSuccess) {
      (void)cudaGetLastError();
      b = 1;
    }
    cached[key] = b > 0 ? b : 1;
  }
  return cached[key];
}

// cuTensorMapEncodeTiled, from the driver through the runtime (no link against libcuda), looked up once.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      f = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// The streamed GEMV's view of qweight: u32 [word rows, n], boxes of 32 columns × one stage of word rows.
template <int kBits>
cudaError_t encode_qweight_map(kernels::WoqGemvParams& p) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (encode == nullptr) return cudaErrorNotSupported;
  using Traits = kernels::gptq::KernelTraits<kBits>;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(p.n), static_cast<cuuint64_t>(p.rows / Traits::kCodes)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(p.n) * 4};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(kernels::kWoqTileCols),
                             static_cast<cuuint32_t>(kernels::kWoqTmaStageRows)};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUresult r = encode(&p.qweight_map, CU_TENSOR_MAP_DATA_TYPE_UINT32, 2, const_cast<uint32_t*>(p.qweight), dims,
                            strides, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

// The streamed GEMV's view of x: T [m, rows], boxes of its stage's activations × all m rows.
template <int kBits, typename T>
cudaError_t encode_x_map(kernels::WoqGemvParams& p) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (encode == nullptr) return cudaErrorNotSupported;
  constexpr int kStageX = kernels::woq_tma_stage_x(kernels::gptq::KernelTraits<kBits>::kCodes);
  constexpr int kBoxes = (kStageX + kernels::kWoqTmaXBox - 1) / kernels::kWoqTmaXBox;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(p.rows), static_cast<cuuint64_t>(p.m)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(p.rows) * sizeof(T)};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(kStageX / kBoxes),
                             static_cast<cuuint32_t>(kernels::woq_tma_x_rows(p.m))};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUtensorMapDataType type =
      std::is_same_v<T, __half> ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  const CUresult r = encode(&p.x_map, type, 2, const_cast<void*>(p.x), dims, strides, box, element_strides,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

template <int kBits, typename T, int kColTiles, Kind kKind, bool kActOrder>
cudaError_t launch_instance(const kernels::WoqGemvParams& p, dim3 grid, cudaStream_t stream, bool pdl) {
  if (const cudaError_t e = prepare_kernel<kBits, T, kColTiles, kKind, kActOrder>(); e != cudaSuccess) return e;
  return kernels::launch_kernel(gemv_kernel<kBits, T, kColTiles, kKind, kActOrder>(), grid,
                                dim3(kernels::kWoqWarps * 32), dynamic_smem<kBits, kKind>(p.m), stream, pdl, p);
}

template <int kBits, typename T, int kColTiles, Kind kKind>
cudaError_t launch_gemv_kernel(const kernels::WoqGemvParams& params, cudaStream_t stream, bool pdl) {
  dim3 grid(static_cast<unsigned>((params.n + kernels::kWoqTileCols - 1) / kernels::kWoqTileCols),
            static_cast<unsigned>(params.split_k.splits), 1);
  if constexpr (kKind == Kind::kGeneral) {
    return launch_instance<kBits, T, kColTiles, kKind, false>(params, grid, stream, pdl);
  } else {
    kernels::WoqGemvParams p = params;
    if constexpr (kKind == Kind::kStreamed) {
      if (const cudaError_t e = encode_qweight_map<kBits>(p); e != cudaSuccess) return e;
      if (const cudaError_t e = encode_x_map<kBits, T>(p); e != cudaSuccess) return e;
      // Persistent blocks: one launch of at most the resident blocks, each looping over units.
      const unsigned units = grid.x * grid.y;
      grid = dim3(p.resident_blocks > 0 ? std::min(units, static_cast<unsigned>(p.resident_blocks)) : units, 1, 1);
    }
    return p.g_idx != nullptr ? launch_instance<kBits, T, kColTiles, kKind, true>(p, grid, stream, pdl)
                              : launch_instance<kBits, T, kColTiles, kKind, false>(p, grid, stream, pdl);
  }
}

template <int kBits, typename T, int kColTiles>
cudaError_t launch_gemv_typed(const kernels::WoqGemvParams& p, Kind kind, cudaStream_t stream, bool pdl) {
  switch (kind) {
    case Kind::kStreamed:
      if constexpr (kBits != 3) return launch_gemv_kernel<kBits, T, kColTiles, Kind::kStreamed>(p, stream, pdl);
      return cudaErrorInvalidValue;
    case Kind::kGrouped: return launch_gemv_kernel<kBits, T, kColTiles, Kind::kGrouped>(p, stream, pdl);
    default: return launch_gemv_kernel<kBits, T, kColTiles, Kind::kGeneral>(p, stream, pdl);
  }
}

template <int kBits, typename T>
cudaError_t launch_gemv_for_m(const kernels::WoqGemvParams& p, Kind kind, cudaStream_t stream, bool pdl) {
  if (p.m <= 8) return launch_gemv_typed<kBits, T, 1>(p, kind, stream, pdl);
  return launch_gemv_typed<kBits, T, 2>(p, kind, stream, pdl);
}

template <typename T>
cudaError_t launch_gemv_for_bits(int bits, const kernels::WoqGemvParams& p, Kind kind, cudaStream_t stream, bool pdl) {
  switch (bits) {
    case 2: return launch_gemv_for_m<2, T>(p, kind, stream, pdl);
    case 3: return launch_gemv_for_m<3, T>(p, kind, stream, pdl);
    case 4: return launch_gemv_for_m<4, T>(p, kind, stream, pdl);
    case 8: return launch_gemv_for_m<8, T>(p, kind, stream, pdl);
    default: return cudaErrorInvalidValue;
  }
}

template <typename T>
int occupancy_for_bits(int bits, int m, Kind kind) {
  const auto pick = [&]<int kBits>() {
    const auto of = [&]<int kColTiles>() {
      switch (kind) {
        case Kind::kStreamed:
          if constexpr (kBits != 3) return blocks_per_sm<kBits, T, kColTiles, Kind::kStreamed>(m);
          return 1;
        case Kind::kGrouped: return blocks_per_sm<kBits, T, kColTiles, Kind::kGrouped>(m);
        default: return blocks_per_sm<kBits, T, kColTiles, Kind::kGeneral>(m);
      }
    };
    return m <= 8 ? of.template operator()<1>() : of.template operator()<2>();
  };
  switch (bits) {
    case 2: return pick.template operator()<2>();
    case 3: return pick.template operator()<3>();
    case 4: return pick.template operator()<4>();
    case 8: return pick.template operator()<8>();
    default: return 1;
  }
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
  switch (bits) {
    case 2: return launch_dequant_typed<2, T>(p, stream);
    case 3: return launch_dequant_typed<3, T>(p, stream);
    case 4: return launch_dequant_typed<4, T>(p, stream);
    case 8: return launch_dequant_typed<8, T>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t launch_woq_gemv(int bits, DenseType dtype, const kernels::WoqGemvParams& p, WoqGemvKind kind,
                            cudaStream_t stream, bool pdl) {
  if (p.m < 1 || p.m > kWoqGemvPassRows || p.n < 4 || p.n % 4 != 0) return cudaErrorInvalidValue;
  switch (dtype) {
    case DenseType::kBF16: return launch_gemv_for_bits<__nv_bfloat16>(bits, p, kind, stream, pdl);
    case DenseType::kF16: return launch_gemv_for_bits<__half>(bits, p, kind, stream, pdl);
    default: return cudaErrorInvalidValue;
  }
}

int woq_gemv_blocks_per_sm(int bits, DenseType dtype, int m, WoqGemvKind kind) {
  return dtype == DenseType::kF16 ? occupancy_for_bits<__half>(bits, m, kind)
                                  : occupancy_for_bits<__nv_bfloat16>(bits, m, kind);
}

cudaError_t launch_woq_dequant(int bits, DenseType dtype, const kernels::WoqDequantParams& p, cudaStream_t stream) {
  switch (dtype) {
    case DenseType::kBF16: return launch_dequant_for_bits<__nv_bfloat16>(bits, p, stream);
    case DenseType::kF16: return launch_dequant_for_bits<__half>(bits, p, stream);
    case DenseType::kF32: return launch_dequant_for_bits<float>(bits, p, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t launch_woq_gather(DenseType dtype, const kernels::WoqGatherParams& p, int sm_count, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const int64_t total = p.m * p.rows;
  if (total == 0) return cudaSuccess;
  const unsigned grid =
      static_cast<unsigned>(std::clamp<int64_t>((total + kThreads - 1) / kThreads, 1, int64_t{sm_count} * 8));
  switch (dtype) {
    case DenseType::kBF16: kernels::woq_gather_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(p); break;
    case DenseType::kF16: kernels::woq_gather_kernel<__half><<<grid, kThreads, 0, stream>>>(p); break;
    case DenseType::kF32: kernels::woq_gather_kernel<float><<<grid, kThreads, 0, stream>>>(p); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace tpq::detail
