// The FP8 rows: tpq's Fp8Linear on the benchmark's weights, quantized here (s = amax / 448, RNE cast).
//   fp8         per-tensor weight scale, dynamic per-tensor activations (AutoFP8 "dynamic")
//   fp8-static  per-tensor weight scale, static input_scale (AutoFP8 "static"; 1/448 for the driver's inputs)
//   fp8-block   128 x 128 block scales, dynamic 1 x 128 activations (DeepSeek-V3 / Qwen3 FP8)
// Each runs forward_into with kAuto: the weight-only GEMV up to M = 8 (per-tensor) or 16 (block; fp8_ops.hpp),
// cuBLASLt FP8 above it. The error column compares with cuBLAS on the dequantized weight, so above the GEMV threshold
// it includes the activations' FP8 rounding. The scaled path allocates the quantized activations from the context's
// stream-ordered allocator, which CUDA graph capture records.
#include <algorithm>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "benchmarks/bench_format.hpp"
#include "tpq/quant/fp8.hpp"

namespace tpq::bench {

namespace {

class Fp8Format final : public BenchFormat {
 public:
  Fp8Format(Fp8ScaleKind kind, Fp8ActScheme scheme) : kind_(kind), scheme_(scheme) {}

  double weight_bytes(int64_t n, int64_t k) const override {
    const double scales = kind_ == Fp8ScaleKind::kBlock ? static_cast<double>((n + 127) / 128) *
                                                              static_cast<double>((k + 127) / 128) * 4.0
                                                        : 4.0;
    return static_cast<double>(n) * static_cast<double>(k) + scales;
  }

  void setup(const BenchProblem& p, const void* master, int copies) override {
    problem_ = p;
    const Quantized& q = quantized(p, master);
    reference_ = q.reference;
    layers_.clear();
    for (int c = 0; c < copies; ++c) {
      Fp8Linear::Parts copy = q.parts;
      copy.weight = q.parts.weight.clone();  // its own bytes, so the timed weights come from DRAM
      layers_.push_back(std::make_shared<Fp8Linear>(std::move(copy)));
    }
    TPQ_CUDA_CHECK(cudaDeviceSynchronize());
  }

  void run(int copy, const void* x, void* y) override {
    const Device d = layers_[static_cast<size_t>(copy)]->device();
    const Tensor xt = Tensor::from_blob(const_cast<void*>(x), {problem_.m, problem_.k}, problem_.dtype, d);
    Tensor yt = Tensor::from_blob(y, {problem_.m, problem_.n}, problem_.dtype, d);
    layers_[static_cast<size_t>(copy)]->forward_into(xt, yt, *problem_.ctx);
  }

  const void* reference_weight() const override { return reference_.data(); }

 private:
  // The weight quantized on the host (seconds for the largest shapes). The driver makes a new format object and
  // the same master weight for every M of a shape, so the result is kept per format and shape, and checked
  // against the master's first bytes.
  struct Quantized {
    std::vector<uint8_t> head;  // the master's first bytes
    Fp8Linear::Parts parts;
    Tensor reference;
  };

  const Quantized& quantized(const BenchProblem& p, const void* master) {
    static std::map<std::tuple<int, int, int64_t, int64_t, int>, Quantized> cache;
    const size_t es = dtype_size(p.dtype);
    std::vector<uint8_t> head(std::min<size_t>(4096, static_cast<size_t>(p.n * p.k) * es));
    TPQ_CUDA_CHECK(cudaMemcpy(head.data(), master, head.size(), cudaMemcpyDeviceToHost));
    const auto key = std::make_tuple(static_cast<int>(kind_), static_cast<int>(scheme_), p.n, p.k,
                                     static_cast<int>(p.dtype));
    auto it = cache.find(key);
    if (it != cache.end() && it->second.head == head) return it->second;
    int device = 0;
    TPQ_CUDA_CHECK(cudaGetDevice(&device));
    const Tensor w = Tensor::from_blob(const_cast<void*>(master), {p.n, p.k}, p.dtype, Device::cuda(device));
    Fp8ActQuant act;
    act.scheme = scheme_ == Fp8ActScheme::kStaticTensor ? Fp8ActScheme::kDynamicTensor : scheme_;
    const auto base = Fp8Linear::quantize(w, std::nullopt, p.dtype, kind_, act);
    Quantized q;
    q.head = std::move(head);
    q.parts = static_cast<const Fp8Linear&>(*base).parts();
    if (scheme_ == Fp8ActScheme::kStaticTensor) {
      q.parts.act.scheme = Fp8ActScheme::kStaticTensor;
      q.parts.input_scale = Tensor::from_floats({1.0f / 448.0f}, {1}, DType::F32).to(Device::cuda(device));
    }
    q.reference = base->dequantize_weight(*p.ctx);
    cache.erase(key);
    return cache.emplace(key, std::move(q)).first->second;
  }

  Fp8ScaleKind kind_;
  Fp8ActScheme scheme_;
  BenchProblem problem_;
  Tensor reference_;
  std::vector<std::shared_ptr<Fp8Linear>> layers_;
};

}  // namespace

std::unique_ptr<BenchFormat> make_fp8_format() {
  return std::make_unique<Fp8Format>(Fp8ScaleKind::kTensor, Fp8ActScheme::kDynamicTensor);
}
std::unique_ptr<BenchFormat> make_fp8_static_format() {
  return std::make_unique<Fp8Format>(Fp8ScaleKind::kTensor, Fp8ActScheme::kStaticTensor);
}
std::unique_ptr<BenchFormat> make_fp8_block_format() {
  return std::make_unique<Fp8Format>(Fp8ScaleKind::kBlock, Fp8ActScheme::kDynamicGroup);
}

}  // namespace tpq::bench
