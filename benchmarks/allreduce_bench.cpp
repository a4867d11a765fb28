// tpq_allreduce_bench: tensor-parallel communication and one column -> row MLP pair, one rank per GPU.
//
//   mpirun -np N [-x NCCL_NVLS_ENABLE=0] tpq_allreduce_bench [--min-bytes 256] [--max-bytes 256M] [--iters 40]
//          [--warmup 10] [--graph] [--check 0|1] [--m 1,32,4096] [--mlp-calls 10] [--mlp-iters 20]
//          [--no-allreduce] [--no-mlp] [--json FILE]
//
// The NcclComm is bootstrapped from MPI (rank 0 makes the ncclUniqueId, MPI broadcasts it; rank r takes GPU
// local_rank). Only rank 0 prints.
//
// 1. All-reduce sweep, nccl-tests style: in-place NcclComm::all_reduce_sum (ncclAllReduce, sum) of a bf16 buffer
//    from --min-bytes to --max-bytes, doubling. Per size: --warmup calls, then --iters back-to-back calls between
//    two CUDA events (with --graph: the --iters calls captured in one CUDA graph, launched once); time = elapsed /
//    iters, the slowest rank's. algbw = bytes / time, busbw = algbw * 2(n-1)/n (nccl-tests' definitions; busbw is 0
//    at n = 1). #wrong: elements differing from the exact sum after one all-reduce of small integers (--check 1).
// 2. The Llama-3-70B MLP pair, unquant bf16: ColumnParallel up [28672, 8192] (this rank: 28672/N rows), then
//    RowParallel down [8192, 28672] (this rank: 28672/N columns, all-reduce of [M, 8192]). Per M: --mlp-calls pairs
//    captured in one CUDA graph (eager launches when capture fails on any rank), replayed --mlp-iters times; time
//    per call = the slowest rank's median replay / calls. Also timed the same way: the pair without its
//    all-reduce ("compute") and the all-reduce of [M, 8192] alone. The two weights of one rank are 117 MB or more
//    (N <= 8), past the L2, so they come from DRAM without rotating copies.
#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "timing.hpp"
#include "benchmarks/bench_kernels.hpp"
#include "tpq/core/context.hpp"
#include "tpq/core/device.hpp"
#include "tpq/core/error.hpp"
#include "tpq/detail/cuda_check.hpp"
#include "tpq/dist/mpi.hpp"
#include "tpq/dist/nccl.hpp"
#include "tpq/layers/parallel.hpp"
#include "tpq/quant/unquant.hpp"

namespace tpq::bench {
namespace {

constexpr int64_t kHidden = 8192;   // Llama-3-70B hidden size
constexpr int64_t kInter = 28672;   // Llama-3-70B intermediate size

struct Options {
  int64_t min_bytes = 256;
  int64_t max_bytes = int64_t{256} << 20;
  int iters = 40;
  int warmup = 10;
  bool graph = false;
  bool check = true;
  std::vector<int64_t> ms = {1, 32, 4096};
  int mlp_calls = 10;
  int mlp_iters = 20;
  bool allreduce = true;
  bool mlp = true;
  std::string json;
};

[[noreturn]] void usage_error(const std::string& why) {
  fail(ErrorCode::kInvalidArgument,
       "{}\nusage: mpirun -np N tpq_allreduce_bench [--min-bytes 256] [--max-bytes 256M] [--iters 40] [--warmup 10]\n"
       "         [--graph] [--check 0|1] [--m 1,32,4096] [--mlp-calls 10] [--mlp-iters 20] [--no-allreduce]\n"
       "         [--no-mlp] [--json FILE]",
       why);
}

// "256", "64K", "256M", "1G" (powers of 1024).
int64_t parse_size(const std::string& flag, const std::string& v) {
  try {
    size_t used = 0;
    long long x = std::stoll(v, &used);
    std::string unit = v.substr(used);
    if (unit == "K" || unit == "k") x <<= 10;
    else if (unit == "M" || unit == "m") x <<= 20;
    else if (unit == "G" || unit == "g") x <<= 30;
    else if (!unit.empty()) usage_error(fmt::format("{}: '{}' is not a size", flag, v));
    if (x > 0) return x;
  } catch (const std::invalid_argument&) {
  } catch (const std::out_of_range&) {
  }
  usage_error(fmt::format("{}: '{}' is not a positive size", flag, v));
}

std::vector<int64_t> parse_list(const std::string& flag, const std::string& v) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (start <= v.size()) {
    const size_t comma = v.find(',', start);
    const std::string item = v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) out.push_back(parse_size(flag, item));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    if (arg == "-h" || arg == "--help") usage_error("help");
    if (arg == "--graph") {
      o.graph = true;
      continue;
    }
    if (arg == "--no-allreduce") {
      o.allreduce = false;
      continue;
    }
    if (arg == "--no-mlp") {
      o.mlp = false;
      continue;
    }
    if (const size_t eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else {
      static const char* const kValued[] = {"--min-bytes", "--max-bytes", "--iters",     "--warmup", "--check",
                                            "--m",         "--mlp-calls", "--mlp-iters", "--json"};
      if (std::find(std::begin(kValued), std::end(kValued), arg) == std::end(kValued))
        usage_error("unknown flag " + arg);
      if (i + 1 >= argc) usage_error(arg + " needs a value");
      value = argv[++i];
    }
    if (arg == "--min-bytes") o.min_bytes = parse_size(arg, value);
    else if (arg == "--max-bytes") o.max_bytes = parse_size(arg, value);
    else if (arg == "--iters") o.iters = static_cast<int>(parse_size(arg, value));
    else if (arg == "--warmup") o.warmup = static_cast<int>(parse_size(arg, value));
    else if (arg == "--check") o.check = value != "0";
    else if (arg == "--m") o.ms = parse_list(arg, value);
    else if (arg == "--mlp-calls") o.mlp_calls = static_cast<int>(parse_size(arg, value));
    else if (arg == "--mlp-iters") o.mlp_iters = static_cast<int>(parse_size(arg, value));
    else if (arg == "--json") o.json = value;
    else usage_error("unknown flag " + arg);
  }
  if (o.min_bytes < 2 || o.min_bytes > o.max_bytes) usage_error("need 2 <= --min-bytes <= --max-bytes");
  return o;
}

// ---- MPI helpers (every rank calls them in the same order) ----

double max_over_ranks(double v) {
  double out = v;
  MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return out;
}

int64_t sum_over_ranks(int64_t v) {
  long long in = v, out = 0;
  MPI_Allreduce(&in, &out, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
  return out;
}

bool all_ranks(bool v) {
  int in = v ? 1 : 0, out = 0;
  MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return out != 0;
}

// ---- CUDA RAII ----




// A graph of `body` captured on `stream`, or nothing when capture failed on this rank (the error is reported to
// `why`). Tensors the body allocates must die inside it, so their frees are captured too.
struct Graph {
  cudaGraphExec_t exec = nullptr;
  ~Graph() {
    if (exec != nullptr) (void)cudaGraphExecDestroy(exec);
  }
};

std::unique_ptr<Graph> capture(cudaStream_t stream, const std::function<void()>& body, std::string* why) {
  cudaGraph_t graph = nullptr;
  if (const cudaError_t e = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal); e != cudaSuccess) {
    *why = cudaGetErrorString(e);
    return nullptr;
  }
  try {
    body();
  } catch (const std::exception& e) {
    *why = e.what();
    (void)cudaStreamEndCapture(stream, &graph);
    if (graph != nullptr) (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    return nullptr;
  }
  if (const cudaError_t e = cudaStreamEndCapture(stream, &graph); e != cudaSuccess) {
    *why = std::string("cudaStreamEndCapture: ") + cudaGetErrorString(e);
    (void)cudaGetLastError();
    return nullptr;
  }
  auto g = std::make_unique<Graph>();
  const cudaError_t inst = cudaGraphInstantiate(&g->exec, graph, cudaGraphInstantiateFlagAutoFreeOnLaunch);
  (void)cudaGraphDestroy(graph);
  if (inst != cudaSuccess) {
    *why = std::string("cudaGraphInstantiate: ") + cudaGetErrorString(inst);
    g->exec = nullptr;
    (void)cudaGetLastError();
    return nullptr;
  }
  return g;
}

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : fallback;
}

// bf16 bits of a small integer (exact).
uint16_t bf16_of_int(int v) {
  const float f = static_cast<float>(v);
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return static_cast<uint16_t>(bits >> 16);
}

// ---- 1. the all-reduce sweep ----

struct ArRow {
  int64_t bytes, count;
  double us, algbw, busbw;
  int64_t wrong;  // -1: not checked
};

// The elements that differ from the exact sum after one all-reduce of rank r's ((7i + 3r) mod 9) − 4: sums of
// at most 8 integers in [−4, 4], exact in bf16. Counted over all ranks.
int64_t check_allreduce(NcclComm& comm, const Context& ctx, void* buf, int64_t count) {
  const int rank = comm.rank(), n = comm.world_size();
  uint16_t mine[9], want[9];
  for (int j = 0; j < 9; ++j) {
    mine[j] = bf16_of_int((j + 3 * rank) % 9 - 4);
    int s = 0;
    for (int r = 0; r < n; ++r) s += (j + 3 * r) % 9 - 4;
    want[j] = bf16_of_int(s);
  }
  std::vector<uint16_t> host(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) host[static_cast<size_t>(i)] = mine[(7 * i) % 9];
  auto stream = static_cast<cudaStream_t>(ctx.stream());
  TPQ_CUDA_CHECK(cudaMemcpyAsync(buf, host.data(), static_cast<size_t>(count) * 2, cudaMemcpyHostToDevice, stream));
  Tensor t = Tensor::from_blob(buf, {count}, DType::BF16, Device::cuda(comm.device()));
  comm.all_reduce_sum(t, ctx);
  TPQ_CUDA_CHECK(cudaMemcpyAsync(host.data(), buf, static_cast<size_t>(count) * 2, cudaMemcpyDeviceToHost, stream));
  TPQ_CUDA_CHECK(cudaStreamSynchronize(stream));
  int64_t wrong = 0;
  for (int64_t i = 0; i < count; ++i) wrong += host[static_cast<size_t>(i)] != want[(7 * i) % 9];
  return sum_over_ranks(wrong);
}

std::vector<ArRow> allreduce_sweep(NcclComm& comm, const Context& ctx, const Options& o, bool print) {
  const int n = comm.world_size();
  auto stream = static_cast<cudaStream_t>(ctx.stream());
  void* buf = nullptr;
  TPQ_CUDA_CHECK(cudaMalloc(&buf, static_cast<size_t>(o.max_bytes)));
  std::unique_ptr<void, void (*)(void*)> owner(buf, [](void* p) { (void)cudaFree(p); });
  if (print) {
    fmt::print("#\n# all-reduce, in place, bf16, sum: {} calls per size after {} warm-up calls, {}\n", o.iters,
               o.warmup, o.graph ? "captured in one CUDA graph" : "back-to-back launches");
    fmt::print("# {:>12} {:>12} {:>9} {:>6} {:>10} {:>8} {:>8} {:>7}\n", "size", "count", "type", "redop", "time",
               "algbw", "busbw", "#wrong");
    fmt::print("# {:>12} {:>12} {:>9} {:>6} {:>10} {:>8} {:>8} {:>7}\n", "(B)", "(elements)", "", "", "(us)",
               "(GB/s)", "(GB/s)", "");
    std::fflush(stdout);
  }
  std::vector<ArRow> rows;
  for (int64_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= 2) {
    const int64_t count = bytes / 2;
    const int64_t wrong = o.check ? check_allreduce(comm, ctx, buf, count) : -1;
    // Zeros stay zeros however often they are summed.
    TPQ_CUDA_CHECK(cudaMemsetAsync(buf, 0, static_cast<size_t>(bytes), stream));
    Tensor t = Tensor::from_blob(buf, {count}, DType::BF16, Device::cuda(comm.device()));
    for (int i = 0; i < o.warmup; ++i) comm.all_reduce_sum(t, ctx);
    std::unique_ptr<Graph> graph;
    if (o.graph) {
      std::string why;
      TPQ_CUDA_CHECK(cudaStreamSynchronize(stream));
      graph = capture(stream, [&] { for (int i = 0; i < o.iters; ++i) comm.all_reduce_sum(t, ctx); }, &why);
      TPQ_CHECK(all_ranks(graph != nullptr), kCuda, "rank {}: capturing the all-reduce failed: {}", comm.rank(),
                why.empty() ? "on another rank" : why);
      TPQ_CUDA_CHECK(cudaGraphLaunch(graph->exec, stream));  // warm-up of the graph itself
    }
    TPQ_CUDA_CHECK(cudaStreamSynchronize(stream));
    MPI_Barrier(MPI_COMM_WORLD);
    Event start, end;
    TPQ_CUDA_CHECK(cudaEventRecord(start.get(), stream));
    if (graph) {
      TPQ_CUDA_CHECK(cudaGraphLaunch(graph->exec, stream));
    } else {
      for (int i = 0; i < o.iters; ++i) comm.all_reduce_sum(t, ctx);
    }
    TPQ_CUDA_CHECK(cudaEventRecord(end.get(), stream));
    TPQ_CUDA_CHECK(cudaEventSynchronize(end.get()));
    const double us = max_over_ranks(static_cast<double>(elapsed_ms(start, end)) * 1e3 / o.iters);
    const double algbw = static_cast<double>(bytes) / (us * 1e-6) / 1e9;
    const double busbw = algbw * 2.0 * (n - 1) / n;
    rows.push_back({bytes, count, us, algbw, busbw, wrong});
    if (print) {
      fmt::print("  {:>12} {:>12} {:>9} {:>6} {:>10.2f} {:>8.2f} {:>8.2f} {:>7}\n", bytes, count, "bfloat16", "sum",
                 us, algbw, busbw, wrong < 0 ? std::string("N/A") : std::to_string(wrong));
      std::fflush(stdout);
    }
  }
  if (print && !rows.empty()) {
    double avg = 0;
    int64_t wrong = 0;
    for (const ArRow& r : rows) avg += r.busbw, wrong += std::max<int64_t>(r.wrong, 0);
    fmt::print("# Out of bounds values : {} {}\n# Avg bus bandwidth    : {:.3f}\n#\n", wrong, wrong ? "FAILED" : "OK",
               avg / static_cast<double>(rows.size()));
  }
  return rows;
}

// ---- 2. the column -> row MLP pair ----

struct MlpRow {
  int64_t m;
  double pair_us, compute_us, allreduce_us;
  double tflops, weight_gbs_per_rank;
  std::string mode;
};

// Median time of one `body` call: `calls` calls captured in one graph and replayed `iters` times (eager launches
// of `calls` calls when capture failed on any rank), the slowest rank's.
double time_calls(const std::function<void()>& body, cudaStream_t stream, int calls, int iters, bool* graphed,
                  std::string* why) {
  for (int i = 0; i < 2; ++i) body();  // plans, NCCL setup and allocator pools outside the capture
  TPQ_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::unique_ptr<Graph> graph = capture(stream, [&] { for (int i = 0; i < calls; ++i) body(); }, why);
  *graphed = all_ranks(graph != nullptr);
  if (!*graphed) graph.reset();
  const auto once = [&] {
    if (graph)
      TPQ_CUDA_CHECK(cudaGraphLaunch(graph->exec, stream));
    else
      for (int i = 0; i < calls; ++i) body();
  };
  for (int i = 0; i < 2; ++i) once();
  TPQ_CUDA_CHECK(cudaStreamSynchronize(stream));
  MPI_Barrier(MPI_COMM_WORLD);
  std::vector<Event> starts(static_cast<size_t>(iters)), ends(static_cast<size_t>(iters));
  for (int i = 0; i < iters; ++i) {
    TPQ_CUDA_CHECK(cudaEventRecord(starts[static_cast<size_t>(i)].get(), stream));
    once();
    TPQ_CUDA_CHECK(cudaEventRecord(ends[static_cast<size_t>(i)].get(), stream));
  }
  TPQ_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> us;
  for (int i = 0; i < iters; ++i)
    us.push_back(static_cast<double>(elapsed_ms(starts[static_cast<size_t>(i)], ends[static_cast<size_t>(i)])) * 1e3);
  return max_over_ranks(median(us) / calls);
}

Tensor random_device(const Shape& s, uint64_t seed, float scale, const Context& ctx) {
  Tensor t = Tensor::empty(s, DType::BF16, ctx.device());
  TPQ_CUDA_CHECK(launch_fill_random(ElemType::kBF16, t.data(), static_cast<size_t>(t.numel()), seed, scale,
                                    static_cast<cudaStream_t>(ctx.stream())));
  return t;
}

std::vector<MlpRow> mlp_pair(const std::shared_ptr<NcclComm>& comm, const Context& ctx, const Options& o, bool print) {
  const int n = comm->world_size(), rank = comm->rank();
  TPQ_CHECK(kInter % n == 0, kAlignment, "the MLP pair needs a world size dividing {}", kInter);
  const int64_t local = kInter / n;
  auto stream = static_cast<cudaStream_t>(ctx.stream());
  // This rank's shards, random (uniform, scaled to keep activations of order 1).
  const auto up = std::make_shared<ColumnParallelLinear>(
      std::make_shared<UnquantLinear>(random_device({local, kHidden}, 0x0b00 + rank, 0.02f, ctx), std::nullopt));
  const auto down_inner =
      std::make_shared<UnquantLinear>(random_device({kHidden, local}, 0x0d00 + rank, 0.01f, ctx), std::nullopt);
  const auto down = std::make_shared<RowParallelLinear>(down_inner, std::nullopt, comm);
  TPQ_CUDA_CHECK(cudaDeviceSynchronize());
  if (print) {
    fmt::print("# Llama-3-70B MLP pair, unquant bf16: up ColumnParallel [{}, {}] -> down RowParallel [{}, {}] per rank "
               "({} ranks); {} calls per CUDA graph, median of {} replays\n",
               local, kHidden, kHidden, local, n, o.mlp_calls, o.mlp_iters);
    fmt::print("# compute = the pair without its all-reduce; allreduce = all-reduce of [M, {}] bf16 alone; TFLOP/s "
               "over all ranks; weight GB/s per rank\n",
               kHidden);
    fmt::print("# {:>5} {:>6} {:>11} {:>11} {:>13} {:>9} {:>12} {:>7}\n", "M", "ranks", "pair(us)", "compute(us)",
               "allreduce(us)", "TFLOP/s", "w GB/s/rank", "mode");
    std::fflush(stdout);
  }
  std::vector<MlpRow> rows;
  for (int64_t m : o.ms) {
    const Tensor x = random_device({m, kHidden}, 0x0a00 + static_cast<uint64_t>(m), 1.0f, ctx);
    Tensor reduce_buf = Tensor::zeros({m, kHidden}, DType::BF16, ctx.device());
    TPQ_CUDA_CHECK(cudaDeviceSynchronize());  // the fill ran on our stream, the zeroing maybe on the legacy one
    bool g_pair = false, g_compute = false, g_ar = false;
    std::string why;
    const double pair = time_calls([&] { (void)down->forward(up->forward(x, ctx), ctx); }, stream, o.mlp_calls,
                                   o.mlp_iters, &g_pair, &why);
    const double compute = time_calls([&] { (void)down_inner->forward(up->forward(x, ctx), ctx); }, stream,
                                      o.mlp_calls, o.mlp_iters, &g_compute, &why);
    const double ar = time_calls([&] { comm->all_reduce_sum(reduce_buf, ctx); }, stream, o.mlp_calls, o.mlp_iters,
                                 &g_ar, &why);
    const double flops = 2.0 * static_cast<double>(m) * 2.0 * static_cast<double>(kInter) * kHidden;
    const double weight_bytes = 2.0 * 2.0 * static_cast<double>(local) * kHidden;
    const std::string mode = g_pair && g_compute && g_ar ? "graph" : (g_pair ? "mixed" : "eager");
    rows.push_back({m, pair, compute, ar, flops / (pair * 1e-6) / 1e12, weight_bytes / (pair * 1e-6) / 1e9, mode});
    if (print) {
      const MlpRow& r = rows.back();
      fmt::print("  {:>5} {:>6} {:>11.2f} {:>11.2f} {:>13.2f} {:>9.1f} {:>12.1f} {:>7}\n", r.m, n, r.pair_us,
                 r.compute_us, r.allreduce_us, r.tflops, r.weight_gbs_per_rank, r.mode);
      if (!why.empty() && mode != "graph") fmt::print("#   (rank 0 capture failed: {})\n", why);
      std::fflush(stdout);
    }
  }
  return rows;
}

int run(const MpiSession& session, int argc, char** argv) {
  const int rank = session.rank(), size = session.world_size();
  const bool print = rank == 0;
  Options o;
  try {
    o = parse(argc, argv);
  } catch (const Error& e) {
    if (print) std::fprintf(stderr, "tpq_allreduce_bench: %s\n", e.what());
    return 2;
  }

  // One GPU per rank: refuse (on every rank) a world larger than the GPUs of a node.
  MPI_Comm node = MPI_COMM_NULL;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
  int node_ranks = 1;
  MPI_Comm_size(node, &node_ranks);
  MPI_Comm_free(&node);
  const int gpus = cuda_device_count();
  int worst[2] = {node_ranks, -gpus};
  MPI_Allreduce(MPI_IN_PLACE, worst, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (worst[0] > -worst[1]) {
    if (print)
      std::fprintf(stderr, "tpq_allreduce_bench: %d ranks on a node need as many GPUs, %d visible\n", worst[0],
                   -worst[1]);
    return 2;
  }

  const auto mpi = std::make_shared<MpiComm>();
  std::shared_ptr<NcclComm> comm = NcclComm::from_mpi(*mpi);
  TPQ_CUDA_CHECK(cudaSetDevice(comm->device()));
  cudaStream_t stream = nullptr;
  TPQ_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::unique_ptr<CUstream_st, void (*)(cudaStream_t)> stream_owner(stream, [](cudaStream_t s) {
    (void)cudaStreamDestroy(s);
  });
  const Context ctx = Context::cuda(comm->device(), stream);

  cudaDeviceProp prop{};
  TPQ_CUDA_CHECK(cudaGetDeviceProperties(&prop, comm->device()));
  int nccl_version = 0;
  TPQ_NCCL_CHECK(ncclGetVersion(&nccl_version));
  int runtime = 0;
  TPQ_CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
  const std::string nvls = env_or("NCCL_NVLS_ENABLE", "unset");
  if (print) {
    fmt::print("# tpq_allreduce_bench  {}\n", utc_now());
    fmt::print("# {} ranks, one GPU each: {} ({} visible on rank 0's node), NCCL {}, CUDA runtime {}.{}\n", size,
               prop.name, gpus, nccl_version, runtime / 1000, runtime % 1000 / 10);
    fmt::print("# NcclComm from MPI; NCCL_NVLS_ENABLE={}, NCCL_ALGO={}, NCCL_PROTO={}\n", nvls,
               env_or("NCCL_ALGO", "unset"), env_or("NCCL_PROTO", "unset"));
    std::fflush(stdout);
  }

  std::vector<ArRow> ar;
  std::vector<MlpRow> mlp;
  if (o.allreduce) ar = allreduce_sweep(*comm, ctx, o, print);
  if (o.mlp) mlp = mlp_pair(comm, ctx, o, print);
  TPQ_CUDA_CHECK(cudaStreamSynchronize(stream));

  if (print && !o.json.empty()) {
    nlohmann::json j;
    j["tool"] = "tpq_allreduce_bench";
    j["date"] = utc_now();
    j["ranks"] = size;
    j["gpu"] = prop.name;
    j["nccl_version"] = nccl_version;
    j["cuda_runtime"] = runtime;
    j["nccl_nvls_enable"] = nvls;
    j["allreduce_mode"] = o.graph ? "graph" : "eager";
    j["iters"] = o.iters;
    j["warmup"] = o.warmup;
    j["allreduce"] = nlohmann::json::array();
    for (const ArRow& r : ar)
      j["allreduce"].push_back({{"bytes", r.bytes}, {"count", r.count}, {"type", "bfloat16"}, {"us", r.us},
                                {"algbw_gbs", r.algbw}, {"busbw_gbs", r.busbw},
                                {"wrong", r.wrong < 0 ? nlohmann::json(nullptr) : nlohmann::json(r.wrong)}});
    j["mlp"] = nlohmann::json::array();
    for (const MlpRow& r : mlp)
      j["mlp"].push_back({{"m", r.m}, {"hidden", kHidden}, {"intermediate", kInter}, {"pair_us", r.pair_us},
                          {"compute_us", r.compute_us}, {"allreduce_us", r.allreduce_us}, {"tflops", r.tflops},
                          {"weight_gbs_per_rank", r.weight_gbs_per_rank}, {"mode", r.mode}});
    std::ofstream(o.json) << j.dump(2) << "\n";
    fmt::print("# wrote {}\n", o.json);
  }
  int64_t wrong = 0;
  for (const ArRow& r : ar) wrong += std::max<int64_t>(r.wrong, 0);
  comm.reset();
  return wrong > 0 ? 1 : 0;
}

}  // namespace
}  // namespace tpq::bench

int main(int argc, char** argv) {
  tpq::MpiSession session(&argc, &argv);
  try {
    return tpq::bench::run(session, argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tpq_allreduce_bench rank %d: %s\n", session.rank(), e.what());
    std::fflush(stderr);
    // A rank that throws must not leave the others waiting in a collective: end the whole job.
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  }
}
