// cuda_fp8_linear (tpq/detail/fp8_ops.hpp): y = x · Wᵀ (+ bias) with W stored as e4m3 and its scales.
//
// Three paths, chosen per call on the host, with no device synchronization; scratch comes from the context.
//  1. Weight-only GEMV (m <= kFp8WeightOnlyMaxM, or kFp8WeightOnlyMaxMPerTensor: fp8_ops.hpp): streams the FP8
//     weight once, x stays bf16/f16 (kernels/fp8/weight_only_gemv.cuh). Works on every GPU the dense GEMV does (sm_80+).
//  2. Scaled GEMM: quantize x (kernels/fp8/act_quant.cuh), then cuBLASLt e4m3 x e4m3 -> bf16/f16 with the scales
//     in the descriptor. Per-tensor weights and per-tensor activations: scalar scales (sm_89+), fast accumulation
//     unless the context turns it off. Per-row weights or per-token activations: outer-vector scales (sm_90,
//     cuBLAS 12.9+). 128 x 128 block weights with 1 x 128 activation groups: cuBLASLt's BLK128x128 for W and
//     VEC128 for x (sm_90, cuBLAS 12.9+, K % 128 == 0), else tpq's WGMMA kernel (kernels/fp8/block_gemm.cuh, sm_90a,
//     any K % 16 == 0); TPQ_FP8_BLOCK_GEMM chooses otherwise (cuda_resources.hpp).
//  3. Dequantize W to the compute dtype (kernels/fp8/dequant.cuh) and run the dense cuda_linear: GPUs without FP8
//     tensor cores, shapes cuBLASLt refuses, and weight-only checkpoints at large M.
//
// cuBLASLt's column-major view (as in linear.cpp): yᵀ [N, M] = W · xᵀ with A = W (K x N column-major, op T),
// B = x_q (K x M column-major, op N): the "TN" layout FP8 requires. Scale layouts, from A's and B's point of view:
//  - OUTER_VEC_32F: A's scales run along N (one per row of W), B's along M (one per row of x).
//  - BLK128x128_32F on A: one scale per 128 x 128 block, the K blocks of a block row contiguous and padded to a
//    multiple of 4: [ceil(N / 128)][round_up(ceil(K / 128), 4)] (the checkpoint's weight_scale_inv, padded).
//  - VEC128_32F on B: one scale per row of x and 128 K elements, rows contiguous: [ceil(K / 128)][M].
// (PyTorch's _scaled_mm checks the same strides for its 1x128 / 128x128 recipe on cuBLASLt.)
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <string>

#include "src/cuda/cuda_resources.hpp"
#include "kernels/fp8/traits.hpp"
#include "src/cuda/fp8_kernels.hpp"
#include "src/cuda/lt_util.hpp"
#include "tpq/detail/cuda_check.hpp"
#include "tpq/detail/cuda_ops.hpp"
#include "tpq/detail/fp8_ops.hpp"

namespace tpq::detail {

namespace {

// LtPlanKey tag of the FP8 GEMM (linear.cpp's dense GEMM uses 1).
constexpr int64_t kPlanFp8Gemm = 0x46503801;

using kernels::Fp8ScaleLayout;

template <typename V>
void set_attr(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const V& value) {
  TPQ_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, attr, &value, sizeof(value)));
}

bool half_dtype(DType d) { return d == DType::BF16 || d == DType::F16; }

// --- Path 1: weight-only GEMV.

// Why the GEMV cannot run `a`, or nullptr.
const char* weight_only_refusal(const Fp8LinearArgs& a) {
  if (!half_dtype(a.dtype)) return "the GEMV computes in BF16 or F16";
  if (a.m < 1 || a.m > kernels::kFp8GemvMaxM) return "the GEMV takes 1 to 16 rows of x";
  if (a.k % 16 != 0) return "the GEMV needs K % 16 == 0 (16-byte weight rows)";
  if (a.n > std::numeric_limits<int>::max() || a.k > std::numeric_limits<int>::max() - kernels::kFp8GemvUnitK)
    return "N or K too large for the GEMV";
  if (pointer_alignment(a.x) < 16 || pointer_alignment(a.w) < 16) return "x and W must be 16-byte aligned";
  if (a.scale_kind == Fp8ScaleKind::kBlock && (a.block_n % 16 != 0 || a.block_k % kernels::kFp8GemvUnitK != 0))
    return "the GEMV needs block_n % 16 == 0 and block_k % 128 == 0";
  return nullptr;
}

// Units of 128 K a warp loads before using them. Four keep more bytes in flight but cost registers, so fewer
// blocks fit on an SM: measured on an H200 (Llama-3 8B / 70B-TP8 shapes, M = 1 and 8), four win when each warp has
// a long K range or the tiles fit in about two blocks per SM, two win for many short tiles (qkv, gate_up of 8B).
constexpr int kGemvLongWarpUnits = 8;
int gemv_units_in_flight(const Context::CudaResources& res, int tiles, int units, int splits, int slices) {
  const int per_warp = (units / splits + slices - 1) / slices;
  return per_warp >= kGemvLongWarpUnits || tiles * splits <= 2 * res.sm_count ? 4 : 2;
}

// Blocks of the GEMV's launch for p (its tiles of col_warps tiles, times its splits of K), and how many waves of
// resident blocks they take.
int64_t gemv_blocks(const kernels::Fp8GemvParams& p) {
  const int64_t rows = int64_t{kernels::kFp8GemvTileRows} * p.col_warps;
  return (p.n + rows - 1) / rows * p.split_k.splits;
}
int64_t gemv_waves(const Context::CudaResources& res, DType dtype, const kernels::Fp8GemvParams& p) {
  const int64_t resident = int64_t{fp8_weight_only_gemv_blocks_per_sm(dense_type(dtype), p, res.device)} * res.sm_count;
  return (gemv_blocks(p) + resident - 1) / resident;
}

// Two batches of 2 units in flight per warp where every warp of a split has at least two, unless the kernel's fewer
// resident blocks per SM (two, against three for single batches of 2 units) make the launch take more waves of
// blocks. Same-run A/Bs on an H200 (s15, bf16, M = 1 and 8, per-tensor and block scales): 1.05-1.24x where it
// takes the place of four-unit batches (o, down of 8B; gate_up of 70B-TP8) and 1.11-1.24x on the down of 70B-TP8
// (512 tiles: two waves either way); where it would add waves, 0.87-0.99x on the qkv of 8B (384 tiles: one wave of
// three blocks per SM, two of two) and 0.96-0.98x on its gate_up (1792 tiles: 5 waves against 7).
bool gemv_two_batches(const Context::CudaResources& res, DType dtype, const kernels::Fp8GemvParams& p) {
  const int slices = kernels::kFp8GemvWarps / p.col_warps;
  const int per_warp = (p.units_per_split + slices - 1) / slices;
  if (p.m > kernels::kFp8GemvColTileRows || per_warp < 2 * kernels::kFp8GemvTwoBatchUnits) return false;
  kernels::Fp8GemvParams two = p;
  two.two_batches = 1;
  return gemv_waves(res, dtype, two) <= gemv_waves(res, dtype, p);
}

// Tiles of the GEMV's launch (kFp8GemvTileRows rows of W each) per block, at most, at M <= 8: two warps side by
// side over tiles where that brings the launch within one wave (gemv_col_warps). s16, H200, same run against one
// (two runs): 70B-TP8 gate_up 1.02-1.06x at M = 1 and 8 (448 tiles of the two-batch kernel, 2 waves -> 1), its down
// 0.97-1.02x (512 tiles, two nearly full waves -> 1). Forced elsewhere: 0.52-0.99x where the tiles already fit (o,
// down, qkv: more splits of K, or a third of the blocks per SM lost), 0.97-1.03x on llama8b gate_up (1792 tiles: 4
// waves at two). Four and eight: 0.48-0.99x on every Llama shape. The two-column-tile kernel (M 9..16) ran 0.79x at
// two on 70B-TP8 gate_up (block scales): one warp per tile there.
constexpr int kFp8GemvMaxColWarps = 2;

// The GEMV's launch for `a` with col_warps warps side by side over tiles.
kernels::Fp8GemvParams gemv_params(const Context::CudaResources& res, const Fp8LinearArgs& a, int col_warps) {
  const int slices = kernels::kFp8GemvWarps / col_warps;
  const int block_rows = kernels::kFp8GemvTileRows * col_warps;
  const int tiles = static_cast<int>((a.n + block_rows - 1) / block_rows);
  const int units = static_cast<int>((a.k + kernels::kFp8GemvUnitK - 1) / kernels::kFp8GemvUnitK);
  // Each warp of a split still with a whole unit to stream.
  const GemvSplit split = plan_gemv_split(res, gemv_splits_wanted(res, tiles, units, slices), units, a.m, a.n);
  kernels::Fp8GemvParams p{.x = a.x,
                           .w = static_cast<const uint8_t*>(a.w),
                           .w_scale = a.w_scale,
                           .bias = a.bias,
                           .y = a.y,
                           .split_k = split.split_k,
                           .m = static_cast<int>(a.m),
                           .n = static_cast<int>(a.n),
                           .k = static_cast<int>(a.k),
                           .scale_kind = static_cast<int>(a.scale_kind),
                           .scale_ld = static_cast<int>(a.scale_ld),
                           .block_n = static_cast<int>(a.block_n),
                           .block_k = static_cast<int>(a.block_k),
                           .units_per_split = split.per_split,
                           .units_in_flight = gemv_units_in_flight(res, tiles, units, split.split_k.splits, slices),
                           .two_batches = 0,
                           .col_warps = col_warps};
  p.two_batches = gemv_two_batches(res, a.dtype, p);
  return p;
}

// The GEMV's launch for `a` (which weight_only_refusal takes). Each width's launch is planned once: `p` holds the
// last one asked about, which is the chosen one unless none fits a wave.
kernels::Fp8GemvParams gemv_params(const Context::CudaResources& res, const Fp8LinearArgs& a) {
  kernels::Fp8GemvParams p{};
  const int max_col_warps = a.m <= kernels::kFp8GemvColTileRows ? kFp8GemvMaxColWarps : 1;
  const int col_warps = gemv_col_warps(max_col_warps, [&](int c) {
    p = gemv_params(res, a, c);
    return gemv_waves(res, a.dtype, p) <= 1;
  });
  return p.col_warps == col_warps ? p : gemv_params(res, a, col_warps);
}

void run_weight_only(Context::CudaResources& res, const Fp8LinearArgs& a, cudaStream_t stream) {
  TPQ_CUDA_CHECK(launch_fp8_weight_only_gemv(dense_type(a.dtype), gemv_params(res, a), stream, pdl_enabled(res)));
}

// --- Path 2: activations quantized, cuBLASLt FP8 GEMM.

struct ScaledPlan {
  cublasLtMatmulMatrixScale_t a_mode = CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
  cublasLtMatmulMatrixScale_t b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
  const float* a_scale = nullptr;
  Fp8ScaleLayout act_layout = Fp8ScaleLayout::kScalar;
  // cuBLASLt's fast FP8 accumulation (no periodic promotion of the tensor cores' partial sums to FP32 registers):
  // scalar scales only, as the context says (Context::set_fp8_fast_accumulation; not measured with the vector and
  // block modes).
  bool fast_accum = false;
  // The M cuBLASLt sees: VEC128 activation scales need M % 4 == 0 (cuBLAS 13.1 on sm_90 refuses other M), so
  // block-scaled problems run on M rounded up, with zero padding rows and a temporary output. tpq's block GEMM
  // quantizes the same padded rows (its scales' rows are 16-byte aligned) and writes y directly.
  int64_t m_gemm = 0;
  bool own_block_gemm = false;  // kernels/fp8/block_gemm.cuh instead of cuBLASLt
};

// Why tpq's block-scaled GEMM cannot run `a` on this context's GPU, or nullptr. For problems scaled_plan has
// checked: 128 x 128 weight blocks, 1 x 128 activation groups (or coarser), K % 16 == 0.
const char* own_block_gemm_refusal(const Context::CudaResources& res, const Fp8LinearArgs& a) {
  if (!res.fp8_block_gemm) return "tpq's block GEMM needs sm_90a code on an sm_90 GPU (H100, H200)";
  if (res.fp8_block_gemm_choice == Context::CudaResources::BlockGemmChoice::kCublasLt)
    return "TPQ_FP8_BLOCK_GEMM=cublaslt";
  // The kernel rounds M, N and K up to whole tiles in int.
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  if (a.m > kIntMax - kernels::kFp8GemmTileM || a.n > kIntMax - kernels::kFp8GemmTileN ||
      a.k > kIntMax - kernels::kFp8GemmTileK || a.scale_ld > kIntMax)
    return "M, N or K too large for tpq's block GEMM";
  const int64_t tiles = (a.m + kernels::kFp8GemmTileM - 1) / kernels::kFp8GemmTileM *
                        ((a.n + kernels::kFp8GemmTileN - 1) / kernels::kFp8GemmTileN);
  if (tiles > std::numeric_limits<int>::max()) return "too many output tiles for tpq's block GEMM";
  return nullptr;
}

// Why cuBLASLt's block scaling cannot run `a` on this GPU, or nullptr. For problems scaled_plan has checked, as
// own_block_gemm_refusal's.
const char* lt_block_refusal(const Context::CudaResources& res, const Fp8LinearArgs& a) {
#if CUBLAS_VERSION >= 120900
  if (res.cc_major != 9) return "128x128 block scales run on cuBLASLt only on sm_90";
  if (a.k % 128 != 0) return "cuBLASLt block scaling here needs K % 128 == 0";
  if (a.w_scale_lt == nullptr) return "the padded block scales were not prepared";
  return nullptr;
#else
  (void)res;
  (void)a;
  return "128x128 block scales need cuBLAS 12.9";
#endif
}

// How the scaled GEMM would run `a` on this GPU (cuBLASLt, or tpq's block GEMM), or why it cannot (in `why`).
std::optional<ScaledPlan> scaled_plan(const Context& ctx, const Context::CudaResources& res, const Fp8LinearArgs& a,
                                      const char** why) {
  const auto refuse = [&](const char* reason) -> std::optional<ScaledPlan> {
    *why = reason;
    return std::nullopt;
  };
  if (a.act.scheme == Fp8ActScheme::kNone) return refuse("the layer does not quantize activations (weight-only)");
  if (!half_dtype(a.dtype)) return refuse("the FP8 GEMM writes BF16 or F16");
  if (res.cc_major * 10 + res.cc_minor < 89) return refuse("FP8 tensor cores need sm_89 or newer");
  if (a.k % 16 != 0) return refuse("FP8 operands need K % 16 == 0");
  if (pointer_alignment(a.w) < 16) return refuse("W must be 16-byte aligned");
  if (a.act.scheme == Fp8ActScheme::kStaticTensor && a.input_scale == nullptr)
    return refuse("static activation scheme without an input scale");
  const bool per_tensor_act = a.act.scheme == Fp8ActScheme::kStaticTensor ||
                              a.act.scheme == Fp8ActScheme::kDynamicTensor;
#if CUBLAS_VERSION >= 120900
  const bool vector_modes = res.cc_major >= 9;
#else
  const bool vector_modes = false;
#endif
  ScaledPlan plan;
  plan.m_gemm = a.m;
  switch (a.scale_kind) {
    case Fp8ScaleKind::kTensor:
      if (per_tensor_act) {
        plan.a_scale = a.w_scale;
        plan.act_layout = Fp8ScaleLayout::kScalar;
        plan.fast_accum = ctx.fp8_fast_accumulation();
        return plan;
      }
      if (a.act.scheme == Fp8ActScheme::kDynamicGroup) return refuse("per-tensor weights with 1x128 activations");
      if (!vector_modes || a.w_scale_rows == nullptr) return refuse("per-token scales need sm_90 and cuBLAS 12.9");
      plan.a_mode = plan.b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
      plan.a_scale = a.w_scale_rows;
      plan.act_layout = Fp8ScaleLayout::kPerRow;
      return plan;
    case Fp8ScaleKind::kRow:
      if (a.act.scheme == Fp8ActScheme::kDynamicGroup) return refuse("per-row weights with 1x128 activations");
      if (!vector_modes) return refuse("per-row scales need sm_90 and cuBLAS 12.9");
      plan.a_mode = plan.b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
      plan.a_scale = a.w_scale;
      plan.act_layout = Fp8ScaleLayout::kPerRow;
      return plan;
    case Fp8ScaleKind::kBlock: {
      if (a.block_n != 128 || a.block_k != 128) return refuse("block-scaled FP8 GEMMs take 128 x 128 weight blocks");
      if (a.act.scheme == Fp8ActScheme::kDynamicGroup && a.act.group != 128)
        return refuse("1 x group activations with a group other than 128");
      const char* own = own_block_gemm_refusal(res, a);
      const char* lt = lt_block_refusal(res, a);
      plan.act_layout = Fp8ScaleLayout::kGrouped;
      plan.m_gemm = (a.m + 3) / 4 * 4;
      if (own == nullptr &&
          (lt != nullptr || res.fp8_block_gemm_choice == Context::CudaResources::BlockGemmChoice::kTpq)) {
        plan.own_block_gemm = true;
        return plan;
      }
      if (lt != nullptr) return refuse(lt);
#if CUBLAS_VERSION >= 120900
      plan.a_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
      plan.b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
      plan.a_scale = a.w_scale_lt;
#endif
      return plan;
    }
  }
  return refuse("unknown scale kind");
}

cudaDataType_t out_type(DType d) { return d == DType::BF16 ? CUDA_R_16BF : CUDA_R_16F; }

struct Fp8Matmul {
  MatmulDesc desc;
  Layout a, b, c;

  Fp8Matmul(const Fp8LinearArgs& args, const ScaledPlan& plan, bool with_bias) {
    cublasLtMatmulDesc_t d = nullptr;
    TPQ_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    desc.reset(d);
    set_attr(d, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);
    set_attr(d, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
#if CUBLAS_VERSION >= 120900
    if (plan.a_mode != CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F)
      set_attr(d, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, static_cast<int32_t>(plan.a_mode));
    if (plan.b_mode != CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F)
      set_attr(d, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, static_cast<int32_t>(plan.b_mode));
#endif
    if (plan.fast_accum) set_attr(d, CUBLASLT_MATMUL_DESC_FAST_ACCUM, static_cast<int8_t>(1));
    // Vector and block scale modes want their scale pointers set when the heuristic is asked; B's (the
    // activations') is not known until they are quantized, so any device pointer stands in until then.
    set_attr(d, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, static_cast<const void*>(plan.a_scale));
    set_attr(d, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, static_cast<const void*>(plan.a_scale));
    if (with_bias) {
      set_attr(d, CUBLASLT_MATMUL_DESC_EPILOGUE, CUBLASLT_EPILOGUE_BIAS);
      set_attr(d, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, static_cast<int32_t>(out_type(args.dtype)));
    }
    a = make_layout(CUDA_R_8F_E4M3, args.k, args.n, args.k);
    b = make_layout(CUDA_R_8F_E4M3, args.k, plan.m_gemm, args.k);
    c = make_layout(out_type(args.dtype), args.n, plan.m_gemm, args.n);
  }
};

// `why` (may be null) learns the heuristic's answer when it has no algorithm.
LtPlanCache::Plan query_plan(Context::CudaResources& res, const Fp8Matmul& mm, const Fp8LinearArgs& a,
                             std::string* why) {
  const Preference pref = make_preference(res.workspace_bytes, pointer_alignment(a.w), 256, pointer_alignment(a.y));
  cublasLtMatmulHeuristicResult_t result = {};
  int returned = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
      res.lt.get(), mm.desc.get(), mm.a.get(), mm.b.get(), mm.c.get(), mm.c.get(), pref.get(), 1, &result, &returned);
  if (status == CUBLAS_STATUS_NOT_SUPPORTED || status == CUBLAS_STATUS_INVALID_VALUE) {
    if (why) *why = fmt::format("cublasLtMatmulAlgoGetHeuristic: {}", cublasGetStatusString(status));
    return std::nullopt;
  }
  TPQ_CUBLAS_CHECK(status);
  if (returned == 0 || result.state != CUBLAS_STATUS_SUCCESS) {
    if (why)
      *why = fmt::format("cublasLtMatmulAlgoGetHeuristic returned {} algorithms (state {})", returned,
                         cublasGetStatusString(result.state));
    return std::nullopt;
  }
  return result.algo;
}

LtPlanKey plan_key(const Fp8LinearArgs& a, const ScaledPlan& plan, bool with_bias) {
  LtPlanKey key;
  key.words = {kPlanFp8Gemm,
               static_cast<int64_t>(a.dtype),
               plan.m_gemm,
               a.n,
               a.k,
               with_bias ? 1 : 0,
               static_cast<int64_t>(plan.a_mode),
               static_cast<int64_t>(plan.b_mode),
               pointer_alignment(a.w),
               pointer_alignment(a.y),
               with_bias ? pointer_alignment(a.bias) : 0,
               plan.fast_accum ? 1 : 0};
  return key;
}

// x [m, k] -> e4m3 codes q [m_pad, k] and `scales` in `layout`, on `stream`; dynamic per-tensor scales take an amax
// pass first, whose partial maxima (scratch from ctx) are released on the stream after the quantization.
void launch_quantization(const Context& ctx, const Context::CudaResources& res, DType dtype, const void* x, int64_t m,
                         int64_t m_pad, int64_t k, const Fp8ActQuant& act, const float* input_scale, uint8_t* q,
                         float* scales, Fp8ScaleLayout layout, cudaStream_t stream) {
  int amax_blocks = 0;
  const float* partials = nullptr;
  Tensor amax;
  if (act.scheme == Fp8ActScheme::kDynamicTensor) {
    amax_blocks = fp8_amax_blocks(x, m * k, res.sm_count);
    amax = ctx.empty({amax_blocks}, DType::F32);
    TPQ_CUDA_CHECK(launch_fp8_amax(dense_type(dtype), x, m * k, static_cast<float*>(amax.data()), amax_blocks, stream));
    partials = static_cast<const float*>(amax.data());
  }
  const kernels::Fp8ActQuantParams p{.x = x,
                                     .q = q,
                                     .scales = scales,
                                     .static_scale = input_scale,
                                     .amax_partials = partials,
                                     .amax_blocks = amax_blocks,
                                     .m = m,
                                     .m_pad = m_pad,
                                     .k = k,
                                     .scheme = static_cast<int>(act.scheme),
                                     .ue8m0 = act.ue8m0 ? 1 : 0,
                                     .scale_ub = act.scale_ub,
                                     .group = act.group,
                                     .layout = static_cast<int>(layout),
                                     .layout_groups = static_cast<int>(kernels::fp8_ceil_div(k, kernels::kFp8Block))};
  TPQ_CUDA_CHECK(launch_fp8_act_quant(dense_type(dtype), p, stream));
}

// Quantizes x into `x_q` and its scales, as the plan's scale layout wants them. Returns the device pointer cuBLASLt
// reads as B's scale.
const float* quantize_activations(const Context& ctx, Context::CudaResources& res, const Fp8LinearArgs& a,
                                  const ScaledPlan& plan, void* x_q, Tensor& scales, cudaStream_t stream) {
  const int64_t groups = (a.k + kernels::kFp8Block - 1) / kernels::kFp8Block;
  const bool static_scalar = a.act.scheme == Fp8ActScheme::kStaticTensor && plan.act_layout == Fp8ScaleLayout::kScalar;
  switch (plan.act_layout) {
    case Fp8ScaleLayout::kScalar: scales = ctx.empty({1}, DType::F32); break;
    case Fp8ScaleLayout::kPerRow: scales = ctx.empty({plan.m_gemm}, DType::F32); break;
    case Fp8ScaleLayout::kGrouped: scales = ctx.empty({groups, plan.m_gemm}, DType::F32); break;
  }
  launch_quantization(ctx, res, a.dtype, a.x, a.m, plan.m_gemm, a.k, a.act, a.input_scale, static_cast<uint8_t*>(x_q),
                      static_cast<float*>(scales.data()), plan.act_layout, stream);
  return static_scalar ? a.input_scale : static_cast<const float*>(scales.data());
}

// tpq's block-scaled GEMM: quantize x in 1 x 128 groups, then the WGMMA kernel writes y (bias included).
void run_own_block_gemm(const Context& ctx, Context::CudaResources& res, const Fp8LinearArgs& a,
                        const ScaledPlan& plan, cudaStream_t stream) {
  Tensor x_q = ctx.empty({plan.m_gemm, a.k}, DType::F8E4M3);
  Tensor scales;
  const float* x_scales = quantize_activations(ctx, res, a, plan, x_q.data(), scales, stream);
  const kernels::Fp8BlockGemmParams p{.x_q = static_cast<const uint8_t*>(x_q.data()),
                                      .x_scales = x_scales,
                                      .w = static_cast<const uint8_t*>(a.w),
                                      .w_scale = a.w_scale,
                                      .bias = a.bias,
                                      .y = a.y,
                                      .m = static_cast<int>(a.m),
                                      .m_pad = static_cast<int>(plan.m_gemm),
                                      .n = static_cast<int>(a.n),
                                      .k = static_cast<int>(a.k),
                                      .scale_ld = static_cast<int>(a.scale_ld),
                                      .paired_stores = a.n % 2 == 0 && pointer_alignment(a.y) >= 4 ? 1 : 0};
  TPQ_CUDA_CHECK(launch_fp8_block_gemm(dense_type(a.dtype), p, res.sm_count, stream));
}

// Runs the cuBLASLt GEMM; false when cuBLASLt refuses the problem, with the reason in `why` when it is known (a
// refusal cached by an earlier call has none).
bool run_lt_gemm(const Context& ctx, Context::CudaResources& res, const Fp8LinearArgs& a, const ScaledPlan& plan,
                 cudaStream_t stream, std::string* why) {
  // The plan first: a refusal costs nothing but the (cached) heuristic query. A bias goes into the epilogue when
  // cuBLASLt takes it there, else it is added after.
  std::optional<Fp8Matmul> mm;
  LtPlanCache::Plan algo;
  LtPlanKey key;
  const auto try_plan = [&](bool bias_in_epilogue) {
    mm.emplace(a, plan, bias_in_epilogue);
    key = plan_key(a, plan, bias_in_epilogue);
    algo = res.lt_plans.get_or_create(key, [&] { return query_plan(res, *mm, a, why); });
    return algo.has_value();
  };
  bool with_bias = a.bias != nullptr;
  if (!try_plan(with_bias)) {
    if (!with_bias || !try_plan(false)) return false;
    with_bias = false;
  }

  Tensor x_q = ctx.empty({plan.m_gemm, a.k}, DType::F8E4M3);
  // Padded problems write a temporary output whose first m rows are y.
  Tensor y_pad;
  void* out = a.y;
  if (plan.m_gemm != a.m) {
    y_pad = ctx.empty({plan.m_gemm, a.n}, a.dtype);
    out = y_pad.data();
  }
  Tensor scales;
  const float* b_scale = quantize_activations(ctx, res, a, plan, x_q.data(), scales, stream);
  cublasLtMatmulDesc_t d = mm->desc.get();
  set_attr(d, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, static_cast<const void*>(plan.a_scale));
  set_attr(d, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, static_cast<const void*>(b_scale));
  if (with_bias) set_attr(d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, a.bias);
  const float alpha = 1.0f, beta = 0.0f;  // beta = 0: C (= the output) is not read
  const cublasStatus_t status =
      cublasLtMatmul(res.lt.get(), d, &alpha, a.w, mm->a.get(), x_q.data(), mm->b.get(), &beta, out, mm->c.get(),
                     out, mm->c.get(), &*algo, res.workspace.get(), res.workspace_bytes, stream);
  if (status == CUBLAS_STATUS_NOT_SUPPORTED) {
    res.lt_plans.refuse(key);
    if (why) *why = "cublasLtMatmul: not supported";
    return false;
  }
  TPQ_CUBLAS_CHECK(status);
  if (out != a.y) {
    const size_t bytes = static_cast<size_t>(a.m) * static_cast<size_t>(a.n) * (a.dtype == DType::F32 ? 4 : 2);
    TPQ_CUDA_CHECK(cudaMemcpyAsync(a.y, out, bytes, cudaMemcpyDeviceToDevice, stream));
  }
  if (a.bias != nullptr && !with_bias) cuda_add_bias(ctx, a.dtype, a.y, a.bias, a.m * a.n, a.n);
  return true;
}

// Runs the scaled GEMM; false when neither cuBLASLt nor tpq's block GEMM takes the problem (the caller falls back),
// with cuBLASLt's reason in `why` when it is known. Block-scaled problems that cuBLASLt refuses only when asked (no
// algorithm, or not supported at launch) go to tpq's block GEMM where it runs them.
bool run_scaled_gemm(const Context& ctx, Context::CudaResources& res, const Fp8LinearArgs& a, const ScaledPlan& plan,
                     cudaStream_t stream, std::string* why = nullptr) {
  if (!plan.own_block_gemm && run_lt_gemm(ctx, res, a, plan, stream, why)) return true;
  if (plan.own_block_gemm || (a.scale_kind == Fp8ScaleKind::kBlock && own_block_gemm_refusal(res, a) == nullptr)) {
    run_own_block_gemm(ctx, res, a, plan, stream);
    return true;
  }
  return false;
}

// --- Path 3: dequantize, then the dense GEMM.

void run_dequant_gemm(const Context& ctx, Context::CudaResources& res, const Fp8LinearArgs& a, cudaStream_t stream) {
  TPQ_CHECK(a.dtype == DType::BF16 || a.dtype == DType::F16 || a.dtype == DType::F32, kUnsupported,
            "fp8 linear: compute dtype {} (BF16, F16 or F32)", a.dtype);
  Tensor w = ctx.empty({a.n, a.k}, a.dtype);
  const kernels::Fp8DequantParams p{.w = static_cast<const uint8_t*>(a.w),
                                    .scale = a.w_scale,
                                    .out = w.data(),
                                    .n = a.n,
                                    .k = a.k,
                                    .scale_kind = static_cast<int>(a.scale_kind),
                                    .scale_ld = a.scale_ld,
                                    .block_n = a.block_n,
                                    .block_k = a.block_k};
  if (a.n > 0 && a.k > 0) TPQ_CUDA_CHECK(launch_fp8_dequant(dense_type(a.dtype), p, res.sm_count, stream));
  cuda_linear(ctx, a.dtype, a.x, w.data(), a.bias, a.y, a.m, a.n, a.k);
}

}  // namespace

Fp8ScaledGemm cuda_fp8_scaled_gemm_plan(const Context& ctx, const Fp8LinearArgs& a) {
  const Context::CudaResources& res = cuda_resources_of(ctx, "fp8 linear");
  const char* why = nullptr;
  const auto plan = scaled_plan(ctx, res, a, &why);
  if (!plan) return Fp8ScaledGemm::kNone;
  return plan->own_block_gemm ? Fp8ScaledGemm::kTpqBlock : Fp8ScaledGemm::kCublasLt;
}

Fp8GemvKernel cuda_fp8_gemv_kernel(const Context& ctx, const Fp8LinearArgs& a) {
  const Context::CudaResources& res = cuda_resources_of(ctx, "fp8 linear");
  if (weight_only_refusal(a) != nullptr) return Fp8GemvKernel::kNone;
  const kernels::Fp8GemvParams p = gemv_params(res, a);
  if (p.m > kernels::kFp8GemvColTileRows) return Fp8GemvKernel::kTwoColumnTiles;
  if (p.two_batches) return Fp8GemvKernel::kTwoBatches;
  return p.units_in_flight >= 4 ? Fp8GemvKernel::kFourUnits : Fp8GemvKernel::kTwoUnits;
}

int cuda_fp8_gemv_block_rows(const Context& ctx, const Fp8LinearArgs& a) {
  const Context::CudaResources& res = cuda_resources_of(ctx, "fp8 linear");
  if (weight_only_refusal(a) != nullptr) return 0;
  return kernels::kFp8GemvTileRows * gemv_params(res, a).col_warps;
}

Fp8Path cuda_fp8_auto_path(const Context& ctx, const Fp8LinearArgs& a) {
  const Context::CudaResources& res = cuda_resources_of(ctx, "fp8 linear");
  const bool per_tensor = a.scale_kind == Fp8ScaleKind::kTensor && (a.act.scheme == Fp8ActScheme::kDynamicTensor ||
                                                                    a.act.scheme == Fp8ActScheme::kStaticTensor);
  const int64_t gemv_max_m = per_tensor ? kFp8WeightOnlyMaxMPerTensor : kFp8WeightOnlyMaxM;
  if (a.m <= gemv_max_m && weight_only_refusal(a) == nullptr) return Fp8Path::kWeightOnly;
  const char* why = nullptr;
  if (scaled_plan(ctx, res, a, &why)) return Fp8Path::kScaledGemm;
  return Fp8Path::kDequantGemm;
}

void cuda_fp8_quantize_activations(const Context& ctx, DType dtype, const void* x, int64_t m, int64_t k,
                                   const Fp8ActQuant& act, const float* input_scale, uint8_t* q, float* scales) {
  const bool is_static = act.scheme == Fp8ActScheme::kStaticTensor;
  TPQ_CHECK(m > 0 && k > 0 && (dtype == DType::BF16 || dtype == DType::F16) && act.scheme != Fp8ActScheme::kNone &&
                (act.scheme != Fp8ActScheme::kDynamicGroup || act.group > 0),
            kInvalidArgument, "fp8 activation quantization: m={} k={} {} {} (group {})", m, k, dtype,
            fp8_act_scheme_name(act.scheme), act.group);
  TPQ_CHECK(x != nullptr && q != nullptr && (is_static ? input_scale != nullptr : scales != nullptr),
            kInvalidArgument, "fp8 activation quantization ({}): null pointer", fp8_act_scheme_name(act.scheme));
  Context::CudaResources& res = cuda_resources_of(ctx, "fp8 activation quantization");
  CudaDeviceGuard guard(res.device);
  const bool tensor = is_static || act.scheme == Fp8ActScheme::kDynamicTensor;
  launch_quantization(ctx, res, dtype, x, m, m, k, act, input_scale, q, scales,
                      tensor ? Fp8ScaleLayout::kScalar : Fp8ScaleLayout::kPerRow, static_cast<cudaStream_t>(ctx.stream()));
}

void cuda_fp8_linear(const Context& ctx, const Fp8LinearArgs& a, Fp8Path path) {
  static_assert(kFp8WeightOnlyMaxM <= kernels::kFp8GemvMaxM && kFp8WeightOnlyMaxMPerTensor <= kFp8WeightOnlyMaxM,
                "the GEMV takes at most 16 rows");
  TPQ_CHECK(a.m >= 0 && a.n >= 0 && a.k >= 0, kShape, "fp8 linear: negative size m={} n={} k={}", a.m, a.n, a.k);
  if (a.m == 0 || a.n == 0) return;
  TPQ_CHECK(a.y != nullptr && (a.k == 0 || (a.x != nullptr && a.w != nullptr && a.w_scale != nullptr)),
            kInvalidArgument, "fp8 linear: null pointer (m={} n={} k={})", a.m, a.n, a.k);
  Context::CudaResources& res = cuda_resources_of(ctx, "fp8 linear");
  CudaDeviceGuard guard(res.device);
  const auto stream = static_cast<cudaStream_t>(ctx.stream());

  if (path == Fp8Path::kAuto) {
    const Fp8Path chosen = a.k == 0 ? Fp8Path::kDequantGemm : cuda_fp8_auto_path(ctx, a);
    if (chosen == Fp8Path::kWeightOnly) {
      run_weight_only(res, a, stream);
      return;
    }
    const char* why = nullptr;
    const auto plan = chosen == Fp8Path::kScaledGemm ? scaled_plan(ctx, res, a, &why) : std::nullopt;
    // When cuBLASLt refuses the problem, the dequantizing path is always correct.
    if (plan && run_scaled_gemm(ctx, res, a, *plan, stream)) return;
    run_dequant_gemm(ctx, res, a, stream);
    return;
  }
  switch (path) {
    case Fp8Path::kWeightOnly: {
      const char* why = weight_only_refusal(a);
      TPQ_CHECK(why == nullptr, kUnsupported, "fp8 weight-only GEMV for m={} n={} k={} {}: {}", a.m, a.n, a.k,
                a.dtype, why);
      run_weight_only(res, a, stream);
      return;
    }
    case Fp8Path::kScaledGemm: {
      const char* why = nullptr;
      const auto plan = scaled_plan(ctx, res, a, &why);
      TPQ_CHECK(plan.has_value(), kUnsupported, "fp8 scaled GEMM ({} weights, {} activations) on sm_{}{}: {}",
                fp8_scale_kind_name(a.scale_kind), fp8_act_scheme_name(a.act.scheme), res.cc_major, res.cc_minor,
                why);
      std::string refusal = "refused earlier";
      TPQ_CHECK(run_scaled_gemm(ctx, res, a, *plan, stream, &refusal), kUnsupported,
                "fp8 scaled GEMM ({} weights, {} activations, m={} n={} k={}): cuBLASLt {} refused the problem ({})",
                fp8_scale_kind_name(a.scale_kind), fp8_act_scheme_name(a.act.scheme), a.m, a.n, a.k,
                cublasLtGetVersion(), refusal);
      return;
    }
    case Fp8Path::kDequantGemm:
    case Fp8Path::kAuto:
      run_dequant_gemm(ctx, res, a, stream);
      return;
  }
}

}  // namespace tpq::detail
