#pragma once
// Host entry points of the weight-only quantized (GPTQ-family) CUDA path (src/cuda/woq.cpp), for src/gptq.cpp.
// No CUDA headers: the backend compiles with g++ alone. Defined only when built with CUDA (TPQ_WITH_CUDA).
#include <cstdint>

#include "tpq/core/context.hpp"
#include "tpq/core/dtype.hpp"
#include "tpq/detail/gptq_ops.hpp"

namespace tpq::detail {

// A GptqWeights (tpq/quant/gptq.hpp) on the device, as raw pointers. g_idx and perm are null or both set (the
// sorted act-order form: every block of codes in one group).
struct WoqWeights {
  int bits = 4;
  int64_t rows = 0;        // stored rows (K, or the padded sorted length)
  int64_t k = 0;           // logical in_features
  int64_t n = 0;
  int64_t groups = 0;
  int64_t group_size = 0;  // rows per group without g_idx
  const uint32_t* qweight = nullptr;  // [words_for(rows), n]
  const uint8_t* zeros = nullptr;     // [groups, n]
  const void* scales = nullptr;       // [groups, n] of the compute dtype
  const int32_t* g_idx = nullptr;     // [rows] or null
  const int32_t* perm = nullptr;      // [rows] or null
};

// y[m, n] = x[m, k] · Wᵀ (+ bias[n]), all of `dtype` (BF16, F16 or F32), on ctx's stream; temporaries from ctx.empty.
void woq_linear(const Context& ctx, DType dtype, const WoqWeights& w, const void* x, const void* bias, void* y,
                int64_t m);
// The kernel woq_linear runs for m rows of 16-byte aligned activations.
WoqPath woq_path(const Context& ctx, DType dtype, const WoqWeights& w, int64_t m);
// The GEMV kernel woq_linear runs for the first kWoqGemvPassRows of m rows (error: m rows do not run the GEMV).
WoqGemvKernel woq_gemv_kernel(const Context& ctx, DType dtype, const WoqWeights& w, int64_t m);
// The output columns one block of that kernel covers.
int woq_gemv_block_cols(const Context& ctx, DType dtype, const WoqWeights& w, int64_t m);
// out[n, k] = W in `dtype`, on ctx's stream.
void woq_dequantize(const Context& ctx, DType dtype, const WoqWeights& w, void* out);

}  // namespace tpq::detail
