// VarBuilder over the sharded fixture checkpoint and over in-memory tensors: prefixes, shape checks, shards,
// default dtype and device, and the messages a user sees when a name or a shape is wrong.
#include <gtest/gtest.h>

#include "tests/common/error_of.hpp"
#include "tpq/io/safetensors.hpp"
#include "tpq/io/var_builder.hpp"
#include "tpq/tpq.hpp"

using namespace tpq;
using test::error_of;
using namespace tpq::io;
namespace fs = std::filesystem;

namespace {

fs::path checkpoint() { return fs::path(TPQ_FIXTURES_DIR) / "safetensors" / "sharded"; }

Tensor iota(const Shape& s, DType dtype = DType::F32) {
  std::vector<float> v(shape_numel(s));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  return Tensor::from_floats(v, s, dtype);
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(VarBuilder, PrefixesJoinWithDotsAndSkipEmptyParts) {
  const VarBuilder vb(std::make_shared<MemorySource>());
  EXPECT_EQ(vb.prefix(), "");
  EXPECT_EQ(vb.pp("").prefix(), "");
  const VarBuilder layer = vb.pp("model").pp("").pp("layers").pp(3);
  EXPECT_EQ(layer.prefix(), "model.layers.3");
  EXPECT_EQ(layer.pp("mlp").full_name("up_proj.weight"), "model.layers.3.mlp.up_proj.weight");
  EXPECT_EQ(vb.full_name("lm_head.weight"), "lm_head.weight");
  EXPECT_EQ(vb.pp("model.layers").pp(0).prefix(), "model.layers.0");
  EXPECT_EQ(layer.prefix(), "model.layers.3");  // pp never changes the builder it is called on
}

TEST(VarBuilder, GetsFromTheIndexedCheckpoint) {
  const VarBuilder vb = VarBuilder::from_safetensors(checkpoint());
  const VarBuilder mlp = vb.pp("model").pp("layers").pp(0).pp("mlp");
  EXPECT_TRUE(mlp.contains("up_proj.weight"));
  EXPECT_FALSE(mlp.contains("gate_proj.weight"));
  EXPECT_EQ(mlp.info("down_proj.weight").shape, (Shape{4, 8}));
  const Tensor up = mlp.get({8, 4}, "up_proj.weight");
  EXPECT_EQ(up.dtype(), DType::F32);
  EXPECT_EQ(up.to_floats()[5], 1.25f);
  for (int world : {1, 2, 4}) {
    for (int rank = 0; rank < world; ++rank) {
      for (int dim : {0, 1}) {
        const Shard s = Shard::simple(dim, rank, world);
        EXPECT_TRUE(mlp.get({8, 4}, "up_proj.weight", s).equal(s.apply_to(up))) << s.str();
      }
    }
  }
  const Tensor bias = vb.pp("model.layers.1.self_attn").get_unchecked("q_proj.bias", Shard::simple(0, 1, 2));
  EXPECT_EQ(bias.dtype(), DType::F16);
  EXPECT_EQ(bias.to_floats(), (std::vector<float>{4, 5, 6, 7}));
}

TEST(VarBuilder, DefaultDtypeConvertsPlainFloatsOnly) {
  VarBuilder vb = VarBuilder::from_safetensors(checkpoint(), DType::BF16);
  const Tensor up = vb.get({8, 4}, "model.layers.0.mlp.up_proj.weight", Shard::simple(0, 1, 2));
  EXPECT_EQ(up.dtype(), DType::BF16);
  EXPECT_EQ(up.shape(), (Shape{4, 4}));
  EXPECT_EQ(up.to_floats()[0], 4.0f);  // element 16 of (i * 0.25)
  // Packed integer weights keep their stored type unless a dtype is asked for.
  const VarBuilder attn = vb.pp("model.layers.1.self_attn");
  EXPECT_EQ(attn.get({2, 8}, "q_proj.qweight").dtype(), DType::I32);
  const Tensor qf = attn.get({2, 8}, "q_proj.qweight", Shard::none(), DType::F64);
  EXPECT_EQ(qf.dtype(), DType::F64);
  EXPECT_EQ(qf.to_doubles()[1], 16843009.0);
  // An explicit dtype wins over the default; the stored type when none is set.
  EXPECT_EQ(vb.get({8, 4}, "lm_head.weight", Shard::none(), DType::F32).dtype(), DType::F32);
  vb.set_dtype(std::nullopt);
  EXPECT_EQ(vb.get({8, 4}, "lm_head.weight").dtype(), DType::BF16);
  EXPECT_EQ(vb.get({8}, "model.layers.1.self_attn.q_proj.bias").dtype(), DType::F16);
}

TEST(VarBuilder, ShapeMismatchNamesTensorFileAndBothShapes) {
  const VarBuilder vb = VarBuilder::from_safetensors(checkpoint() / "model.safetensors.index.json");
  const std::string msg = error_of(
      [&] {
        vb.pp("model.layers.0.mlp").get({4, 8}, "up_proj.weight");
      },
      ErrorCode::kShape);
  EXPECT_TRUE(has(msg, "model.layers.0.mlp.up_proj.weight")) << msg;
  EXPECT_TRUE(has(msg, "model-00001-of-00002.safetensors")) << msg;
  EXPECT_TRUE(has(msg, "expected shape [4, 8]")) << msg;
  EXPECT_TRUE(has(msg, "found [8, 4]")) << msg;
}

TEST(VarBuilder, MissingTensorNamesFullNameAndWhereItLooked) {
  const VarBuilder vb = VarBuilder::from_safetensors(checkpoint());
  const VarBuilder mlp = vb.pp("model").pp("layers").pp(0).pp("mlp");
  for (const std::string& msg : {error_of(
                                     [&] {
                                       mlp.get({8, 4}, "gate_proj.weight");
                                     },
                                     ErrorCode::kNotFound),
                                 error_of([&] { mlp.get_unchecked("gate_proj.weight"); }, ErrorCode::kNotFound),
                                 error_of([&] { mlp.info("gate_proj.weight"); }, ErrorCode::kNotFound)}) {
    EXPECT_TRUE(has(msg, "'model.layers.0.mlp.gate_proj.weight'")) << msg;
    EXPECT_TRUE(has(msg, (checkpoint() / "model.safetensors.index.json").string())) << msg;
  }
}

TEST(VarBuilder, ShardErrorsNameTheTensor) {
  const VarBuilder vb = VarBuilder::from_safetensors(checkpoint());
  const std::string msg = error_of(
      [&] {
        vb.get({8, 4}, "lm_head.weight", Shard::simple(1, 0, 3));
      },
      ErrorCode::kAlignment);
  EXPECT_TRUE(has(msg, "lm_head.weight")) << msg;
  EXPECT_TRUE(has(msg, "world size 3")) << msg;
}

TEST(VarBuilder, MemorySource) {
  auto src = std::make_shared<MemorySource>("engine weights");
  src->add("w", iota({6, 4})).add("b", iota({6}, DType::BF16)).add("q", iota({2, 3}, DType::I32));
  const std::string dup = error_of([&] { src->add("w", iota({1})); }, ErrorCode::kInvalidArgument);
  EXPECT_TRUE(has(dup, "'w'")) << dup;
  EXPECT_EQ(src->names(), (std::vector<std::string>{"b", "q", "w"}));
  EXPECT_EQ(src->info("w").file, "engine weights");

  VarBuilder vb(src, DType::F16);
  const Tensor w = vb.get({6, 4}, "w", Shard::simple(1, 1, 2));
  EXPECT_EQ(w.dtype(), DType::F16);
  EXPECT_EQ(w.shape(), (Shape{6, 2}));
  EXPECT_EQ(w.to_floats()[0], 2.0f);
  EXPECT_EQ(w.to_floats()[2], 6.0f);
  EXPECT_EQ(vb.get({6}, "b", Shard::simple(0, 2, 3)).to_floats(), (std::vector<float>{4, 5}));
  EXPECT_EQ(vb.get({2, 3}, "q").dtype(), DType::I32);
  // Without conversion a dim-0 shard is a view of the engine's tensor.
  vb.set_dtype(std::nullopt);
  EXPECT_EQ(vb.get({6, 4}, "w", Shard::simple(0, 1, 2)).data_as<float>(),
            src->read("w", Shard::none(), Device::cpu()).data_as<float>() + 12);

  std::string msg = error_of([&] { vb.pp("layer").get({6, 4}, "w"); }, ErrorCode::kNotFound);
  EXPECT_TRUE(has(msg, "'layer.w'")) << msg;
  EXPECT_TRUE(has(msg, "engine weights")) << msg;
  msg = error_of([&] { vb.get({4, 6}, "w"); }, ErrorCode::kShape);
  EXPECT_TRUE(has(msg, "'w'") && has(msg, "engine weights") && has(msg, "expected shape [4, 6]") &&
              has(msg, "found [6, 4]"))
      << msg;
}

TEST(VarBuilder, UnconvertibleDtypeIsUnsupportedNamingTheTensor) {
  const VarBuilder vb =
      VarBuilder::from_safetensors(fs::path(TPQ_FIXTURES_DIR) / "safetensors" / "all_dtypes.safetensors");
  const std::string msg = error_of([&] { vb.get({3}, "c64", Shard::none(), DType::F32); }, ErrorCode::kUnsupported);
  EXPECT_TRUE(has(msg, "'c64'") && has(msg, "all_dtypes.safetensors")) << msg;
  // Every convertible dtype of the fixture converts to F32 on request, to the values numpy wrote.
  EXPECT_EQ(vb.get({}, "scalar_i64", Shard::none(), DType::F32).to_floats(), std::vector<float>{-7.0f});
  EXPECT_EQ(vb.get({2, 7}, "f8_e4m3", Shard::none(), DType::F32).to_floats()[12], 448.0f);
}

TEST(VarBuilder, PlacesTensorsOnTheDefaultDevice) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  VarBuilder vb = VarBuilder::from_safetensors(checkpoint(), DType::BF16, Device::cuda(0));
  const Tensor up = vb.get({8, 4}, "model.layers.0.mlp.up_proj.weight", Shard::simple(1, 1, 2));
  EXPECT_TRUE(up.device().is_cuda());
  EXPECT_EQ(up.dtype(), DType::BF16);
  vb.set_dtype(std::nullopt);
  const Tensor q = vb.get({2, 8}, "model.layers.1.self_attn.q_proj.qweight", Shard::simple(1, 0, 2));
  EXPECT_TRUE(q.device().is_cuda());
  EXPECT_EQ(q.to_doubles()[1], 16843009.0);
}
