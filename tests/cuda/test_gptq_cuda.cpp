// GPTQ-family layers on CUDA against the CPU reference (tpq/quant/gptq.hpp, kernels/gptq/reference.hpp): the
// weight-only GEMV (M <= 16, split-K on narrow outputs; in passes of 16 rows up to 64), the mid-M GEMM (opt-in,
// TPQ_WOQ_GEMM=1 for M 17..512; forced with TPQ_WOQ_GEMM=always at every M it takes, split-K where tiles are few),
// the dequantize kernel (bit-exact with the CPU), and the prefill path (dequantize + cuBLASLt) for M in
// {1, 3, 8, 16, 17, 40, 64, 512}, Llama-ish shapes and odd multiples of the group size, every bit width, sym/asym,
// group -1 and act-order (rows sorted and padded on the device, x gathered). Fresh random data each run; every
// allocation the forward makes is poisoned with NaN bytes; NaN never passes. Row-parallel act-order shards loaded
// straight onto the GPU match their CPU twins.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "kernels/gptq/reference.hpp"
#include "tests/cuda/cuda_test.hpp"
#include "tpq/detail/gptq_ops.hpp"
#include "tpq/core/context.hpp"
#include "tpq/quant/gptq.hpp"
#include "tpq/quant/registry.hpp"

namespace tpq::test {
namespace {

struct Spec {
  int bits;
  int64_t n, k;
  int64_t group;  // -1: one group over K
  bool sym;
  bool act_order;
  bool bias;
  std::vector<int64_t> ms = {};  // the M the GEMV/prefill test runs; empty: kDefaultMs
};

const std::vector<int64_t> kDefaultMs = {1, 3, 8, 16, 17, 40, 64, 512};

std::string spec_name(const Spec& s);
void PrintTo(const Spec& s, std::ostream* os) { *os << spec_name(s); }

std::string spec_name(const Spec& s) {
  std::ostringstream o;
  o << "b" << s.bits << "_n" << s.n << "_k" << s.k << "_g" << (s.group > 0 ? std::to_string(s.group) : "all")
    << (s.sym ? "_sym" : "_asym") << (s.act_order ? "_actorder" : "") << (s.bias ? "_bias" : "");
  return o.str();
}

// A random GPTQ layer on the CPU in `dtype`: codes, zero points (8 for sym), small positive scales, g_idx a random
// act-order arrangement (every group holds `group` rows, scattered over K) or row / group.
QuantMethodPtr random_layer(const Spec& s, DType dtype, std::mt19937_64& rng) {
  const int64_t gs = s.group > 0 ? s.group : s.k;
  const int64_t groups = (s.k + gs - 1) / gs;
  const uint32_t maxq = (1u << s.bits) - 1;
  std::uniform_int_distribution<uint32_t> code(0, maxq);
  std::uniform_real_distribution<float> scale(0.002f, 0.02f);
  std::vector<uint8_t> codes(static_cast<size_t>(s.k * s.n)), zeros(static_cast<size_t>(groups * s.n));
  for (auto& c : codes) c = static_cast<uint8_t>(code(rng));
  for (auto& z : zeros) z = static_cast<uint8_t>(s.sym ? kernels::gptq::symmetric_zero(s.bits) : code(rng));
  std::vector<float> scales(static_cast<size_t>(groups * s.n));
  for (auto& v : scales) v = scale(rng);
  GptqWeights w;
  w.bits = s.bits;
  w.in_features = s.k;
  w.out_features = s.n;
  w.group_size = gs;
  w.qweight = Tensor::from_bytes(ref::gptq::pack_qweight(codes.data(), s.k, s.n, s.bits).data(),
                                 {kernels::gptq::PackLayout{s.bits}.words_for(s.k), s.n}, DType::I32);
  w.zeros = Tensor::from_bytes(zeros.data(), {groups, s.n}, DType::U8);
  w.scales = Tensor::from_floats(scales, {groups, s.n}, dtype);
  if (s.act_order) {
    std::vector<int32_t> g(static_cast<size_t>(s.k));
    for (int64_t i = 0; i < s.k; ++i) g[i] = static_cast<int32_t>(i / gs);
    std::shuffle(g.begin(), g.end(), rng);
    w.g_idx = Tensor::from_bytes(g.data(), {s.k}, DType::I32);
  }
  if (s.bias) {
    std::vector<float> b(static_cast<size_t>(s.n));
    std::uniform_real_distribution<float> u(-0.5f, 0.5f);
    for (auto& v : b) v = u(rng);
    w.bias = Tensor::from_floats(b, {s.n}, dtype);
  }
  return std::make_shared<GptqLinear>("gptq", std::move(w));
}

// random_layer's bf16 layer put on the GPU through a serialized copy (the load path a checkpoint takes).
QuantMethodPtr random_gpu_layer(const Spec& s, std::mt19937_64& rng) {
  return deserialize_linear(random_layer(s, DType::BF16, rng)->serialize(), Device::cuda(0));
}

Tensor random_x(int64_t m, int64_t k, DType dtype, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(m * k));
  for (auto& x : v) x = u(rng);
  return Tensor::from_floats(v, {m, k}, dtype);
}

// y = x·Wᵀ + b in double over the CPU layer's dequantized weight (the values a bf16/f16 model multiplies).
std::vector<double> reference(const Tensor& x, const QuantMethod& cpu) {
  const std::vector<double> xv = x.to_doubles();
  const std::vector<double> wv = cpu.dequantize_weight(Context::cpu()).to_doubles();
  const auto& w = dynamic_cast<const GptqLinear&>(cpu).weights();
  const std::vector<double> bv = w.bias ? w.bias->to_doubles() : std::vector<double>{};
  const int64_t m = x.dim(0), n = cpu.out_features(), k = cpu.in_features();
  return reference_linear(xv, wv, bv.empty() ? nullptr : bv.data(), m, n, k);
}

double tolerance(DType dtype) { return dtype == DType::BF16 ? 1e-2 : dtype == DType::F16 ? 2e-3 : 1e-5; }

::testing::AssertionResult close(const std::vector<double>& got, const std::vector<double>& want, DType dtype,
                                 const std::string& what) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << what << ": size " << got.size();
  double d2 = 0, r2 = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i]))
      return ::testing::AssertionFailure() << what << ": non-finite output at " << i << " (unwritten?)";
    d2 += (got[i] - want[i]) * (got[i] - want[i]);
    r2 += want[i] * want[i];
  }
  const double rel = std::sqrt(d2 / std::max(r2, 1e-30));
  if (rel >= tolerance(dtype)) return ::testing::AssertionFailure() << what << ": relative error " << rel;
  return ::testing::AssertionSuccess();
}

std::vector<double> host_values(const Tensor& t, const Context& ctx) {
  EXPECT_EQ(cudaStreamSynchronize(ctx.stream()), cudaSuccess);
  return t.to(Device::cpu()).to_doubles();
}

// A random layer on the CPU and its serialized copy on the GPU.
std::pair<QuantMethodPtr, QuantMethodPtr> cpu_and_gpu(const Spec& s, DType dtype, std::mt19937_64& rng) {
  QuantMethodPtr cpu = random_layer(s, dtype, rng);
  QuantMethodPtr gpu = deserialize_linear(cpu->serialize(), Device::cuda(0));
  return {std::move(cpu), std::move(gpu)};
}

// The GPU layer's forward of a random [m, K] x against the float64 reference over the CPU layer.
::testing::AssertionResult forward_matches(const QuantMethod& cpu, const QuantMethod& gpu, int64_t m, DType dtype,
                                           std::mt19937_64& rng, const Context& ctx) {
  const Tensor x = random_x(m, cpu.in_features(), dtype, rng);
  const Tensor y = gpu.forward(x.to(Device::cuda(0)), ctx);
  if (y.shape() != Shape{m, cpu.out_features()}) return ::testing::AssertionFailure() << "m=" << m << ": shape";
  return close(host_values(y, ctx), reference(x, cpu), dtype,
               std::string(dtype_name(dtype)) + " m=" + std::to_string(m));
}

// A context on `stream` whose GPTQ layers run the mid-M GEMM (TPQ_WOQ_GEMM read at creation): "1" for M 17..512,
// "always" at every M it takes.
Context gemm_context(cudaStream_t stream, const char* choice = "1") {
  EXPECT_EQ(setenv("TPQ_WOQ_GEMM", choice, 1), 0);
  Context ctx = Context::cuda(0, stream, std::make_shared<PoisonAllocator>());
  EXPECT_EQ(unsetenv("TPQ_WOQ_GEMM"), 0);
  return ctx;
}

class GptqCuda : public CudaTestWithParam<Spec> {
 protected:
  void SetUp() override {
    CudaTestWithParam<Spec>::SetUp();
    if (IsSkipped()) return;
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), cudaSuccess);
    ctx_ = std::make_unique<Context>(Context::cuda(0, stream_, std::make_shared<PoisonAllocator>()));
  }
  void TearDown() override {
    ctx_.reset();
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
  }
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Context> ctx_;
};

TEST_P(GptqCuda, GemvDequantizeAndPrefillMatchTheCpuReference) {
  const Spec& s = GetParam();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (DType dtype : {DType::BF16, DType::F16}) {
    const auto [cpu, gpu] = cpu_and_gpu(s, dtype, rng);
    ASSERT_EQ(gpu->device(), Device::cuda(0));
    // Dequantize: the same float product rounded once on both sides.
    const Tensor wd = gpu->dequantize_weight(*ctx_);
    EXPECT_EQ(host_values(wd, *ctx_), cpu->dequantize_weight(Context::cpu()).to_doubles())
        << dtype_name(dtype) << " dequantize";
    for (int64_t m : s.ms.empty() ? kDefaultMs : s.ms) {
      if (m == 512 && s.n * s.k > (int64_t{1} << 24)) continue;  // keep the float64 reference quick
      EXPECT_TRUE(forward_matches(*cpu, *gpu, m, dtype, rng, *ctx_));
    }
  }
}

// CUDA layers hold 2/4/8-bit qweight in the GEMV's order; every way back to the host sees checkpoint order, and a
// layer built from another's weights() (GEMV order) or from checkpoint-order CUDA tensors computes the same.
TEST_P(GptqCuda, QweightOrderRoundTrips) {
  const Spec& s = GetParam();
  std::mt19937_64 rng(fresh_seed());
  const auto [cpu, gpu] = cpu_and_gpu(s, DType::BF16, rng);
  const auto& gw = dynamic_cast<const GptqLinear&>(*gpu).weights();
  const auto& cw = dynamic_cast<const GptqLinear&>(*cpu).weights();
  const bool gemv = kernels::gptq::gemv_order_applies(s.bits);
  EXPECT_EQ(gw.qweight_order, gemv ? QweightOrder::kGemv : QweightOrder::kCheckpoint);
  // Serialized from the GPU, read on the CPU: the CPU layer's own words.
  const QuantMethodPtr back = deserialize_linear(gpu->serialize(), Device::cpu());
  const auto& bw = dynamic_cast<const GptqLinear&>(*back).weights();
  if (!bw.perm) EXPECT_TRUE(bw.qweight.equal(cw.qweight));  // act-order layers come back sorted by group
  EXPECT_TRUE(back->dequantize_weight(Context::cpu()).equal(cpu->dequantize_weight(Context::cpu())));
  // A copy of the GPU layer's weights, and the CPU layer's weights moved by hand (checkpoint order on CUDA).
  const GptqLinear copy(gpu->name(), gw);
  GptqWeights moved = cw;
  moved.qweight = cw.qweight.to(Device::cuda(0));
  moved.zeros = cw.zeros.to(Device::cuda(0));
  moved.scales = cw.scales.to(Device::cuda(0));
  if (cw.g_idx) moved.g_idx = cw.g_idx->to(Device::cuda(0));
  if (cw.perm) moved.perm = cw.perm->to(Device::cuda(0));
  if (cw.bias) moved.bias = cw.bias->to(Device::cuda(0));
  const GptqLinear by_hand(gpu->name(), moved);
  for (int64_t m : {1, 16}) {
    const Tensor xd = random_x(m, s.k, DType::BF16, rng).to(Device::cuda(0));
    const std::vector<double> want = host_values(gpu->forward(xd, *ctx_), *ctx_);
    EXPECT_EQ(host_values(copy.forward(xd, *ctx_), *ctx_), want) << "copy, m=" << m;
    EXPECT_EQ(host_values(by_hand.forward(xd, *ctx_), *ctx_), want) << "by hand, m=" << m;
  }
}

// The decode GEMV and the GEMM add the partial sums of a tile (its warps', and its split-K blocks') in a fixed order:
// the same input gives the same bits, launch after launch.
TEST_P(GptqCuda, DecodeIsBitwiseRepeatable) {
  std::mt19937_64 rng(fresh_seed());
  const int64_t k = GetParam().k;
  const Context ctx = gemm_context(stream_);  // m = 40: the GEMM
  const QuantMethodPtr gpu = random_gpu_layer(GetParam(), rng);
  for (int64_t m : {1, 16, 40}) {
    const Tensor xd = random_x(m, k, DType::BF16, rng).to(Device::cuda(0));
    const std::vector<double> first = host_values(gpu->forward(xd, ctx), ctx);
    for (int i = 0; i < 3; ++i)
      EXPECT_EQ(host_values(gpu->forward(xd, ctx), ctx), first) << "m=" << m << ", launch " << i + 2;
  }
}

TEST_P(GptqCuda, GraphCaptureReplaysTheDecodePath) {
  const Spec& s = GetParam();
  std::mt19937_64 rng(fresh_seed());
  const Context ctx = gemm_context(stream_);  // m = 40: the GEMM
  const QuantMethodPtr cpu = random_layer(s, DType::BF16, rng);
  const QuantMethodPtr gpu = deserialize_linear(cpu->serialize(), Device::cuda(0));
  for (int64_t m : {1, 3, 40}) {  // 40: the GEMM (split K on narrow layers)
    const Tensor x = random_x(m, s.k, DType::BF16, rng);
    const Tensor xd = x.to(Device::cuda(0));
    (void)gpu->forward(xd, ctx);  // warm-up outside the capture
    ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    // The output lives outside the graph (a graph that allocates its own output cannot be replayed while the
    // output is alive); the forward's temporaries (the gathered x of act-order) are allocated and freed inside it.
    Tensor y = ctx.empty({m, s.n}, DType::BF16);
    const auto& layer = dynamic_cast<const GptqLinear&>(*gpu);
    cudaGraph_t graph = nullptr;
    ASSERT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    try {
      layer.forward_into(xd, y, ctx);
    } catch (...) {
      (void)cudaStreamEndCapture(stream_, &graph);
      throw;
    }
    ASSERT_EQ(cudaStreamEndCapture(stream_, &graph), cudaSuccess);
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    for (int i = 0; i < 3; ++i) ASSERT_EQ(cudaGraphLaunch(exec, stream_), cudaSuccess);
    EXPECT_TRUE(close(host_values(y, ctx), reference(x, *cpu), DType::BF16, "graph m=" + std::to_string(m)));
    (void)cudaGraphExecDestroy(exec);
    (void)cudaGraphDestroy(graph);
  }
}

// Whether the mid-M GEMM takes a spec (restated from kernels/common/woq_gemm.cuh's requirements): N a multiple of
// 4, stored rows a multiple of 8, and every GEMV step (4 blocks of codes) inside one group: one group, a power-of-two
// group of whole steps, or act-order (rows sorted and padded to whole steps on the device).
bool gemm_takes(const Spec& s) {
  const int64_t step_rows = 4 * kernels::gptq::PackLayout{s.bits}.block_codes();
  const bool one_group_per_step = s.act_order || s.group <= 0 || s.group >= s.k ||
                                  (s.group % step_rows == 0 && (s.group & (s.group - 1)) == 0);
  return s.n % 4 == 0 && (s.act_order || s.k % 8 == 0) && one_group_per_step;
}

// The GEMM at every M it takes (TPQ_WOQ_GEMM=always), against the CPU reference: one and several 32-row tiles of
// M, partial ones, and the small M the GEMV otherwise runs. Where it does not take a spec, the plan says so.
TEST_P(GptqCuda, GemmMatchesTheCpuReferenceAtEveryM) {
  const Spec& s = GetParam();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Context ctx = gemm_context(stream_, "always");
  for (DType dtype : {DType::BF16, DType::F16}) {
    const auto [cpu, gpu] = cpu_and_gpu(s, dtype, rng);
    for (int64_t m : {1, 3, 16, 33, 100}) {
      const detail::WoqPath path = detail::cuda_gptq_path(ctx, *gpu, m);
      if (!gemm_takes(s)) {
        EXPECT_NE(path, detail::WoqPath::kGemm) << "m=" << m;
        continue;
      }
      EXPECT_EQ(path, detail::WoqPath::kGemm) << "m=" << m;
      if (m == 100 && s.n * s.k > (int64_t{1} << 24)) continue;  // keep the float64 reference quick
      EXPECT_TRUE(forward_matches(*cpu, *gpu, m, dtype, rng, ctx));
    }
  }
}

const std::vector<Spec> kSpecs = {
    // Llama-3-8B-like o_proj, 4-bit g128: no split-K at 4096 columns on a 132-SM part? (128 tiles: it splits).
    {4, 4096, 4096, 128, true, false, false},
    {4, 4096, 4096, 128, false, false, true},
    {4, 6144, 4096, 128, true, true, false},  // qkv-sized, act-order
    {8, 4096, 4096, 128, true, false, false},
    {8, 1024, 4096, 128, false, true, true},
    // More tiles than an H200 holds blocks at once (386 tiles, the last one partial), plain and act-order.
    {4, 12324, 1024, 128, false, false, true},
    {4, 12324, 1152, 64, true, true, false},
    // Narrow outputs and a long K (down_proj-like slice): split-K.
    {4, 512, 14336, 128, false, false, false},
    // Odd multiples of the group size and of the tile: K = 11 · 128, N = 37 · 8 (a partial 32-column tile).
    {4, 296, 1408, 128, false, false, true},
    {4, 296, 1408, 128, true, true, false},
    {8, 296, 1408, 64, false, false, false},
    {2, 320, 1408, 64, false, false, false},
    {2, 256, 1408, 128, true, true, false},
    {3, 352, 1408, 128, false, false, false},
    {3, 256, 1536, 64, true, true, true},
    // Groups smaller than a GEMV step (4 blocks: 128 rows at 3 bits, 64 at 2 bits): the general GEMV.
    {3, 352, 1408, 64, false, false, false},
    {2, 256, 1408, 32, true, false, true},
    // A group of 96 rows: whole GEMV steps, but not a power of two (the general GEMV; sorted act-order rows, padded
    // to whole steps, take the grouped one).
    {4, 264, 1440, 96, false, false, false},
    {4, 264, 1440, 96, true, true, true},
    // Group -1 (one group over K) and a group of 32.
    {4, 1024, 2048, -1, true, false, false},
    {4, 1024, 2048, 32, false, false, false},
    // One 32-column tile of 8 steps: one block, one step per warp.
    {4, 8, 256, 128, false, false, true},
    // K not a whole number of GEMV steps (177 blocks of 8 codes): the last step's missing blocks read as zeros.
    {4, 264, 1416, -1, false, false, true},
    {8, 264, 1412, -1, true, false, false},
    // One group over 130 steps at two column tiles: pairs of 2-step batches, and warps ending on a single batch.
    {4, 264, 4160, -1, false, false, true, {9, 16}},
    // The decode GEMV's loop as the Llama shapes run it, which the shapes above do not reach (a host-planning model
    // of every case, s6), at the decode sizes each is for: several full batches per warp without split-K (more
    // than 132 tiles of 32 columns), partial last batches, warps starting mid-group, batches crossing a group.
    //  - 4-bit, eight-step batches at M <= 8: 18 steps per warp (2 batches + a 2-step one);
    {4, 4228, 4608, 128, false, false, false, {1, 8}},
    //  - 4-bit, four-step batches at M 9..16, a partial last one;
    {4, 4228, 2304, 128, false, false, false, {9, 16}},
    //  - 8-bit, both batch sizes, no split-K (every 8-bit spec above splits);
    {8, 4228, 2176, 128, true, false, false, {1, 9, 16}},
    //  - the real down_proj shapes at M = 1: 8B (split-K, 3 batches + a partial one), 70B/TP8 at 4 and 8 bits.
    {4, 4096, 14336, 128, true, false, true, {1}},
    {4, 8192, 3584, 128, false, false, false, {1}},
    {8, 8192, 3584, 128, false, false, true, {1}},
    // More 32-column tiles than one wave of resident blocks: on 132 SMs two warps side by side over columns (s16),
    // at 2, 4 and 8 bits, M <= 8 and 9..16, act-order, a last block of 8 columns (its second warp's wholly clamped),
    // a whole batch and a partial one per warp.
    {4, 8712, 1408, 128, false, false, true, {1, 5, 9, 16}},
    {4, 8712, 1408, 128, true, true, false, {1, 8, 13}},
    {8, 8712, 1408, 128, false, false, false, {1, 8, 9}},
    {2, 8712, 1408, 128, true, false, true, {3}},
    // Warps side by side over columns (s16; where 32-column tiles exceed a wave: 2, 4 or 8 warps, on 132 SMs 2 for
    // 8712 above, 4 and 8 here): a last block of 8 columns (the other warps' columns wholly clamped), M <= 8 and
    // 9..16, split-K, 2, 4 and 8 bits, act-order.
    {4, 28680, 1408, 128, false, false, true, {1, 9, 16}},
    {4, 33800, 1024, 128, true, true, false, {1, 13}},
    {8, 28680, 1408, 128, false, false, false, {1, 16}},
    {2, 33800, 1024, 128, true, false, true, {5}},
    // Two batches in flight (s14): groups of two 128-row batches (each applied at its end, the same group's meta
    // twice); 64-row groups at M <= 8 (one step per group check, 128-row batches would straddle two) and at M 9..16
    // (64-row batches, in flight two at a time); several batches per warp without split-K.
    {4, 4228, 2304, 256, false, false, true, {1, 9}},
    {4, 4228, 2304, 64, true, false, false, {1, 16}},
    // Act-order whose sorted groups are uniform but for a shorter last one (1000 rows: 104, padded to 128): plain
    // groups of 128 after the gather (s14).
    {4, 264, 1000, 128, false, true, true, {1, 3, 16, 40}},
};

INSTANTIATE_TEST_SUITE_P(Shapes, GptqCuda, ::testing::ValuesIn(kSpecs),
                         [](const ::testing::TestParamInfo<Spec>& i) { return spec_name(i.param); });

// Which kernel each M goes to by default (the GEMV up to 16 rows, in passes up to 64, then dequantize + cuBLASLt),
// with the GEMM asked for (TPQ_WOQ_GEMM=1: the GEMM for 17..512 rows), and for a group the GEMM does not take (96
// rows: not a power of two).
TEST(GptqCudaPlan, EachMGoesToItsKernel) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937_64 rng(fresh_seed());
  const QuantMethodPtr g128 = random_gpu_layer({4, 4096, 4096, 128, true, false, false}, rng);
  const QuantMethodPtr g96 = random_gpu_layer({4, 264, 1440, 96, false, false, false}, rng);
  using detail::WoqPath;
  {
    const Context ctx = Context::cuda(0);
    for (int64_t m : {1, 16, 17, 64}) EXPECT_EQ(detail::cuda_gptq_path(ctx, *g128, m), WoqPath::kGemv) << m;
    for (int64_t m : {65, 512}) EXPECT_EQ(detail::cuda_gptq_path(ctx, *g128, m), WoqPath::kDequantGemm) << m;
  }
  const Context on = gemm_context(nullptr);
  for (int64_t m : {1, 8, 16}) EXPECT_EQ(detail::cuda_gptq_path(on, *g128, m), WoqPath::kGemv) << m;
  for (int64_t m : {17, 64, 65, 512}) EXPECT_EQ(detail::cuda_gptq_path(on, *g128, m), WoqPath::kGemm) << m;
  for (int64_t m : {513, 4096}) EXPECT_EQ(detail::cuda_gptq_path(on, *g128, m), WoqPath::kDequantGemm) << m;
  for (int64_t m : {17, 64}) EXPECT_EQ(detail::cuda_gptq_path(on, *g96, m), WoqPath::kGemv) << m;
  EXPECT_EQ(detail::cuda_gptq_path(on, *g96, 65), WoqPath::kDequantGemm);
  // Not a GPTQ-family layer on a GPU: a clear error.
  EXPECT_THROW((void)detail::cuda_gptq_path(on, *random_layer({4, 64, 256, 128, true, false, false}, DType::BF16, rng), 1),
               Error);
}

// Which GEMV kernel the host plan picks: two batches in flight wherever every batch lies in one group and the
// splits of K are whole batches (the Llama decode shapes, split-K included), else the grouped kernel that checks
// each step's group, the act-order one, or the general one. One-step batches (3-bit) and 8-bit beyond one quad and
// one column tile stay with the per-step kernel.
TEST(GptqCudaPlan, GemvKernelsByGroupAndShape) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937_64 rng(fresh_seed());
  const Context ctx = Context::cuda(0);
  using detail::WoqGemvKernel;
  const auto kernel = [&](const Spec& s, int64_t m) {
    return detail::cuda_gptq_gemv_kernel(ctx, *random_gpu_layer(s, rng), m);
  };
  struct Case {
    Spec spec;
    int64_t m;
    WoqGemvKernel want;
  };
  const std::vector<Case> cases = {
      {{4, 4096, 4096, 128, true, false, false}, 1, WoqGemvKernel::kGroupedTwoBatches},   // o_proj (split-K)
      {{4, 4096, 4096, 128, true, false, false}, 16, WoqGemvKernel::kGroupedBatchPairs},  // two column tiles
      {{4, 512, 14336, 128, false, false, false}, 1, WoqGemvKernel::kGroupedTwoBatches},  // split-K, long K
      {{4, 8712, 1408, 128, false, false, false}, 1, WoqGemvKernel::kGroupedTwoBatches},  // warps over columns
      {{4, 8712, 1408, 128, false, false, false}, 16, WoqGemvKernel::kGroupedBatchPairs},
      {{4, 1024, 2048, -1, true, false, false}, 16, WoqGemvKernel::kGroupedBatchPairs},  // one group
      {{4, 1024, 2048, -1, true, false, false}, 1, WoqGemvKernel::kGroupedTwoBatches},   // one group
      {{4, 1024, 2048, 64, true, false, false}, 1, WoqGemvKernel::kGrouped},   // 64-row group < 128-row batch
      {{4, 1024, 2048, 64, true, false, false}, 9, WoqGemvKernel::kGroupedTwoBatches},   // 64-row batches, not pairs
      {{4, 1024, 2048, 32, true, false, false}, 1, WoqGemvKernel::kGrouped},
      {{4, 264, 1440, 96, false, false, false}, 1, WoqGemvKernel::kGeneral},  // not a power of two
      // Act-order: sorted groups of 128 rows each are plain groups (g_idx dropped); 96-row groups keep g_idx.
      {{4, 6144, 4096, 128, true, true, false}, 1, WoqGemvKernel::kGroupedTwoBatches},
      {{4, 264, 1440, 96, true, true, false}, 1, WoqGemvKernel::kGroupedActOrder},
      {{8, 4096, 4096, 128, true, false, false}, 1, WoqGemvKernel::kGroupedTwoBatches},
      {{8, 1024, 4096, 64, true, false, false}, 1, WoqGemvKernel::kGroupedTwoBatches},   // 64-row batches at 8 bits
      {{8, 4096, 4096, 128, true, false, false}, 9, WoqGemvKernel::kGrouped},  // 8-bit: one quad, one tile only
      {{8, 8712, 1408, 128, false, false, false}, 1, WoqGemvKernel::kGroupedTwoBatches},  // warps over columns
      {{8, 8712, 1408, 128, false, false, false}, 9, WoqGemvKernel::kGrouped},
      {{2, 256, 1408, 128, true, false, false}, 1, WoqGemvKernel::kGroupedTwoBatches},
      {{3, 352, 1408, 128, false, false, false}, 1, WoqGemvKernel::kGrouped},  // one-step batches
  };
  for (const Case& c : cases) EXPECT_EQ(kernel(c.spec, c.m), c.want) << spec_name(c.spec) << " m=" << c.m;
  // Block widths: 32 columns where the tiles fit in a wave of resident blocks; else as many warps side by side over
  // columns (2, 4, 8; 32 columns each) as bring them within a wave, 32 where none does; 3-bit has no such kernel.
  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  const auto block_cols = [&](const Spec& s, int64_t m) {
    return detail::cuda_gptq_gemv_block_cols(ctx, *random_gpu_layer(s, rng), m);
  };
  const auto widened = [&](int64_t n, int resident_per_sm) {
    for (int warps = 1; warps <= 8; warps *= 2)
      if ((n + 32 * warps - 1) / (32 * warps) <= int64_t{resident_per_sm} * sms) return 32 * warps;
    return 32;
  };
  EXPECT_EQ(block_cols({4, 4096, 4096, 128, true, false, false}, 1), 32);
  EXPECT_EQ(block_cols({4, 6144, 4096, 128, true, false, false}, 16), 32);
  for (int64_t n : {8712, 28680, 33800, 100000}) {
    for (int64_t m : {1, 16}) {
      EXPECT_EQ(block_cols({4, n, 1024, 128, true, false, false}, m), widened(n, 2)) << n << " m=" << m;
      EXPECT_EQ(block_cols({8, n, 1024, 128, true, false, false}, m), widened(n, 2)) << n << " m=" << m;
    }
    EXPECT_EQ(block_cols({3, n, 1024, 128, true, false, false}, 1), 32) << n;
  }
  if (sms == 132) {
    EXPECT_EQ(block_cols({4, 28672, 4096, 128, true, false, false}, 1), 128);  // llama8b gate_up
    EXPECT_EQ(block_cols({4, 7168, 8192, 128, true, false, false}, 1), 32);    // llama70b/TP8 gate_up
  }
  // The sorted act-order forms behind those: uniform groups lose g_idx and keep their rows as group_size (the last
  // of 1000 rows in groups of 128 holds 104, padded to 128), scattered or 96-row ones keep g_idx.
  const auto device_form = [&](const Spec& s) {
    return dynamic_cast<const GptqLinear&>(*random_gpu_layer(s, rng)).weights();
  };
  for (const Spec& s : {Spec{4, 256, 4096, 128, true, true, false}, Spec{4, 256, 1000, 128, true, true, false},
                        Spec{8, 256, 1024, 64, true, true, false}}) {
    const GptqWeights w = device_form(s);
    EXPECT_FALSE(w.g_idx.has_value()) << spec_name(s);
    EXPECT_EQ(w.group_size, s.group) << spec_name(s);
    ASSERT_TRUE(w.perm.has_value()) << spec_name(s);
  }
  const GptqWeights g96 = device_form({4, 264, 1440, 96, true, true, false});
  EXPECT_TRUE(g96.g_idx.has_value());
  EXPECT_EQ(g96.group_size, 96);
  // Rows that do not run the GEMV, and a layer that is not GPTQ-family on a GPU: clear errors.
  EXPECT_THROW((void)kernel({4, 1024, 2048, 128, true, false, false}, 65), Error);
  EXPECT_THROW((void)detail::cuda_gptq_gemv_kernel(ctx, *random_layer({4, 64, 256, 128, true, false, false},
                                                                      DType::BF16, rng), 1),
               Error);
}

// Reordered rows (perm) given by hand whose count the CUDA gather of x does not take (8-bit: rows need only be a
// multiple of 4): a clear error at the forward, not a wrong result.
TEST(GptqCudaShards, PermRowsNotAMultipleOf8AreRefused) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937_64 rng(fresh_seed());
  const QuantMethodPtr cpu = random_layer({8, 64, 1028, 128, true, false, false}, DType::BF16, rng);
  GptqWeights w = dynamic_cast<const GptqLinear&>(*cpu).weights();
  std::vector<int32_t> perm(1028);
  std::iota(perm.begin(), perm.end(), 0);
  std::reverse(perm.begin(), perm.end());
  w.perm = Tensor::from_bytes(perm.data(), {1028}, DType::I32);
  const QuantMethodPtr gpu = deserialize_linear(GptqLinear("gptq", w).serialize(), Device::cuda(0));
  const Context ctx = Context::cuda(0);
  const Tensor x = random_x(1, 1028, DType::BF16, rng).to(Device::cuda(0));
  try {
    (void)gpu->forward(x, ctx);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of 8"), std::string::npos) << e.what();
  }
}

// Act-order + row parallel: a rank's K slice refers to scattered groups, and the device form pads each group's
// rows to whole blocks. Loaded straight onto the GPU from the fixtures, it must match the same shard on the CPU.
TEST(GptqCudaShards, RowParallelActOrderShardsMatchTheCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  {
    const Context ctx = Context::cuda(0, stream, std::make_shared<PoisonAllocator>());
    std::mt19937_64 rng(fresh_seed());
    const std::filesystem::path dir = std::filesystem::path(TPQ_FIXTURES_DIR) / "gptq";
    for (const char* name : {"gptq_b4_g32_actorder_asym_v1", "gptq_b8_g32_actorder_sym_v2",
                             "gptq_b3_g32_actorder_sym_v1", "ct_int4_g32_actorder_sym", "awq_b4_g32"}) {
      const std::string file = (dir / (std::string(name) + ".safetensors")).string();
      const bool ct = std::string(name).starts_with("ct_"), awq = std::string(name).starts_with("awq");
      QuantConfig config;
      if (ct) {
        CompressedTensorsConfig c{.format = CtFormat::kPackQuantized};
        c.config_groups.push_back(
            {.name = "group_0",
             .targets = {"Linear"},
             .weights =
                 CtQuantArgs{.num_bits = 4, .strategy = CtStrategy::kGroup, .group_size = 32, .actorder = "group"}});
        config = c;
      } else if (awq) {
        config = AwqConfig{.group_size = 32};
      } else {
        const int bits = std::string(name).find("_b8_") != std::string::npos   ? 8
                         : std::string(name).find("_b3_") != std::string::npos ? 3
                                                                               : 4;
        config = GptqConfig{
            .bits = bits,
            .group_size = 32,
            .desc_act = true,
            .sym = std::string(name).find("_sym") != std::string::npos,
            .checkpoint_format = std::string(name).ends_with("v2") ? GptqFormat::kGptqV2 : GptqFormat::kGptq};
      }
      const io::VarBuilder host = io::VarBuilder::from_safetensors(file);
      const io::VarBuilder dev = io::VarBuilder::from_safetensors(file, std::nullopt, Device::cuda(0));
      const auto k = host.info("expected.g_idx").shape[0];
      const auto n = host.info("expected.codes").shape[1];
      for (int world : {1, 2, 4}) {
        for (int rank = 0; rank < world; ++rank) {
          const Shard shard = world == 1 ? Shard::none() : Shard::simple(1, rank, world);
          const LinearSpec spec{.in_features = k, .out_features = n, .dtype = DType::BF16};
          const auto cpu = make_linear(spec, config, shard, host.pp("layer"));
          const auto gpu = make_linear(spec, config, shard, dev.pp("layer"));
          ASSERT_TRUE(gpu->device().is_cuda());
          const Tensor x = random_x(3, cpu->in_features(), DType::BF16, rng);
          const Tensor y = gpu->forward(x.to(Device::cuda(0)), ctx);
          EXPECT_TRUE(close(host_values(y, ctx), reference(x, *cpu), DType::BF16,
                            std::string(name) + " world " + std::to_string(world) + " rank " + std::to_string(rank)));
          EXPECT_EQ(host_values(gpu->dequantize_weight(ctx), ctx), cpu->dequantize_weight(Context::cpu()).to_doubles())
              << name << " world " << world << " rank " << rank;
        }
      }
    }
  }
  (void)cudaStreamDestroy(stream);
}

}  // namespace
}  // namespace tpq::test
