// Launchers of the FP8 kernels: the only place their templates are instantiated. No tpq error headers here (fmt's
// compile-time format checks do not build under nvcc): launchers return the CUDA status and fp8_linear.cpp turns
// it into a tpq::Error.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>

#include "kernels/common/launch.cuh"
#include "kernels/fp8/act_quant.cuh"
#include "kernels/fp8/block_gemm.cuh"
#include "kernels/fp8/dequant.cuh"
#include "kernels/fp8/weight_only_gemv.cuh"
#include "src/cuda/dense_dispatch.cuh"
#include "src/cuda/fp8_kernels.hpp"
#include "src/cuda/occupancy.hpp"

namespace tpq::detail {

namespace {

// 1 in device code built with the block-scaled GEMM (sm_90a), read by fp8_block_gemm_prepare().
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ int fp8_block_gemm_in_code = 1;
#else
__device__ int fp8_block_gemm_in_code = 0;
#endif

// cuTensorMapEncodeTiled from the driver, through the runtime (no link against libcuda), looked up once.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
#if CUDART_VERSION >= 12050
    const cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q);
#else
    const cudaError_t e = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &f, cudaEnableDefault, &q);
#endif
    if (e != cudaSuccess || q != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      f = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// A row-major [rows, cols] matrix of `type` (elements of `bytes` bytes) seen in boxes of box_rows x box_cols;
// elements outside it read as zeros.
cudaError_t encode_map(CUtensorMap* map, CUtensorMapDataType type, int bytes, const void* data, int64_t rows,
                       int64_t cols, int box_rows, int box_cols, CUtensorMapSwizzle swizzle) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (encode == nullptr) return cudaErrorNotSupported;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(cols), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(cols) * static_cast<cuuint64_t>(bytes)};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(box_cols), static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUresult r = encode(map, type, 2, const_cast<void*>(data), dims, strides, box, element_strides,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

template <typename T>
cudaError_t launch_block_gemm_typed(const kernels::Fp8BlockGemmParams& p, int sm_count, cudaStream_t stream) {
  using namespace kernels;
  CUtensorMap x_map, w_map, scale_map;
  const int k_blocks = (p.k + kFp8GemmTileK - 1) / kFp8GemmTileK;
  if (cudaError_t e = encode_map(&x_map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, p.x_q, p.m_pad, p.k, kFp8GemmTileM,
                                 kFp8GemmTileK, CU_TENSOR_MAP_SWIZZLE_128B);
      e != cudaSuccess)
    return e;
  if (cudaError_t e = encode_map(&w_map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, p.w, p.n, p.k, kFp8GemmTileN,
                                 kFp8GemmTileK, CU_TENSOR_MAP_SWIZZLE_128B);
      e != cudaSuccess)
    return e;
  if (cudaError_t e = encode_map(&scale_map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4, p.x_scales, k_blocks, p.m_pad, 1,
                                 kFp8GemmTileM, CU_TENSOR_MAP_SWIZZLE_NONE);
      e != cudaSuccess)
    return e;
  const size_t smem = fp8_block_gemm_smem_bytes();  // allowed by fp8_block_gemm_prepare
  const int64_t tiles =
      int64_t{(p.m + kFp8GemmTileM - 1) / kFp8GemmTileM} * ((p.n + kFp8GemmTileN - 1) / kFp8GemmTileN);
  const unsigned blocks = static_cast<unsigned>(std::clamp<int64_t>(tiles, 1, sm_count));  // persistent
  return launch_kernel(fp8_block_gemm_kernel<T>, dim3(blocks), dim3(kFp8GemmThreads), smem,
                       stream, {}, x_map, w_map, scale_map, p);
}

// The GEMV kernel serving p, as a callable's argument: f(kernel). Loads in flight per lane: 4 x kUnits weight loads
// of 16 bytes (+ 4 x kColTiles x kUnits x loads), twice with two batches. One column tile takes batches of 2 or 4
// units, or two batches of 2 (the host picks, see fp8_linear.cpp); two column tiles take one unit, to bound
// registers.
template <typename T, bool kBlockScale, class F>
auto with_gemv_kernel(const kernels::Fp8GemvParams& p, F&& f) {
  using kernels::fp8_weight_only_gemv_kernel;
  if (p.m > kernels::kFp8GemvColTileRows) return f(fp8_weight_only_gemv_kernel<T, 2, 1, kBlockScale>);
  const auto with_warps = [&]<int kColWarps>() {
    if (p.two_batches)
      return f(fp8_weight_only_gemv_kernel<T, 1, kernels::kFp8GemvTwoBatchUnits, kBlockScale, true, kColWarps>);
    if (p.units_in_flight >= 4) return f(fp8_weight_only_gemv_kernel<T, 1, 4, kBlockScale, false, kColWarps>);
    return f(fp8_weight_only_gemv_kernel<T, 1, 2, kBlockScale, false, kColWarps>);
  };
  return p.col_warps == 2 ? with_warps.template operator()<2>() : with_warps.template operator()<1>();
}

template <class F>
auto with_gemv_kernel(DenseType dtype, const kernels::Fp8GemvParams& p, F&& f) {
  return with_dense_type<false>(dtype, [&]<typename T>() {
    if (p.scale_kind == static_cast<int>(kernels::Fp8ScaleKind::kBlock)) return with_gemv_kernel<T, true>(p, f);
    return with_gemv_kernel<T, false>(p, f);
  });
}

template <typename T>
cudaError_t launch_act_quant_typed(const kernels::Fp8ActQuantParams& p, cudaStream_t stream) {
  if (p.m_pad < p.m || p.m_pad > 0x7fffffff) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(p.m_pad));
  const auto x = reinterpret_cast<uintptr_t>(p.x), q = reinterpret_cast<uintptr_t>(p.q);
  // 16-byte steps, except for 1 x group scales (a warp per group: 32 lanes x 4 cover 128 elements).
  const bool grouped = p.scheme == static_cast<int>(kernels::Fp8ActScheme::kDynamicGroup);
  if (!grouped && p.k % 8 == 0 && x % 16 == 0 && q % 8 == 0) {
    kernels::fp8_act_quant_kernel<T, 8><<<grid, kernels::kFp8QuantThreads, 0, stream>>>(p);
  } else if (p.k % 4 == 0 && x % 8 == 0 && q % 4 == 0 && p.group % 4 == 0) {
    kernels::fp8_act_quant_kernel<T, 4><<<grid, kernels::kFp8QuantThreads, 0, stream>>>(p);
  } else {
    kernels::fp8_act_quant_kernel<T, 1><<<grid, kernels::kFp8QuantThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

int amax_vec(int64_t count, const void* x) {
  const auto a = reinterpret_cast<uintptr_t>(x);
  return count % 8 == 0 && a % 16 == 0 ? 8 : count % 4 == 0 && a % 8 == 0 ? 4 : 1;
}

template <typename T>
cudaError_t launch_amax_typed(const void* x, int64_t count, float* partials, int blocks, cudaStream_t stream) {
  const auto* xp = static_cast<const T*>(x);
  constexpr int kThreads = kernels::kFp8QuantThreads;
  switch (amax_vec(count, x)) {
    case 8: kernels::fp8_amax_kernel<T, 8><<<blocks, kThreads, 0, stream>>>(xp, count, partials); break;
    case 4: kernels::fp8_amax_kernel<T, 4><<<blocks, kThreads, 0, stream>>>(xp, count, partials); break;
    default: kernels::fp8_amax_kernel<T, 1><<<blocks, kThreads, 0, stream>>>(xp, count, partials);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_fp8_weight_only_gemv(DenseType dtype, const kernels::Fp8GemvParams& p, cudaStream_t stream, bool pdl) {
  if (p.m < 1 || p.m > kernels::kFp8GemvMaxM || p.k % 16 != 0 || p.n < 1 ||
      (p.col_warps != 1 && (p.col_warps != 2 || p.m > kernels::kFp8GemvColTileRows)))
    return cudaErrorInvalidValue;
  const int block_rows = kernels::kFp8GemvTileRows * p.col_warps;
  const dim3 grid(static_cast<unsigned>((p.n + block_rows - 1) / block_rows),
                  static_cast<unsigned>(p.split_k.splits), 1);
  const kernels::LaunchOptions options{.pdl = pdl, .cluster_y = kernels::cluster_height(p.split_k)};
  return with_gemv_kernel(dtype, p, [&](auto kernel) {
    return kernels::launch_kernel(kernel, grid, dim3(kernels::kFp8GemvWarps * 32, 1, 1), 0, stream, options, p);
  });
}

int fp8_weight_only_gemv_blocks_per_sm(DenseType dtype, const kernels::Fp8GemvParams& p, int device) {
  int blocks = 1;
  (void)with_gemv_kernel(dtype, p, [&](auto kernel) {
    blocks = resident_blocks_per_sm(reinterpret_cast<const void*>(kernel), kernels::kFp8GemvWarps * 32, device);
    return cudaSuccess;
  });
  return blocks;
}

int fp8_amax_blocks(const void* x, int64_t count, int sm_count) {
  // Enough blocks for every thread to have kFp8AmaxUnroll loads in flight, up to 4 per SM.
  const int64_t per_block = int64_t{kernels::kFp8QuantThreads} * amax_vec(count, x) * kernels::kFp8AmaxUnroll;
  const int64_t cap = std::min<int64_t>(int64_t{sm_count} * 4, kernels::kFp8AmaxMaxBlocks);
  return static_cast<int>(std::clamp<int64_t>((count + per_block - 1) / per_block, 1, std::max<int64_t>(cap, 1)));
}

cudaError_t launch_fp8_amax(DenseType dtype, const void* x, int64_t count, float* partials, int blocks,
                            cudaStream_t stream) {
  if (blocks < 1 || blocks > kernels::kFp8AmaxMaxBlocks) return cudaErrorInvalidValue;
  return with_dense_type<false>(dtype,
                                [&]<typename T>() { return launch_amax_typed<T>(x, count, partials, blocks, stream); });
}

cudaError_t launch_fp8_act_quant(DenseType dtype, const kernels::Fp8ActQuantParams& p, cudaStream_t stream) {
  return with_dense_type<false>(dtype, [&]<typename T>() { return launch_act_quant_typed<T>(p, stream); });
}

bool fp8_block_gemm_prepare() {
  // Once per device and process, on a stream of its own (no synchronization with the legacy default stream); a
  // failure is not remembered, so a later context tries again.
  static std::mutex mutex;
  static std::map<int, bool> built;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  const std::lock_guard<std::mutex> lock(mutex);
  if (const auto it = built.find(device); it != built.end()) return it->second;
  cudaStream_t stream = nullptr;
  if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  int in_code = 0;
  const bool copied =
      cudaMemcpyFromSymbolAsync(&in_code, fp8_block_gemm_in_code, sizeof(int), 0, cudaMemcpyDeviceToHost, stream) ==
          cudaSuccess &&
      cudaStreamSynchronize(stream) == cudaSuccess;
  (void)cudaStreamDestroy(stream);
  if (!copied) {
    (void)cudaGetLastError();
    return false;
  }
  // The kernel's shared memory, beyond the default 48 KB: more than this GPU allows fails here.
  const int smem = static_cast<int>(kernels::fp8_block_gemm_smem_bytes());
  const bool ready =
      in_code == 1 &&
      cudaFuncSetAttribute(kernels::fp8_block_gemm_kernel<__nv_bfloat16>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           smem) == cudaSuccess &&
      cudaFuncSetAttribute(kernels::fp8_block_gemm_kernel<__half>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           smem) == cudaSuccess;
  if (!ready) (void)cudaGetLastError();
  return built[device] = ready;
}

cudaError_t launch_fp8_block_gemm(DenseType dtype, const kernels::Fp8BlockGemmParams& p, int sm_count,
                                  cudaStream_t stream) {
  if (p.m < 1 || p.n < 1 || p.k < 1 || p.m_pad < p.m || p.m_pad % 4 != 0 || p.k % 16 != 0 ||
      p.scale_ld < (p.k + kernels::kFp8GemmTileK - 1) / kernels::kFp8GemmTileK)
    return cudaErrorInvalidValue;
  return with_dense_type<false>(dtype, [&]<typename T>() { return launch_block_gemm_typed<T>(p, sm_count, stream); });
}

cudaError_t launch_fp8_dequant(DenseType dtype, const kernels::Fp8DequantParams& p, int sm_count, cudaStream_t stream) {
  const unsigned grid = static_cast<unsigned>(std::clamp<int64_t>(p.n, 1, int64_t{sm_count} * 16));
  return with_dense_type<true>(dtype, [&]<typename T>() {
    kernels::fp8_dequant_kernel<T><<<grid, 256, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace tpq::detail
