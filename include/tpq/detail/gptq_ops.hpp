#pragma once
// Which kernel the CUDA path of a GPTQ-family layer (GPTQ, AWQ, compressed-tensors pack-quantized) runs, for tests
// and benchmarks. Defined only when built with CUDA (TPQ_WITH_CUDA).
#include <cstdint>

#include "tpq/core/context.hpp"
#include "tpq/quant/quant_method.hpp"

namespace tpq::detail {

// kGemv: the weight-only GEMV (small M); kGemm: the mid-M tensor-core GEMM; kDequantGemm: dequantize to the
// activation dtype, then cuBLASLt.
enum class WoqPath { kGemv, kGemm, kDequantGemm };

// The path `layer` (a GPTQ-family layer on ctx's GPU) takes for m rows of 16-byte aligned activations.
WoqPath cuda_gptq_path(const Context& ctx, const QuantMethod& layer, int64_t m);

// The GEMV's kernels: kGeneral decodes every weight (any group of whole blocks); the grouped ones apply zero points
// and scales once per group (every step of 4 blocks in one group): kGrouped checks each step's group, with one
// batch of loads in flight per warp; kGroupedActOrder reads it from g_idx; kGroupedTwoBatches (every batch in one
// group) keeps two batches in flight; kGroupedBatchPairs (two column tiles, every pair of batches in one group) the
// same, applying each pair's group once.
enum class WoqGemvKernel { kGeneral, kGrouped, kGroupedActOrder, kGroupedTwoBatches, kGroupedBatchPairs };

// The GEMV kernel `layer` runs for the first (up to 16) of m rows; error where m rows do not take the GEMV.
WoqGemvKernel cuda_gptq_gemv_kernel(const Context& ctx, const QuantMethod& layer, int64_t m);
// The output columns one GEMV block covers there: 32 per warp side by side over columns (the others split K).
int cuda_gptq_gemv_block_cols(const Context& ctx, const QuantMethod& layer, int64_t m);

}  // namespace tpq::detail
