#pragma once
// GPTQ-family weight-only quantized layers: GPTQ (checkpoint_format gptq with the zero-point +1 quirk, and gptq_v2),
// AutoAWQ GEMM, and compressed-tensors pack-quantized int4/int8. All three are converted at load into one packed
// form, GptqWeights, and run through the same CPU reference and the same generic weight-only kernels.
//
// Tensor parallelism (shared/DESIGN.md §2): a Shard of the logical W[N, K] becomes slices of each stored tensor and
// only those bytes are read. Alignment, checked before anything is read, with one kAlignment error naming the
// layer, dimension, size, world size and the multiple:
//   gptq       N: whole qzeros blocks (32/b columns; 32 for 3-bit)   K: lcm(whole qweight blocks, group size)
//   awq        N: 8 (qweight/qzeros pack N)                          K: group size
//   ct packed  N: 1 (32/b with asymmetric zero points)               K: lcm(32/b, group size)
// Act-order (desc_act, non-monotone g_idx) under RowParallel: a rank's K slice refers to groups scattered over the
// whole weight. The rank reads the span of scale/zero rows its g_idx refers to and keeps only those rows, with
// g_idx renumbered to index them ("remap"); a rank never holds scales it does not use.
#include <optional>
#include <string>

#include "tpq/dist/shard.hpp"
#include "tpq/io/var_builder.hpp"
#include "tpq/quant/config.hpp"
#include "tpq/quant/quant_method.hpp"

namespace tpq {

// The packed form every GPTQ-family layer is held in (on its device), y = x·Wᵀ + bias with
//   W[n, col(r)] = scales[g(r), n] · (code(r, n) − zeros[g(r), n])
// over the stored rows r: code(r, n) is qweight's GPTQ packing (kernels/gptq/traits.hpp), g(r) = g_idx[r] when
// present, else r / group_size, and col(r) = perm[r] when present (perm[r] = −1 marks a padding row), else r.
// CUDA layers keep act-order weights with their rows sorted by group and each group padded with zero-code rows to
// a whole GEMV step (perm present; kernels::gptq::sorted_group_multiple), so every step of the kernel reads one
// group; where every group then holds the same power-of-two number of rows (the last no more), that number becomes
// group_size and g_idx goes (groups are row / group_size). CPU layers keep them in checkpoint order. CUDA layers
// also keep the codes of each 2-, 4- and 8-bit qweight word in the GEMV's order (qweight_order kGemv,
// kernels::gptq::to_gemv_word); a layer takes weights in either order and converts them (a host round trip, once),
// and serialize() writes checkpoint order.
enum class QweightOrder { kCheckpoint, kGemv };

struct GptqWeights {
  int bits = 4;               // 2, 3, 4 or 8
  int64_t in_features = 0;    // K of this rank
  int64_t out_features = 0;   // N of this rank
  int64_t group_size = 0;     // rows per group when there is no g_idx (> 0)
  Tensor qweight;             // I32 [words_for(rows), N]
  Tensor zeros;               // U8 [groups, N]: true zero points
  Tensor scales;              // [groups, N] in the compute dtype (BF16, F16 or F32)
  std::optional<Tensor> g_idx;  // I32 [rows]: group of each stored row, when not row / group_size
  std::optional<Tensor> perm;   // I32 [rows]: input column of each stored row, when rows are reordered
  std::optional<Tensor> bias;   // [N] in the compute dtype
  QweightOrder qweight_order = QweightOrder::kCheckpoint;  // kGemv only for 2, 4 and 8 bits

  int64_t rows() const { return perm ? perm->dim(0) : in_features; }
  int64_t groups() const { return scales.dim(0); }
  Device device() const { return qweight.device(); }
};

class GptqLinear final : public QuantMethod {
 public:
  // `format` names where the weights came from ("gptq", "awq", "compressed-tensors"); name() returns it.
  // Checks every shape, dtype and index; a CUDA layer is put in its sorted act-order form first.
  GptqLinear(std::string format, GptqWeights weights);

  // quant_method "gptq": qweight, qzeros, scales, g_idx (optional), bias under vb. GPTQModel `dynamic` rules that
  // match vb.prefix() override bits / group_size / desc_act / sym.
  static QuantMethodPtr load(const LinearSpec& spec, const GptqConfig& config, const Shard& shard,
                             const io::VarBuilder& vb);
  // compressed-tensors pack-quantized int4/int8: weight_packed, weight_scale, weight_zero_point (asymmetric),
  // weight_g_idx (actorder "group"), weight_shape, bias.
  static QuantMethodPtr load_pack_quantized(const LinearSpec& spec, const CtQuantArgs& weights, const Shard& shard,
                                            const io::VarBuilder& vb);
  static QuantMethodPtr deserialize(detail::BlobReader& blob, Device device);

  std::string name() const override { return format_; }
  int64_t in_features() const override { return w_.in_features; }
  int64_t out_features() const override { return w_.out_features; }
  DType dtype() const override { return w_.scales.dtype(); }
  Device device() const override { return w_.device(); }

  Tensor forward(const Tensor& x, const Context& ctx) const override;
  // forward into a caller's output: x [M, in_features], y [M, out_features], both of dtype() on device().
  void forward_into(const Tensor& x, Tensor& y, const Context& ctx) const;
  Tensor dequantize_weight(const Context& ctx) const override;
  std::vector<uint8_t> serialize() const override;

  const GptqWeights& weights() const { return w_; }

 private:
  std::string format_;
  GptqWeights w_;
};

// AutoAWQ GEMM checkpoints (qweight [K, N/8] interleaved, qzeros, scales, bias); a GptqLinear named "awq".
struct AwqLinear {
  static QuantMethodPtr load(const LinearSpec& spec, const AwqConfig& config, const Shard& shard,
                             const io::VarBuilder& vb);
};

}  // namespace tpq
