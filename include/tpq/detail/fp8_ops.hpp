#pragma once
// Host-side entry point of the FP8 CUDA code (src/cuda/fp8_linear.cpp). Raw device pointers and sizes; the caller
// (Fp8Linear) has checked shapes and dtypes. Defined only when built with CUDA (TPQ_WITH_CUDA).
#include <cstdint>

#include "tpq/core/context.hpp"
#include "tpq/core/dtype.hpp"
#include "tpq/quant/fp8_scheme.hpp"

namespace tpq::detail {

// Up to this many rows of x, kAuto streams the FP8 weight through the weight-only GEMV instead of quantizing the
// activations for cuBLASLt (the GEMV takes at most 16). Measured on an H200 (fifteenth session, bf16, Llama-3 8B
// and 70B-TP8 shapes, the GEMV against the scaled GEMM at M 2..16; benchmarks/results/README.md):
//  - per-tensor weights with per-tensor activations (dynamic or static): the GEMV up to M = 8 (1.0-3.5x faster
//    than the scaled GEMM there); at M 9..16 cuBLASLt's FP8 GEMM is 1.13-1.56x faster on the large layers (8B
//    gate_up and down, 70B-TP8 gate_up and down) and 0.73-1.06x on the small ones (qkv, o); over the four 8B layers
//    of a block, 1.17x (dynamic) and 1.29x (static) at M = 16;
//  - 128 x 128 block scales: the GEMV at every M up to 16 (the block-scaled GEMM 0.29-0.98x at M <= 12, 0.51-1.08x
//    at 16);
//  - per-row weights or per-token activations: not measured, the GEMV up to 16.
inline constexpr int64_t kFp8WeightOnlyMaxM = 16;
inline constexpr int64_t kFp8WeightOnlyMaxMPerTensor = 8;

struct Fp8LinearArgs {
  DType dtype = DType::BF16;     // x, y and bias: BF16 or F16 (F32 only through kDequantGemm)
  const void* x = nullptr;       // [m, k]
  void* y = nullptr;             // [m, n]
  const void* bias = nullptr;    // [n] or null
  int64_t m = 0, n = 0, k = 0;
  const void* w = nullptr;       // e4m3 [n, k]
  Fp8ScaleKind scale_kind = Fp8ScaleKind::kTensor;
  const float* w_scale = nullptr;      // [1] | [n] | [ceil(n / block_n), scale_ld]
  int64_t block_n = 128, block_k = 128, scale_ld = 0;
  const float* w_scale_rows = nullptr; // kTensor: the scale repeated per row [n] (cuBLASLt outer-vector mode)
  const float* w_scale_lt = nullptr;   // kBlock 128 x 128: [ceil(n / 128), round_up(ceil(k / 128), 4)] (cuBLASLt)
  Fp8ActQuant act{};
  const float* input_scale = nullptr;  // kStaticTensor: [1]
};

// y = x · Wᵀ (+ bias) on ctx's stream, no device synchronization, scratch from ctx. kAuto: the weight-only GEMV for
// m up to kFp8WeightOnlyMaxM (kFp8WeightOnlyMaxMPerTensor for per-tensor weights and activations), else the scaled
// GEMM where the GPU and cuBLASLt take it, else dequantize + dense GEMM.
// A forced path that cannot run these arguments on this GPU is kUnsupported, naming why.
void cuda_fp8_linear(const Context& ctx, const Fp8LinearArgs& args, Fp8Path path = Fp8Path::kAuto);

// The scaled GEMM's activation quantization alone (tests): x [m, k] (BF16 or F16) to e4m3 codes q [m, k] and
// scales: scales[0] for dynamic per-tensor (static per-tensor writes none and uses *input_scale), [m] per token,
// [m, ceil(k / group)] row-major per 1 x group. Device pointers; on ctx's stream, no synchronization.
void cuda_fp8_quantize_activations(const Context& ctx, DType dtype, const void* x, int64_t m, int64_t k,
                                   const Fp8ActQuant& act, const float* input_scale, uint8_t* q, float* scales);

// Which GEMM kScaledGemm plans for `args` on ctx's GPU, before asking cuBLASLt for an algorithm (tests, benchmarks):
// none (the path cannot run them), cuBLASLt, or tpq's block-scaled WGMMA kernel (kernels/fp8/block_gemm.cuh).
enum class Fp8ScaledGemm { kNone, kCublasLt, kTpqBlock };
Fp8ScaledGemm cuda_fp8_scaled_gemm_plan(const Context& ctx, const Fp8LinearArgs& args);

// Which weight-only GEMV kernel kWeightOnly launches for `args` on ctx's GPU (tests, benchmarks): none (the path
// cannot run them), one batch of 2 or 4 units of 128 K in flight per warp, two batches of
// kernels::kFp8GemvTwoBatchUnits, or one unit of two column tiles (M > 8). Pointers are read for alignment only.
enum class Fp8GemvKernel { kNone, kTwoUnits, kFourUnits, kTwoBatches, kTwoColumnTiles };
Fp8GemvKernel cuda_fp8_gemv_kernel(const Context& ctx, const Fp8LinearArgs& args);
// The rows of W (output columns) one block of that kernel covers: 16 per warp side by side over tiles (the others
// split K); 0 where the GEMV cannot run `args`.
int cuda_fp8_gemv_block_rows(const Context& ctx, const Fp8LinearArgs& args);

// The path kAuto picks before asking cuBLASLt (which may still refuse, sending the call to kDequantGemm).
Fp8Path cuda_fp8_auto_path(const Context& ctx, const Fp8LinearArgs& args);

}  // namespace tpq::detail
