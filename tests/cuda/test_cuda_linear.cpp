// cuda_linear / cuda_add_bias against a float64 CPU reference on fresh random data, every path: the GEMV
// (M <= 16, bf16/f16, K % 8 == 0), its split-K variant (few output tiles), cuBLASLt (bias in the epilogue), and
// the plain fallback kernel (odd leading dimensions, k == 0). Outputs are poisoned with NaN bytes before each run;
// NaN never passes. CUDA graph capture of each path is replayed and compared too.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/cuda/cuda_test.hpp"
#include "tpq/core/context.hpp"
#include "tpq/core/convert.hpp"
#include "tpq/core/error.hpp"
#include "tpq/detail/cuda_ops.hpp"

namespace tpq::test {
namespace {

// ---- host data ----

// splitmix64: fast enough for the 117M-element Llama weights, seeded fresh per test.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float uniform() {  // [-1, 1)
    return static_cast<float>(static_cast<double>(next() >> 11) * 0x1.0p-53 * 2.0 - 1.0);
  }

 private:
  uint64_t state_;
};

uint16_t f16_bits(float f) {
  const _Float16 h = static_cast<_Float16>(f);  // round to nearest even
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
double f16_value(uint16_t b) {
  _Float16 h;
  std::memcpy(&h, &b, 2);
  return static_cast<double>(h);
}

size_t elem_size(DType t) { return dtype_size(t); }

// Elements of `dtype` as raw bytes, plus their exact values.
struct HostData {
  std::vector<uint8_t> bytes;
  std::vector<double> values;
};

double decode(DType dtype, const uint8_t* p) {
  switch (dtype) {
    case DType::BF16: {
      uint16_t b;
      std::memcpy(&b, p, 2);
      return bf16_to_float(b);
    }
    case DType::F16: {
      uint16_t b;
      std::memcpy(&b, p, 2);
      return f16_value(b);
    }
    default: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
  }
}

HostData random_data(DType dtype, int64_t count, Rng& rng) {
  HostData d;
  const size_t es = elem_size(dtype);
  d.bytes.resize(static_cast<size_t>(count) * es);
  d.values.resize(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    const float f = rng.uniform();
    uint8_t* p = d.bytes.data() + static_cast<size_t>(i) * es;
    if (dtype == DType::BF16) {
      const uint16_t b = float_to_bf16(f);
      std::memcpy(p, &b, 2);
    } else if (dtype == DType::F16) {
      const uint16_t b = f16_bits(f);
      std::memcpy(p, &b, 2);
    } else {
      std::memcpy(p, &f, 4);
    }
    d.values[static_cast<size_t>(i)] = decode(dtype, p);
  }
  return d;
}

double tolerance(DType dtype) {
  switch (dtype) {
    case DType::BF16:
      return 1e-2;
    case DType::F16:
      return 2e-3;
    default:
      return 1e-5;
  }
}

// ‖out − ref‖ / ‖ref‖, failing on any non-finite output (the poison is NaN).
::testing::AssertionResult matches_reference(DType dtype, const std::vector<uint8_t>& out_bytes,
                                             const std::vector<double>& ref, const std::string& what) {
  const size_t es = elem_size(dtype);
  double diff2 = 0.0, ref2 = 0.0;
  int64_t nonfinite = 0, first_bad = -1;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double v = decode(dtype, out_bytes.data() + i * es);
    if (!std::isfinite(v)) {
      if (first_bad < 0) first_bad = static_cast<int64_t>(i);
      ++nonfinite;
      continue;
    }
    diff2 += (v - ref[i]) * (v - ref[i]);
    ref2 += ref[i] * ref[i];
  }
  if (nonfinite > 0)
    return ::testing::AssertionFailure() << what << ": " << nonfinite << " non-finite outputs (first at flat index "
                                         << first_bad << "): unwritten or overflowed";
  const double rel = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
  if (rel >= tolerance(dtype))
    return ::testing::AssertionFailure() << what << ": relative error " << rel << " >= " << tolerance(dtype);
  return ::testing::AssertionSuccess() << what << ": relative error " << rel;
}

// ---- one problem on the device ----

struct LinearCase {
  DType dtype;
  int64_t m, n, k;
  bool bias;
};

std::string case_name(const LinearCase& c) {
  std::ostringstream s;
  s << dtype_name(c.dtype) << "_m" << c.m << "_n" << c.n << "_k" << c.k << (c.bias ? "_bias" : "_nobias");
  return s.str();
}

// Readable parameter names in test output and CTest names.
void PrintTo(const LinearCase& c, std::ostream* os) { *os << case_name(c); }

struct Problem {
  LinearCase c;
  uint64_t seed;
  HostData x, w, b;
  std::vector<double> ref;
  DeviceBuffer dx, dw, db, dy;

  Problem(const LinearCase& lc, uint64_t s) : c(lc), seed(s) {
    Rng rng(seed);
    x = random_data(c.dtype, c.m * c.k, rng);
    w = random_data(c.dtype, c.n * c.k, rng);
    if (c.bias) b = random_data(c.dtype, c.n, rng);
    ref = reference_linear(x.values, w.values, c.bias ? b.values.data() : nullptr, c.m, c.n, c.k);
    dx = DeviceBuffer(x.bytes.size());
    dw = DeviceBuffer(w.bytes.size());
    db = DeviceBuffer(std::max<size_t>(b.bytes.size(), 1));
    dy = DeviceBuffer(static_cast<size_t>(c.m * c.n) * elem_size(c.dtype));
    upload(dx, x.bytes);
    upload(dw, w.bytes);
    if (c.bias) upload(db, b.bytes);
  }

  // Synchronous for every stream: a pageable cudaMemcpy may return before its DMA lands, and the tests run on
  // non-blocking streams that do not wait for the legacy stream.
  static void upload(const DeviceBuffer& d, const std::vector<uint8_t>& h) {
    if (h.empty()) return;
    if (cudaMemcpy(d.get(), h.data(), h.size(), cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaDeviceSynchronize() != cudaSuccess)
      throw std::runtime_error("upload failed");
  }

  const void* bias_ptr() const { return c.bias ? db.get() : nullptr; }

  void run(const Context& ctx) const {
    detail::cuda_linear(ctx, c.dtype, dx.get(), dw.get(), bias_ptr(), dy.get(), c.m, c.n, c.k);
  }

  cudaError_t poison(cudaStream_t stream) const { return cudaMemsetAsync(dy.get(), 0xFF, dy.bytes(), stream); }

  ::testing::AssertionResult check(const std::string& what) const {
    std::vector<uint8_t> out(dy.bytes());
    const cudaError_t err = cudaMemcpy(out.data(), dy.get(), out.size(), cudaMemcpyDeviceToHost);
    if (err != cudaSuccess) return ::testing::AssertionFailure() << "download: " << cudaGetErrorString(err);
    std::ostringstream s;
    s << what << " " << case_name(c) << " seed=" << seed;
    return matches_reference(c.dtype, out, ref, s.str());
  }
};

// ---- correctness sweep ----

class CudaLinear : public CudaTestWithParam<LinearCase> {};

TEST_P(CudaLinear, MatchesFloat64Reference) {
  const LinearCase c = GetParam();
  Stream stream;
  const Context ctx = Context::cuda(0, stream.get());
  const Problem p(c, fresh_seed());
  // Twice: the second call takes the cached cuBLASLt plan.
  for (int rep = 0; rep < 2; ++rep) {
    TPQ_TEST_CUDA(p.poison(stream.get()));
    p.run(ctx);
    TPQ_TEST_CUDA(cudaStreamSynchronize(stream.get()));
    EXPECT_TRUE(p.check(rep == 0 ? "first call" : "second call"));
  }
}

std::vector<LinearCase> sweep_cases() {
  // m, n, k: the GEMV (m <= 16, k % 8 == 0) with ragged n and k % 32 != 0, its split-K (n/16 tiles < SMs),
  // cuBLASLt at m just past the GEMV and at prefill sizes, and shapes whose rows break 16-byte alignment.
  const std::vector<std::array<int64_t, 3>> shapes = {
      {1, 1, 1},     {1, 33, 17},   {3, 33, 17},    {1, 24, 8},      {2, 64, 64},     {7, 129, 72},
      {8, 256, 512}, {9, 200, 136}, {12, 100, 264}, {16, 48, 4096},  {4, 1024, 4096}, {17, 130, 520},
      {64, 96, 80},  {1000, 72, 64}, {1, 4095, 4097}, {5, 4095, 4097}, {2, 7, 0},      {33, 257, 129},
  };
  std::vector<LinearCase> cases;
  for (DType dt : {DType::BF16, DType::F16, DType::F32})
    for (const auto& s : shapes)
      for (bool bias : {false, true}) cases.push_back({dt, s[0], s[1], s[2], bias});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaLinear, ::testing::ValuesIn(sweep_cases()),
                         [](const ::testing::TestParamInfo<LinearCase>& info) { return case_name(info.param); });

// Two-way split-K on sm_90+ reduces in a thread-block cluster (distributed shared memory); TPQ_GEMV_CLUSTERS=0 at
// context creation keeps the global protocol (partials, counters), which older GPUs and more splits run. Both add
// the splits in the same order, so the outputs must agree bit for bit, and both match the reference. The first two
// shapes split in two (K holds two splits of a full batch per warp), the others in 4 or 5 (global either way).
TEST_F(CudaTest, SplitKInAClusterEqualsTheGlobalProtocol) {
  Stream stream;
  const Context clustered = Context::cuda(0, stream.get());
  ASSERT_EQ(setenv("TPQ_GEMV_CLUSTERS", "0", 1), 0);
  const Context global = Context::cuda(0, stream.get());
  ASSERT_EQ(unsetenv("TPQ_GEMV_CLUSTERS"), 0);
  int major = 0;
  TPQ_TEST_CUDA(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
  const bool sm90 = major >= 9;
  for (const LinearCase& c : {LinearCase{DType::F16, 3, 200, 2056, true}, LinearCase{DType::BF16, 1, 2048, 3000, true},
                              LinearCase{DType::BF16, 1, 1024, 8192, true}, LinearCase{DType::F16, 8, 256, 4096, false},
                              LinearCase{DType::BF16, 16, 48, 4096, true}}) {
    // The plans the comparison rests on: two splits in a cluster on sm_90+ for the first two shapes, more (never a
    // cluster) for the others; the same splits in both contexts, never a cluster in the global one.
    const detail::GemvSplitInfo with = detail::cuda_linear_gemv_split(clustered, c.m, c.n, c.k);
    const detail::GemvSplitInfo without = detail::cuda_linear_gemv_split(global, c.m, c.n, c.k);
    const bool two = c.k <= 3000;
    EXPECT_EQ(with.splits == 2, two) << case_name(c) << ": " << with.splits << " splits";
    EXPECT_GT(with.splits, 1) << case_name(c);
    EXPECT_EQ(with.splits, without.splits) << case_name(c);
    EXPECT_EQ(with.cluster, two && sm90) << case_name(c);
    EXPECT_FALSE(without.cluster) << case_name(c);
    const Problem p(c, fresh_seed());
    std::vector<std::vector<uint8_t>> outs;
    for (const Context* ctx : {&clustered, &global}) {
      TPQ_TEST_CUDA(p.poison(stream.get()));
      p.run(*ctx);
      TPQ_TEST_CUDA(cudaStreamSynchronize(stream.get()));
      EXPECT_TRUE(p.check(ctx == &clustered ? "clusters" : "global"));
      outs.emplace_back(p.dy.bytes());
      TPQ_TEST_CUDA(cudaMemcpy(outs.back().data(), p.dy.get(), p.dy.bytes(), cudaMemcpyDeviceToHost));
    }
    EXPECT_EQ(outs[0], outs[1]) << case_name(c);
  }
}

// The decode shapes the GEMV is tuned for: Llama-3-8B and Llama-3-70B at TP 8 (N x K).
std::vector<LinearCase> llama_cases() {
  const std::vector<std::array<int64_t, 2>> nk = {{6144, 4096}, {4096, 4096}, {28672, 4096},
                                                  {4096, 14336}, {7168, 8192}, {8192, 3584}};
  std::vector<LinearCase> cases;
  for (DType dt : {DType::BF16, DType::F16})
    for (int64_t m : {1, 8})
      for (const auto& s : nk) cases.push_back({dt, m, s[0], s[1], m == 1});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Llama, CudaLinear, ::testing::ValuesIn(llama_cases()),
                         [](const ::testing::TestParamInfo<LinearCase>& info) { return case_name(info.param); });

// The GEMV at M 9..16 (two column tiles, four-step batches) over several batches per warp and a partial last one,
// without split-K (132+ tiles): 14 steps per warp, as 70B/TP8 down_proj at M = 16 runs. The shapes above reach at
// most one such batch (a host-planning model of every case, s6).
INSTANTIATE_TEST_SUITE_P(DecodeLoops, CudaLinear,
                         ::testing::Values(LinearCase{DType::BF16, 16, 2112, 3584, true},
                                           LinearCase{DType::F16, 13, 2100, 3584, false}),
                         [](const ::testing::TestParamInfo<LinearCase>& info) { return case_name(info.param); });

// ---- CUDA graphs ----

struct GraphCase {
  const char* path;
  LinearCase c;
  bool warm_up;  // one eager call before capture (as engines do); false: the very first call is captured
};

void PrintTo(const GraphCase& g, std::ostream* os) { *os << g.path << " " << case_name(g.c); }

class CudaLinearGraph : public CudaTestWithParam<GraphCase> {};

TEST_P(CudaLinearGraph, CaptureReplayMatchesReference) {
  const GraphCase gc = GetParam();
  Stream stream;
  const Context ctx = Context::cuda(0, stream.get());
  const Problem p(gc.c, fresh_seed());
  if (gc.warm_up) {
    p.run(ctx);
    TPQ_TEST_CUDA(cudaStreamSynchronize(stream.get()));
  }

  // Global mode: any call that is illegal during capture (cudaMalloc, a device synchronization, a legacy-stream
  // operation) anywhere in the process invalidates the capture.
  cudaGraph_t graph = nullptr;
  TPQ_TEST_CUDA(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeGlobal));
  try {
    p.run(ctx);
  } catch (const std::exception& e) {
    (void)cudaStreamEndCapture(stream.get(), &graph);
    if (graph) (void)cudaGraphDestroy(graph);
    FAIL() << "cuda_linear threw during capture: " << e.what();
  }
  TPQ_TEST_CUDA(cudaStreamEndCapture(stream.get(), &graph));
  ASSERT_NE(graph, nullptr);
  cudaGraphExec_t exec = nullptr;
  const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
  (void)cudaGraphDestroy(graph);
  TPQ_TEST_CUDA(inst);

  // Replay twice, each onto a freshly poisoned output: the graph must write every element each time.
  for (int rep = 0; rep < 2; ++rep) {
    TPQ_TEST_CUDA(p.poison(stream.get()));
    TPQ_TEST_CUDA(cudaGraphLaunch(exec, stream.get()));
    TPQ_TEST_CUDA(cudaStreamSynchronize(stream.get()));
    EXPECT_TRUE(p.check(std::string("graph replay ") + std::to_string(rep)));
  }
  (void)cudaGraphExecDestroy(exec);
}

INSTANTIATE_TEST_SUITE_P(
    Paths, CudaLinearGraph,
    ::testing::Values(GraphCase{"gemv", {DType::BF16, 4, 512, 1024, true}, true},
                      GraphCase{"gemv_m12", {DType::F16, 12, 300, 264, true}, true},
                      GraphCase{"gemv_splitk", {DType::BF16, 2, 64, 8192, true}, true},
                      GraphCase{"gemv_first_call", {DType::BF16, 1, 4096, 4096, true}, false},
                      GraphCase{"cublaslt", {DType::BF16, 64, 256, 512, true}, true},
                      GraphCase{"cublaslt_f32", {DType::F32, 32, 96, 128, true}, true},
                      GraphCase{"cublaslt_first_call", {DType::BF16, 128, 384, 256, false}, false},
                      GraphCase{"fallback_odd", {DType::BF16, 3, 33, 17, true}, true}),
    [](const ::testing::TestParamInfo<GraphCase>& info) { return std::string(info.param.path); });

// Back-to-back GEMVs on one stream: with programmatic dependent launch the second starts before the first ends,
// and must still read the x the first one wrote (y1 = x·W1ᵀ, then y2 = y1·W2ᵀ).
TEST_F(CudaTest, ChainedGemvsSeeTheirInputs) {
  Stream stream;
  const Context ctx = Context::cuda(0, stream.get());
  Rng rng(fresh_seed());
  const int64_t m = 4, k = 2048, n1 = 2048, n2 = 1024;
  const HostData x = random_data(DType::BF16, m * k, rng);
  const HostData w1 = random_data(DType::BF16, n1 * k, rng);
  const HostData w2 = random_data(DType::BF16, n2 * n1, rng);
  DeviceBuffer dx(x.bytes.size()), dw1(w1.bytes.size()), dw2(w2.bytes.size());
  DeviceBuffer dy1(static_cast<size_t>(m * n1) * 2), dy2(static_cast<size_t>(m * n2) * 2);
  Problem::upload(dx, x.bytes);
  Problem::upload(dw1, w1.bytes);
  Problem::upload(dw2, w2.bytes);
  TPQ_TEST_CUDA(cudaMemsetAsync(dy1.get(), 0xFF, dy1.bytes(), stream.get()));
  TPQ_TEST_CUDA(cudaMemsetAsync(dy2.get(), 0xFF, dy2.bytes(), stream.get()));
  for (int rep = 0; rep < 3; ++rep) {  // repeat: the first y2 of a later round overlaps the last round's tail
    detail::cuda_linear(ctx, DType::BF16, dx.get(), dw1.get(), nullptr, dy1.get(), m, n1, k);
    detail::cuda_linear(ctx, DType::BF16, dy1.get(), dw2.get(), nullptr, dy2.get(), m, n2, n1);
  }
  TPQ_TEST_CUDA(cudaStreamSynchronize(stream.get()));

  std::vector<uint8_t> y1(dy1.bytes()), y2(dy2.bytes());
  TPQ_TEST_CUDA(cudaMemcpy(y1.data(), dy1.get(), y1.size(), cudaMemcpyDeviceToHost));
  TPQ_TEST_CUDA(cudaMemcpy(y2.data(), dy2.get(), y2.size(), cudaMemcpyDeviceToHost));
  const std::vector<double> ref1 = reference_linear(x.values, w1.values, nullptr, m, n1, k);
  EXPECT_TRUE(matches_reference(DType::BF16, y1, ref1, "first GEMV"));
  // The second layer's reference starts from the bf16 y1 the device produced (its actual input).
  std::vector<double> y1_values(static_cast<size_t>(m * n1));
  for (size_t i = 0; i < y1_values.size(); ++i) y1_values[i] = decode(DType::BF16, y1.data() + 2 * i);
  const std::vector<double> ref2 = reference_linear(y1_values, w2.values, nullptr, m, n2, n1);
  EXPECT_TRUE(matches_reference(DType::BF16, y2, ref2, "second GEMV"));
}

// ---- bias add, context, errors, threads ----

class CudaAddBias : public CudaTestWithParam<DType> {};

TEST_P(CudaAddBias, AddsBiasPerRow) {
  const DType dt = GetParam();
  Stream stream;
  const Context ctx = Context::cuda(0, stream.get());
  Rng rng(fresh_seed());
  const int64_t rows = 37, n = 301;
  const HostData y = random_data(dt, rows * n, rng);
  const HostData b = random_data(dt, n, rng);
  DeviceBuffer dy(y.bytes.size()), db(b.bytes.size());
  Problem::upload(dy, y.bytes);
  Problem::upload(db, b.bytes);
  detail::cuda_add_bias(ctx, dt, dy.get(), db.get(), rows * n, n);
  TPQ_TEST_CUDA(cudaStreamSynchronize(stream.get()));
  std::vector<uint8_t> out(y.bytes.size());
  TPQ_TEST_CUDA(cudaMemcpy(out.data(), dy.get(), out.size(), cudaMemcpyDeviceToHost));
  std::vector<double> ref(static_cast<size_t>(rows * n));
  for (size_t i = 0; i < ref.size(); ++i) ref[i] = y.values[i] + b.values[i % static_cast<size_t>(n)];
  EXPECT_TRUE(matches_reference(dt, out, ref, "add_bias"));
}

INSTANTIATE_TEST_SUITE_P(DTypes, CudaAddBias, ::testing::Values(DType::BF16, DType::F16, DType::F32),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(dtype_name(info.param));
                         });

TEST_F(CudaTest, ContextOwnsHandleWorkspaceAndAllocator) {
  Stream stream;
  const Context ctx = Context::cuda(0, stream.get(), nullptr, size_t{8} << 20);
  EXPECT_TRUE(ctx.device().is_cuda());
  EXPECT_EQ(ctx.stream(), stream.get());
  EXPECT_NE(ctx.cublaslt_handle(), nullptr);
  EXPECT_NE(ctx.workspace(), nullptr);
  EXPECT_EQ(ctx.workspace_bytes(), size_t{8} << 20);
  const Context copy = ctx;  // copies share the resources
  EXPECT_EQ(copy.cublaslt_handle(), ctx.cublaslt_handle());

  // The default allocator is stream-ordered: allocate, use and free on the stream, no synchronization between.
  {
    const Tensor t = ctx.empty({64, 32}, DType::BF16);
    EXPECT_TRUE(t.device().is_cuda());
    TPQ_TEST_CUDA(cudaMemsetAsync(t.data(), 0, t.nbytes(), stream.get()));
  }
  TPQ_TEST_CUDA(cudaStreamSynchronize(stream.get()));

  // ... and capturable: allocation and release inside a graph.
  cudaGraph_t graph = nullptr;
  TPQ_TEST_CUDA(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeGlobal));
  void* p = ctx.allocator().allocate(4096, ctx.device(), ctx.stream());
  (void)cudaMemsetAsync(p, 0, 4096, stream.get());
  ctx.allocator().deallocate(p, 4096, ctx.device(), ctx.stream());
  TPQ_TEST_CUDA(cudaStreamEndCapture(stream.get(), &graph));
  cudaGraphExec_t exec = nullptr;
  TPQ_TEST_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  TPQ_TEST_CUDA(cudaGraphLaunch(exec, stream.get()));
  TPQ_TEST_CUDA(cudaStreamSynchronize(stream.get()));
  (void)cudaGraphExecDestroy(exec);
  (void)cudaGraphDestroy(graph);
}

TEST_F(CudaTest, RejectsBadArguments) {
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  try {
    (void)Context::cuda(count + 3);
    FAIL() << "Context::cuda accepted a device that does not exist";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  }
  const Context cpu = Context::cpu(1);
  DeviceBuffer buf(1024);
  try {
    detail::cuda_linear(cpu, DType::BF16, buf.get(), buf.get(), nullptr, buf.get(), 1, 8, 8);
    FAIL() << "cuda_linear accepted a CPU context";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  }
  const Context ctx = Context::cuda(0);
  try {
    detail::cuda_linear(ctx, DType::I8, buf.get(), buf.get(), nullptr, buf.get(), 1, 8, 8);
    FAIL() << "cuda_linear accepted I8";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnsupported);
  }
  try {
    detail::cuda_add_bias(ctx, DType::BF16, buf.get(), buf.get(), 10, 3);
    FAIL() << "cuda_add_bias accepted 10 elements as rows of 3";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kShape);
  }
}

// Many threads on one context (one stream), each with its own shapes: the plan cache under contention.
TEST_F(CudaTest, ConcurrentCallsShareTheContext) {
  Stream stream;
  const Context ctx = Context::cuda(0, stream.get());
  constexpr int kThreads = 4;
  std::vector<std::unique_ptr<Problem>> problems;
  for (int t = 0; t < kThreads; ++t)
    for (int64_t m : {24, 40, 3})
      problems.push_back(std::make_unique<Problem>(LinearCase{DType::BF16, m + t, 136, 264, t % 2 == 0}, fresh_seed()));
  for (const auto& p : problems) TPQ_TEST_CUDA(p->poison(stream.get()));
  std::vector<std::thread> pool;
  std::vector<std::string> errors(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    pool.emplace_back([&, t] {
      try {
        for (int rep = 0; rep < 4; ++rep)
          for (int i = 0; i < 3; ++i) problems[static_cast<size_t>(t * 3 + i)]->run(ctx);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(t)] = e.what();
      }
    });
  }
  for (auto& th : pool) th.join();
  for (const auto& e : errors) EXPECT_TRUE(e.empty()) << e;
  TPQ_TEST_CUDA(cudaStreamSynchronize(stream.get()));
  for (const auto& p : problems) EXPECT_TRUE(p->check("concurrent"));
}

}  // namespace
}  // namespace tpq::test
