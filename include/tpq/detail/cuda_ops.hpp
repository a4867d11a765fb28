#pragma once
// Host-side entry points of the CUDA code (src/cuda/). Raw pointers and sizes only; callers are the format
// backends, which have already checked shapes and dtypes. Defined only when built with CUDA (TPQ_WITH_CUDA).
#include <cstdint>

#include "tpq/core/context.hpp"
#include "tpq/core/dtype.hpp"

namespace tpq::detail {

// y[M, N] = x[M, K] · w[N, K]ᵀ (+ bias[N] when not null), all of `dtype` (BF16, F16 or F32), row-major, on
// ctx's stream. Chooses between cuBLASLt (bias fused in the epilogue) and a GEMV for small M.
void cuda_linear(const Context& ctx, DType dtype, const void* x, const void* w, const void* bias, void* y, int64_t m,
                 int64_t n, int64_t k);

// How cuda_linear's decode GEMV (when it takes the problem) splits K on ctx's device, for tests: the number of
// splits (1: none) and whether they meet in a thread-block cluster (sm_90+, two splits) or in global memory.
struct GemvSplitInfo {
  int splits = 1;
  bool cluster = false;
};
GemvSplitInfo cuda_linear_gemv_split(const Context& ctx, int64_t m, int64_t n, int64_t k);

// y[i] += bias[i % n] over `count` elements of `dtype` on ctx's stream (RowParallel adds its bias after the
// all-reduce).
void cuda_add_bias(const Context& ctx, DType dtype, void* y, const void* bias, int64_t count, int64_t n);

}  // namespace tpq::detail
