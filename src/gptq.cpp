// GPTQ-family backend: loads GPTQ (v1/v2), AWQ GEMM and compressed-tensors pack-quantized checkpoints into
// GptqWeights, this rank's shard only, and runs them (CPU: the float reference; CUDA: src/cuda/woq.cpp).
#include "tpq/quant/gptq.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <regex>

#include "kernels/awq/reference.hpp"
#include "kernels/common/reference.hpp"
#include "kernels/gptq/reference.hpp"
#include "tpq/detail/blob.hpp"
#include "tpq/quant/unquant.hpp"
#ifdef TPQ_WITH_CUDA
#include "src/cuda/woq_ops.hpp"
#endif

namespace tpq {

namespace {

using kernels::gptq::PackLayout;

constexpr std::string_view kBlobFormat = "gptq";

// ---------------------------------------------------------------------------------------------------------
// Shard plans

struct Range {
  int64_t start = 0;
  int64_t len = 0;
};

// This rank's outputs and inputs of the logical W[N, K].
struct ShardPlan {
  int dim = -1;  // -1: the whole weight
  Range n, k;
};

struct Alignment {
  int64_t multiple;
  std::string why;
};

// Resolves `shard` against W[n, k] and checks it against the format's alignment for that dimension, before any
// byte is read: one kAlignment error naming layer, dimension, size, world size (or the explicit range) and the
// multiple.
ShardPlan plan_shard(const io::VarBuilder& vb, std::string_view format, const Shard& shard, int64_t n, int64_t k,
                     const Alignment& along_n, const Alignment& along_k) {
  ShardPlan plan{.dim = -1, .n = {0, n}, .k = {0, k}};
  if (shard.is_none()) return plan;
  const int dim = shard.dim();
  TPQ_CHECK(dim == 0 || dim == 1, kInvalidArgument, "{}: {} layers shard dim 0 (outputs) or 1 (inputs), not {}",
            vb.prefix(), format, dim);
  const int64_t size = dim == 0 ? n : k;
  const Alignment& a = dim == 0 ? along_n : along_k;
  const char* what = dim == 0 ? "out_features N" : "in_features K";
  Range r;
  if (shard.kind() == Shard::Kind::kSimple) {
    const int64_t world = shard.world();
    const bool ok = size % world == 0 && (size / world) % a.multiple == 0;
    TPQ_CHECK(ok, kAlignment,
              "{}: {} cannot shard dim {} ({} = {}) over world size {}: each rank's part must be a multiple of {} "
              "({}); {}",
              vb.prefix(), format, dim, what, size, world, a.multiple, a.why,
              size % world != 0 ? fmt::format("{} is not divisible by {}", size, world)
                                : fmt::format("{} / {} = {}", size, world, size / world));
    r = {shard.rank() * (size / world), size / world};
  } else {
    const auto resolved = shard.resolve(dim == 0 ? Shape{n, k} : Shape{n, k}, vb.prefix());
    r = {resolved->start, resolved->len};
    TPQ_CHECK(r.start % a.multiple == 0 && r.len % a.multiple == 0, kAlignment,
              "{}: {} shard [{}, {}) of dim {} ({} = {}) must start and end on multiples of {} ({})", vb.prefix(),
              format, r.start, r.start + r.len, dim, what, size, a.multiple, a.why);
  }
  plan.dim = dim;
  (dim == 0 ? plan.n : plan.k) = r;
  return plan;
}

// ---------------------------------------------------------------------------------------------------------
// Reading

io::VarBuilder host_builder(const io::VarBuilder& vb) {
  io::VarBuilder host = vb;
  host.set_device(Device::cpu());
  return host;
}

// Checks a stored tensor's shape and that its dtype is one of `dtypes`, naming the tensor.
void expect_tensor(const io::VarBuilder& vb, std::string_view format, std::string_view name, const Shape& shape,
                   std::initializer_list<DType> dtypes) {
  TPQ_CHECK(vb.contains(name), kNotFound, "{}: {} layer needs tensor '{}' ({} [{}]), not found in {}", vb.prefix(),
            format, vb.full_name(name), *dtypes.begin(), fmt::join(shape, ", "), vb.source().describe());
  const io::TensorInfo i = vb.info(name);
  TPQ_CHECK(i.shape == shape, kShape, "{}: tensor '{}' in {}: expected shape [{}] for this {} layer, found [{}]",
            vb.prefix(), vb.full_name(name), i.file, fmt::join(shape, ", "), format, fmt::join(i.shape, ", "));
  const bool ok = std::find(dtypes.begin(), dtypes.end(), i.dtype) != dtypes.end();
  TPQ_CHECK(ok, kFormat, "{}: tensor '{}' in {} is {}; a {} layer needs {}", vb.prefix(), vb.full_name(name), i.file,
            i.dtype, format, fmt::join(dtypes, " or "));
}

// A packed I32/U32 tensor's words.
std::vector<uint32_t> words_of(const Tensor& t) {
  std::vector<uint32_t> w(static_cast<size_t>(t.numel()));
  if (!w.empty()) std::memcpy(w.data(), t.to(Device::cpu()).data(), w.size() * 4);
  return w;
}

std::vector<int32_t> ints_of(const Tensor& t) {
  const std::vector<double> d = t.to_doubles();
  return std::vector<int32_t>(d.begin(), d.end());
}

Tensor tensor_of(const std::vector<uint32_t>& words, const Shape& shape) {
  return Tensor::from_bytes(words.data(), shape, DType::I32);
}
Tensor tensor_of(const std::vector<int32_t>& v, const Shape& shape) { return Tensor::from_bytes(v.data(), shape, DType::I32); }
Tensor tensor_of(const std::vector<uint8_t>& v, const Shape& shape) { return Tensor::from_bytes(v.data(), shape, DType::U8); }

// Rows `rows` of a 2-d CPU tensor, in that order.
Tensor select_rows(const Tensor& t, const std::vector<int64_t>& rows) {
  const int64_t cols = t.dim(1);
  const size_t row_bytes = dtype_bytes_for(t.dtype(), cols);
  Tensor out = Tensor::empty({static_cast<int64_t>(rows.size()), cols}, t.dtype());
  for (size_t i = 0; i < rows.size(); ++i)
    std::memcpy(static_cast<char*>(out.data()) + i * row_bytes, static_cast<const char*>(t.data()) + rows[i] * row_bytes,
                row_bytes);
  return out;
}

std::vector<uint8_t> select_rows(const std::vector<uint8_t>& v, int64_t cols, const std::vector<int64_t>& rows) {
  std::vector<uint8_t> out(rows.size() * static_cast<size_t>(cols));
  for (size_t i = 0; i < rows.size(); ++i) std::memcpy(out.data() + i * cols, v.data() + rows[i] * cols, cols);
  return out;
}

DType compute_dtype(const LinearSpec& spec, const io::VarBuilder& vb, DType stored_scales, std::string_view format) {
  DType d = spec.dtype ? *spec.dtype : vb.dtype() ? *vb.dtype() : stored_scales;
  TPQ_CHECK(is_dense_compute_dtype(d), kUnsupported, "{}: {} layer cannot compute in {} (BF16, F16 or F32)",
            vb.prefix(), format, d);
  return d;
}

// The group tensors of a shard before the groups it does not use are dropped.
struct GroupParts {
  int64_t first_group = 0;            // stored group of row 0 of zeros/scales
  std::vector<uint8_t> zeros;         // [g_rows, n]
  Tensor scales;                      // [g_rows, n], compute dtype, CPU
  std::optional<std::vector<int32_t>> g_idx;  // stored group of each local row (act-order), when present
};

// Keeps the groups the local rows use ("remap" under act-order), renumbers g_idx to index them, drops g_idx when
// it is just row / group_size, and builds the weights.
GptqWeights finish(int bits, int64_t k, int64_t n, int64_t group_size, std::vector<uint32_t> qweight, GroupParts parts,
                   std::optional<Tensor> bias, const io::VarBuilder& vb, std::string_view g_idx_name) {
  const int64_t g_rows = parts.scales.dim(0);
  GptqWeights w;
  w.bits = bits;
  w.in_features = k;
  w.out_features = n;
  w.group_size = group_size;
  if (parts.g_idx) {
    std::vector<int32_t>& g = *parts.g_idx;
    std::vector<int64_t> used;
    for (int32_t v : g) {
      const int64_t local = static_cast<int64_t>(v) - parts.first_group;
      TPQ_CHECK(local >= 0 && local < g_rows, kFormat, "{}: '{}' refers to group {}, outside [{}, {})", vb.prefix(),
                vb.full_name(g_idx_name), v, parts.first_group, parts.first_group + g_rows);
      used.push_back(local);
    }
    std::sort(used.begin(), used.end());
    used.erase(std::unique(used.begin(), used.end()), used.end());
    if (static_cast<int64_t>(used.size()) < g_rows) {
      parts.scales = select_rows(parts.scales, used);
      parts.zeros = select_rows(parts.zeros, n, used);
    }
    std::vector<int32_t> index(static_cast<size_t>(g_rows), -1);
    for (size_t i = 0; i < used.size(); ++i) index[used[i]] = static_cast<int32_t>(i);
    bool trivial = true;
    for (int64_t r = 0; r < k; ++r) {
      g[r] = index[g[r] - parts.first_group];
      trivial = trivial && g[r] == r / group_size;
    }
    if (!trivial) w.g_idx = tensor_of(g, {k});
  }
  const int64_t groups = parts.scales.dim(0);
  w.qweight = tensor_of(qweight, {PackLayout{bits}.words_for(k), n});
  w.zeros = tensor_of(parts.zeros, {groups, n});
  w.scales = std::move(parts.scales);
  w.bias = std::move(bias);
  return w;
}

std::optional<Tensor> load_bias(const LinearSpec& spec, const ShardPlan& plan, const io::VarBuilder& host, DType dtype) {
  if (!spec.bias || !host.contains("bias")) return std::nullopt;
  const Shard s = plan.dim == 0 ? Shard::offset(0, plan.n.start, plan.n.len) : Shard::none();
  return host.get({spec.out_features}, "bias", s, dtype);
}

// GPTQModel `dynamic`: the first "+:" (or bare) rule whose regex matches the module path from its start overrides
// the listed fields.
GptqConfig with_dynamic_overrides(const GptqConfig& c, const std::string& path) {
  GptqConfig out = c;
  for (const GptqDynamicRule& r : c.dynamic) {
    if (r.skip) continue;
    if (!std::regex_search(path, std::regex(r.pattern), std::regex_constants::match_continuous)) continue;
    if (r.bits) out.bits = *r.bits;
    if (r.group_size) out.group_size = *r.group_size;
    if (r.desc_act) out.desc_act = *r.desc_act;
    if (r.sym) out.sym = *r.sym;
    break;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Checks and device forms

void validate(const GptqWeights& w, std::string_view format) {
  TPQ_CHECK(kernels::gptq::supported_bits(w.bits), kUnsupported, "{} layer: {} bits (2, 3, 4 or 8)", format, w.bits);
  TPQ_CHECK(w.qweight_order == QweightOrder::kCheckpoint || kernels::gptq::gemv_order_applies(w.bits), kInvalidArgument,
            "{} layer: {}-bit qweight has no GEMV order (2, 4 or 8 bits)", format, w.bits);
  TPQ_CHECK(w.in_features >= 0 && w.out_features >= 0 && w.group_size > 0, kShape,
            "{} layer: in_features {} out_features {} group_size {}", format, w.in_features, w.out_features,
            w.group_size);
  const int64_t rows = w.rows(), n = w.out_features;
  const Device dev = w.device();
  const auto expect = [&](const Tensor& t, const char* what, const Shape& shape, std::initializer_list<DType> dtypes) {
    const bool ok = t.defined() && t.shape() == shape &&
                    std::find(dtypes.begin(), dtypes.end(), t.dtype()) != dtypes.end() && t.device() == dev;
    TPQ_CHECK(ok, kShape, "{} layer: {} is {}, expected {} [{}] on {}", format, what, t.defined() ? t.str() : "absent",
              *dtypes.begin(), fmt::join(shape, ", "), dev.str());
  };
  expect(w.qweight, "qweight", {PackLayout{w.bits}.words_for(rows), n}, {DType::I32});
  TPQ_CHECK(w.scales.defined() && w.scales.ndim() == 2, kShape, "{} layer: scales must be 2-d", format);
  const int64_t groups = w.groups();
  expect(w.scales, "scales", {groups, n}, {DType::BF16, DType::F16, DType::F32});
  expect(w.zeros, "zeros", {groups, n}, {DType::U8});
  if (w.g_idx) expect(*w.g_idx, "g_idx", {rows}, {DType::I32});
  if (w.perm) expect(*w.perm, "perm", {rows}, {DType::I32});
  if (w.bias) expect(*w.bias, "bias", {n}, {w.scales.dtype()});
  TPQ_CHECK(w.perm || rows == w.in_features, kShape, "{} layer: {} stored rows for {} inputs without a perm", format,
            rows, w.in_features);
  if (!w.g_idx) {
    TPQ_CHECK((rows + w.group_size - 1) / w.group_size <= groups, kShape,
              "{} layer: {} rows in groups of {} need {} scale rows, found {}", format, rows, w.group_size,
              (rows + w.group_size - 1) / w.group_size, groups);
  }
  if (!dev.is_cpu()) return;  // values were checked on the host before the upload
  if (w.g_idx) {
    for (int32_t g : ints_of(*w.g_idx))
      TPQ_CHECK(g >= 0 && g < groups, kFormat, "{} layer: g_idx value {} outside [0, {})", format, g, groups);
  }
  if (w.perm) {
    std::vector<int> seen(static_cast<size_t>(w.in_features), 0);
    for (int32_t c : ints_of(*w.perm)) {
      TPQ_CHECK(c >= -1 && c < w.in_features && (c < 0 || !seen[c]++), kFormat,
                "{} layer: perm value {} is not a permutation of [0, {}) with -1 padding", format, c, w.in_features);
    }
    for (int64_t i = 0; i < w.in_features; ++i)
      TPQ_CHECK(seen[i], kFormat, "{} layer: perm misses input column {}", format, i);
  }
}

// Whether qweight's words are in the order the CUDA GEMV reads (3-bit words have only the checkpoint's).
bool in_gemv_order(const GptqWeights& w) {
  return w.qweight_order == QweightOrder::kGemv || !kernels::gptq::gemv_order_applies(w.bits);
}

// qweight's words in checkpoint order, on the host.
std::vector<uint32_t> checkpoint_words(const GptqWeights& w) {
  std::vector<uint32_t> words = words_of(w.qweight);
  if (w.qweight_order == QweightOrder::kGemv)
    for (uint32_t& word : words) word = kernels::gptq::from_gemv_word(word, w.bits);
  return words;
}

// qweight in `order` (kept on its device; a host round trip when the order changes). 3-bit words have one order.
void set_qweight_order(GptqWeights& w, QweightOrder order) {
  if (!kernels::gptq::gemv_order_applies(w.bits) || w.qweight_order == order) return;
  std::vector<uint32_t> words = checkpoint_words(w);
  if (order == QweightOrder::kGemv)
    for (uint32_t& word : words) word = kernels::gptq::to_gemv_word(word, w.bits);
  w.qweight = tensor_of(words, w.qweight.shape()).to(w.qweight.device());
  w.qweight_order = order;
}

// The rows every group of sorted, padded act-order rows (g: each row's group) takes, where every group 0..groups-1
// has rows, all but the last the same power-of-two count of them and the last no more: row r is then in group
// r / that count. 0 otherwise (a row-parallel shard's scattered groups, a group of 96 rows).
int64_t uniform_group_rows(const std::vector<int32_t>& g, int64_t groups) {
  std::vector<int64_t> count(static_cast<size_t>(groups), 0);
  for (int32_t gi : g) ++count[static_cast<size_t>(gi)];
  const int64_t size = count.empty() ? 0 : count[0];
  if (size <= 0 || (size & (size - 1)) != 0) return 0;
  for (int64_t i = 0; i < groups; ++i) {
    const bool last = i + 1 == groups;
    if (count[i] <= 0 || (last ? count[i] > size : count[i] != size)) return 0;
  }
  return size;
}

// Act-order on CUDA: rows sorted by group, each group padded with zero-code rows (perm −1) to whole steps of the
// GEMV (kernels::gptq::sorted_group_multiple), so a kernel step reads one group. The rows' order does not change the
// product: the forward gathers x's columns by perm. Where the sorted groups are uniform (uniform_group_rows: every
// group of an unsharded or column-parallel act-order checkpoint holds group_size rows), the row's group is a
// division and g_idx goes: the kernels of plain groups run, two batches in flight in the GEMV among them.
GptqWeights sorted_by_group(const GptqWeights& w) {
  const GptqWeights h{.bits = w.bits,
                      .in_features = w.in_features,
                      .out_features = w.out_features,
                      .group_size = w.group_size,
                      .qweight = w.qweight.to(Device::cpu()),
                      .zeros = w.zeros,
                      .scales = w.scales,
                      .g_idx = w.g_idx->to(Device::cpu()),
                      .perm = std::nullopt,
                      .bias = w.bias,
                      .qweight_order = w.qweight_order};
  const int64_t k = h.in_features, n = h.out_features;
  const int multiple = kernels::gptq::sorted_group_multiple(h.bits);
  const std::vector<uint8_t> codes = ref::gptq::unpack_qweight(checkpoint_words(h).data(), k, n, h.bits);
  const std::vector<int32_t> g = ints_of(*h.g_idx);
  std::vector<int64_t> order(static_cast<size_t>(k));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return g[a] < g[b]; });
  std::vector<int32_t> perm, g_sorted;
  std::vector<uint8_t> sorted;
  for (size_t i = 0; i < order.size();) {
    const int32_t group = g[order[i]];
    for (; i < order.size() && g[order[i]] == group; ++i) {
      perm.push_back(static_cast<int32_t>(order[i]));
      g_sorted.push_back(group);
      sorted.insert(sorted.end(), codes.begin() + order[i] * n, codes.begin() + (order[i] + 1) * n);
    }
    while (perm.size() % multiple != 0) {
      perm.push_back(-1);
      g_sorted.push_back(group);
      sorted.insert(sorted.end(), static_cast<size_t>(n), uint8_t{0});
    }
  }
  const int64_t rows = static_cast<int64_t>(perm.size());
  GptqWeights out = h;
  out.qweight = tensor_of(ref::gptq::pack_qweight(sorted.data(), rows, n, h.bits), {PackLayout{h.bits}.words_for(rows), n});
  out.qweight_order = QweightOrder::kCheckpoint;
  out.perm = tensor_of(perm, {rows});
  const int64_t uniform = uniform_group_rows(g_sorted, h.groups());
  if (uniform > 0) {
    out.group_size = uniform;  // row r is in group r / uniform: no g_idx, the kernels of plain groups
    out.g_idx = std::nullopt;
  } else {
    out.g_idx = tensor_of(g_sorted, {rows});
  }
  return out;
}

// The weights on `device`, qweight in that device's order (the GEMV's on CUDA, the checkpoint's elsewhere).
GptqWeights moved(GptqWeights w, Device device) {
  const auto move = [&](std::optional<Tensor>& t) {
    if (t) t = t->to(device);
  };
  if (device.is_cuda()) set_qweight_order(w, QweightOrder::kGemv);  // on the host, before the upload
  w.qweight = w.qweight.to(device);
  if (!device.is_cuda()) set_qweight_order(w, QweightOrder::kCheckpoint);
  w.zeros = w.zeros.to(device);
  w.scales = w.scales.to(device);
  move(w.g_idx);
  move(w.perm);
  move(w.bias);
  return w;
}

// Checks host weights and moves them to `device`, in the sorted act-order form on CUDA.
GptqWeights on_device(GptqWeights w, Device device, std::string_view format) {
  validate(w, format);
  if (device.is_cuda() && w.g_idx && !w.perm) w = sorted_by_group(w);
  return moved(std::move(w), device);
}

// W[n, k] in float on the host.
std::vector<float> dequantize_host(const GptqWeights& w) {
  const int64_t rows = w.rows(), n = w.out_features, k = w.in_features;
  const std::vector<uint8_t> codes = ref::gptq::unpack_qweight(checkpoint_words(w).data(), rows, n, w.bits);
  const Tensor zeros = w.zeros.to(Device::cpu());
  const std::vector<float> scales = w.scales.to_floats();
  const std::optional<std::vector<int32_t>> g_idx = w.g_idx ? std::optional(ints_of(*w.g_idx)) : std::nullopt;
  const std::optional<std::vector<int32_t>> perm = w.perm ? std::optional(ints_of(*w.perm)) : std::nullopt;
  std::vector<float> out(static_cast<size_t>(n * k), 0.0f);
  ref::gptq::dequantize(codes.data(), zeros.data_as<uint8_t>(), scales.data(), g_idx ? g_idx->data() : nullptr,
                        perm ? perm->data() : nullptr, rows, k, n, w.group_size, out.data());
  return out;
}

#ifdef TPQ_WITH_CUDA
detail::WoqWeights device_view(const GptqWeights& w) {
  TPQ_CHECK(in_gemv_order(w), kInternal, "{}-bit CUDA qweight not in the GEMV's order", w.bits);
  return {.bits = w.bits,
          .rows = w.rows(),
          .k = w.in_features,
          .n = w.out_features,
          .groups = w.groups(),
          .group_size = w.group_size,
          .qweight = w.qweight.data_as<const uint32_t>(),
          .zeros = w.zeros.data_as<const uint8_t>(),
          .scales = w.scales.data(),
          .g_idx = w.g_idx ? w.g_idx->data_as<const int32_t>() : nullptr,
          .perm = w.perm ? w.perm->data_as<const int32_t>() : nullptr};
}
#endif

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// GptqLinear

GptqLinear::GptqLinear(std::string format, GptqWeights weights) : format_(std::move(format)), w_(std::move(weights)) {
  validate(w_, format_);
  if (w_.device().is_cuda() && ((w_.g_idx && !w_.perm) || !in_gemv_order(w_)))
    w_ = on_device(moved(w_, Device::cpu()), w_.device(), format_);
  if (!w_.device().is_cuda()) set_qweight_order(w_, QweightOrder::kCheckpoint);
  TPQ_CHECK(!w_.device().is_cuda() || !w_.g_idx || w_.perm, kInternal, "{} layer: act-order weights not sorted",
            format_);
}

QuantMethodPtr GptqLinear::load(const LinearSpec& spec, const GptqConfig& config, const Shard& shard,
                                const io::VarBuilder& vb) {
  const GptqConfig c = with_dynamic_overrides(config, vb.prefix());
  const std::string& layer = vb.prefix();
  TPQ_CHECK(kernels::gptq::supported_bits(c.bits), kUnsupported, "{}: gptq bits={} (2, 3, 4 or 8)", layer, c.bits);
  TPQ_CHECK(c.checkpoint_format != GptqFormat::kMarlin, kUnsupported,
            "{}: gptq checkpoint_format 'marlin' (Marlin-tiled qweight) has no backend; load the plain 'gptq' "
            "checkpoint",
            layer);
  TPQ_CHECK(c.pack_dtype == DType::I32, kUnsupported, "{}: gptq pack_dtype {} (int32 only)", layer, c.pack_dtype);
  const bool v1 = c.checkpoint_format == GptqFormat::kGptq;
  const PackLayout l{c.bits};
  const int bc = l.block_codes(), bw = l.block_words();
  const int64_t n = spec.out_features, k = spec.in_features;
  TPQ_CHECK(k % bc == 0 && n % bc == 0, kShape,
            "{}: gptq {}-bit packs {} codes per block: in_features {} and out_features {} must be multiples of it",
            layer, c.bits, bc, k, n);
  const int64_t gs = c.group_size > 0 ? c.group_size : k;
  const int64_t groups = (k + gs - 1) / gs;
  const std::string word_text = bw == 1 ? "one int32" : "3 int32 words";
  const ShardPlan plan = plan_shard(
      vb, "gptq", shard, n, k, {bc, fmt::format("qzeros packs {} columns in {}", bc, word_text)},
      {std::lcm<int64_t>(bc, c.group_size > 0 ? c.group_size : 1),
       c.group_size > 0 ? fmt::format("whole groups of {} and qweight blocks of {} rows", c.group_size, bc)
                        : fmt::format("qweight packs {} rows in {}", bc, word_text)});

  expect_tensor(vb, "gptq", "qweight", {l.words_for(k), n}, {DType::I32, DType::U32});
  expect_tensor(vb, "gptq", "qzeros", {groups, l.words_for(n)}, {DType::I32, DType::U32});
  expect_tensor(vb, "gptq", "scales", {groups, n}, {DType::F16, DType::BF16, DType::F32});
  const bool has_g_idx = vb.contains("g_idx");
  if (has_g_idx) expect_tensor(vb, "gptq", "g_idx", {k}, {DType::I32, DType::I64});
  const DType dtype = compute_dtype(spec, vb, vb.info("scales").dtype, "gptq");
  const io::VarBuilder host = host_builder(vb);

  const Range nr = plan.n, kr = plan.k;
  const bool by_n = plan.dim == 0, by_k = plan.dim == 1;
  const Shard qweight_shard = by_n   ? Shard::offset(1, nr.start, nr.len)
                              : by_k ? Shard::offset(0, kr.start / bc * bw, kr.len / bc * bw)
                                     : Shard::none();
  const std::vector<uint32_t> qweight = words_of(host.get_unchecked("qweight", qweight_shard));

  GroupParts parts;
  if (has_g_idx) parts.g_idx = ints_of(host.get_unchecked("g_idx", by_k ? Shard::offset(0, kr.start, kr.len) : Shard::none(), DType::I32));
  Range gr{0, groups};
  if (by_k) {
    if (parts.g_idx && !parts.g_idx->empty()) {
      const auto [lo, hi] = std::minmax_element(parts.g_idx->begin(), parts.g_idx->end());
      TPQ_CHECK(*lo >= 0 && *hi < groups, kFormat, "{}: '{}' refers to groups [{}, {}] outside [0, {})", layer,
                vb.full_name("g_idx"), *lo, *hi, groups);
      gr = {*lo, *hi - *lo + 1};
    } else {
      gr = {kr.start / gs, (kr.len + gs - 1) / gs};
    }
  }
  parts.first_group = gr.start;
  const Shard zeros_shard = by_n ? Shard::offset(1, nr.start / bc * bw, nr.len / bc * bw) : Shard::offset(0, gr.start, gr.len);
  const Shard scales_shard = by_n ? Shard::offset(1, nr.start, nr.len) : Shard::offset(0, gr.start, gr.len);
  const std::vector<uint32_t> qzeros = words_of(host.get_unchecked("qzeros", zeros_shard));
  parts.zeros = ref::gptq::unpack_qzeros(qzeros.data(), gr.len, nr.len, c.bits, v1);
  parts.scales = host.get_unchecked("scales", scales_shard, dtype);
  if (parts.g_idx && !by_k) {
    // The whole K: g_idx values index the stored groups directly.
    for (int32_t g : *parts.g_idx)
      TPQ_CHECK(g >= 0 && g < groups, kFormat, "{}: '{}' value {} outside [0, {})", layer, vb.full_name("g_idx"), g,
                groups);
  }
  const int64_t local_gs = c.group_size > 0 ? c.group_size : kr.len;
  GptqWeights w = finish(c.bits, kr.len, nr.len, std::max<int64_t>(local_gs, 1), qweight, std::move(parts),
                         load_bias(spec, plan, host, dtype), vb, "g_idx");
  return std::make_shared<GptqLinear>("gptq", on_device(std::move(w), vb.device(), "gptq"));
}

QuantMethodPtr GptqLinear::load_pack_quantized(const LinearSpec& spec, const CtQuantArgs& a, const Shard& shard,
                                               const io::VarBuilder& vb) {
  const std::string& layer = vb.prefix();
  constexpr std::string_view kFmt = "compressed-tensors";
  TPQ_CHECK(a.type == CtType::kInt && (a.num_bits == 4 || a.num_bits == 8), kUnsupported,
            "{}: compressed-tensors pack-quantized {} {}-bit weights (int 4 or 8 only)", layer, enum_name(a.type),
            a.num_bits);
  TPQ_CHECK(a.strategy == CtStrategy::kGroup || a.strategy == CtStrategy::kChannel ||
                a.strategy == CtStrategy::kTensor,
            kUnsupported, "{}: compressed-tensors pack-quantized strategy '{}' (group, channel or tensor)", layer,
            enum_name(a.strategy));
  const int bits = a.num_bits, pf = 32 / bits;
  const int64_t n = spec.out_features, k = spec.in_features;
  const bool grouped = a.strategy == CtStrategy::kGroup;
  TPQ_CHECK(!grouped || (a.group_size && *a.group_size > 0), kConfig,
            "{}: compressed-tensors group strategy without a positive group_size", layer);
  const int64_t gs = grouped ? *a.group_size : k;
  const int64_t groups = grouped ? (k + gs - 1) / gs : 1;
  const ShardPlan plan = plan_shard(
      vb, std::string(kFmt), shard, n, k,
      a.symmetric ? Alignment{1, "any"} : Alignment{pf, fmt::format("weight_zero_point packs {} rows per int32", pf)},
      {std::lcm<int64_t>(pf, grouped ? gs : 1),
       grouped ? fmt::format("whole groups of {} and weight_packed words of {}", gs, pf)
               : fmt::format("weight_packed packs {} inputs per int32", pf)});

  const int64_t kw = (k + pf - 1) / pf;
  expect_tensor(vb, kFmt, "weight_packed", {n, kw}, {DType::I32, DType::U32});
  TPQ_CHECK(vb.contains("weight_scale"), kNotFound, "{}: compressed-tensors layer needs '{}'", layer,
            vb.full_name("weight_scale"));
  const io::TensorInfo si = vb.info("weight_scale");
  const bool per_tensor = shape_numel(si.shape) == 1 && a.strategy == CtStrategy::kTensor;
  if (!per_tensor) expect_tensor(vb, kFmt, "weight_scale", {n, groups}, {DType::F16, DType::BF16, DType::F32});
  if (vb.contains("weight_shape")) {
    const std::vector<double> s = vb.get_unchecked("weight_shape").to_doubles();
    TPQ_CHECK(s.size() == 2 && s[0] == static_cast<double>(n) && s[1] == static_cast<double>(k), kShape,
              "{}: '{}' says [{}] but the layer is [{}, {}]", layer, vb.full_name("weight_shape"), fmt::join(s, ", "),
              n, k);
  }
  const bool has_zp = !a.symmetric;
  if (has_zp) {
    TPQ_CHECK(vb.contains("weight_zero_point"), kNotFound, "{}: asymmetric compressed-tensors layer needs '{}'", layer,
              vb.full_name("weight_zero_point"));
  }
  const bool has_g_idx = vb.contains("weight_g_idx");
  if (has_g_idx) expect_tensor(vb, kFmt, "weight_g_idx", {k}, {DType::I32, DType::I64});
  const DType dtype = compute_dtype(spec, vb, si.dtype, kFmt);
  const io::VarBuilder host = host_builder(vb);

  const Range nr = plan.n, kr = plan.k;
  const bool by_n = plan.dim == 0, by_k = plan.dim == 1;
  const int64_t local_kw = by_k ? kr.len / pf : kw;
  const Tensor packed = host.get_unchecked("weight_packed", by_n   ? Shard::offset(0, nr.start, nr.len)
                                                            : by_k ? Shard::offset(1, kr.start / pf, local_kw)
                                                                   : Shard::none());
  const std::vector<uint8_t> codes = ref::gptq::unpack_ct_weight(words_of(packed).data(), kr.len, nr.len, bits);
  const std::vector<uint32_t> qweight = ref::gptq::pack_qweight(codes.data(), kr.len, nr.len, bits);

  GroupParts parts;
  if (has_g_idx)
    parts.g_idx = ints_of(host.get_unchecked("weight_g_idx", by_k ? Shard::offset(0, kr.start, kr.len) : Shard::none(), DType::I32));
  Range gr{0, groups};
  if (by_k && grouped) {
    if (parts.g_idx && !parts.g_idx->empty()) {
      const auto [lo, hi] = std::minmax_element(parts.g_idx->begin(), parts.g_idx->end());
      TPQ_CHECK(*lo >= 0 && *hi < groups, kFormat, "{}: '{}' refers to groups [{}, {}] outside [0, {})", layer,
                vb.full_name("weight_g_idx"), *lo, *hi, groups);
      gr = {*lo, *hi - *lo + 1};
    } else {
      gr = {kr.start / gs, (kr.len + gs - 1) / gs};
    }
  }
  parts.first_group = gr.start;
  // weight_scale [N, groups] -> scales [groups, N].
  Tensor scale_nk;
  if (per_tensor) {
    const float s = host.get_unchecked("weight_scale", Shard::none(), DType::F32).to_floats().at(0);
    scale_nk = Tensor::from_floats(std::vector<float>(static_cast<size_t>(nr.len), s), {nr.len, 1}, dtype);
  } else {
    const Tensor sc = host.get_unchecked("weight_scale", by_n ? Shard::offset(0, nr.start, nr.len) : Shard::none(), dtype);
    scale_nk = sc.narrow(1, gr.start, gr.len);
  }
  parts.scales = scale_nk.transpose(0, 1);
  if (has_zp) {
    const io::TensorInfo zi = vb.info("weight_zero_point");
    if (zi.dtype == DType::I32 || zi.dtype == DType::U32) {
      expect_tensor(vb, kFmt, "weight_zero_point", {(n + pf - 1) / pf, groups}, {DType::I32, DType::U32});
      const Tensor zp = host.get_unchecked("weight_zero_point", by_n ? Shard::offset(0, nr.start / pf, nr.len / pf) : Shard::none());
      const std::vector<uint8_t> all = ref::gptq::unpack_ct_zero_point(words_of(zp).data(), groups, nr.len, bits);
      std::vector<int64_t> rows(static_cast<size_t>(gr.len));
      std::iota(rows.begin(), rows.end(), gr.start);
      parts.zeros = select_rows(all, nr.len, rows);
    } else {
      // Unpacked signed zero points [N, groups] (int8): back to the codes' unsigned domain.
      expect_tensor(vb, kFmt, "weight_zero_point", {n, groups}, {DType::I8, DType::I32, DType::F16, DType::BF16, DType::F32});
      const std::vector<double> z =
          host.get_unchecked("weight_zero_point", by_n ? Shard::offset(0, nr.start, nr.len) : Shard::none()).to_doubles();
      parts.zeros.resize(static_cast<size_t>(gr.len * nr.len));
      for (int64_t g = 0; g < gr.len; ++g)
        for (int64_t j = 0; j < nr.len; ++j)
          parts.zeros[g * nr.len + j] = static_cast<uint8_t>(static_cast<int>(z[j * groups + gr.start + g]) + (1 << (bits - 1)));
    }
  } else {
    parts.zeros.assign(static_cast<size_t>(gr.len * nr.len), static_cast<uint8_t>(kernels::gptq::symmetric_zero(bits)));
  }
  const int64_t local_gs = grouped ? gs : std::max<int64_t>(kr.len, 1);
  GptqWeights w = finish(bits, kr.len, nr.len, local_gs, qweight, std::move(parts), load_bias(spec, plan, host, dtype),
                         vb, "weight_g_idx");
  return std::make_shared<GptqLinear>(std::string(kFmt), on_device(std::move(w), vb.device(), kFmt));
}

QuantMethodPtr AwqLinear::load(const LinearSpec& spec, const AwqConfig& c, const Shard& shard, const io::VarBuilder& vb) {
  const std::string& layer = vb.prefix();
  TPQ_CHECK(c.version == AwqVersion::kGemm, kUnsupported,
            "{}: AWQ version '{}' has no backend (only 'gemm', the AutoAWQ GEMM layout)", layer, enum_name(c.version));
  TPQ_CHECK(c.bits == 4, kUnsupported, "{}: AWQ bits={} (4 only)", layer, c.bits);
  constexpr int pf = kernels::awq::kPackFactor;
  const int64_t n = spec.out_features, k = spec.in_features;
  TPQ_CHECK(n % pf == 0, kShape, "{}: AWQ packs 8 outputs per int32: out_features {} is not a multiple of 8", layer, n);
  const int64_t gs = c.group_size > 0 ? c.group_size : k;
  TPQ_CHECK(gs > 0 && k % gs == 0, kShape, "{}: AWQ in_features {} is not a multiple of the group size {}", layer, k, gs);
  const int64_t groups = k / gs;
  const ShardPlan plan =
      plan_shard(vb, "awq", shard, n, k, {pf, "qweight and qzeros pack 8 columns per int32"},
                 {c.group_size > 0 ? c.group_size : 1,
                  c.group_size > 0 ? fmt::format("whole groups of {}", c.group_size) : std::string("any")});
  expect_tensor(vb, "awq", "qweight", {k, n / pf}, {DType::I32, DType::U32});
  expect_tensor(vb, "awq", "scales", {groups, n}, {DType::F16, DType::BF16, DType::F32});
  const bool has_zeros = vb.contains("qzeros");
  if (has_zeros) expect_tensor(vb, "awq", "qzeros", {groups, n / pf}, {DType::I32, DType::U32});
  TPQ_CHECK(has_zeros || !c.zero_point, kNotFound, "{}: AWQ zero_point=true layer needs '{}'", layer,
            vb.full_name("qzeros"));
  const DType dtype = compute_dtype(spec, vb, vb.info("scales").dtype, "awq");
  const io::VarBuilder host = host_builder(vb);

  const Range nr = plan.n, kr = plan.k;
  const bool by_n = plan.dim == 0, by_k = plan.dim == 1;
  const int64_t g0 = kr.start / gs, gl = (kr.len + gs - 1) / gs;
  const Shard packed_shard = by_n ? Shard::offset(1, nr.start / pf, nr.len / pf) : by_k ? Shard::offset(0, kr.start, kr.len) : Shard::none();
  const Shard group_packed_shard = by_n ? Shard::offset(1, nr.start / pf, nr.len / pf) : Shard::offset(0, g0, gl);
  const std::vector<uint8_t> codes = ref::awq::unpack(words_of(host.get_unchecked("qweight", packed_shard)).data(), kr.len, nr.len);
  GroupParts parts;
  parts.first_group = g0;
  parts.zeros = has_zeros ? ref::awq::unpack(words_of(host.get_unchecked("qzeros", group_packed_shard)).data(), gl, nr.len)
                          : std::vector<uint8_t>(static_cast<size_t>(gl * nr.len), uint8_t{8});
  parts.scales = host.get_unchecked("scales", by_n ? Shard::offset(1, nr.start, nr.len) : Shard::offset(0, g0, gl), dtype);
  GptqWeights w = finish(4, kr.len, nr.len, c.group_size > 0 ? gs : std::max<int64_t>(kr.len, 1),
                         ref::gptq::pack_qweight(codes.data(), kr.len, nr.len, 4), std::move(parts),
                         load_bias(spec, plan, host, dtype), vb, "");
  return std::make_shared<GptqLinear>("awq", on_device(std::move(w), vb.device(), "awq"));
}

Tensor GptqLinear::forward(const Tensor& x, const Context& ctx) const {
  const Tensor x2 = check_input(x);
  Tensor y = ctx.empty({x2.dim(0), out_features()}, dtype());
  forward_into(x2, y, ctx);
  return y.reshape(output_shape(x));
}

#ifdef TPQ_WITH_CUDA
namespace {
// `layer` as a GPTQ-family layer on a GPU, for `what`.
const GptqLinear& cuda_gptq_layer(const QuantMethod& layer, const char* what) {
  const auto* gptq = dynamic_cast<const GptqLinear*>(&layer);
  TPQ_CHECK(gptq != nullptr && gptq->device().is_cuda(), kInvalidArgument, "{}: not a GPTQ-family layer on a GPU",
            what);
  return *gptq;
}
}  // namespace

detail::WoqPath detail::cuda_gptq_path(const Context& ctx, const QuantMethod& layer, int64_t m) {
  const GptqLinear& gptq = cuda_gptq_layer(layer, "cuda_gptq_path");
  return woq_path(ctx, gptq.dtype(), device_view(gptq.weights()), m);
}

detail::WoqGemvKernel detail::cuda_gptq_gemv_kernel(const Context& ctx, const QuantMethod& layer, int64_t m) {
  const GptqLinear& gptq = cuda_gptq_layer(layer, "cuda_gptq_gemv_kernel");
  return woq_gemv_kernel(ctx, gptq.dtype(), device_view(gptq.weights()), m);
}

int detail::cuda_gptq_gemv_block_cols(const Context& ctx, const QuantMethod& layer, int64_t m) {
  const GptqLinear& gptq = cuda_gptq_layer(layer, "cuda_gptq_gemv_block_cols");
  return woq_gemv_block_cols(ctx, gptq.dtype(), device_view(gptq.weights()), m);
}
#endif

void GptqLinear::forward_into(const Tensor& x, Tensor& y, const Context& ctx) const {
  const int64_t m = x.ndim() == 2 ? x.dim(0) : -1, n = out_features(), k = in_features();
  TPQ_CHECK(x.ndim() == 2 && x.dim(1) == k && y.ndim() == 2 && y.dim(0) == m && y.dim(1) == n, kShape,
            "{} layer [{} -> {}]: forward_into x {} y {}", format_, k, n, x.str(), y.str());
  TPQ_CHECK(x.dtype() == dtype() && y.dtype() == dtype() && x.device() == device() && y.device() == device(), kShape,
            "{} layer computes in {} on {}: x {} y {}", format_, dtype(), device().str(), x.str(), y.str());
  if (m == 0 || n == 0) return;
  if (device().is_cuda()) {
#ifdef TPQ_WITH_CUDA
    detail::woq_linear(ctx, dtype(), device_view(w_), x.data(), w_.bias ? w_.bias->data() : nullptr, y.data(), m);
    return;
#else
    fail(ErrorCode::kUnsupported, "{} layer on {}: tpq was built without CUDA", format_, device().str());
#endif
  }
  const std::vector<float> wf = dequantize_host(w_);
  const std::vector<float> xf = x.to_floats();
  const std::vector<float> bf = w_.bias ? w_.bias->to_floats() : std::vector<float>{};
  std::vector<float> yf(static_cast<size_t>(m * n));
  ref::gemm_nt(xf.data(), wf.data(), w_.bias ? bf.data() : nullptr, yf.data(), m, n, k, ctx.cpu_threads());
  const Tensor out = Tensor::from_floats(yf, y.shape(), y.dtype());
  detail::device_copy(y.data(), y.device(), out.data(), out.device(), y.nbytes());
}

Tensor GptqLinear::dequantize_weight([[maybe_unused]] const Context& ctx) const {
  if (device().is_cuda()) {
#ifdef TPQ_WITH_CUDA
    Tensor out = ctx.empty({out_features(), in_features()}, dtype());
    if (out.numel() > 0) detail::woq_dequantize(ctx, dtype(), device_view(w_), out.data());
    return out;
#else
    fail(ErrorCode::kUnsupported, "{} layer on {}: tpq was built without CUDA", format_, device().str());
#endif
  }
  return Tensor::from_floats(dequantize_host(w_), {out_features(), in_features()}, dtype());
}

std::vector<uint8_t> GptqLinear::serialize() const {
  detail::BlobWriter b(kBlobFormat);
  b.put_string(format_);
  b.put_u64(static_cast<uint64_t>(w_.bits));
  b.put_u64(static_cast<uint64_t>(w_.in_features));
  b.put_u64(static_cast<uint64_t>(w_.out_features));
  b.put_u64(static_cast<uint64_t>(w_.group_size));
  b.put_tensor(tensor_of(checkpoint_words(w_), w_.qweight.shape()));  // checkpoint order on every device
  b.put_tensor(w_.zeros);
  b.put_tensor(w_.scales);
  b.put_optional_tensor(w_.g_idx);
  b.put_optional_tensor(w_.perm);
  b.put_optional_tensor(w_.bias);
  return b.take();
}

QuantMethodPtr GptqLinear::deserialize(detail::BlobReader& blob, Device device) {
  std::string format = blob.string();
  GptqWeights w;
  w.bits = static_cast<int>(blob.u64());
  w.in_features = static_cast<int64_t>(blob.u64());
  w.out_features = static_cast<int64_t>(blob.u64());
  w.group_size = static_cast<int64_t>(blob.u64());
  w.qweight = blob.tensor(Device::cpu());
  w.zeros = blob.tensor(Device::cpu());
  w.scales = blob.tensor(Device::cpu());
  w.g_idx = blob.optional_tensor(Device::cpu());
  w.perm = blob.optional_tensor(Device::cpu());
  w.bias = blob.optional_tensor(Device::cpu());
  blob.expect_end();
  TPQ_CHECK(w.bits >= 0 && w.bits <= 8 && w.in_features >= 0 && w.out_features >= 0, kFormat,
            "serialized gptq layer: bits {} in {} out {}", w.bits, w.in_features, w.out_features);
  return std::make_shared<GptqLinear>(format, on_device(std::move(w), device, format));
}

}  // namespace tpq
