#pragma once
// The collectives of a Comm as the agreement checks of ThreadComm (src/comm_thread.cpp) and MpiComm
// (src/mpi/mpi_comm.cpp) compare and name them. The values travel between MPI ranks as int64.
#include <cstdint>
#include <string_view>

namespace tpq::detail {

enum class CollectiveOp : int64_t { kAllReduceSum = 1, kAllGather, kBroadcast, kBarrier };

constexpr std::string_view collective_name(CollectiveOp op) {
  switch (op) {
    case CollectiveOp::kAllReduceSum: return "all_reduce_sum";
    case CollectiveOp::kAllGather: return "all_gather";
    case CollectiveOp::kBroadcast: return "broadcast";
    case CollectiveOp::kBarrier: return "barrier";
  }
  return "?";
}

}  // namespace tpq::detail
