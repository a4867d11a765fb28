// Launchers of the FP8 kernels: the only place their templates are instantiated. No tpq error headers here (fmt's
// compile-time format checks do not build under nvcc): launchers return the CUDA status and fp8_linear.cpp turns
// it into a tpq::Error.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/common/launch.cuh"
#include "kernels/fp8/act_quant.cuh"
#include "kernels/fp8/dequant.cuh"
#include "kernels/fp8/weight_only_gemv.cuh"
#include "src/cuda/fp8_kernels.hpp"

namespace tpq::detail {

namespace {

template <typename T, int kColTiles, int kUnits, bool kBlockScale>
cudaError_t launch_gemv_typed(const kernels::Fp8GemvParams& p, cudaStream_t stream, bool pdl) {
  const dim3 grid(static_cast<unsigned>((p.n + kernels::kFp8GemvTileRows - 1) / kernels::kFp8GemvTileRows),
                  static_cast<unsigned>(p.split_k.splits), 1);
  return kernels::launch_kernel(kernels::fp8_weight_only_gemv_kernel<T, kColTiles, kUnits, kBlockScale>, grid,
                                dim3(kernels::kFp8GemvWarps * 32, 1, 1), 0, stream,
                                {.pdl = pdl, .cluster_y = kernels::cluster_height(p.split_k)}, p);
}

// Loads in flight per lane: 4 x kUnits weight loads of 16 bytes (+ 4 x kColTiles x kUnits x loads). One column
// tile takes 2 or 4 units (the host picks, see fp8_linear.cpp); two column tiles take one, to bound registers.
template <typename T, bool kBlockScale>
cudaError_t launch_gemv_for_m(const kernels::Fp8GemvParams& p, cudaStream_t stream, bool pdl) {
  if (p.m <= kernels::kFp8GemvColTileRows) {
    if (p.units_in_flight >= 4) return launch_gemv_typed<T, 1, 4, kBlockScale>(p, stream, pdl);
    return launch_gemv_typed<T, 1, 2, kBlockScale>(p, stream, pdl);
  }
  return launch_gemv_typed<T, 2, 1, kBlockScale>(p, stream, pdl);
}

template <typename T>
cudaError_t launch_gemv_for_scales(const kernels::Fp8GemvParams& p, cudaStream_t stream, bool pdl) {
  if (p.scale_kind == static_cast<int>(kernels::Fp8ScaleKind::kBlock))
    return launch_gemv_for_m<T, true>(p, stream, pdl);
  return launch_gemv_for_m<T, false>(p, stream, pdl);
}

template <typename T>
cudaError_t launch_act_quant_typed(const kernels::Fp8ActQuantParams& p, cudaStream_t stream) {
  if (p.m_pad < p.m || p.m_pad > 0x7fffffff) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(p.m_pad));
  const bool vec = p.k % 4 == 0 && (reinterpret_cast<uintptr_t>(p.x) % 8) == 0 &&
                   (reinterpret_cast<uintptr_t>(p.q) % 4) == 0 && p.group % 4 == 0;
  if (vec) {
    kernels::fp8_act_quant_kernel<T, 4><<<grid, kernels::kFp8QuantThreads, 0, stream>>>(p);
  } else {
    kernels::fp8_act_quant_kernel<T, 1><<<grid, kernels::kFp8QuantThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_amax_typed(const void* x, int64_t count, unsigned* amax_bits, int sm_count, cudaStream_t stream) {
  const bool vec = count % 4 == 0 && (reinterpret_cast<uintptr_t>(x) % 8) == 0;
  const int64_t per_block = int64_t{kernels::kFp8QuantThreads} * (vec ? 4 : 1);
  const int64_t blocks = std::clamp<int64_t>((count + per_block - 1) / per_block, 1, int64_t{sm_count} * 4);
  const auto* xp = static_cast<const T*>(x);
  if (vec) {
    kernels::fp8_amax_kernel<T, 4><<<static_cast<unsigned>(blocks), kernels::kFp8QuantThreads, 0, stream>>>(
        xp, count, amax_bits);
  } else {
    kernels::fp8_amax_kernel<T, 1><<<static_cast<unsigned>(blocks), kernels::kFp8QuantThreads, 0, stream>>>(
        xp, count, amax_bits);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_fp8_weight_only_gemv(DenseType dtype, const kernels::Fp8GemvParams& p, cudaStream_t stream, bool pdl) {
  if (p.m < 1 || p.m > kernels::kFp8GemvMaxM || p.k % 16 != 0 || p.n < 1) return cudaErrorInvalidValue;
  switch (dtype) {
    case DenseType::kBF16:
      return launch_gemv_for_scales<__nv_bfloat16>(p, stream, pdl);
    case DenseType::kF16:
      return launch_gemv_for_scales<__half>(p, stream, pdl);
    default:
      return cudaErrorInvalidValue;
  }
}

cudaError_t launch_fp8_amax(DenseType dtype, const void* x, int64_t count, unsigned* amax_bits, int sm_count,
                            cudaStream_t stream) {
  switch (dtype) {
    case DenseType::kBF16:
      return launch_amax_typed<__nv_bfloat16>(x, count, amax_bits, sm_count, stream);
    case DenseType::kF16:
      return launch_amax_typed<__half>(x, count, amax_bits, sm_count, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

cudaError_t launch_fp8_act_quant(DenseType dtype, const kernels::Fp8ActQuantParams& p, cudaStream_t stream) {
  switch (dtype) {
    case DenseType::kBF16:
      return launch_act_quant_typed<__nv_bfloat16>(p, stream);
    case DenseType::kF16:
      return launch_act_quant_typed<__half>(p, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

cudaError_t launch_fp8_dequant(DenseType dtype, const kernels::Fp8DequantParams& p, int sm_count, cudaStream_t stream) {
  const unsigned grid = static_cast<unsigned>(std::clamp<int64_t>(p.n, 1, int64_t{sm_count} * 16));
  switch (dtype) {
    case DenseType::kBF16:
      kernels::fp8_dequant_kernel<__nv_bfloat16><<<grid, 256, 0, stream>>>(p);
      break;
    case DenseType::kF16:
      kernels::fp8_dequant_kernel<__half><<<grid, 256, 0, stream>>>(p);
      break;
    case DenseType::kF32:
      kernels::fp8_dequant_kernel<float><<<grid, 256, 0, stream>>>(p);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace tpq::detail
