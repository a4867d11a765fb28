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

// bits 2, 3, 4, 8; dtype kBF16 or kF16; 1 <= p.m <= kWoqGemvPassRows; p.col_warps as woq_gemv_col_warps_exist.
// `grouped`: the grouped GEMV (every step of 4 blocks of codes in one group), else the general one (every block in
// one group). `pdl`: programmatic stream serialization.
cudaError_t launch_woq_gemv(int bits, DenseType dtype, const kernels::WoqGemvParams& p, bool grouped,
                            cudaStream_t stream, bool pdl);
// Whether launch_woq_gemv takes col_warps warps side by side over columns (WoqGemvParams::col_warps) for (bits,
// grouped): 1 always; 2, 4 and 8 for the grouped GEMV except 3-bit (three-word blocks).
bool woq_gemv_col_warps_exist(int bits, bool grouped, int col_warps);
// Steps the splits of K should be whole multiples of for (bits, m), 1 where it does not matter: a batch of the
// grouped GEMV's kPerBatch kernel, a pair of them at two column tiles (kPerPair). Where p.steps_per_split is a
// multiple of a batch (or there is one split), there is no g_idx and every batch lies in one group, launch_woq_gemv
// runs the kPerBatch kernel, which keeps two batches in flight per warp (kernels/common/woq_gemv.cuh); of a pair, and
// every pair in one group, the kPerPair one.
int woq_gemv_batch_steps(int bits, int m);
// The grouped GEMV kernel launch_woq_gemv(bits, .., p, grouped = true, ..) runs (kPerStep for a configuration
// it does not take).
kernels::WoqGroups woq_gemv_groups(int bits, const kernels::WoqGemvParams& p);
// Blocks of the GEMV launch_woq_gemv would run for (bits, dtype, m, grouped, col_warps) that fit on one SM of `device`
// at once.
int woq_gemv_blocks_per_sm(int bits, DenseType dtype, int m, bool grouped, int col_warps, int device);
// The mid-M GEMM (kernels/common/woq_gemm.cuh). woq_gemm_prepare() allows its shared memory on the current device
// (at context creation, before any launch there; false: it cannot run). Its steps_per_split must be a multiple of
// woq_gemm_stage_steps(bits).
bool woq_gemm_prepare();
int woq_gemm_stage_steps(int bits);
cudaError_t launch_woq_gemm(int bits, DenseType dtype, const kernels::WoqGemvParams& p, cudaStream_t stream,
                            bool pdl);
// dtype (of the scales and the output): kBF16, kF16 or kF32.
cudaError_t launch_woq_dequant(int bits, DenseType dtype, const kernels::WoqDequantParams& p, cudaStream_t stream);
// dtype: kBF16, kF16 or kF32; p.rows % 8 == 0, p.out and p.perm 16-byte aligned (cudaErrorInvalidValue otherwise). `pdl`:
// programmatic stream serialization (the GEMV after it starts at once).
cudaError_t launch_woq_gather(DenseType dtype, const kernels::WoqGatherParams& p, int sm_count, cudaStream_t stream,
                              bool pdl);

}  // namespace tpq::detail
