// tpq_bench: the one benchmark driver (DESIGN.md section 6).
//
//   tpq_bench [--format unquant,...] [--m 1,8,16,32,128,512,4096]
//             [--shapes llama8b,llama70b_tp8,tp_attn | --n N --k K]
//             [--dtype bf16|f16] [--iters 20] [--graph-calls 20] [--json FILE] [--floor] [--x-hot]
//
// Each run measures the device's read bandwidth first (a read-only sweep over 4 GiB with 16-byte loads), then,
// per shape and M, times the cuBLAS baseline and every selected format. Timing: `graph-calls` forwards captured
// in one CUDA graph, cycling through enough copies of the weights and inputs that they exceed 3x the L2 (so
// weights come from DRAM as in a real model), replayed `iters` times with CUDA events; the median replay over
// graph-calls is the time of one forward. The error column is max |out - ref| / max |ref| against cuBLAS on the
// format's reference weight (the same inputs). With --floor, a last column gives each row's stream floor: the
// graph-timed time of a kernel that only reads the row's weight bytes (same copies, same launch attributes), as a
// percentage of the row's time: how close the row comes to what streaming its bytes alone takes on this GPU.
// With --x-hot, every call of a graph reads the same x (the weights and outputs still rotate), so x stays in L2,
// as in an engine where the previous kernel has just written it; without, x rotates with the weights and comes
// from DRAM.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "timing.hpp"
#include "benchmarks/bench_format.hpp"
#include "benchmarks/bench_kernels.hpp"
#include "tpq/core/context.hpp"
#include "tpq/core/error.hpp"
#include "tpq/detail/cuda_check.hpp"

namespace tpq::bench {
namespace {

struct Shape {
  std::string label;
  int64_t n;
  int64_t k;
};

const std::vector<Shape>& shape_set(const std::string& name) {
  // Llama-3-8B: q|k|v merged, o, gate|up merged, down. Llama-3-70B at TP 8, one rank's shard of the MLP:
  // gate|up column-parallel (57344 / 8 rows of K 8192) and down row-parallel (K 28672 / 8).
  static const std::vector<Shape> llama8b = {{"llama8b.qkv", 6144, 4096},
                                             {"llama8b.o", 4096, 4096},
                                             {"llama8b.gate_up", 28672, 4096},
                                             {"llama8b.down", 4096, 14336}};
  static const std::vector<Shape> llama70b_tp8 = {{"llama70b_tp8.gate_up", 7168, 8192},
                                                  {"llama70b_tp8.down", 8192, 3584}};
  // One rank's attention projections under tensor parallelism: q|k|v column-parallel ((heads + 2 kv heads) x 128
  // rows / TP), o row-parallel (K / TP). Narrow outputs or short K: where the GEMVs split K most (s20).
  static const std::vector<Shape> tp_attn = {{"llama8b_tp4.qkv", 1536, 4096},  {"llama8b_tp4.o", 4096, 1024},
                                             {"llama8b_tp8.qkv", 768, 4096},   {"llama70b_tp4.qkv", 2560, 8192},
                                             {"llama70b_tp8.qkv", 1280, 8192}, {"llama70b_tp8.o", 8192, 1024}};
  if (name == "llama8b") return llama8b;
  if (name == "llama70b_tp8") return llama70b_tp8;
  if (name == "tp_attn") return tp_attn;
  fail(ErrorCode::kInvalidArgument, "--shapes: unknown set '{}' (llama8b, llama70b_tp8, tp_attn)", name);
}

struct Options {
  std::vector<std::string> formats;  // empty: all registered
  std::vector<int64_t> ms = {1, 8, 16, 32, 128, 512, 4096};
  std::vector<Shape> shapes;
  DType dtype = DType::BF16;
  int iters = 20;
  int graph_calls = 20;
  std::string json;
  bool floor = false;  // --floor: the stream-floor column
  bool x_hot = false;  // --x-hot: one x for every call (resident in L2), weights and outputs rotated
};

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    const std::string item = s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

int64_t parse_int(const std::string& flag, const std::string& v) {
  try {
    size_t used = 0;
    const long long x = std::stoll(v, &used);
    if (used == v.size() && x > 0) return x;
  } catch (const std::exception&) {
  }
  fail(ErrorCode::kInvalidArgument, "{}: '{}' is not a positive integer", flag, v);
}

void usage() {
  std::string names;
  for (const auto& f : format_registry()) names += (names.empty() ? "" : ",") + f.name;
  fmt::print(
      "usage: tpq_bench [--format {}] [--m 1,8,16,32,128,512,4096]\n"
      "                 [--shapes llama8b,llama70b_tp8,tp_attn | --n N --k K] [--dtype bf16|f16]\n"
      "                 [--iters 20] [--graph-calls 20] [--json FILE] [--floor] [--x-hot]\n",
      names);
}

Options parse(int argc, char** argv) {
  Options o;
  std::optional<int64_t> n, k;
  std::vector<std::string> sets;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    if (arg == "-h" || arg == "--help") {
      usage();
      std::exit(0);
    }
    if (arg == "--floor") {
      o.floor = true;
      continue;
    }
    if (arg == "--x-hot") {
      o.x_hot = true;
      continue;
    }
    if (const size_t eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else {
      TPQ_CHECK(i + 1 < argc, kInvalidArgument, "{} needs a value", arg);
      value = argv[++i];
    }
    if (arg == "--format") {
      o.formats = split_list(value);
    } else if (arg == "--m") {
      o.ms.clear();
      for (const auto& s : split_list(value)) o.ms.push_back(parse_int(arg, s));
    } else if (arg == "--n") {
      n = parse_int(arg, value);
    } else if (arg == "--k") {
      k = parse_int(arg, value);
    } else if (arg == "--shapes") {
      sets = split_list(value);
    } else if (arg == "--dtype") {
      TPQ_CHECK(value == "bf16" || value == "f16", kInvalidArgument, "--dtype: bf16 or f16, not '{}'", value);
      o.dtype = value == "bf16" ? DType::BF16 : DType::F16;
    } else if (arg == "--iters") {
      o.iters = static_cast<int>(parse_int(arg, value));
    } else if (arg == "--graph-calls") {
      o.graph_calls = static_cast<int>(parse_int(arg, value));
    } else if (arg == "--json") {
      o.json = value;
    } else {
      usage();
      fail(ErrorCode::kInvalidArgument, "unknown flag {}", arg);
    }
  }
  TPQ_CHECK(n.has_value() == k.has_value(), kInvalidArgument, "--n and --k go together");
  if (n) o.shapes.push_back({"custom", *n, *k});
  if (sets.empty() && !n) sets = {"llama8b", "llama70b_tp8"};
  for (const auto& s : sets)
    for (const auto& shape : shape_set(s)) o.shapes.push_back(shape);
  for (const auto& f : o.formats) {
    const bool known = std::any_of(format_registry().begin(), format_registry().end(),
                                   [&](const FormatEntry& e) { return e.name == f; });
    TPQ_CHECK(known || f == "cublas_bf16" || f == "cublas_f16", kInvalidArgument, "--format: unknown format '{}'", f);
  }
  return o;
}

// ---- CUDA RAII ----


class GraphExec {
 public:
  GraphExec() = default;
  ~GraphExec() {
    if (exec_ != nullptr) (void)cudaGraphExecDestroy(exec_);
  }
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  cudaGraphExec_t* out() { return &exec_; }
  cudaGraphExec_t get() const { return exec_; }

 private:
  cudaGraphExec_t exec_ = nullptr;
};

class StreamOwner {
 public:
  StreamOwner() { TPQ_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  ~StreamOwner() { (void)cudaStreamDestroy(s_); }
  StreamOwner(const StreamOwner&) = delete;
  StreamOwner& operator=(const StreamOwner&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

class CublasOwner {
 public:
  CublasOwner() { TPQ_CUBLAS_CHECK(cublasCreate(&h_)); }
  ~CublasOwner() { (void)cublasDestroy(h_); }
  CublasOwner(const CublasOwner&) = delete;
  CublasOwner& operator=(const CublasOwner&) = delete;
  cublasHandle_t get() const { return h_; }

 private:
  cublasHandle_t h_ = nullptr;
};



ElemType elem_type(DType t) { return t == DType::F16 ? ElemType::kF16 : ElemType::kBF16; }

// ---- the read-bandwidth probe ----

double measure_read_bandwidth(cudaStream_t stream, int sm_count, size_t free_bytes) {
  // 4 GiB (less on a small card): far past any L2, long enough (about a millisecond) to hide launch costs.
  size_t bytes = size_t{4} << 30;
  while (bytes > free_bytes / 3 && bytes > (size_t{256} << 20)) bytes /= 2;
  DeviceBuffer buf(bytes);
  DeviceBuffer sink(sizeof(unsigned long long));
  TPQ_CUDA_CHECK(launch_fill_random(ElemType::kBF16, buf.get(), bytes / 2, 0x1234, 1.0f, stream));
  TPQ_CUDA_CHECK(cudaMemsetAsync(sink.get(), 0, sink.bytes(), stream));
  double best = 0.0;
  for (int unroll : {4, 8}) {
    auto* s = static_cast<unsigned long long*>(sink.get());
    for (int i = 0; i < 3; ++i) TPQ_CUDA_CHECK(launch_read_sweep(buf.get(), bytes, unroll, sm_count, s, stream));
    std::vector<float> times;
    for (int i = 0; i < 15; ++i) {
      Event a, b;
      TPQ_CUDA_CHECK(cudaEventRecord(a.get(), stream));
      TPQ_CUDA_CHECK(launch_read_sweep(buf.get(), bytes, unroll, sm_count, s, stream));
      TPQ_CUDA_CHECK(cudaEventRecord(b.get(), stream));
      TPQ_CUDA_CHECK(cudaEventSynchronize(b.get()));
      times.push_back(elapsed_ms(a, b));
    }
    best = std::max(best, static_cast<double>(bytes) / (median(times) * 1e-3) / 1e9);
  }
  return best;
}

// ---- one row ----

struct Row {
  std::string format;
  std::string shape;
  int64_t m, n, k;
  double us;
  double tflops;
  double weight_gbs;
  double pct_bw;
  double speedup;
  std::optional<double> max_err;
  int copies;
  std::optional<double> floor_us;  // --floor
};

// Inputs and outputs cycled through together with the weight copies.
struct IoSets {
  std::vector<DeviceBuffer> x, y;
  void ensure(const BenchProblem& p, int copies, cudaStream_t stream) {
    const size_t es = dtype_size(p.dtype);
    while (static_cast<int>(x.size()) < copies) {
      x.emplace_back(static_cast<size_t>(p.m * p.k) * es);
      y.emplace_back(static_cast<size_t>(p.m * p.n) * es);
      TPQ_CUDA_CHECK(launch_fill_random(elem_type(p.dtype), x.back().get(), static_cast<size_t>(p.m * p.k),
                                        0xabc0 + x.size(), 1.0f, stream));
    }
  }
};

struct Timing {
  double us;
  int copies;
};

// Microseconds per call of `call(i)` for i = 0 .. graph_calls - 1 captured in one CUDA graph: the median over
// `iters` replays.
double graph_us(const std::function<void(int)>& call, const Options& o, cudaStream_t stream) {
  cudaGraph_t graph = nullptr;
  TPQ_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  try {
    for (int i = 0; i < o.graph_calls; ++i) call(i);
  } catch (...) {
    (void)cudaStreamEndCapture(stream, &graph);
    if (graph != nullptr) (void)cudaGraphDestroy(graph);
    throw;
  }
  TPQ_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  GraphExec exec;
  const cudaError_t inst = cudaGraphInstantiate(exec.out(), graph, 0);
  (void)cudaGraphDestroy(graph);
  TPQ_CUDA_CHECK(inst);

  for (int i = 0; i < 3; ++i) TPQ_CUDA_CHECK(cudaGraphLaunch(exec.get(), stream));
  std::vector<Event> starts(static_cast<size_t>(o.iters)), ends(static_cast<size_t>(o.iters));
  for (int i = 0; i < o.iters; ++i) {
    TPQ_CUDA_CHECK(cudaEventRecord(starts[static_cast<size_t>(i)].get(), stream));
    TPQ_CUDA_CHECK(cudaGraphLaunch(exec.get(), stream));
    TPQ_CUDA_CHECK(cudaEventRecord(ends[static_cast<size_t>(i)].get(), stream));
  }
  TPQ_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<float> ms;
  for (int i = 0; i < o.iters; ++i) ms.push_back(elapsed_ms(starts[static_cast<size_t>(i)], ends[static_cast<size_t>(i)]));
  return static_cast<double>(median(ms)) * 1e3 / o.graph_calls;
}

Timing time_format(BenchFormat& format, const BenchProblem& p, const void* master, IoSets& io, const Options& o,
                   size_t l2_bytes, cudaStream_t stream) {
  const size_t es = dtype_size(p.dtype);
  const double set_bytes = format.weight_bytes(p.n, p.k) + static_cast<double>(p.m * (p.k + p.n)) * es;
  const int copies = static_cast<int>(std::clamp(std::ceil(3.0 * static_cast<double>(l2_bytes) / set_bytes), 1.0, 64.0));
  io.ensure(p, copies, stream);
  // setup may copy on the legacy stream, which does not wait for our non-blocking stream's fills.
  TPQ_CUDA_CHECK(cudaStreamSynchronize(stream));
  format.setup(p, master, copies);
  TPQ_CUDA_CHECK(cudaDeviceSynchronize());

  // Eager warm-up over every copy: module loading, cuBLASLt heuristics and plan caches stay out of the graph.
  for (int c = 0; c < copies; ++c) format.run(c, io.x[static_cast<size_t>(c)].get(), io.y[static_cast<size_t>(c)].get());
  TPQ_CUDA_CHECK(cudaStreamSynchronize(stream));

  return {graph_us([&](int i) {
            const size_t c = static_cast<size_t>(i % copies);
            format.run(static_cast<int>(c), io.x[o.x_hot ? 0 : c].get(), io.y[c].get());
          }, o, stream),
          copies};
}

// The stream floor of `bytes` of weight (launch_floor_read) as a format's row would see it: `copies` copies
// cycled through in the same graph timing. Measured once per (bytes, copies) and remembered.
class StreamFloor {
 public:
  double us(size_t bytes, int copies, bool pdl, const Options& o, cudaStream_t stream) {
    bytes = (bytes + 15) / 16 * 16;
    for (const Entry& e : done_)
      if (e.bytes == bytes && e.copies == copies) return e.us;
    std::vector<DeviceBuffer> bufs;
    for (int c = 0; c < copies; ++c) {
      bufs.emplace_back(bytes);
      TPQ_CUDA_CHECK(launch_fill_random(ElemType::kBF16, bufs.back().get(), bytes / 2, 0xf100 + c, 1.0f, stream));
    }
    DeviceBuffer sink(sizeof(unsigned long long));
    TPQ_CUDA_CHECK(cudaMemsetAsync(sink.get(), 0, sink.bytes(), stream));
    auto* s = static_cast<unsigned long long*>(sink.get());
    const auto call = [&](int i) {
      TPQ_CUDA_CHECK(launch_floor_read(bufs[static_cast<size_t>(i % copies)].get(), bytes, pdl, s, stream));
    };
    for (int i = 0; i < copies; ++i) call(i);
    TPQ_CUDA_CHECK(cudaStreamSynchronize(stream));
    done_.push_back({bytes, copies, graph_us(call, o, stream)});
    return done_.back().us;
  }

 private:
  struct Entry {
    size_t bytes;
    int copies;
    double us;
  };
  std::vector<Entry> done_;
};

// max |format - cuBLAS(reference weight)| / max |cuBLAS(reference weight)| on copy 0's inputs.
double max_error(BenchFormat& format, const BenchProblem& p, const IoSets& io, cudaStream_t stream) {
  const size_t count = static_cast<size_t>(p.m * p.n);
  const size_t bytes = count * dtype_size(p.dtype);
  DeviceBuffer out(bytes), ref(bytes), result(2 * sizeof(unsigned));
  TPQ_CUDA_CHECK(cudaMemsetAsync(out.get(), 0xFF, bytes, stream));  // NaN: unwritten outputs show as +inf error
  TPQ_CUDA_CHECK(cudaMemsetAsync(result.get(), 0, result.bytes(), stream));
  format.run(0, io.x[0].get(), out.get());
  cublas_linear(p, io.x[0].get(), format.reference_weight(), ref.get());
  TPQ_CUDA_CHECK(launch_compare(elem_type(p.dtype), out.get(), ref.get(), count, static_cast<unsigned*>(result.get()),
                                stream));
  unsigned host[2] = {0, 0};
  TPQ_CUDA_CHECK(cudaMemcpyAsync(host, result.get(), sizeof(host), cudaMemcpyDeviceToHost, stream));
  TPQ_CUDA_CHECK(cudaStreamSynchronize(stream));
  float diff, mag;
  std::memcpy(&diff, &host[0], 4);
  std::memcpy(&mag, &host[1], 4);
  return mag > 0 ? diff / mag : diff;
}

// ---- output ----

void print_header_row(bool floor) {
  fmt::print("#\n# {:<12} {:<20} {:>5} {:>6} {:>6} {:>9} {:>8} {:>11} {:>6} {:>9} {:>9}{}\n", "format", "shape", "M",
             "N", "K", "time(us)", "TFLOP/s", "weight GB/s", "%BW", "vs cuBLAS", "max err",
             floor ? "  floor us (% of row)" : "");
}

void print_row(const Row& r) {
  const std::string err = r.max_err ? fmt::format("{:.2e}", *r.max_err) : std::string("-");
  const std::string floor =
      r.floor_us ? fmt::format("  {:8.2f} ({:5.1f})", *r.floor_us, 100.0 * *r.floor_us / r.us) : std::string();
  fmt::print("  {:<12} {:<20} {:>5} {:>6} {:>6} {:>9.2f} {:>8.2f} {:>11.1f} {:>6.1f} {:>9.2f} {:>9}{}\n", r.format,
             r.shape, r.m, r.n, r.k, r.us, r.tflops, r.weight_gbs, r.pct_bw, r.speedup, err, floor);
  std::fflush(stdout);
}

int run(int argc, char** argv) {
  const Options o = parse(argc, argv);
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    fmt::print(stderr, "tpq_bench: no CUDA device\n");
    return 2;
  }
  TPQ_CUDA_CHECK(cudaSetDevice(0));
  cudaDeviceProp prop{};
  TPQ_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  int driver = 0, runtime = 0;
  TPQ_CUDA_CHECK(cudaDriverGetVersion(&driver));
  TPQ_CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
  size_t free_bytes = 0, total_bytes = 0;
  TPQ_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));

  const StreamOwner stream_owner;
  const cudaStream_t stream = stream_owner.get();
  const Context ctx = Context::cuda(0, stream);
  // An explicit workspace keeps cuBLAS from allocating during graph capture (declared before the handle, so it
  // outlives it).
  DeviceBuffer cublas_workspace(size_t{32} << 20);
  const CublasOwner cublas_owner;
  const cublasHandle_t cublas = cublas_owner.get();
  TPQ_CUBLAS_CHECK(cublasSetStream(cublas, stream));
  TPQ_CUBLAS_CHECK(cublasSetWorkspace(cublas, cublas_workspace.get(), cublas_workspace.bytes()));
  int cublas_version = 0;
  TPQ_CUBLAS_CHECK(cublasGetVersion(cublas, &cublas_version));

  const double bandwidth = measure_read_bandwidth(stream, prop.multiProcessorCount, free_bytes);
  const char* no_pdl = std::getenv("TPQ_NO_PDL");
  const char* clusters = std::getenv("TPQ_GEMV_CLUSTERS");
  const char* block_gemm = std::getenv("TPQ_FP8_BLOCK_GEMM");
  const std::string dtype_label = o.dtype == DType::F16 ? "f16" : "bf16";
  const std::string baseline_name = "cublas_" + dtype_label;

  fmt::print("# tpq_bench  {}\n", utc_now());
  fmt::print("# GPU: {}  ({} SMs, {:.0f} MB L2, {:.1f} GiB, sm_{}{})\n", prop.name, prop.multiProcessorCount,
             prop.l2CacheSize / 1e6, static_cast<double>(prop.totalGlobalMem) / (1ull << 30), prop.major, prop.minor);
  fmt::print("# driver {}.{}, runtime {}.{}, cuBLAS {}\n", driver / 1000, driver % 1000 / 10, runtime / 1000,
             runtime % 1000 / 10, cublas_version);
  fmt::print("# measured read bandwidth: {:.1f} GB/s (read-only sweep over 4 GiB, 16-byte loads)\n", bandwidth);
  fmt::print("# dtype {}, {} forwards per CUDA graph, median of {} replays, {} rotated past 3x L2{}; "
             "TPQ_NO_PDL={}, TPQ_GEMV_CLUSTERS={}, TPQ_FP8_BLOCK_GEMM={}\n",
             dtype_label, o.graph_calls, o.iters, o.x_hot ? "weights+outputs" : "weights+inputs",
             o.x_hot ? " (--x-hot: one x, resident in L2)" : "", no_pdl ? no_pdl : "unset",
             clusters ? clusters : "unset", block_gemm ? block_gemm : "unset");
  fmt::print("# weight GB/s and %BW count weight bytes only; max err = max|out-ref|/max|ref| vs {} on the same "
             "inputs\n",
             baseline_name);
  print_header_row(o.floor);

  std::vector<const FormatEntry*> selected;
  for (const auto& e : format_registry())
    if (o.formats.empty() || std::find(o.formats.begin(), o.formats.end(), e.name) != o.formats.end())
      selected.push_back(&e);

  std::vector<Row> rows;
  // Launched as tpq launches its GEMVs: for programmatic dependent launch on sm_90+ unless TPQ_NO_PDL is set.
  const bool pdl = prop.major >= 9 && no_pdl == nullptr;
  StreamFloor stream_floor;
  for (const Shape& shape : o.shapes) {
    for (int64_t m : o.ms) {
      BenchProblem p{.m = m, .n = shape.n, .k = shape.k, .dtype = o.dtype, .ctx = &ctx, .cublas = cublas};
      const size_t es = dtype_size(o.dtype);
      DeviceBuffer master(static_cast<size_t>(shape.n * shape.k) * es);
      TPQ_CUDA_CHECK(launch_fill_random(elem_type(o.dtype), master.get(), static_cast<size_t>(shape.n * shape.k),
                                        0x5eed ^ static_cast<uint64_t>(shape.n * 131 + shape.k), 1.0f, stream));
      IoSets io;
      const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(shape.n) * static_cast<double>(shape.k);
      const auto make_row = [&](const std::string& name, const BenchFormat& f, const Timing& t, double base_us,
                                std::optional<double> err) {
        const double s = t.us * 1e-6;
        const double wgbs = f.weight_bytes(shape.n, shape.k) / s / 1e9;
        std::optional<double> floor_us;
        if (o.floor)
          floor_us = stream_floor.us(static_cast<size_t>(f.weight_bytes(shape.n, shape.k)), t.copies, pdl, o, stream);
        return Row{name, shape.label, m, shape.n, shape.k, t.us, flops / s / 1e12, wgbs, 100.0 * wgbs / bandwidth,
                   base_us / t.us, err, t.copies, floor_us};
      };

      double base_us = 0.0;
      {
        auto base = make_cublas_baseline();
        const Timing t = time_format(*base, p, master.get(), io, o, static_cast<size_t>(prop.l2CacheSize), stream);
        base_us = t.us;
        rows.push_back(make_row(baseline_name, *base, t, base_us, std::nullopt));
        print_row(rows.back());
      }
      for (const FormatEntry* e : selected) {
        auto f = e->make();
        const Timing t = time_format(*f, p, master.get(), io, o, static_cast<size_t>(prop.l2CacheSize), stream);
        const double err = max_error(*f, p, io, stream);
        rows.push_back(make_row(e->name, *f, t, base_us, err));
        print_row(rows.back());
      }
    }
  }

  if (!o.json.empty()) {
    nlohmann::json j;
    j["gpu"] = prop.name;
    j["date"] = utc_now();
    j["sm_count"] = prop.multiProcessorCount;
    j["l2_bytes"] = prop.l2CacheSize;
    j["driver"] = driver;
    j["runtime"] = runtime;
    j["cublas"] = cublas_version;
    j["read_bandwidth_gbs"] = bandwidth;
    j["dtype"] = dtype_label;
    j["graph_calls"] = o.graph_calls;
    j["iters"] = o.iters;
    j["tpq_no_pdl"] = no_pdl ? no_pdl : "";
    j["x_hot"] = o.x_hot;
    for (const Row& r : rows) {
      nlohmann::json row = {{"format", r.format},   {"shape", r.shape},   {"m", r.m},
                            {"n", r.n},             {"k", r.k},           {"us", r.us},
                            {"tflops", r.tflops},   {"weight_gbs", r.weight_gbs}, {"pct_bw", r.pct_bw},
                            {"speedup_vs_cublas", r.speedup}, {"copies", r.copies}};
      row["max_err"] = r.max_err ? nlohmann::json(*r.max_err) : nlohmann::json(nullptr);
      if (r.floor_us) row["floor_us"] = *r.floor_us;
      j["rows"].push_back(row);
    }
    std::ofstream(o.json) << j.dump(2) << "\n";
    fmt::print("# wrote {}\n", o.json);
  }

  return 0;
}

}  // namespace
}  // namespace tpq::bench

int main(int argc, char** argv) {
  try {
    return tpq::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tpq_bench: %s\n", e.what());
    return 1;
  }
}
