// MpiComm and MpiSession over MPI; NcclComm::from_mpi when CUDA is built too. MPI does the transport; this file
// adds the pre-collective agreement check that turns a disagreeing rank into an error everywhere.
#include "tpq/dist/mpi.hpp"

#include <mpi.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstring>
#include <optional>

#include "src/collective_op.hpp"
#include "tpq/core/convert.hpp"
#ifdef TPQ_WITH_CUDA
#include "tpq/dist/nccl.hpp"
#endif

namespace tpq {

namespace {

bool mpi_finalized() {
  int flag = 0;
  MPI_Finalized(&flag);
  return flag != 0;
}

std::string mpi_error_text(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) return fmt::format("MPI error code {}", rc);
  return std::string(text, static_cast<size_t>(len));
}

int to_mpi_level(MpiThreadLevel l) {
  switch (l) {
    case MpiThreadLevel::kSingle: return MPI_THREAD_SINGLE;
    case MpiThreadLevel::kFunneled: return MPI_THREAD_FUNNELED;
    case MpiThreadLevel::kSerialized: return MPI_THREAD_SERIALIZED;
    case MpiThreadLevel::kMultiple: return MPI_THREAD_MULTIPLE;
  }
  return MPI_THREAD_SINGLE;
}

MpiThreadLevel from_mpi_level(int l) {
  if (l >= MPI_THREAD_MULTIPLE) return MpiThreadLevel::kMultiple;
  if (l >= MPI_THREAD_SERIALIZED) return MpiThreadLevel::kSerialized;
  if (l >= MPI_THREAD_FUNNELED) return MpiThreadLevel::kFunneled;
  return MpiThreadLevel::kSingle;
}

std::optional<MPI_Datatype> mpi_sum_type(DType t) {
  switch (t) {
    case DType::F32: return MPI_FLOAT;
    case DType::F64: return MPI_DOUBLE;
    case DType::I8: return MPI_INT8_T;
    case DType::U8: return MPI_UINT8_T;
    case DType::I16: return MPI_INT16_T;
    case DType::U16: return MPI_UINT16_T;
    case DType::I32: return MPI_INT32_T;
    case DType::U32: return MPI_UINT32_T;
    case DType::I64: return MPI_INT64_T;
    case DType::U64: return MPI_UINT64_T;
    default: return std::nullopt;
  }
}

// MPI counts are int: large buffers go in pieces of this many elements.
constexpr int64_t kMaxCount = int64_t{1} << 30;

using Op = detail::CollectiveOp;
using detail::collective_name;

// Why a rank's own arguments are bad; travels in the signature so every rank can name the culprit.
enum class Bad : int64_t { kNone = 0, kUndefined, kNotCpu, kDType, kDim, kRoot, kSubByte };

std::string_view bad_text(Bad b) {
  switch (b) {
    case Bad::kNone: return "";
    case Bad::kUndefined: return "an undefined tensor";
    case Bad::kNotCpu: return "a tensor not on the CPU (MpiComm moves host memory; use NcclComm for CUDA tensors)";
    case Bad::kDType: return "a dtype MpiComm cannot sum (F64, F32, F16, BF16 and integers only)";
    case Bad::kDim: return "a dimension out of range";
    case Bad::kRoot: return "a root out of range";
    case Bad::kSubByte: return "a sub-byte dtype gathered on an inner dimension";
  }
  return "?";
}

ErrorCode bad_code(Bad b) {
  return b == Bad::kDType || b == Bad::kSubByte ? ErrorCode::kUnsupported : ErrorCode::kInvalidArgument;
}

// What a rank is about to do, as integers, so one MPI_Allreduce of (min, max) can tell whether all agree.
constexpr int kSigDims = 8;
struct Signature {
  int64_t op = 0, bad = 0, dtype = -1, ndim = -1, numel = -1, arg = 0, device = 0;
  std::array<int64_t, kSigDims> dims{};  // the first kSigDims dimensions; numel covers the rest

  static constexpr int kLength = 7 + kSigDims;
  std::array<int64_t, kLength> pack() const {
    std::array<int64_t, kLength> v{op, bad, dtype, ndim, numel, arg, device};
    std::copy(dims.begin(), dims.end(), v.begin() + 7);
    return v;
  }
  static Signature unpack(const int64_t* v) {
    Signature s{v[0], v[1], v[2], v[3], v[4], v[5], v[6]};
    std::copy(v + 7, v + kLength, s.dims.begin());
    return s;
  }

  std::string str() const {
    const auto o = static_cast<Op>(op);
    std::string s(collective_name(o));
    if (o != Op::kBarrier && ndim >= 0) {
      std::vector<int64_t> shown(dims.begin(), dims.begin() + std::min<int64_t>(ndim, kSigDims));
      s += fmt::format(" {}[{}{}] {}", dtype_name(static_cast<DType>(dtype)), fmt::join(shown, ", "),
                       ndim > kSigDims ? ", ..." : "", device ? "cuda" : "cpu");
    }
    if (o == Op::kAllGather) s += fmt::format(" on dim {}", arg);
    if (o == Op::kBroadcast) s += fmt::format(" from root {}", arg);
    if (bad) s += fmt::format(" ({})", bad_text(static_cast<Bad>(bad)));
    return s;
  }
};

Signature make_signature(Op op, const Tensor* t, int64_t arg) {
  Signature s;
  s.op = static_cast<int64_t>(op);
  s.arg = arg;
  if (!t) return s;
  if (!t->defined()) {
    s.bad = static_cast<int64_t>(Bad::kUndefined);
    return s;
  }
  s.dtype = static_cast<int64_t>(t->dtype());
  s.ndim = t->ndim();
  s.numel = t->numel();
  s.device = t->device().is_cpu() ? 0 : 1;
  for (int i = 0; i < std::min(t->ndim(), kSigDims); ++i) s.dims[i] = t->shape()[i];
  if (!t->device().is_cpu()) s.bad = static_cast<int64_t>(Bad::kNotCpu);
  return s;
}

}  // namespace

// ---- MpiSession ----

MpiSession::MpiSession(int* argc, char*** argv, MpiThreadLevel required) {
  TPQ_CHECK(!mpi_finalized(), kMpi, "MpiSession: MPI was already finalized and cannot be initialized again");
  int initialized = 0;
  MPI_Initialized(&initialized);
  int provided = MPI_THREAD_SINGLE;
  if (!initialized) {
    const int rc = MPI_Init_thread(argc, argv, to_mpi_level(required), &provided);
    TPQ_CHECK(rc == MPI_SUCCESS, kMpi, "MpiSession: MPI_Init_thread failed: {}", mpi_error_text(rc));
    owns_ = true;
  } else {
    MPI_Query_thread(&provided);
  }
  provided_ = from_mpi_level(provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size_);
}

MpiSession::~MpiSession() {
  if (owns_ && !mpi_finalized()) MPI_Finalize();
}

// ---- MpiComm ----

struct MpiComm::Impl {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0;
  int size = 1;
  int local_rank = 0;

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  // After MPI_Finalize the handle is gone with MPI itself; freeing it then would be an error.
  ~Impl() {
    if (comm != MPI_COMM_NULL && !mpi_finalized()) MPI_Comm_free(&comm);
  }

  // Throws kMpi naming this rank and the call.
  void check(int rc, const char* call) const {
    if (rc != MPI_SUCCESS)
      fail(ErrorCode::kMpi, "MpiComm rank {}/{}: {} failed: {}", rank, size, call, mpi_error_text(rc));
  }

  // Compares every rank's signature; throws the same error on every rank unless all agree and none is bad.
  void agree(const Signature& mine, bool validate) const {
    if (!validate) {
      if (mine.bad) fail(bad_code(static_cast<Bad>(mine.bad)), "MpiComm rank {}: {}", rank, mine.str());
      return;
    }
    constexpr int n = Signature::kLength;
    const auto v = mine.pack();
    std::array<int64_t, 2 * n> minmax;  // min of v, then min of -v (= -max of v)
    for (int i = 0; i < n; ++i) {
      minmax[i] = v[i];
      minmax[n + i] = -v[i];
    }
    check(MPI_Allreduce(MPI_IN_PLACE, minmax.data(), 2 * n, MPI_INT64_T, MPI_MIN, comm), "MPI_Allreduce (agreement)");
    bool same = true;
    for (int i = 0; i < n; ++i) same = same && minmax[i] == -minmax[n + i];
    if (same && !mine.bad) return;
    if (same)  // every rank made the same mistake: report it as what it is
      fail(bad_code(static_cast<Bad>(mine.bad)), "MpiComm: every rank of {} calls {}", size, mine.str());
    // Only now, on the error path, gather the signatures so the message can name each rank.
    std::vector<int64_t> all(static_cast<size_t>(n) * size);
    check(MPI_Allgather(v.data(), n, MPI_INT64_T, all.data(), n, MPI_INT64_T, comm), "MPI_Allgather (agreement)");
    std::vector<std::string> lines;
    for (int r = 0; r < size; ++r) lines.push_back(fmt::format("rank {}: {}", r, Signature::unpack(&all[r * n]).str()));
    fail(ErrorCode::kComm, "MpiComm rank {}: ranks disagree on a collective ({})", rank, fmt::join(lines, "; "));
  }

  // A private duplicate of `parent` (collective over it).
  static std::unique_ptr<Impl> duplicate(MPI_Comm parent) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    TPQ_CHECK(initialized && !mpi_finalized(), kMpi, "MpiComm: MPI is not initialized (create an MpiSession first)");
    auto impl = std::make_unique<Impl>();
    MPI_Comm_rank(parent, &impl->rank);
    MPI_Comm_size(parent, &impl->size);
    impl->check(MPI_Comm_dup(parent, &impl->comm), "MPI_Comm_dup");
    impl->check(MPI_Comm_set_errhandler(impl->comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    // The node-local rank is found now, collectively, so local_rank() never starts a collective of its own.
    MPI_Comm node = MPI_COMM_NULL;
    impl->check(MPI_Comm_split_type(impl->comm, MPI_COMM_TYPE_SHARED, impl->rank, MPI_INFO_NULL, &node),
                "MPI_Comm_split_type");
    MPI_Comm_rank(node, &impl->local_rank);
    MPI_Comm_free(&node);
    return impl;
  }
};

MpiComm::MpiComm() : impl_(Impl::duplicate(MPI_COMM_WORLD)) {}

MpiComm::MpiComm(const void* native, size_t native_size) {
  TPQ_CHECK(native != nullptr, kInvalidArgument, "MpiComm: null communicator handle");
  TPQ_CHECK(native_size == sizeof(MPI_Comm), kInvalidArgument,
            "MpiComm: a communicator handle of {} bytes, but this MPI's MPI_Comm has {} (a different MPI?)",
            native_size, sizeof(MPI_Comm));
  impl_ = Impl::duplicate(*static_cast<const MPI_Comm*>(native));
}

MpiComm::~MpiComm() = default;

int MpiComm::rank() const { return impl_->rank; }
int MpiComm::world_size() const { return impl_->size; }
int MpiComm::local_rank() const { return impl_->local_rank; }
const void* MpiComm::native_handle() const { return &impl_->comm; }

void MpiComm::all_reduce_sum(Tensor& t, const Context&) {
  Signature sig = make_signature(Op::kAllReduceSum, &t, 0);
  const bool halves = t.defined() && (t.dtype() == DType::F16 || t.dtype() == DType::BF16);
  if (!sig.bad && !halves && !mpi_sum_type(t.dtype())) sig.bad = static_cast<int64_t>(Bad::kDType);
  impl_->agree(sig, validate_);
  const int64_t n = t.numel();
  if (impl_->size == 1 || n == 0) return;
  if (halves) {
    // MPI has no 16-bit float sum: widen, sum in float, round once.
    std::vector<float> wide(static_cast<size_t>(n));
    const auto* h = t.data_as<const uint16_t>();
    const bool bf16 = t.dtype() == DType::BF16;
    for (int64_t i = 0; i < n; ++i) wide[i] = bf16 ? bf16_to_float(h[i]) : f16_to_float(h[i]);
    for (int64_t off = 0; off < n; off += kMaxCount)
      impl_->check(MPI_Allreduce(MPI_IN_PLACE, wide.data() + off, static_cast<int>(std::min(kMaxCount, n - off)),
                                 MPI_FLOAT, MPI_SUM, impl_->comm),
                   "MPI_Allreduce");
    auto* o = t.data_as<uint16_t>();
    for (int64_t i = 0; i < n; ++i) o[i] = bf16 ? float_to_bf16(wide[i]) : float_to_f16(wide[i]);
    return;
  }
  const MPI_Datatype type = *mpi_sum_type(t.dtype());
  const size_t es = dtype_size(t.dtype());
  for (int64_t off = 0; off < n; off += kMaxCount)
    impl_->check(MPI_Allreduce(MPI_IN_PLACE, static_cast<char*>(t.data()) + off * es,
                               static_cast<int>(std::min(kMaxCount, n - off)), type, MPI_SUM, impl_->comm),
                 "MPI_Allreduce");
}

Tensor MpiComm::all_gather(const Tensor& t, int dim, const Context&) {
  Signature sig = make_signature(Op::kAllGather, &t, dim);
  int d = dim;
  if (!sig.bad) {
    if (dim < -t.ndim() || dim >= t.ndim()) {
      sig.bad = static_cast<int64_t>(Bad::kDim);
    } else {
      d = dim < 0 ? dim + t.ndim() : dim;
      sig.arg = d;  // -1 on one rank and ndim-1 on another agree
    }
  }
  int64_t outer = 1;
  if (!sig.bad) {
    for (int i = 0; i < d; ++i) outer *= t.shape()[i];
    if (outer > 1 && !dtype_is_byte_sized(t.dtype())) sig.bad = static_cast<int64_t>(Bad::kSubByte);
  }
  impl_->agree(sig, validate_);
  Shape out_shape = t.shape();
  out_shape[d] *= impl_->size;
  Tensor out = Tensor::empty(out_shape, t.dtype());
  const size_t bytes = t.nbytes();
  if (bytes == 0) return out;
  // All ranks hold the same shape by now, so they all take this branch alike.
  TPQ_CHECK(bytes <= static_cast<size_t>(INT_MAX), kUnsupported,
            "MpiComm rank {}: all_gather of {} ({} bytes; at most {} per rank)", impl_->rank, t.str(), bytes, INT_MAX);
  const int count = static_cast<int>(bytes);
  if (outer == 1) {  // rank blocks are already contiguous in the output
    impl_->check(MPI_Allgather(t.data(), count, MPI_BYTE, out.data(), count, MPI_BYTE, impl_->comm), "MPI_Allgather");
    return out;
  }
  // MPI lays out [rank][outer][row]; the result is [outer][rank][row].
  std::vector<char> gathered(bytes * impl_->size);
  impl_->check(MPI_Allgather(t.data(), count, MPI_BYTE, gathered.data(), count, MPI_BYTE, impl_->comm),
               "MPI_Allgather");
  const size_t row = bytes / static_cast<size_t>(outer);
  for (int r = 0; r < impl_->size; ++r)
    for (int64_t o = 0; o < outer; ++o)
      std::memcpy(static_cast<char*>(out.data()) + (o * impl_->size + r) * row, gathered.data() + r * bytes + o * row,
                  row);
  return out;
}

void MpiComm::broadcast(Tensor& t, int root, const Context&) {
  Signature sig = make_signature(Op::kBroadcast, &t, root);
  if (!sig.bad && (root < 0 || root >= impl_->size)) sig.bad = static_cast<int64_t>(Bad::kRoot);
  impl_->agree(sig, validate_);
  const int64_t bytes = static_cast<int64_t>(t.nbytes());
  if (impl_->size == 1) return;
  for (int64_t off = 0; off < bytes; off += kMaxCount)
    impl_->check(MPI_Bcast(static_cast<char*>(t.data()) + off, static_cast<int>(std::min(kMaxCount, bytes - off)),
                           MPI_BYTE, root, impl_->comm),
                 "MPI_Bcast");
}

void MpiComm::barrier() {
  impl_->agree(make_signature(Op::kBarrier, nullptr, 0), validate_);
  impl_->check(MPI_Barrier(impl_->comm), "MPI_Barrier");
}

// ---- NCCL bootstrap ----

#ifdef TPQ_WITH_CUDA
std::unique_ptr<NcclComm> NcclComm::from_mpi(const MpiComm& mpi, int device) {
  const MPI_Comm comm = *static_cast<const MPI_Comm*>(mpi.native_handle());
  const auto check = [&](int rc, const char* call) {
    if (rc != MPI_SUCCESS)
      fail(ErrorCode::kMpi, "NcclComm::from_mpi rank {}/{}: {} failed: {}", mpi.rank(), mpi.world_size(), call,
           mpi_error_text(rc));
  };
  // Every step that can fail on one rank is agreed on before ncclCommInitRank, which would wait forever for a
  // rank that already gave up.
  std::string problem;
  if (device < 0) {
    const int n = cuda_device_count();
    if (n > 0)
      device = mpi.local_rank() % n;
    else
      problem = "no CUDA device is visible";
  }
  NcclUniqueId id;
  if (problem.empty() && mpi.rank() == 0) {
    try {
      id = make_unique_id();
    } catch (const Error& e) {
      problem = e.what();
    }
  }
  int ok = problem.empty() ? 1 : 0;
  check(MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, comm), "MPI_Allreduce");
  if (!ok)
    fail(ErrorCode::kNccl, "NcclComm::from_mpi rank {}/{}: {}", mpi.rank(), mpi.world_size(),
         problem.empty() ? std::string("another rank could not start (see its error)") : problem);
  check(MPI_Bcast(id.bytes.data(), static_cast<int>(NcclUniqueId::kBytes), MPI_BYTE, 0, comm), "MPI_Bcast");
  return create(id, mpi.rank(), mpi.world_size(), device);
}
#endif

}  // namespace tpq
