// ThreadComm: N ranks as threads of one process, meeting at a rendezvous per collective.
//
// Every collective is one "round": each rank posts what it brings (op, tensor, dim/root, or a local error) and
// waits. The last rank to arrive checks that all posts agree, computes the round's outcome once (the sum in
// rank order, the concatenation, root's copy) and wakes the others; each rank then copies its share out.
// Computing once, in a fixed order, is what makes results bit-identical on every rank and independent of which
// thread happened to arrive last. A disagreement becomes the same error on every rank instead of a hang.
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>

#include "src/collective_op.hpp"
#include "tpq/core/convert.hpp"
#include "tpq/dist/comm.hpp"

namespace tpq {

namespace {

using Op = detail::CollectiveOp;
using detail::collective_name;

bool reducible(DType t) {
  switch (t) {
    case DType::F64:
    case DType::F32:
    case DType::F16:
    case DType::BF16:
    case DType::I8:
    case DType::U8:
    case DType::I16:
    case DType::U16:
    case DType::I32:
    case DType::U32:
    case DType::I64:
    case DType::U64: return true;
    default: return false;
  }
}

// What one rank brings to a round. `tensor` is a reference to the caller's tensor: the caller is blocked until
// the round ends, so reading it from the last rank's thread is safe.
struct Post {
  Op op = Op::kBarrier;
  const Tensor* tensor = nullptr;
  int arg = 0;  // all_gather: the dimension as passed; broadcast: the root
  std::optional<Error> local_error;
};

std::string describe(const Post& p) {
  switch (p.op) {
    case Op::kAllReduceSum: return fmt::format("all_reduce_sum {}", p.tensor->str());
    case Op::kAllGather: return fmt::format("all_gather {} on dim {}", p.tensor->str(), p.arg);
    case Op::kBroadcast: return fmt::format("broadcast {} from root {}", p.tensor->str(), p.arg);
    case Op::kBarrier: return "barrier";
  }
  return "?";
}

// What every rank takes away from a round: an error for all, or the shared result to copy out.
struct Outcome {
  std::optional<Error> error;
  Tensor result;  // all_reduce_sum: the sum; all_gather: the concatenation; broadcast: root's copy
};

template <typename T, typename Acc>
void sum_native(const std::vector<Post>& posts, Tensor& out) {
  const int64_t n = out.numel();
  T* o = out.data_as<T>();
  for (int64_t i = 0; i < n; ++i) {
    Acc acc = 0;
    for (const Post& p : posts) acc += static_cast<Acc>(p.tensor->data_as<const T>()[i]);
    o[i] = static_cast<T>(acc);
  }
}

// Integers wrap like the hardware (and NCCL) do; summing in the unsigned type keeps that free of UB.
template <typename T>
void sum_integer(const std::vector<Post>& posts, Tensor& out) {
  using U = std::make_unsigned_t<T>;
  const int64_t n = out.numel();
  T* o = out.data_as<T>();
  for (int64_t i = 0; i < n; ++i) {
    U acc = 0;
    for (const Post& p : posts) acc = static_cast<U>(acc + static_cast<U>(p.tensor->data_as<const T>()[i]));
    o[i] = static_cast<T>(acc);
  }
}

// 16-bit floats: widen, sum in float in rank order, round once.
template <float (*Load)(uint16_t), uint16_t (*Store)(float)>
void sum_half(const std::vector<Post>& posts, Tensor& out) {
  const int64_t n = out.numel();
  uint16_t* o = out.data_as<uint16_t>();
  for (int64_t i = 0; i < n; ++i) {
    float acc = 0.f;
    for (const Post& p : posts) acc += Load(p.tensor->data_as<const uint16_t>()[i]);
    o[i] = Store(acc);
  }
}

Tensor reduce_sum(const std::vector<Post>& posts) {
  const Tensor& first = *posts[0].tensor;
  Tensor out = Tensor::empty(first.shape(), first.dtype());
  switch (first.dtype()) {
    case DType::F64: sum_native<double, double>(posts, out); break;
    case DType::F32: sum_native<float, double>(posts, out); break;  // one rounding from the double sum
    case DType::F16: sum_half<f16_to_float, float_to_f16>(posts, out); break;
    case DType::BF16: sum_half<bf16_to_float, float_to_bf16>(posts, out); break;
    case DType::I8: sum_integer<int8_t>(posts, out); break;
    case DType::U8: sum_integer<uint8_t>(posts, out); break;
    case DType::I16: sum_integer<int16_t>(posts, out); break;
    case DType::U16: sum_integer<uint16_t>(posts, out); break;
    case DType::I32: sum_integer<int32_t>(posts, out); break;
    case DType::U32: sum_integer<uint32_t>(posts, out); break;
    case DType::I64: sum_integer<int64_t>(posts, out); break;
    case DType::U64: sum_integer<uint64_t>(posts, out); break;
    default: fail(ErrorCode::kInternal, "ThreadComm: no sum for {}", first.dtype());
  }
  return out;
}

// State shared by the ranks of one group.
class Group {
 public:
  explicit Group(int world) : world_(world), posts_(world) {}

  int world() const { return world_; }

  // Posts `post` for `rank`, waits for the round to complete and returns its outcome (or throws kComm when the
  // group is aborted).
  std::shared_ptr<const Outcome> round(int rank, Post post) {
    std::unique_lock lock(mu_);
    if (aborted_)
      fail(ErrorCode::kComm, "ThreadComm rank {}: {} on an aborted group: {}", rank, collective_name(post.op),
           abort_reason_);
    const uint64_t my_round = round_;
    posts_[rank] = std::move(post);
    if (++arrived_ == world_) {
      outcome_ = complete_round();
      arrived_ = 0;
      for (Post& p : posts_) p = Post{};
      ++round_;
      cv_.notify_all();
      return outcome_;
    }
    // A completed round wins over a later abort: this rank's result is already computed.
    cv_.wait(lock, [&] { return round_ != my_round || aborted_; });
    if (round_ == my_round)
      fail(ErrorCode::kComm, "ThreadComm rank {}: {} aborted: {}", rank, collective_name(posts_[rank].op),
           abort_reason_);
    // outcome_ is still this round's: the next round cannot complete before this rank posts to it.
    return outcome_;
  }

  void abort(const std::string& why) {
    std::lock_guard lock(mu_);
    if (aborted_) return;  // keep the first reason: later ones are usually its echoes
    aborted_ = true;
    abort_reason_ = why;
    cv_.notify_all();
  }

 private:
  // Runs under the lock on the last rank's thread; every other rank is waiting, so the posts are stable.
  std::shared_ptr<const Outcome> complete_round() {
    auto outcome = std::make_shared<Outcome>();
    try {
      if (auto e = validate()) {
        outcome->error = std::move(e);
      } else {
        outcome->result = compute();
      }
    } catch (const Error& e) {
      outcome->error = e;
    } catch (const std::exception& e) {
      outcome->error =
          Error(ErrorCode::kComm, fmt::format("ThreadComm {}: {}", collective_name(posts_[0].op), e.what()));
    }
    return outcome;
  }

  std::optional<Error> validate() const {
    for (int r = 0; r < world_; ++r)
      if (posts_[r].local_error) return posts_[r].local_error;
    const Post& first = posts_[0];
    bool agree = true;
    for (const Post& p : posts_) {
      if (p.op != first.op || p.arg != first.arg) agree = false;
      if (first.op != Op::kBarrier && p.op == first.op &&
          (p.tensor->dtype() != first.tensor->dtype() || p.tensor->shape() != first.tensor->shape()))
        agree = false;
    }
    if (agree) return std::nullopt;
    std::vector<std::string> lines;
    for (int r = 0; r < world_; ++r) lines.push_back(fmt::format("rank {}: {}", r, describe(posts_[r])));
    return Error(ErrorCode::kComm,
                 fmt::format("ThreadComm: ranks disagree on a collective ({})", fmt::join(lines, "; ")));
  }

  Tensor compute() const {
    const Post& first = posts_[0];
    switch (first.op) {
      case Op::kAllReduceSum: return reduce_sum(posts_);
      case Op::kAllGather: {
        std::vector<Tensor> parts;
        for (const Post& p : posts_) parts.push_back(*p.tensor);
        return Tensor::cat(parts, first.arg);
      }
      case Op::kBroadcast: return posts_[first.arg].tensor->clone();  // root may change its tensor once released
      case Op::kBarrier: return Tensor();
    }
    return Tensor();
  }

  const int world_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t round_ = 0;
  int arrived_ = 0;
  std::vector<Post> posts_;
  std::shared_ptr<const Outcome> outcome_;
  bool aborted_ = false;
  std::string abort_reason_;
};

class ThreadRank final : public ThreadComm {
 public:
  ThreadRank(std::shared_ptr<Group> group, int rank) : group_(std::move(group)), rank_(rank) {}

  int rank() const override { return rank_; }
  int world_size() const override { return group_->world(); }
  std::string name() const override { return "thread"; }

  void all_reduce_sum(Tensor& t, const Context&) override {
    Post p{Op::kAllReduceSum, &t, 0, check_tensor(t, "all_reduce_sum")};
    if (!p.local_error && !reducible(t.dtype()))
      p.local_error = Error(ErrorCode::kUnsupported,
                            fmt::format("ThreadComm rank {}: all_reduce_sum of {}: supported are F64, F32, F16, "
                                        "BF16 and the integer types",
                                        rank_, t.str()));
    const auto out = take(std::move(p));
    if (t.nbytes()) std::memcpy(t.data(), out->result.data(), t.nbytes());
  }

  Tensor all_gather(const Tensor& t, int dim, const Context&) override {
    Post p{Op::kAllGather, &t, dim, check_tensor(t, "all_gather")};
    if (!p.local_error && (dim < -t.ndim() || dim >= t.ndim()))
      p.local_error = Error(ErrorCode::kInvalidArgument,
                            fmt::format("ThreadComm rank {}: all_gather on dim {} of {}", rank_, dim, t.str()));
    if (!p.local_error && dim < 0) p.arg = dim + t.ndim();  // -1 on one rank and ndim-1 on another agree
    const auto out = take(std::move(p));
    return out->result.clone();  // each rank owns its result, as it would across processes
  }

  void broadcast(Tensor& t, int root, const Context&) override {
    Post p{Op::kBroadcast, &t, root, check_tensor(t, "broadcast")};
    if (!p.local_error && (root < 0 || root >= world_size()))
      p.local_error =
          Error(ErrorCode::kInvalidArgument,
                fmt::format("ThreadComm rank {}: broadcast root {} with world size {}", rank_, root, world_size()));
    const auto out = take(std::move(p));
    if (rank_ != root && t.nbytes()) std::memcpy(t.data(), out->result.data(), t.nbytes());
  }

  void barrier() override { take(Post{Op::kBarrier, nullptr, 0, std::nullopt}); }

  void abort(const std::string& why) override { group_->abort(fmt::format("rank {}: {}", rank_, why)); }

 private:
  // A bad argument on one rank still goes through the rendezvous, so every rank reports it rather than the
  // others waiting for a rank that already threw.
  std::optional<Error> check_tensor(const Tensor& t, std::string_view op) const {
    if (!t.defined())
      return Error(ErrorCode::kInvalidArgument,
                   fmt::format("ThreadComm rank {}: {} of an undefined tensor", rank_, op));
    if (!t.device().is_cpu())
      return Error(ErrorCode::kInvalidArgument,
                   fmt::format("ThreadComm rank {}: {} of {}: ThreadComm works on CPU tensors", rank_, op, t.str()));
    return std::nullopt;
  }

  std::shared_ptr<const Outcome> take(Post p) {
    auto out = group_->round(rank_, std::move(p));
    if (out->error) throw *out->error;
    return out;
  }

  std::shared_ptr<Group> group_;
  int rank_;
};

}  // namespace

std::vector<std::shared_ptr<ThreadComm>> ThreadComm::create(int world_size) {
  TPQ_CHECK(world_size >= 1, kInvalidArgument, "ThreadComm::create: world size {} (must be at least 1)", world_size);
  auto group = std::make_shared<Group>(world_size);
  std::vector<std::shared_ptr<ThreadComm>> comms;
  comms.reserve(world_size);
  for (int r = 0; r < world_size; ++r) comms.push_back(std::make_shared<ThreadRank>(group, r));
  return comms;
}

void run_ranks(int world_size, const std::function<void(int rank, Comm& comm)>& fn) {
  const auto comms = ThreadComm::create(world_size);
  std::mutex mu;
  std::exception_ptr first;
  std::vector<std::thread> threads;
  threads.reserve(world_size);
  for (int r = 0; r < world_size; ++r) {
    threads.emplace_back([&, r] {
      try {
        fn(r, *comms[r]);
      } catch (...) {
        std::string why = "an exception that is not a std::exception";
        try {
          throw;
        } catch (const std::exception& e) {
          why = e.what();
        } catch (...) {
        }
        {
          // Recorded before aborting, so the root cause wins over the kComm errors it triggers on other ranks.
          std::lock_guard lock(mu);
          if (!first) first = std::current_exception();
        }
        comms[r]->abort(fmt::format("threw: {}", why));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  if (first) std::rethrow_exception(first);
}

}  // namespace tpq
