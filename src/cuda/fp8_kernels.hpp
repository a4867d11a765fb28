#pragma once
// Host launchers of the FP8 kernels (src/cuda/fp8_kernels.cu), for fp8_linear.cpp. Each launches on `stream`,
// never synchronizes, and returns the launch status (cudaGetLastError included) for the caller to check;
// cudaErrorInvalidValue for a dtype or size the kernel does not take. Plain CUDA and kernels/ only (nvcc cannot
// compile the fmt that tpq/core headers bring in); element types are linear_kernels.hpp's DenseType.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/fp8/params.hpp"
#include "src/cuda/linear_kernels.hpp"

namespace tpq::detail {

// dtype: kBF16 or kF16; 1 <= p.m <= kFp8GemvMaxM; p.k % 16 == 0. `pdl`: programmatic stream serialization (sm_90+).
cudaError_t launch_fp8_weight_only_gemv(DenseType dtype, const kernels::Fp8GemvParams& p, cudaStream_t stream, bool pdl);
// Resident blocks per SM of the GEMV kernel that launch_fp8_weight_only_gemv would launch for p on `device` (1 where
// the runtime cannot say).
int fp8_weight_only_gemv_blocks_per_sm(DenseType dtype, const kernels::Fp8GemvParams& p, int device);
// The first pass of dynamic per-tensor quantization: amax(|x|) of `count` elements of `dtype` (kBF16 / kF16), as
// `blocks` partial maxima into partials[0..blocks) (Fp8ActQuantParams::amax_partials). fp8_amax_blocks says how
// many blocks to launch (1..kFp8AmaxMaxBlocks).
int fp8_amax_blocks(const void* x, int64_t count, int sm_count);
cudaError_t launch_fp8_amax(DenseType dtype, const void* x, int64_t count, float* partials, int blocks,
                            cudaStream_t stream);
// dtype: kBF16 or kF16.
cudaError_t launch_fp8_act_quant(DenseType dtype, const kernels::Fp8ActQuantParams& p, cudaStream_t stream);
// Whether the block-scaled GEMM (kernels/fp8/block_gemm.cuh) can run on the current device: its device code is
// loaded (sm_90a builds only) and the kernel is allowed the shared memory it takes. The first successful call per
// device copies one word from it and sets the kernel's attribute; later calls answer from a cache.
bool fp8_block_gemm_prepare();
// dtype: kBF16 or kF16; p.m_pad % 4 == 0, p.k % 16 == 0, 16-byte aligned x_q, w and x_scales; only where
// fp8_block_gemm_prepare said true. One block per SM (sm_count) at most.
cudaError_t launch_fp8_block_gemm(DenseType dtype, const kernels::Fp8BlockGemmParams& p, int sm_count,
                                  cudaStream_t stream);
// dtype: kBF16, kF16 or kF32 (of p.out).
cudaError_t launch_fp8_dequant(DenseType dtype, const kernels::Fp8DequantParams& p, int sm_count, cudaStream_t stream);

}  // namespace tpq::detail
