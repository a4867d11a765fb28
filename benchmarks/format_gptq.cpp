// The GPTQ-family rows: the benchmark's weight quantized here by round-to-nearest per group of 128 along K, packed
// in the checkpoint layout and loaded through the real loaders (GptqLinear::load / AwqLinear::load), so the timed
// layer is what a checkpoint gives:
//   gptq4_g128  GPTQ 4-bit, group 128, symmetric, checkpoint_format "gptq" (the zero-point +1 quirk)
//   gptq8_g128  GPTQ 8-bit, group 128, symmetric
//   awq4_g128   AutoAWQ GEMM 4-bit, group 128, with zero points
//   gptq4_g128_act  GPTQ 4-bit, group 128, symmetric, desc_act: each group is 128 rows scattered over K (a fixed
//                   random permutation), g_idx non-monotone; the layer gathers x's columns first
// Each runs GptqLinear::forward_into: the weight-only GEMV up to M = 64 (passes of 16 rows), dequantize + cuBLASLt
// above. The error column compares with cuBLAS on the layer's dequantized weight. The prefill path allocates its
// dequantized weight from the context's stream-ordered allocator, which CUDA graph capture records.
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <tuple>
#include <vector>

#include "benchmarks/bench_format.hpp"
#include "kernels/awq/reference.hpp"
#include "kernels/gptq/reference.hpp"
#include "tpq/core/convert.hpp"
#include "tpq/io/var_builder.hpp"
#include "tpq/quant/gptq.hpp"

namespace tpq::bench {

namespace {

enum class Packing { kGptq, kAwq };

constexpr int64_t kGroup = 128;

// The packed checkpoint tensors of one weight, kept while the driver times every M of a shape (the master weight
// depends on the shape only), so each shape is quantized once per format.
struct Packed {
  Packing packing;
  int bits;
  bool act_order;
  int64_t n, k;
  DType dtype;
  std::shared_ptr<io::MemorySource> source;
};

// Group g quantizes rows order[g · 128 ..] (act-order: a permutation of K, else K in order).
std::shared_ptr<io::MemorySource> quantize(Packing packing, int bits, const std::vector<float>& w, int64_t n,
                                           int64_t k, bool act_order) {
  const int64_t groups = k / kGroup;
  std::vector<int64_t> order(static_cast<size_t>(k));
  std::iota(order.begin(), order.end(), 0);
  if (act_order) std::shuffle(order.begin(), order.end(), std::mt19937_64(20261125));
  const uint32_t maxq = (1u << bits) - 1;
  std::vector<uint8_t> codes(static_cast<size_t>(k * n)), zeros(static_cast<size_t>(groups * n));
  std::vector<float> scales(static_cast<size_t>(groups * n));
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t g = 0; g < groups; ++g) {
      const auto at = [&](int64_t i) { return order[g * kGroup + i]; };  // the group's i-th row of K
      const float* row = w.data() + j * k;
      float lo = 0.0f, hi = 0.0f;
      for (int64_t i = 0; i < kGroup; ++i) lo = std::min(lo, row[at(i)]), hi = std::max(hi, row[at(i)]);
      float s;
      uint32_t z;
      if (packing == Packing::kGptq) {  // GPTQ's symmetric quantizer
        const float amax = std::max(-lo, hi);
        s = amax > 0 ? 2.0f * amax / static_cast<float>(maxq) : 1.0f;
        z = (maxq + 1) / 2;
      } else {  // AWQ's zero-point quantizer
        s = std::max(hi - lo, 1e-5f) / static_cast<float>(maxq);
        z = static_cast<uint32_t>(std::clamp(-std::nearbyint(lo / s), 0.0f, static_cast<float>(maxq)));
      }
      s = f16_to_float(float_to_f16(s));  // checkpoints store f16 scales
      scales[g * n + j] = s;
      zeros[g * n + j] = static_cast<uint8_t>(z);
      for (int64_t i = 0; i < kGroup; ++i) {
        const float q = std::nearbyint(row[at(i)] / s) + static_cast<float>(z);
        codes[at(i) * n + j] = static_cast<uint8_t>(std::clamp(q, 0.0f, static_cast<float>(maxq)));
      }
    }
  }
  auto src = std::make_shared<io::MemorySource>("benchmark weights");
  src->add("w.scales", Tensor::from_floats(scales, {groups, n}, DType::F16));
  if (packing == Packing::kGptq) {
    const kernels::gptq::PackLayout l{bits};
    src->add("w.qweight", Tensor::from_bytes(ref::gptq::pack_qweight(codes.data(), k, n, bits).data(),
                                             {l.words_for(k), n}, DType::I32));
    // qzeros: v1 stores zero - 1, packed along N (pack_qweight packs its first dimension: give it zeros transposed).
    std::vector<uint8_t> zt(static_cast<size_t>(n * groups));
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t j = 0; j < n; ++j) zt[j * groups + g] = static_cast<uint8_t>(zeros[g * n + j] - 1);
    const std::vector<uint32_t> packed_t = ref::gptq::pack_qweight(zt.data(), n, groups, bits);  // [words(n), groups]
    const int64_t words = l.words_for(n);
    std::vector<uint32_t> qzeros(static_cast<size_t>(groups * words));
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t c = 0; c < words; ++c) qzeros[g * words + c] = packed_t[c * groups + g];
    src->add("w.qzeros", Tensor::from_bytes(qzeros.data(), {groups, words}, DType::I32));
    std::vector<int32_t> g_idx(static_cast<size_t>(k));
    for (int64_t i = 0; i < k; ++i) g_idx[order[i]] = static_cast<int32_t>(i / kGroup);
    src->add("w.g_idx", Tensor::from_bytes(g_idx.data(), {k}, DType::I32));
  } else {
    src->add("w.qweight", Tensor::from_bytes(ref::awq::pack(codes.data(), k, n).data(), {k, n / 8}, DType::I32));
    src->add("w.qzeros", Tensor::from_bytes(ref::awq::pack(zeros.data(), groups, n).data(), {groups, n / 8}, DType::I32));
  }
  return src;
}

class GptqFormat final : public BenchFormat {
 public:
  GptqFormat(Packing packing, int bits, bool act_order = false)
      : packing_(packing), bits_(bits), act_order_(act_order) {}

  double weight_bytes(int64_t n, int64_t k) const override {
    const double groups = static_cast<double>(k / kGroup);
    // codes, bf16/f16 scales and u8 zero points, as the layer holds them
    return static_cast<double>(n) * static_cast<double>(k) * bits_ / 8.0 + groups * static_cast<double>(n) * 3.0;
  }

  void setup(const BenchProblem& p, const void* master, int copies) override {
    TPQ_CHECK(p.k % kGroup == 0 && p.n % 32 == 0, kInvalidArgument, "{}-bit rows need K % 128 == 0 and N % 32 == 0",
              bits_);
    problem_ = p;
    static Packed cache;
    if (!cache.source || cache.packing != packing_ || cache.bits != bits_ || cache.act_order != act_order_ ||
        cache.n != p.n || cache.k != p.k || cache.dtype != p.dtype) {
      const size_t count = static_cast<size_t>(p.n * p.k);
      std::vector<uint16_t> raw(count);
      TPQ_CUDA_CHECK(cudaMemcpy(raw.data(), master, count * 2, cudaMemcpyDeviceToHost));
      std::vector<float> w(count);
      for (size_t i = 0; i < count; ++i) w[i] = p.dtype == DType::F16 ? f16_to_float(raw[i]) : bf16_to_float(raw[i]);
      cache = Packed{packing_, bits_, act_order_, p.n, p.k, p.dtype, quantize(packing_, bits_, w, p.n, p.k, act_order_)};
    }
    int device = 0;
    TPQ_CUDA_CHECK(cudaGetDevice(&device));
    const io::VarBuilder vb = io::VarBuilder(cache.source, std::nullopt, Device::cuda(device)).pp("w");
    const LinearSpec spec{.in_features = p.k, .out_features = p.n, .dtype = p.dtype};
    const QuantMethodPtr first =
        packing_ == Packing::kGptq
            ? GptqLinear::load(spec,
                               GptqConfig{.bits = bits_, .group_size = static_cast<int>(kGroup), .desc_act = act_order_},
                               Shard::none(), vb)
            : AwqLinear::load(spec, AwqConfig{.bits = 4, .group_size = static_cast<int>(kGroup)}, Shard::none(), vb);
    reference_ = first->dequantize_weight(*p.ctx);
    layers_.clear();
    const auto& base = static_cast<const GptqLinear&>(*first);
    for (int c = 0; c < copies; ++c) {
      GptqWeights w = base.weights();
      w.qweight = w.qweight.clone();  // its own bytes, so the timed weights come from DRAM
      w.scales = w.scales.clone();
      w.zeros = w.zeros.clone();
      layers_.push_back(std::make_shared<GptqLinear>(base.name(), std::move(w)));
    }
    TPQ_CUDA_CHECK(cudaDeviceSynchronize());
  }

  void run(int copy, const void* x, void* y) override {
    const GptqLinear& layer = *layers_[static_cast<size_t>(copy)];
    const Tensor xt = Tensor::from_blob(const_cast<void*>(x), {problem_.m, problem_.k}, problem_.dtype, layer.device());
    Tensor yt = Tensor::from_blob(y, {problem_.m, problem_.n}, problem_.dtype, layer.device());
    layer.forward_into(xt, yt, *problem_.ctx);
  }

  const void* reference_weight() const override { return reference_.data(); }

 private:
  Packing packing_;
  int bits_;
  bool act_order_;
  BenchProblem problem_;
  Tensor reference_;
  std::vector<std::shared_ptr<GptqLinear>> layers_;
};

}  // namespace

std::unique_ptr<BenchFormat> make_gptq4_format() { return std::make_unique<GptqFormat>(Packing::kGptq, 4); }
std::unique_ptr<BenchFormat> make_gptq8_format() { return std::make_unique<GptqFormat>(Packing::kGptq, 8); }
std::unique_ptr<BenchFormat> make_awq4_format() { return std::make_unique<GptqFormat>(Packing::kAwq, 4); }
std::unique_ptr<BenchFormat> make_gptq4_act_format() {
  return std::make_unique<GptqFormat>(Packing::kGptq, 4, /*act_order=*/true);
}

}  // namespace tpq::bench
