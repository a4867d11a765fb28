// woq_linear and woq_dequantize (src/cuda/woq_ops.hpp): the CUDA path of the GPTQ-family layers.
//
// Chosen per call on the host (woq_path), with no device synchronization; temporaries come from ctx.empty
// (stream-ordered, recorded by graph capture):
//  1. kGemv: M <= 16 (kWoqGemvPassRows), bf16/f16, shapes the GEMV takes: the weight-only GEMV
//     (kernels/common/woq_gemv.cuh).
//  2. kGemm, when asked for (TPQ_WOQ_GEMM=1; measured slower than the other two on most shapes so far):
//     16 < M <= kWoqGemmMaxM, shapes the mid-M GEMM takes (kernels/common/woq_gemm.cuh): the packed weight read
//     once per 32 rows of M, decoded in registers, tensor-core MMAs.
//  3. kDequantGemm: otherwise (prefill, f32, odd shapes): dequantize the whole weight to the activation dtype into
//     a temporary and run the dense path (tpq::detail::cuda_linear: cuBLASLt, bias fused).
// Without the GEMM (the default, or a shape it does not take) the GEMV runs in passes of 16 rows up to
// kWoqGemvMaxM: a pass re-reads the packed weight (mostly from L2) while the dense path writes and reads a bf16
// copy four times its size. Act-order weights (rows sorted by group, perm set) first gather x's columns by perm
// for the GEMV and the GEMM.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "kernels/gptq/traits.hpp"
#include "src/cuda/cuda_resources.hpp"
#include "src/cuda/lt_util.hpp"
#include "src/cuda/woq_kernels.hpp"
#include "src/cuda/woq_ops.hpp"
#include "tpq/detail/cuda_check.hpp"
#include "tpq/detail/cuda_ops.hpp"

namespace tpq::detail {

namespace {

// Rows of M up to which the GEMV (in passes of kWoqGemvPassRows) runs instead of dequantize + cuBLASLt, where the
// GEMM does not run.
constexpr int64_t kWoqGemvMaxM = 64;
// Rows of M up to which the GEMM runs instead of dequantize + cuBLASLt.
constexpr int64_t kWoqGemmMaxM = 512;

bool aligned(const void* p, uintptr_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

void check_weights(const WoqWeights& w, const char* op) {
  TPQ_CHECK(kernels::gptq::supported_bits(w.bits) && w.n >= 0 && w.k >= 0 && w.rows >= w.k && w.group_size > 0,
            kInvalidArgument, "{}: bits {} rows {} k {} n {} group_size {}", op, w.bits, w.rows, w.k, w.n,
            w.group_size);
  TPQ_CHECK(w.qweight != nullptr && w.zeros != nullptr && w.scales != nullptr, kInvalidArgument, "{}: null weights",
            op);
  TPQ_CHECK(w.g_idx == nullptr || w.perm != nullptr, kInvalidArgument,
            "{}: act-order weights on CUDA must be in the sorted form (g_idx with perm)", op);
}

// What the GEMV and the GEMM both need: bf16/f16 activations, N a multiple of 4 (a lane's 16-byte load covers 4
// columns), 32-bit sizes in the kernels, zero points and scales (group · n) addressed with 32-bit offsets, and the
// aligned loads of the packed weight and its meta.
bool kernels_take(const WoqWeights& w, DType dtype) {
  if (dtype != DType::BF16 && dtype != DType::F16) return false;
  if (w.n < 4 || w.n % 4 != 0) return false;
  if (w.n > INT_MAX / 2 || w.rows > INT_MAX / 2 || w.group_size > INT_MAX || w.groups * w.n > INT_MAX) return false;
  return aligned(w.qweight, 16) && aligned(w.scales, 8) && aligned(w.zeros, 4);
}

// Whether the GEMV takes this problem (x: the activations it will read, after any gather).
bool gemv_fits(const WoqWeights& w, DType dtype, const void* x, int64_t m) {
  if (m > kWoqGemvMaxM || !kernels_take(w, dtype)) return false;
  const int codes = kernels::gptq::PackLayout{w.bits}.block_codes();
  if (w.rows % codes != 0) return false;
  // A block would straddle two groups.
  if (w.g_idx == nullptr && w.group_size % codes != 0 && w.group_size < w.rows) return false;
  return aligned(x, codes >= 8 ? 16 : 8);
}

// log2(g) for a power of two, else -1.
int shift_of(int64_t g) {
  if (g <= 0 || (g & (g - 1)) != 0) return -1;
  int s = 0;
  while ((int64_t{1} << s) < g) ++s;
  return s;
}

// Whether every step (4 blocks of codes) lies in one group, as the grouped GEMV and the GEMM need: sorted
// act-order rows are padded to whole steps (tpq/quant/gptq.hpp), plain groups must be whole steps and a power of
// two, or there is one group.
bool steps_in_one_group(const WoqWeights& w) {
  const int codes = kernels::gptq::PackLayout{w.bits}.block_codes();
  return w.g_idx != nullptr || w.group_size >= w.rows ||
         (w.group_size % (4 * codes) == 0 && shift_of(w.group_size) >= 0);
}

// Whether the GEMM takes this problem (x: the activations it will read, after any gather; its rows are copied in
// 16-byte chunks).
bool gemm_fits(const WoqWeights& w, DType dtype, const void* x) {
  return kernels_take(w, dtype) && w.rows >= 8 && w.rows % 8 == 0 && steps_in_one_group(w) && aligned(x, 16);
}

// Steps (4 blocks of codes) over the stored rows; the last may be partial.
int steps_of(const WoqWeights& w) {
  return static_cast<int>((w.rows / kernels::gptq::PackLayout{w.bits}.block_codes() + 3) / 4);
}

// The GEMV's and the GEMM's parameters for m rows of x against w, writing y: group_size is the rows when one group
// covers them (group_shift 31).
kernels::WoqGemvParams params_for(const WoqWeights& w, const void* x, const void* bias, void* y, int64_t m,
                                  const kernels::SplitK& split_k, int steps_per_split, int col_warps) {
  return {.x = x,
          .qweight = w.qweight,
          .zeros = w.zeros,
          .scales = w.scales,
          .g_idx = w.g_idx,
          .bias = bias,
          .y = y,
          .split_k = split_k,
          .m = static_cast<int>(m),
          .n = static_cast<int>(w.n),
          .rows = static_cast<int>(w.rows),
          .group_size = static_cast<int>(std::min<int64_t>(w.group_size, w.rows)),
          .group_shift = w.group_size >= w.rows ? 31 : shift_of(w.group_size),
          .steps_per_split = steps_per_split,
          .col_warps = col_warps};
}

// One GEMV launch: rows m0..m0 + mm of x (at most kWoqGemvPassRows) against w, writing those rows of y.
struct GemvPass {
  kernels::WoqGemvParams p;
  bool grouped;
};
GemvPass plan_gemv_pass(const Context::CudaResources& res, DType dtype, const WoqWeights& w, const void* x,
                        const void* bias, void* y, int64_t m0, int64_t mm) {
  const bool grouped = steps_in_one_group(w);
  const int steps = steps_of(w);
  const size_t es = dtype_size(dtype);
  const DenseType dense = dense_type(dtype);
  // Where 32-column blocks take more than one wave of resident blocks: fewer, longer blocks, with as many warps
  // side by side over columns (2, 4, 8) as bring the tiles within a wave (gemv_col_warps). s16, H200, 4-bit g128
  // against s9-s15's two quads per warp at M <= 8 and 32-column blocks at M 9..16 (two runs): llama8b gate_up
  // 1.06 / 1.06 / 1.07-1.15x at M = 1 / 8 / 16 (8-bit 1.10-1.11 / 1.08 / 0.98-0.99x); at K 8192 the rule's choice
  // for N 14336 (2 warps) and 28672 (4) was the best of 2, 4 and 8 (1.02-1.12x), for N 57344 (8) 0.99x at M = 1 and
  // 1.04x at M = 16 (2 warps: 0.97x, 1.10x). Where 32-column blocks fit in one wave, wider ones would need more
  // splits of K to fill the GPU: 0.31-0.93x on every such Llama shape.
  const int m_rows = static_cast<int>(mm);
  const auto resident_for = [&](int col_warps) {
    return res.sm_count * woq_gemv_blocks_per_sm(w.bits, dense, m_rows, grouped, col_warps, res.device);
  };
  const auto tiles_for = [&](int col_warps) {
    const int64_t cols = int64_t{kernels::kWoqTileCols} * col_warps;
    return static_cast<int>((w.n + cols - 1) / cols);
  };
  const int max_col_warps = woq_gemv_col_warps_exist(w.bits, grouped, kernels::kWoqWarps) ? kernels::kWoqWarps : 1;
  const int col_warps = gemv_col_warps(max_col_warps, [&](int c) { return tiles_for(c) <= resident_for(c); });
  const int slices = kernels::kWoqWarps / col_warps;
  const int tiles = tiles_for(col_warps);
  // Split K across blocks when the tiles leave resident blocks free: as many splits as fit in one wave of
  // resident blocks, as long as every warp keeps at least one step and the context's split-K scratch (one counter
  // per tile, shared with the dense GEMV) covers the tiles (plan_gemv_split caps it to the scratch). More waves of
  // shorter blocks measured slower (s9: llama8b qkv in 64-column blocks, 11 splits in 4 waves 0.42x, 2 in one
  // 0.78x, of no split in 32-column blocks): a block costs a load latency and a reduction however short its K.
  int wanted = 1;
  if (tiles <= res.gemv_max_tiles)
    wanted = std::clamp(std::min(resident_for(col_warps) / tiles, steps / slices), 1, kGemvMaxSplits);
  // Splits of whole batches, so that the grouped GEMV can keep two in flight (woq_gemv_batch_steps).
  const int batch = grouped ? woq_gemv_batch_steps(w.bits, m_rows) : 1;
  const GemvSplit split = plan_gemv_split(res, wanted, (steps + batch - 1) / batch, mm, w.n);
  return {.p = params_for(w, x != nullptr ? static_cast<const char*>(x) + m0 * w.rows * es : nullptr, bias,
                          y != nullptr ? static_cast<char*>(y) + m0 * w.n * es : nullptr, mm, split.split_k,
                          split.per_split * batch, col_warps),
          .grouped = grouped};
}

void launch_gemv(Context::CudaResources& res, DType dtype, const WoqWeights& w, const void* x, const void* bias,
                 void* y, int64_t m, cudaStream_t stream) {
  for (int64_t m0 = 0; m0 < m; m0 += kWoqGemvPassRows) {
    const GemvPass pass = plan_gemv_pass(res, dtype, w, x, bias, y, m0, std::min<int64_t>(kWoqGemvPassRows, m - m0));
    TPQ_CUDA_CHECK(launch_woq_gemv(w.bits, dense_type(dtype), pass.p, pass.grouped, stream, pdl_enabled(res)));
  }
}

// The GEMM over all m rows: 32 x 256 output tiles, and as many splits of K as bring the blocks up to about one per
// SM where the tiles alone leave SMs idle (each split at least two stages long; one counter per tile, so at most
// the context's counters of tiles), meeting through the context's f32 partial sums (sized at creation for these
// splits, so the call allocates nothing; a per-call allocation measured the same, s11).
void launch_gemm(Context::CudaResources& res, DType dtype, const WoqWeights& w, const void* x,
                 const void* bias, void* y, int64_t m, cudaStream_t stream) {
  const int stage_steps = woq_gemm_stage_steps(w.bits);
  const int stages = (steps_of(w) + stage_steps - 1) / stage_steps;
  const int64_t tiles = (m + kernels::kWoqGemmRows - 1) / kernels::kWoqGemmRows *
                        ((w.n + kernels::kWoqGemmCols - 1) / kernels::kWoqGemmCols);
  int wanted = 1;
  if (tiles < res.sm_count && tiles <= res.gemv_max_tiles)
    wanted = std::min(static_cast<int>((res.sm_count + tiles - 1) / tiles), std::max(1, stages / 2));
  // The context's scratch (sized for these splits) and counters; never a cluster.
  const GemvSplit split = plan_gemv_split(res, wanted, stages, m, w.n, /*clusters=*/false);
  const kernels::WoqGemvParams p =
      params_for(w, x, bias, y, m, split.split_k, split.per_split * stage_steps, /*col_warps=*/1);
  TPQ_CUDA_CHECK(launch_woq_gemm(w.bits, dense_type(dtype), p, stream, pdl_enabled(res)));
}

// Which kernel runs m rows of x (the activations the kernel reads: after any gather, null for "aligned").
WoqPath plan(const Context::CudaResources& res, DType dtype, const WoqWeights& w, const void* x, int64_t m) {
  using Choice = Context::CudaResources::WoqGemmChoice;
  const bool gemm = res.woq_gemm && res.woq_gemm_choice != Choice::kOff && m <= INT_MAX && gemm_fits(w, dtype, x);
  if (gemm && (res.woq_gemm_choice == Choice::kAlways || (m > kWoqGemvPassRows && m <= kWoqGemmMaxM)))
    return WoqPath::kGemm;
  if (gemv_fits(w, dtype, x, m)) return WoqPath::kGemv;
  return WoqPath::kDequantGemm;
}

// out = W as [n, k] in `dtype` (input columns in checkpoint order), or with `stored_order` as [n, rows] in the
// stored rows' order (act-order: sorted by group, padding rows included).
void launch_dequant(DType dtype, const WoqWeights& w, void* out, cudaStream_t stream, bool stored_order = false) {
  const kernels::WoqDequantParams p{.qweight = w.qweight,
                                    .zeros = w.zeros,
                                    .scales = w.scales,
                                    .g_idx = w.g_idx,
                                    .perm = stored_order ? nullptr : w.perm,
                                    .out = out,
                                    .n = w.n,
                                    .k = stored_order ? w.rows : w.k,
                                    .rows = w.rows,
                                    .group_size = w.group_size};
  TPQ_CUDA_CHECK(launch_woq_dequant(w.bits, dense_type(dtype), p, stream));
}

}  // namespace

void woq_linear(const Context& ctx, DType dtype, const WoqWeights& w, const void* x, const void* bias, void* y,
                int64_t m) {
  check_weights(w, "quantized linear");
  TPQ_CHECK(m >= 0, kShape, "quantized linear: m = {}", m);
  TPQ_CHECK(w.perm == nullptr || w.rows % 8 == 0, kInvalidArgument,
            "quantized linear: {} reordered rows (perm); the CUDA gather of x takes a multiple of 8 (sorted act-order "
            "rows always are)", w.rows);
  if (m == 0 || w.n == 0) return;
  Context::CudaResources& res = cuda_resources_of(ctx, "quantized linear");
  CudaDeviceGuard guard(res.device);
  const auto stream = static_cast<cudaStream_t>(ctx.stream());

  // A gathered x comes from ctx.empty: aligned.
  const WoqPath path = plan(res, dtype, w, w.perm != nullptr ? nullptr : x, m);
  // Act-order weights hold their rows sorted by group (perm): every path multiplies the stored rows by x's columns
  // gathered into the same order (zeros at padding rows), the GEMV and the GEMM directly, the prefill through a
  // dequantized weight of the stored rows, which stays contiguous (scattering its columns back to checkpoint order
  // ran 0.17-0.44x cuBLAS bf16 at M = 4096, s14).
  Tensor gathered;
  const void* xs = x;
  if (w.perm != nullptr) {
    gathered = ctx.empty({m, w.rows}, dtype);
    const kernels::WoqGatherParams gp{.x = x, .perm = w.perm, .out = gathered.data(), .m = m, .k = w.k, .rows = w.rows};
    TPQ_CUDA_CHECK(launch_woq_gather(dense_type(dtype), gp, res.sm_count, stream, pdl_enabled(res)));
    xs = gathered.data();
  }
  if (path == WoqPath::kGemm) {
    launch_gemm(res, dtype, w, xs, bias, y, m, stream);
  } else if (path == WoqPath::kGemv) {
    launch_gemv(res, dtype, w, xs, bias, y, m, stream);
  } else {  // prefill, and whatever the GEMV and the GEMM do not take: dequantize, then the dense path
    const Tensor dense = ctx.empty({w.n, w.rows}, dtype);
    launch_dequant(dtype, w, dense.data(), stream, /*stored_order=*/true);
    cuda_linear(ctx, dtype, xs, dense.data(), bias, y, m, w.n, w.rows);
  }
  // `gathered` and `dense` (ctx.empty) are released on the stream, after the kernels that read them.
}

WoqPath woq_path(const Context& ctx, DType dtype, const WoqWeights& w, int64_t m) {
  check_weights(w, "quantized linear");
  return plan(cuda_resources_of(ctx, "quantized linear"), dtype, w, nullptr, m);
}

namespace {
// The GEMV launch of the first kWoqGemvPassRows of m rows (error: m rows do not run the GEMV).
GemvPass first_gemv_pass(const Context& ctx, DType dtype, const WoqWeights& w, int64_t m, const char* what) {
  check_weights(w, "quantized linear");
  const Context::CudaResources& res = cuda_resources_of(ctx, "quantized linear");
  TPQ_CHECK(m >= 1 && plan(res, dtype, w, nullptr, m) == WoqPath::kGemv, kInvalidArgument,
            "{}: {} rows of a [{} -> {}] layer do not run the GEMV", what, m, w.k, w.n);
  return plan_gemv_pass(res, dtype, w, nullptr, nullptr, nullptr, 0, std::min<int64_t>(kWoqGemvPassRows, m));
}
}  // namespace

int woq_gemv_block_cols(const Context& ctx, DType dtype, const WoqWeights& w, int64_t m) {
  const GemvPass pass = first_gemv_pass(ctx, dtype, w, m, "woq_gemv_block_cols");
  return kernels::kWoqTileCols * pass.p.col_warps;
}

WoqGemvKernel woq_gemv_kernel(const Context& ctx, DType dtype, const WoqWeights& w, int64_t m) {
  const GemvPass pass = first_gemv_pass(ctx, dtype, w, m, "woq_gemv_kernel");
  if (!pass.grouped) return WoqGemvKernel::kGeneral;
  switch (woq_gemv_groups(w.bits, pass.p)) {
    case kernels::WoqGroups::kActOrder: return WoqGemvKernel::kGroupedActOrder;
    case kernels::WoqGroups::kPerBatch: return WoqGemvKernel::kGroupedTwoBatches;
    case kernels::WoqGroups::kPerPair: return WoqGemvKernel::kGroupedBatchPairs;
    case kernels::WoqGroups::kPerStep: break;
  }
  return WoqGemvKernel::kGrouped;
}

void woq_dequantize(const Context& ctx, DType dtype, const WoqWeights& w, void* out) {
  check_weights(w, "dequantize");
  if (w.n == 0 || w.k == 0) return;
  Context::CudaResources& res = cuda_resources_of(ctx, "dequantize");
  CudaDeviceGuard guard(res.device);
  launch_dequant(dtype, w, out, static_cast<cudaStream_t>(ctx.stream()));
}

}  // namespace tpq::detail
