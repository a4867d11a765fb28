#pragma once
// Host launchers of the generic weight-only kernels for the GPTQ-family packing (src/cuda/woq_kernels.cu), for
// src/cuda/woq.cpp. Each launches on `stream`, never synchronizes, and returns the launch status
// (cudaGetLastError included); cudaErrorInvalidValue for a bit width, dtype or size the kernels do not take.
#include <cuda_runtime_api.h>

#include "kernels/common/woq_params.hpp"
#include "src/cuda/linear_kernels.hpp"  // DenseType: nvcc cannot compile the tpq/core headers (fmt)

namespace tpq::detail {

// Rows of M one GEMV launch covers (two MMA column tiles of 8).
inline constexpr int kWoqGemvPassRows = 16;

// bits 2, 3, 4, 8; dtype kBF16 or kF16; 1 <= p.m <= kWoqGemvPassRows. `grouped`: the grouped GEMV (every step of
// 4 blocks of codes in one group), else the general one (every block in one group). `pdl`: programmatic stream
// serialization.
cudaError_t launch_woq_gemv(int bits, DenseType dtype, const kernels::WoqGemvParams& p, bool grouped,
                            cudaStream_t stream, bool pdl);
// The GEMV launch_woq_gemv runs for (bits, dtype, m, grouped): output columns per block (blockIdx.x covers
// tile_cols columns) and blocks that fit on one SM at once.
struct WoqGemvShape {
  int tile_cols;
  int blocks_per_sm;
};
WoqGemvShape woq_gemv_shape(int bits, DenseType dtype, int m, bool grouped);
// dtype (of the scales and the output): kBF16, kF16 or kF32.
cudaError_t launch_woq_dequant(int bits, DenseType dtype, const kernels::WoqDequantParams& p, cudaStream_t stream);
// dtype: kBF16, kF16 or kF32.
cudaError_t launch_woq_gather(DenseType dtype, const kernels::WoqGatherParams& p, int sm_count, cudaStream_t stream);

}  // namespace tpq::detail
