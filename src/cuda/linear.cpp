// cuda_linear and cuda_add_bias (tpq/detail/cuda_ops.hpp): the dense y = x·Wᵀ + bias every unquantized layer
// (and every format that dequantizes to bf16 for prefill) ends in.
//
// Three paths, chosen per call on the host, with no device synchronization and no allocation:
//  1. M <= kGemvMaxM (decode), bf16/f16, K % 8 == 0, 16-byte aligned x and W: our dense GEMV, which streams W
//     at close to the read bandwidth (kernels/common/dense_gemv.cuh).
//  2. Otherwise cuBLASLt, bias fused in the epilogue, algorithm from the context's plan cache.
//  3. Whatever cuBLASLt refuses (odd leading dimensions with misaligned rows, k == 0): a plain tiled kernel.
//
// Row-major to cuBLAS's column-major: y[M, N] row-major is yᵀ [N, M] column-major, and
// yᵀ = W · xᵀ with W [N, K] row-major = a K x N column-major matrix used transposed (op A = T, lda = K) and
// x [M, K] row-major = a K x M column-major matrix used as is (op B = N, ldb = K). The bias runs along the rows of
// the column-major D, which is what CUBLASLT_EPILOGUE_BIAS adds. "TN" is also the layout cuBLASLt's fastest
// Hopper kernels (and its FP8 paths) want.
//
// The GEMV is launched with programmatic dependent launch on sm_90+: it starts reading W before the previous
// kernel on the stream has finished. W must therefore not be written by a kernel still in flight on the stream
// when cuda_linear is called (weights are written at load time; LoRA merges build a new layer).
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "src/cuda/cuda_resources.hpp"
#include "src/cuda/linear_kernels.hpp"
#include "src/cuda/lt_util.hpp"
#include "tpq/core/context.hpp"
#include "tpq/detail/cuda_check.hpp"
#include "tpq/detail/cuda_ops.hpp"

namespace tpq::detail {

namespace {

// Tags of the LtPlanKey users, so different ops never share a cache entry.
constexpr int64_t kPlanDenseLinear = 1;

bool dense_dtype(DType dtype) { return dtype == DType::BF16 || dtype == DType::F16 || dtype == DType::F32; }

// The descriptors of y = x·Wᵀ + bias in cuBLASLt's column-major terms (see the top of this file).
struct DenseMatmul {
  MatmulDesc desc;
  Layout a, b, c;

  DenseMatmul(DType dtype, const void* bias, int64_t m, int64_t n, int64_t k) {
    const cudaDataType_t type = cuda_data_type(dtype);
    cublasLtMatmulDesc_t d = nullptr;
    // f32 accumulation everywhere; for F32 data this is true FP32 (CUBLAS_COMPUTE_32F never uses TF32).
    TPQ_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    desc.reset(d);
    const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
    TPQ_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof(op_t)));
    TPQ_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof(op_n)));
    if (bias != nullptr) {
      const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
      TPQ_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
      TPQ_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
      // The bias has the output's type (the default, said explicitly so it does not depend on a default).
      const cudaDataType_t bias_type = type;
      TPQ_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
    }
    a = make_layout(type, k, n, k);  // W: K x N column-major, used transposed
    b = make_layout(type, k, m, k);  // x: K x M column-major
    c = make_layout(type, n, m, n);  // yᵀ: N x M column-major (C and D)
  }
};

LtPlanCache::Plan query_plan(Context::CudaResources& res, const DenseMatmul& mm, const void* x, const void* w,
                             const void* bias, const void* y) {
  const Preference pref = make_preference(res.workspace_bytes, pointer_alignment(w), pointer_alignment(x),
                                          pointer_alignment(y));
  (void)bias;  // the bias alignment is part of the cache key; cuBLASLt has no preference attribute for it

  cublasLtMatmulHeuristicResult_t result = {};
  int returned = 0;
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(res.lt.get(), mm.desc.get(), mm.a.get(), mm.b.get(), mm.c.get(), mm.c.get(),
                                     pref.get(), 1, &result, &returned);
  if (status == CUBLAS_STATUS_NOT_SUPPORTED || status == CUBLAS_STATUS_INVALID_VALUE) return std::nullopt;
  TPQ_CUBLAS_CHECK(status);
  if (returned == 0 || result.state != CUBLAS_STATUS_SUCCESS) return std::nullopt;
  return result.algo;
}

void launch_fallback(DType dtype, const void* x, const void* w, const void* bias, void* y, int64_t m, int64_t n,
                     int64_t k, cudaStream_t stream) {
  const kernels::SimtGemmParams p{.x = x, .w = w, .bias = bias, .y = y, .m = m, .n = n, .k = k};
  TPQ_CUDA_CHECK(launch_simt_gemm(dense_type(dtype), p, stream));
}

bool gemv_fits(DType dtype, const void* x, const void* w, int64_t m, int64_t n, int64_t k) {
  if (dtype != DType::BF16 && dtype != DType::F16) return false;
  if (m > kGemvMaxM || k % 8 != 0) return false;
  if (n > std::numeric_limits<int>::max() || k > std::numeric_limits<int>::max() - 64) return false;
  return pointer_alignment(x) >= 16 && pointer_alignment(w) >= 16;
}

// The GEMV's split of K: each split still long enough for every warp to have a full batch of loads in flight.
GemvSplit dense_gemv_split(const Context::CudaResources& res, int64_t m, int64_t n, int64_t k) {
  const int tiles = static_cast<int>((n + kernels::kGemvTileRows - 1) / kernels::kGemvTileRows);
  const int steps = static_cast<int>((k / 8 + 3) / 4);
  return plan_gemv_split(res, gemv_splits_wanted(res, tiles, steps, kernels::kGemvWarps * 4), steps, m, n);
}

void launch_gemv(Context::CudaResources& res, DType dtype, const void* x, const void* w, const void* bias, void* y,
                 int64_t m, int64_t n, int64_t k, cudaStream_t stream) {
  const GemvSplit split = dense_gemv_split(res, m, n, k);
  const kernels::DenseGemvParams p{.x = x,
                                   .w = w,
                                   .bias = bias,
                                   .y = y,
                                   .split_k = split.split_k,
                                   .m = static_cast<int>(m),
                                   .n = static_cast<int>(n),
                                   .k = static_cast<int>(k),
                                   .steps_per_split = split.per_split};
  TPQ_CUDA_CHECK(launch_dense_gemv(dense_type(dtype), p, stream, pdl_enabled(res)));
}

}  // namespace

void cuda_linear(const Context& ctx, DType dtype, const void* x, const void* w, const void* bias, void* y, int64_t m,
                 int64_t n, int64_t k) {
  TPQ_CHECK(dense_dtype(dtype), kUnsupported, "linear on CUDA: dtype {} (BF16, F16 or F32)", dtype);
  TPQ_CHECK(m >= 0 && n >= 0 && k >= 0, kShape, "linear: negative size m={} n={} k={}", m, n, k);
  if (m == 0 || n == 0) return;
  TPQ_CHECK(y != nullptr && (k == 0 || (x != nullptr && w != nullptr)), kInvalidArgument,
            "linear: null pointer (m={} n={} k={})", m, n, k);
  Context::CudaResources& res = cuda_resources_of(ctx, "linear");
  CudaDeviceGuard guard(res.device);
  const auto stream = static_cast<cudaStream_t>(ctx.stream());

  if (k == 0) {  // y = bias (or 0): nothing for a matrix product to do
    launch_fallback(dtype, x, w, bias, y, m, n, k, stream);
    return;
  }
  if (gemv_fits(dtype, x, w, m, n, k)) {
    launch_gemv(res, dtype, x, w, bias, y, m, n, k, stream);
    return;
  }

  const DenseMatmul mm(dtype, bias, m, n, k);
  LtPlanKey key;
  key.words = {kPlanDenseLinear,
               static_cast<int64_t>(dtype),
               m,
               n,
               k,
               bias != nullptr ? 1 : 0,
               pointer_alignment(x),
               pointer_alignment(w),
               pointer_alignment(y),
               bias != nullptr ? pointer_alignment(bias) : 0,
               0,
               0};
  const LtPlanCache::Plan plan = res.lt_plans.get_or_create(key, [&] { return query_plan(res, mm, x, w, bias, y); });
  if (plan) {
    const float alpha = 1.0f, beta = 0.0f;  // beta = 0: C (= y) is not read, so a poisoned y is fine
    const cublasStatus_t status =
        cublasLtMatmul(res.lt.get(), mm.desc.get(), &alpha, w, mm.a.get(), x, mm.b.get(), &beta, y, mm.c.get(), y,
                       mm.c.get(), &*plan, res.workspace.get(), res.workspace_bytes, stream);
    if (status == CUBLAS_STATUS_SUCCESS) return;
    if (status != CUBLAS_STATUS_NOT_SUPPORTED) TPQ_CUBLAS_CHECK(status);
    res.lt_plans.refuse(key);  // refused at run time: remember, and take the fallback from now on
  }
  launch_fallback(dtype, x, w, bias, y, m, n, k, stream);
}

GemvSplitInfo cuda_linear_gemv_split(const Context& ctx, int64_t m, int64_t n, int64_t k) {
  const GemvSplit split = dense_gemv_split(cuda_resources_of(ctx, "linear"), m, n, k);
  return {.splits = split.split_k.splits, .cluster = split.split_k.cluster};
}

void cuda_add_bias(const Context& ctx, DType dtype, void* y, const void* bias, int64_t count, int64_t n) {
  TPQ_CHECK(dense_dtype(dtype), kUnsupported, "add_bias on CUDA: dtype {} (BF16, F16 or F32)", dtype);
  TPQ_CHECK(count >= 0 && n > 0 && count % n == 0, kShape, "add_bias: {} elements are not rows of {}", count, n);
  if (count == 0) return;
  TPQ_CHECK(y != nullptr && bias != nullptr, kInvalidArgument, "add_bias: null pointer");
  Context::CudaResources& res = cuda_resources_of(ctx, "add_bias");
  CudaDeviceGuard guard(res.device);
  TPQ_CUDA_CHECK(launch_add_bias(dense_type(dtype), y, bias, count, n, res.sm_count, static_cast<cudaStream_t>(ctx.stream())));
}

}  // namespace tpq::detail
