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

}  // namespace tpq::detail
