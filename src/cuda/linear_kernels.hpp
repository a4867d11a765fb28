#pragma once
// Host launchers of the dense kernels (src/cuda/linear_kernels.cu), for linear.cpp. Each launches on `stream`,
// never synchronizes, and returns the launch status (cudaGetLastError included) for the caller to check;
// cudaErrorInvalidValue for a type or size the kernel does not take. Plain CUDA and kernels/ only: nvcc (13.0, C++20)
// cannot compile fmt 9, which every tpq/core header brings in.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/common/dense_params.hpp"

namespace tpq::detail {

// The element types of the dense kernels (tpq::DType stays on the host side of this seam).
enum class DenseType { kBF16, kF16, kF32 };

// M rows per column tile of the GEMV's MMA (the n of m16n8k16) and the largest M the GEMV takes.
inline constexpr int kGemvColTileRows = 8;
inline constexpr int kGemvMaxM = 16;

// dtype: kBF16 or kF16; p.m <= kGemvMaxM. `pdl`: launch with programmatic stream serialization (sm_90+).
cudaError_t launch_dense_gemv(DenseType dtype, const kernels::DenseGemvParams& p, cudaStream_t stream, bool pdl);
// Whether the GEMVs' code loaded for the current device was built for sm_90+ (kernels/common/split_k.cuh has a
// cluster reduction only there; code built for an older architecture and run by the driver on a newer GPU falls
// back to the global protocol). All kernel files share one architecture list, so one kernel answers for all.
bool gemv_code_has_clusters();
// dtype: kBF16, kF16 or kF32.
cudaError_t launch_simt_gemm(DenseType dtype, const kernels::SimtGemmParams& p, cudaStream_t stream);
cudaError_t launch_add_bias(DenseType dtype, void* y, const void* bias, int64_t count, int64_t n, int sm_count,
                            cudaStream_t stream);

}  // namespace tpq::detail
