// GPTQ / AWQ / compressed-tensors pack-quantized on CPU, against fixtures packed by re-implementations of the reference
// packers' algorithms (tools/fixtures/gen_gptq_awq.py): unpacking gives the quantizer's codes, zeros and scales;
// dequantization and the forward match a float64 oracle; shards at world sizes 2 and 4 hold exactly their slice of
// the full layer; every misaligned shard fails with the one alignment error, before a byte is read.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>

#include <nlohmann/json.hpp>

#include "kernels/awq/reference.hpp"
#include "kernels/gptq/reference.hpp"
#include "tests/common/error_of.hpp"
#include "tpq/dist/comm.hpp"
#include "tpq/io/safetensors.hpp"
#include "tpq/layers/parallel.hpp"
#include "tpq/quant/gptq.hpp"
#include "tpq/quant/registry.hpp"

using namespace tpq;
using test::error_of;
using io::MemorySource;
using io::VarBuilder;
namespace fs = std::filesystem;

namespace {

const fs::path kDir = fs::path(TPQ_FIXTURES_DIR) / "gptq";

struct Fixture {
  std::string name;
  fs::path file;
  int64_t n = 0, k = 0;
  bool bias = false;
  QuantConfig config;
  nlohmann::json qc;
  std::string method() const { return qc.at("quant_method").get<std::string>(); }
};

const std::vector<Fixture>& fixtures() {
  static const std::vector<Fixture> all = [] {
    std::ifstream in(kDir / "manifest.json");
    const nlohmann::json m = nlohmann::json::parse(in);
    std::vector<Fixture> out;
    for (const auto& e : m) {
      Fixture f;
      f.name = e.at("name");
      f.file = kDir / e.at("file").get<std::string>();
      f.n = e.at("out_features");
      f.k = e.at("in_features");
      f.bias = e.at("bias");
      f.qc = e.at("quantization_config");
      f.config = parse_quant_config_text(nlohmann::json{{"quantization_config", f.qc}}.dump(), f.name);
      out.push_back(std::move(f));
    }
    return out;
  }();
  return all;
}

std::string fixture_name(const testing::TestParamInfo<Fixture>& info) { return info.param.name; }
void PrintTo(const Fixture& f, std::ostream* os) { *os << f.name; }

VarBuilder open(const Fixture& f) { return VarBuilder::from_safetensors(f.file); }

LinearSpec spec_of(const Fixture& f, std::optional<DType> dtype = DType::F32, bool bias = true) {
  return {.in_features = f.k, .out_features = f.n, .bias = bias && f.bias, .dtype = dtype};
}

std::vector<uint32_t> words(const Tensor& t) {
  std::vector<uint32_t> w(static_cast<size_t>(t.numel()));
  std::memcpy(w.data(), t.data(), w.size() * 4);
  return w;
}

std::vector<uint8_t> bytes(const Tensor& t) {
  const auto* p = static_cast<const uint8_t*>(t.data());
  return {p, p + t.nbytes()};
}

std::vector<int32_t> ints(const Tensor& t) {
  const auto d = t.to_doubles();
  return {d.begin(), d.end()};
}

// W[n, k] = scales[g, n] · (codes[k, n] − zeros[g, n]) from the quantizer's own outputs, in double.
std::vector<double> expected_weight(const Fixture& f) {
  const VarBuilder vb = open(f).pp("expected");
  const auto codes = bytes(vb.get_unchecked("codes")), zeros = bytes(vb.get_unchecked("zeros"));
  const auto scales = vb.get_unchecked("scales").to_doubles();
  const auto g_idx = ints(vb.get_unchecked("g_idx"));
  std::vector<double> w(static_cast<size_t>(f.n * f.k));
  for (int64_t kk = 0; kk < f.k; ++kk)
    for (int64_t j = 0; j < f.n; ++j) {
      const int64_t g = g_idx[kk];
      w[j * f.k + kk] = scales[g * f.n + j] * (static_cast<double>(codes[kk * f.n + j]) - zeros[g * f.n + j]);
    }
  return w;
}

Tensor random_input(int64_t m, int64_t k, DType dt, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(m * k));
  for (float& x : v) x = d(rng);
  return Tensor::from_floats(v, {m, k}, dt);
}

// y = x·Wᵀ (+ bias) in double.
std::vector<double> matmul_ref(const Tensor& x, const std::vector<double>& w, int64_t n, const std::vector<double>* bias) {
  const auto xv = x.to_doubles();
  const int64_t k = x.dim(-1), m = x.numel() / k;
  std::vector<double> y(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = bias ? (*bias)[j] : 0.0;
      for (int64_t l = 0; l < k; ++l) acc += xv[i * k + l] * w[j * k + l];
      y[i * n + j] = acc;
    }
  return y;
}

double rel_error(const std::vector<double>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i])) return INFINITY;
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

std::vector<double> columns(const std::vector<double>& w, int64_t n, int64_t k, int64_t start, int64_t len) {
  std::vector<double> out;
  for (int64_t j = 0; j < n; ++j) out.insert(out.end(), w.begin() + j * k + start, w.begin() + j * k + start + len);
  return out;
}

// A TensorSource that records what is read, to check that shards read only their bytes and that alignment errors
// come before any read.
class CountingSource final : public io::TensorSource {
 public:
  explicit CountingSource(std::shared_ptr<const io::TensorSource> inner) : inner_(std::move(inner)) {}
  bool contains(std::string_view name) const override { return inner_->contains(name); }
  io::TensorInfo info(std::string_view name) const override { return inner_->info(name); }
  std::vector<std::string> names() const override { return inner_->names(); }
  Tensor read(std::string_view name, const Shard& shard, Device device) const override {
    Tensor t = inner_->read(name, shard, device);
    std::lock_guard lock(mutex_);
    reads_.emplace_back(std::string(name), t.nbytes());
    return t;
  }
  std::string describe() const override { return inner_->describe(); }
  size_t reads() const {
    std::lock_guard lock(mutex_);
    return reads_.size();
  }
  size_t bytes_of(std::string_view suffix) const {
    std::lock_guard lock(mutex_);
    size_t b = 0;
    for (const auto& [n, s] : reads_)
      if (n.ends_with(suffix)) b += s;
    return b;
  }

 private:
  std::shared_ptr<const io::TensorSource> inner_;
  mutable std::mutex mutex_;
  mutable std::vector<std::pair<std::string, size_t>> reads_;
};

class GptqFixture : public testing::TestWithParam<Fixture> {};

}  // namespace

// ---- layout -------------------------------------------------------------------------------------------------

TEST(GptqLayout, ThreeBitStreamStraddlesWords) {
  // Codes 0..31 = i % 8 packed by hand into one 96-bit stream; codes 10 and 21 cross word boundaries.
  uint64_t stream[2] = {0, 0};
  for (int i = 0; i < 32; ++i) {
    const int bit = 3 * i;
    const uint64_t v = static_cast<uint64_t>(i % 8);
    stream[bit / 64] |= v << (bit % 64);
    if (bit % 64 > 61) stream[bit / 64 + 1] |= v >> (64 - bit % 64);
  }
  const uint32_t w[3] = {static_cast<uint32_t>(stream[0]), static_cast<uint32_t>(stream[0] >> 32),
                         static_cast<uint32_t>(stream[1])};
  for (int i = 0; i < 32; ++i) EXPECT_EQ(kernels::gptq::block_code(w, 1, i, 3), static_cast<uint32_t>(i % 8)) << i;
  EXPECT_TRUE(kernels::gptq::PackLayout{3}.straddles(10));
  EXPECT_TRUE(kernels::gptq::PackLayout{3}.straddles(21));
  EXPECT_FALSE(kernels::gptq::PackLayout{3}.straddles(11));
}

TEST(GptqLayout, PackUnpackRoundTripsEveryWidth) {
  for (int bits : {2, 3, 4, 8}) {
    const int64_t k = 64, n = 5;
    std::vector<uint8_t> codes(k * n);
    for (size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<uint8_t>((i * 7 + 3) % (1u << bits));
    const auto packed = ref::gptq::pack_qweight(codes.data(), k, n, bits);
    EXPECT_EQ(static_cast<int64_t>(packed.size()), k * bits / 32 * n);
    EXPECT_EQ(ref::gptq::unpack_qweight(packed.data(), k, n, bits), codes) << bits;
  }
}

TEST(GptqLayout, V1ZeroQuirkAndAwqOrder) {
  const uint32_t sym4 = 0x77777777u, sym8 = 0x7F7F7F7Fu;
  EXPECT_EQ(ref::gptq::unpack_qzeros(&sym4, 1, 8, 4, true), std::vector<uint8_t>(8, 8));
  EXPECT_EQ(ref::gptq::unpack_qzeros(&sym4, 1, 8, 4, false), std::vector<uint8_t>(8, 7));
  EXPECT_EQ(ref::gptq::unpack_qzeros(&sym8, 1, 4, 8, true), std::vector<uint8_t>(4, 128));
  // v1's overflow: a stored mask value (true zero 0 written as -1) reads back as 0.
  const uint32_t all_ones = 0xFFFFFFFFu;
  EXPECT_EQ(ref::gptq::unpack_qzeros(&all_ones, 1, 8, 4, true), std::vector<uint8_t>(8, 0));
  // AWQ: nibble i holds column kOrder[i]; a word whose nibble i is i reads columns as kReverseOrder.
  const uint32_t word = 0x76543210u;
  EXPECT_EQ(ref::awq::unpack(&word, 1, 8), (std::vector<uint8_t>{0, 4, 1, 5, 2, 6, 3, 7}));
  EXPECT_EQ(ref::awq::pack(ref::awq::unpack(&word, 1, 8).data(), 1, 8), std::vector<uint32_t>{word});
}

TEST(GptqLayout, GemvOrderPairsAdjacentCodes) {
  // Code i of a word is i + 1 (masked), so every field says which code it holds.
  for (int bits : {2, 4, 8}) {
    const int codes = 32 / bits, half = codes / 2;
    const uint32_t mask = (1u << bits) - 1u;
    uint32_t word = 0;
    for (int i = 0; i < codes; ++i) word |= ((static_cast<uint32_t>(i) + 1u) & mask) << (bits * i);
    const uint32_t g = kernels::gptq::to_gemv_word(word, bits);
    for (int p = 0; p < half; ++p) {
      EXPECT_EQ((g >> (bits * p)) & mask, ((2u * p) + 1u) & mask) << bits << " field " << p;
      EXPECT_EQ((g >> (bits * (p + half))) & mask, ((2u * p) + 2u) & mask) << bits << " field " << p + half;
    }
    EXPECT_EQ(kernels::gptq::from_gemv_word(g, bits), word) << bits;
  }
  std::mt19937 rng(5);
  for (int bits : {2, 4, 8}) {
    for (int r = 0; r < 1000; ++r) {
      const uint32_t w = rng();
      EXPECT_EQ(kernels::gptq::from_gemv_word(kernels::gptq::to_gemv_word(w, bits), bits), w);
    }
  }
  EXPECT_FALSE(kernels::gptq::gemv_order_applies(3));
}

TEST(GptqLayout, LayersTakeEitherOrderAndWriteTheCheckpoints) {
  const Fixture& f = fixtures().front();
  const auto layer = make_linear(spec_of(f, DType::BF16), f.config, Shard::none(), open(f).pp("layer"));
  const auto& gptq = dynamic_cast<const GptqLinear&>(*layer);
  ASSERT_TRUE(kernels::gptq::gemv_order_applies(gptq.weights().bits));
  EXPECT_EQ(gptq.weights().qweight_order, QweightOrder::kCheckpoint);  // CPU layers hold checkpoint order
  // The same weights in the GEMV's order: a CPU layer converts them back.
  GptqWeights w = gptq.weights();
  std::vector<uint32_t> words(static_cast<size_t>(w.qweight.numel()));
  std::memcpy(words.data(), w.qweight.data(), words.size() * 4);
  for (uint32_t& word : words) word = kernels::gptq::to_gemv_word(word, w.bits);
  w.qweight = Tensor::from_bytes(words.data(), w.qweight.shape(), DType::I32);
  w.qweight_order = QweightOrder::kGemv;
  const GptqLinear again(layer->name(), w);
  EXPECT_EQ(again.weights().qweight_order, QweightOrder::kCheckpoint);
  EXPECT_TRUE(again.weights().qweight.equal(gptq.weights().qweight));
  const Tensor x = random_input(3, f.k, DType::BF16, 23);
  EXPECT_TRUE(again.forward(x, Context::cpu()).equal(layer->forward(x, Context::cpu())));
  EXPECT_EQ(again.serialize(), layer->serialize());
  // 3-bit words have no GEMV order.
  GptqWeights three = w;
  three.bits = 3;
  EXPECT_THAT(error_of([&] { const GptqLinear bad("gptq", three); }, ErrorCode::kInvalidArgument),
              testing::HasSubstr("gptq layer: 3-bit qweight has no GEMV order"));
}

// ---- fixtures -----------------------------------------------------------------------------------------------

TEST_P(GptqFixture, UnpackGivesTheQuantizersValues) {
  const Fixture& f = GetParam();
  const VarBuilder vb = open(f);
  const VarBuilder l = vb.pp("layer"), e = vb.pp("expected");
  const auto codes = bytes(e.get_unchecked("codes")), zeros = bytes(e.get_unchecked("zeros"));
  const int64_t groups = e.info("zeros").shape[0];
  if (f.method() == "gptq") {
    const int bits = f.qc.at("bits");
    const bool v1 = f.qc.at("checkpoint_format") == "gptq";
    EXPECT_EQ(ref::gptq::unpack_qweight(words(l.get_unchecked("qweight")).data(), f.k, f.n, bits), codes);
    EXPECT_EQ(ref::gptq::unpack_qzeros(words(l.get_unchecked("qzeros")).data(), groups, f.n, bits, v1), zeros);
    EXPECT_EQ(ints(l.get_unchecked("g_idx")), ints(e.get_unchecked("g_idx")));
  } else if (f.method() == "awq") {
    EXPECT_EQ(ref::awq::unpack(words(l.get_unchecked("qweight")).data(), f.k, f.n), codes);
    EXPECT_EQ(ref::awq::unpack(words(l.get_unchecked("qzeros")).data(), groups, f.n), zeros);
  } else {
    const auto& w = f.qc.at("config_groups").at("group_0").at("weights");
    const int bits = w.at("num_bits");
    EXPECT_EQ(ref::gptq::unpack_ct_weight(words(l.get_unchecked("weight_packed")).data(), f.k, f.n, bits), codes);
    if (!w.at("symmetric").get<bool>())
      EXPECT_EQ(ref::gptq::unpack_ct_zero_point(words(l.get_unchecked("weight_zero_point")).data(), groups, f.n, bits),
                zeros);
  }
}

TEST_P(GptqFixture, DequantizedWeightIsExact) {
  const Fixture& f = GetParam();
  const auto want = expected_weight(f);
  const auto layer = make_linear(spec_of(f), f.config, Shard::none(), open(f).pp("layer"));
  EXPECT_EQ(layer->name(), f.method());
  EXPECT_EQ(layer->dtype(), DType::F32);
  const Tensor w = layer->dequantize_weight(Context::cpu());
  EXPECT_EQ(w.shape(), (Shape{f.n, f.k}));
  EXPECT_EQ(w.to_doubles(), want);  // f16/bf16 scale × small integer: exact in float
  // In a 16-bit compute dtype the weight is the exact value rounded once.
  const auto half = make_linear(spec_of(f, DType::F16), f.config, Shard::none(), open(f).pp("layer"));
  std::vector<float> wantf(want.begin(), want.end());
  EXPECT_TRUE(half->dequantize_weight(Context::cpu()).equal(Tensor::from_floats(wantf, {f.n, f.k}, DType::F16)));
}

TEST_P(GptqFixture, ForwardMatchesFloat64DequantizeThenMatmul) {
  const Fixture& f = GetParam();
  const auto w = expected_weight(f);
  std::optional<std::vector<double>> bias;
  if (f.bias) bias = open(f).pp("layer").get_unchecked("bias").to_doubles();
  for (DType dt : {DType::BF16, DType::F16, DType::F32}) {
    const auto layer = make_linear(spec_of(f, dt), f.config, Shard::none(), open(f).pp("layer"));
    const Tensor x = random_input(6, f.k, dt, 7).reshape({2, 3, f.k});
    const Tensor y = layer->forward(x, Context::cpu(2));
    EXPECT_EQ(y.shape(), (Shape{2, 3, f.n}));
    EXPECT_EQ(y.dtype(), dt);
    const double err = rel_error(y.to_doubles(), matmul_ref(x, w, f.n, bias ? &*bias : nullptr));
    EXPECT_LT(err, dt == DType::F32 ? 1e-6 : dt == DType::BF16 ? 1e-2 : 2e-3) << dtype_name(dt);
  }
}

TEST_P(GptqFixture, ColumnShardsAreSlicesOfTheFullLayer) {
  const Fixture& f = GetParam();
  const VarBuilder vb = open(f).pp("layer");
  const auto full = make_linear(spec_of(f), f.config, Shard::none(), vb);
  const Tensor x = random_input(3, f.k, DType::F32, 11);
  const auto full_w = full->dequantize_weight(Context::cpu()).to_doubles();
  const auto full_y = full->forward(x, Context::cpu(1)).to_doubles();
  for (int world : {2, 4}) {
    const int64_t part = f.n / world;
    run_ranks(world, [&](int rank, Comm& comm) {
      const auto layer = ColumnParallelLinear::load(spec_of(f), f.config, comm, vb);
      EXPECT_EQ(layer->out_features(), part);
      const auto w = layer->dequantize_weight(Context::cpu()).to_doubles();
      EXPECT_TRUE(std::equal(w.begin(), w.end(), full_w.begin() + rank * part * f.k)) << "world " << world;
      const auto y = layer->forward(x, Context::cpu(1)).to_doubles();
      for (int64_t i = 0; i < 3; ++i)
        for (int64_t j = 0; j < part; ++j)
          ASSERT_EQ(y[i * part + j], full_y[i * f.n + rank * part + j]) << "world " << world << " rank " << rank;
    });
  }
}

TEST_P(GptqFixture, RowShardsAreSlicesAndReduceToTheFullOutput) {
  const Fixture& f = GetParam();
  const VarBuilder vb = open(f).pp("layer");
  const auto full = make_linear(spec_of(f), f.config, Shard::none(), vb);
  const auto full_w = full->dequantize_weight(Context::cpu()).to_doubles();
  const Tensor x = random_input(3, f.k, DType::F32, 13);
  const auto want = full->forward(x, Context::cpu(1)).to_doubles();  // bias included, once
  for (int world : {2, 4}) {
    const int64_t part = f.k / world;
    run_ranks(world, [&](int rank, Comm& comm) {
      std::shared_ptr<Comm> c(&comm, [](Comm*) {});
      const auto layer = RowParallelLinear::load(spec_of(f), f.config, c, vb);
      EXPECT_EQ(layer->in_features(), part);
      EXPECT_EQ(layer->dequantize_weight(Context::cpu()).to_doubles(), columns(full_w, f.n, f.k, rank * part, part))
          << "world " << world << " rank " << rank;
      const auto y = layer->forward(x.narrow(1, rank * part, part), Context::cpu(1)).to_doubles();
      EXPECT_LT(rel_error(y, want), 1e-6) << "world " << world;
    });
  }
}

TEST_P(GptqFixture, SerializeRoundTrips) {
  const Fixture& f = GetParam();
  const auto layer = make_linear(spec_of(f, DType::BF16), f.config, Shard::none(), open(f).pp("layer"));
  const auto back = deserialize_linear(layer->serialize(), Device::cpu());
  EXPECT_EQ(back->name(), layer->name());
  EXPECT_EQ(back->dtype(), DType::BF16);
  EXPECT_TRUE(back->dequantize_weight(Context::cpu()).equal(layer->dequantize_weight(Context::cpu())));
  const Tensor x = random_input(2, f.k, DType::BF16, 17);
  EXPECT_TRUE(back->forward(x, Context::cpu()).equal(layer->forward(x, Context::cpu())));
}

INSTANTIATE_TEST_SUITE_P(All, GptqFixture, testing::ValuesIn(fixtures()), fixture_name);

// ---- sharding details ---------------------------------------------------------------------------------------

TEST(GptqSharding, RanksReadOnlyTheirBytes) {
  const Fixture& f = fixtures().front();  // gptq 4-bit g32
  const auto file = std::make_shared<io::SafetensorsSet>(io::SafetensorsSet::open(f.file));
  const size_t qweight_bytes = file->info("layer.qweight").shape[0] * f.n * 4;
  for (int world : {2, 4}) {
    run_ranks(world, [&](int, Comm& comm) {
      auto counting = std::make_shared<CountingSource>(file);
      std::shared_ptr<Comm> c(&comm, [](Comm*) {});
      RowParallelLinear::load(spec_of(f, DType::F32, false), f.config, c, VarBuilder(counting).pp("layer"));
      EXPECT_EQ(counting->bytes_of("qweight"), qweight_bytes / world);
      auto col = std::make_shared<CountingSource>(file);
      ColumnParallelLinear::load(spec_of(f), f.config, comm, VarBuilder(col).pp("layer"));
      EXPECT_EQ(col->bytes_of("qweight"), qweight_bytes / world);
      EXPECT_EQ(col->bytes_of("scales"), file->info("layer.scales").shape[0] * f.n * 2 / world);
    });
  }
}

TEST(GptqSharding, ActOrderRowShardKeepsOnlyTheGroupsItUses) {
  // 4-bit, K = 128 in groups of 32, with g_idx chosen so that rank 0 of 2 uses groups {1, 3} only and rank 1
  // groups {0, 2}: each rank keeps 2 scale rows and still dequantizes to its exact slice of W.
  const int64_t n = 16, k = 128, g = 32;
  std::vector<int32_t> g_idx(k);
  for (int64_t i = 0; i < k; ++i) g_idx[i] = static_cast<int32_t>(i < 64 ? (i % 2 ? 1 : 3) : (i % 2 ? 0 : 2));
  std::vector<uint8_t> codes(k * n), zeros(4 * n);
  std::vector<float> scales(4 * n);
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<uint8_t>((i * 5 + 1) % 16);
  for (size_t i = 0; i < zeros.size(); ++i) zeros[i] = static_cast<uint8_t>(7 + i % 3), scales[i] = 0.125f * (1 + i % 5);
  std::vector<uint8_t> stored(zeros);
  for (uint8_t& z : stored) z = static_cast<uint8_t>(z - 1);  // v1
  const auto qweight = ref::gptq::pack_qweight(codes.data(), k, n, 4);
  std::vector<uint8_t> zt(n * 4);  // pack_qweight packs along its first dim: give it zeros transposed
  for (int64_t gg = 0; gg < 4; ++gg)
    for (int64_t j = 0; j < n; ++j) zt[j * 4 + gg] = stored[gg * n + j];
  const auto qz_t = ref::gptq::pack_qweight(zt.data(), n, 4, 4);  // [n/8, 4]
  std::vector<uint32_t> qzeros(4 * n / 8);
  for (int64_t gg = 0; gg < 4; ++gg)
    for (int64_t c = 0; c < n / 8; ++c) qzeros[gg * (n / 8) + c] = qz_t[c * 4 + gg];
  auto src = std::make_shared<MemorySource>();
  src->add("l.qweight", Tensor::from_bytes(qweight.data(), {k / 8, n}, DType::I32));
  src->add("l.qzeros", Tensor::from_bytes(qzeros.data(), {4, n / 8}, DType::I32));
  src->add("l.scales", Tensor::from_floats(scales, {4, n}, DType::F16));
  src->add("l.g_idx", Tensor::from_bytes(g_idx.data(), {k}, DType::I32));
  const GptqConfig cfg{.bits = 4, .group_size = g, .desc_act = true};
  std::vector<double> full(n * k);
  for (int64_t kk = 0; kk < k; ++kk)
    for (int64_t j = 0; j < n; ++j) {
      const int64_t gg = g_idx[kk];
      full[j * k + kk] = scales[gg * n + j] * (static_cast<double>(codes[kk * n + j]) - zeros[gg * n + j]);
    }
  run_ranks(2, [&](int rank, Comm& comm) {
    std::shared_ptr<Comm> c(&comm, [](Comm*) {});
    const auto layer = RowParallelLinear::load({.in_features = k, .out_features = n, .dtype = DType::F32}, cfg, c,
                                               VarBuilder(src).pp("l"));
    const auto& inner = dynamic_cast<const GptqLinear&>(*dynamic_cast<const RowParallelLinear&>(*layer).inner());
    EXPECT_EQ(inner.weights().groups(), 2);
    ASSERT_TRUE(inner.weights().g_idx.has_value());
    EXPECT_EQ(layer->dequantize_weight(Context::cpu()).to_doubles(), columns(full, n, k, rank * 64, 64));
  });
}

TEST(GptqSharding, MergedPartsShardOnTheirOwn) {
  // gate|up stored fused: 32 + 32 outputs, each split over 2 ranks (16 = two qzeros words of 8).
  const Fixture& f = fixtures().front();
  const VarBuilder vb = open(f).pp("layer");
  const auto full_w = make_linear(spec_of(f, DType::F32, false), f.config, Shard::none(), vb)
                          ->dequantize_weight(Context::cpu())
                          .to_doubles();
  run_ranks(2, [&](int rank, Comm& comm) {
    const auto parts = ColumnParallelLinear::load_merged(f.k, {32, 32}, false, DType::F32, f.config, comm, vb);
    ASSERT_EQ(parts.size(), 2u);
    for (int p = 0; p < 2; ++p) {
      const auto w = parts[p]->dequantize_weight(Context::cpu()).to_doubles();
      EXPECT_TRUE(std::equal(w.begin(), w.end(), full_w.begin() + (p * 32 + rank * 16) * f.k));
    }
  });
}

namespace {
const Fixture& named(std::string_view name) {
  for (const Fixture& f : fixtures())
    if (f.name == name) return f;
  throw std::runtime_error("no fixture " + std::string(name));
}

// Loads `f` column- (dim 0) or row-parallel (dim 1) at `world` through a counting source; returns the alignment
// error's message after checking that every rank failed before reading anything.
std::string misaligned(const Fixture& f, int dim, int world) {
  std::vector<std::string> messages(world);
  const auto file = std::make_shared<io::SafetensorsSet>(io::SafetensorsSet::open(f.file));
  run_ranks(world, [&](int rank, Comm& comm) {
    auto counting = std::make_shared<CountingSource>(file);
    const VarBuilder vb = VarBuilder(counting).pp("layer");
    std::shared_ptr<Comm> c(&comm, [](Comm*) {});
    messages[rank] = error_of(
        [&] {
          if (dim == 0) ColumnParallelLinear::load(spec_of(f), f.config, comm, vb);
          else RowParallelLinear::load(spec_of(f), f.config, c, vb);
        },
        ErrorCode::kAlignment);
    EXPECT_EQ(counting->reads(), 0u) << "read before the alignment check";
  });
  return messages[0];
}
}  // namespace

TEST(GptqSharding, EveryMisalignmentIsOneClearError) {
  using testing::HasSubstr;
  struct Case {
    const char* fixture;
    int dim;
    int world;
    std::vector<std::string> says;
  };
  const std::vector<Case> cases = {
      // GPTQ 4-bit: N moves whole qzeros words (8 columns), K whole groups of 32.
      {"gptq_b4_g32_sym_v1", 0, 16, {"layer", "gptq", "dim 0", "= 64", "world size 16", "multiple of 8", "qzeros"}},
      {"gptq_b4_g32_sym_v1", 1, 16, {"layer", "dim 1", "= 256", "world size 16", "multiple of 32", "groups of 32"}},
      {"gptq_b4_g32_sym_v1", 0, 3, {"dim 0", "world size 3", "64 is not divisible by 3"}},
      {"gptq_b4_g32_sym_v1", 1, 3, {"dim 1", "world size 3", "256 is not divisible by 3"}},
      // 3-bit: 32 columns per 3-word qzeros block.
      {"gptq_b3_g32_asym_v1", 0, 8, {"dim 0", "= 128", "world size 8", "multiple of 32", "3 int32 words"}},
      // 8-bit g64: K in whole groups of 64.
      {"gptq_b8_g64_sym_v1", 1, 8, {"dim 1", "world size 8", "multiple of 64"}},
      // Group -1: K only needs whole qweight words.
      {"gptq_b4_gall_sym_v1", 1, 64, {"dim 1", "world size 64", "multiple of 8"}},
      // Act-order keeps the same rule.
      {"gptq_b4_g32_actorder_asym_v1", 1, 16, {"dim 1", "multiple of 32"}},
      {"awq_b4_g32", 0, 16, {"awq", "dim 0", "world size 16", "multiple of 8"}},
      {"awq_b4_g32", 1, 16, {"awq", "dim 1", "world size 16", "multiple of 32"}},
      {"ct_int4_g32_asym", 0, 16, {"compressed-tensors", "dim 0", "multiple of 8", "weight_zero_point"}},
      {"ct_int4_g32_sym", 0, 3, {"compressed-tensors", "dim 0", "64 is not divisible by 3"}},
      {"ct_int8_g64_sym", 1, 8, {"compressed-tensors", "dim 1", "world size 8", "multiple of 64"}},
  };
  for (const Case& c : cases) {
    const std::string msg = misaligned(named(c.fixture), c.dim, c.world);
    for (const std::string& s : c.says) EXPECT_THAT(msg, HasSubstr(s)) << c.fixture;
  }
  // An explicit range (a merged part) that cuts a packed word.
  const Fixture& f = named("gptq_b4_g32_sym_v1");
  const std::string msg = error_of(
      [&] { make_linear(spec_of(f, DType::F32, false), f.config, Shard::offset(0, 4, 8), open(f).pp("layer")); },
      ErrorCode::kAlignment);
  EXPECT_THAT(msg, HasSubstr("shard [4, 12) of dim 0"));
  EXPECT_THAT(msg, HasSubstr("multiples of 8"));
  // Symmetric compressed-tensors can split N anywhere.
  run_ranks(4, [&](int, Comm& comm) {
    EXPECT_NO_THROW(ColumnParallelLinear::load(spec_of(named("ct_int4_g32_sym")), named("ct_int4_g32_sym").config, comm,
                                               open(named("ct_int4_g32_sym")).pp("layer")));
  });
  // The registry states the same alignment.
  EXPECT_EQ(shard_alignment(named("gptq_b3_g32_asym_v1").config, 0), 32);
  EXPECT_EQ(shard_alignment(named("gptq_b4_g32_sym_v1").config, 1), 32);
  EXPECT_EQ(shard_alignment(named("awq_b4_g32").config, 0), 8);
}

// ---- configuration and errors -------------------------------------------------------------------------------

TEST(GptqConfigs, DynamicRulesOverrideBitsAndGroups) {
  // A 4-bit config whose GPTQModel rule makes this module 8-bit g64 loads the 8-bit fixture.
  const Fixture& f8 = named("gptq_b8_g64_sym_v1");
  GptqConfig c{.bits = 4, .group_size = 32};
  c.dynamic.push_back({.pattern = "lay.*", .bits = 8, .group_size = 64});
  const auto layer = make_linear(spec_of(f8), c, Shard::none(), open(f8).pp("layer"));
  EXPECT_EQ(dynamic_cast<const GptqLinear&>(*layer).weights().bits, 8);
  EXPECT_EQ(layer->dequantize_weight(Context::cpu()).to_doubles(), expected_weight(f8));
}

TEST(GptqConfigs, UnsupportedLayoutsAndShapesAreClear) {
  const Fixture& f = named("gptq_b4_g32_sym_v1");
  using testing::HasSubstr;
  EXPECT_THAT(error_of([&] { make_linear(spec_of(f), GptqConfig{.checkpoint_format = GptqFormat::kMarlin}, Shard::none(), open(f).pp("layer")); },
                       ErrorCode::kUnsupported),
              HasSubstr("marlin"));
  EXPECT_THAT(error_of([&] { make_linear(spec_of(f), AwqConfig{.version = AwqVersion::kGemvFast}, Shard::none(), open(f).pp("layer")); },
                       ErrorCode::kUnsupported),
              HasSubstr("gemv_fast"));
  EXPECT_THAT(error_of([&] { make_linear(spec_of(f), GptqConfig{.bits = 5}, Shard::none(), open(f).pp("layer")); },
                       ErrorCode::kUnsupported),
              HasSubstr("bits=5"));
  // The wrong logical size: qweight's shape does not match, named with the tensor.
  EXPECT_THAT(error_of([&] { make_linear({.in_features = 512, .out_features = 64}, f.config, Shard::none(), open(f).pp("layer")); },
                       ErrorCode::kShape),
              HasSubstr("layer.qweight"));
  // Missing tensors name what was looked for.
  EXPECT_THAT(error_of([&] { make_linear(spec_of(f), f.config, Shard::none(), open(f).pp("nothing")); }, ErrorCode::kNotFound),
              HasSubstr("nothing.qweight"));
  // An input of the wrong dtype.
  const auto layer = make_linear(spec_of(f, DType::BF16), f.config, Shard::none(), open(f).pp("layer"));
  EXPECT_THROW(layer->forward(random_input(1, f.k, DType::F16, 1), Context::cpu()), Error);
  // The compute dtype defaults to the builder's, then to the stored scales' (F16 for GPTQ, never forced).
  EXPECT_EQ(make_linear(spec_of(f, std::nullopt), f.config, Shard::none(), open(f).pp("layer"))->dtype(), DType::F16);
  const Fixture& ct = named("ct_int4_g32_sym");
  EXPECT_EQ(make_linear(spec_of(ct, std::nullopt), ct.config, Shard::none(), open(ct).pp("layer"))->dtype(), DType::BF16);
  VarBuilder bf = open(f);
  bf.set_dtype(DType::BF16);
  EXPECT_EQ(make_linear(spec_of(f, std::nullopt), f.config, Shard::none(), bf.pp("layer"))->dtype(), DType::BF16);
}

TEST(GptqConfigs, LogicalShapeFromPackedTensors) {
  for (const Fixture& f : fixtures()) {
    const auto s = logical_weight_shape(f.config, open(f).pp("layer"));
    ASSERT_TRUE(s.has_value()) << f.name;
    EXPECT_EQ(*s, (Shape{f.n, f.k})) << f.name;
  }
}
