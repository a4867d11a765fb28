#pragma once
// The CUDA half of tpq::Context, private to src/cuda/: the per-context cuBLASLt handle and workspace, the cache of
// cuBLASLt algorithm choices, and the scratch the GEMV's split-K needs. Never installed; include only from
// translation units built with CUDA.
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <type_traits>
#include <unordered_map>

#include "kernels/common/split_k_params.hpp"
#include "src/cuda/linear_kernels.hpp"
#include "tpq/core/context.hpp"
#include "tpq/detail/cuda_check.hpp"

namespace tpq::detail {

// Makes `device` current for a scope. The forward path calls this on every launch, so it only switches (and
// switches back) when the caller's current device differs, which costs one thread-local read otherwise.
class CudaDeviceGuard {
 public:
  explicit CudaDeviceGuard(int device) {
    TPQ_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) {
      TPQ_CUDA_CHECK(cudaSetDevice(device));
      switched_ = true;
    }
  }
  ~CudaDeviceGuard() {
    if (switched_) (void)cudaSetDevice(previous_);
  }
  CudaDeviceGuard(const CudaDeviceGuard&) = delete;
  CudaDeviceGuard& operator=(const CudaDeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool switched_ = false;
};

// A cuBLASLt problem as a fixed list of integers: an op tag first (so different users of the cache never
// collide), then whatever decides the algorithm (dtypes, sizes, epilogue, pointer alignments).
struct LtPlanKey {
  std::array<int64_t, 12> words{};
  friend bool operator==(const LtPlanKey&, const LtPlanKey&) = default;
};

struct LtPlanKeyHash {
  size_t operator()(const LtPlanKey& key) const noexcept {
    uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a over the words
    for (int64_t w : key.words) {
      h ^= static_cast<uint64_t>(w);
      h *= 0x100000001b3ull;
    }
    return static_cast<size_t>(h);
  }
};

// cuBLASLt heuristic answers, cached per problem. The heuristic query costs tens of microseconds of host time, a
// forward must not pay it every call. nullopt records that cuBLASLt refused the problem, so the caller goes
// straight to its fallback next time. Many threads may call forward at once: readers share a lock.
class LtPlanCache {
 public:
  using Plan = std::optional<cublasLtMatmulAlgo_t>;

  // Returns the cached plan for `key`, or runs `make` (outside the lock) and caches what it returns.
  Plan get_or_create(const LtPlanKey& key, const std::function<Plan()>& make) {
    {
      std::shared_lock lock(mutex_);
      if (auto it = plans_.find(key); it != plans_.end()) return it->second;
    }
    Plan plan = make();
    std::unique_lock lock(mutex_);
    // Prefill sees many distinct M; bound the cache instead of growing with every sequence length.
    if (plans_.size() >= kMaxEntries) plans_.clear();
    return plans_.try_emplace(key, plan).first->second;
  }

  // Records that a cached plan failed at run time (cuBLASLt said NOT_SUPPORTED), so later calls skip it.
  void refuse(const LtPlanKey& key) {
    std::unique_lock lock(mutex_);
    plans_[key] = std::nullopt;
  }

 private:
  static constexpr size_t kMaxEntries = 4096;
  std::shared_mutex mutex_;
  std::unordered_map<LtPlanKey, Plan, LtPlanKeyHash> plans_;
};

struct CudaFreeDeleter {
  void operator()(void* p) const noexcept { (void)cudaFree(p); }
};
struct LtHandleDeleter {
  void operator()(cublasLtHandle_t h) const noexcept { (void)cublasLtDestroy(h); }
};
using CudaBuffer = std::unique_ptr<void, CudaFreeDeleter>;
using LtHandle = std::unique_ptr<std::remove_pointer_t<cublasLtHandle_t>, LtHandleDeleter>;

// GEMV split-K: it runs only when the output has fewer 16-row tiles than the device has multiprocessors, so its
// partial sums are bounded by this, kGemvMaxM and the multiprocessor count.
inline constexpr int kGemvMaxSplits = 16;

}  // namespace tpq::detail

namespace tpq {

struct Context::CudaResources {
  CudaResources(int device, size_t workspace_bytes);
  ~CudaResources();
  CudaResources(const CudaResources&) = delete;
  CudaResources& operator=(const CudaResources&) = delete;

  int device = 0;
  int sm_count = 0;
  int cc_major = 0;
  int cc_minor = 0;
  // Programmatic dependent launch (sm_90+): kernels may start while the previous one drains.
  bool use_pdl = false;

  detail::LtHandle lt;
  detail::CudaBuffer workspace;
  size_t workspace_bytes = 0;
  detail::LtPlanCache lt_plans;

  // GEMV split-K: one counter per 16-row output tile (zero between launches: the last block of a tile resets
  // its counter) and the partial sums [splits][m][n] in f32. Separate from the cuBLASLt workspace so the two
  // never need to reason about each other.
  detail::CudaBuffer gemv_scratch;
  unsigned* gemv_tile_counters = nullptr;
  int gemv_max_tiles = 0;  // counters available = tiles up to which split-K may run
  float* gemv_partials = nullptr;
  size_t gemv_partial_floats = 0;
  // sm_90+: two split-K blocks of a tile launch as one cluster (TPQ_GEMV_CLUSTERS=0 at creation: the global
  // protocol, for A/B runs and the test that compares both).
  bool gemv_clusters = false;
  // Who runs 128 x 128 block-scaled FP8 GEMMs (TPQ_FP8_BLOCK_GEMM at creation). Default: cuBLASLt's BLK128x128 mode
  // where it takes the problem (measured faster on an H200), tpq's WGMMA kernel (kernels/fp8/block_gemm.cuh) where
  // it does not (K % 128 != 0). "tpq": tpq's kernel wherever it runs; "cublaslt": never tpq's kernel.
  enum class BlockGemmChoice { kAuto, kTpq, kCublasLt };
  BlockGemmChoice fp8_block_gemm_choice = BlockGemmChoice::kAuto;
  bool fp8_block_gemm = false;  // tpq's kernel can run here: sm_90 GPU, sm_90a code (fp8_block_gemm_prepare)
  // The mid-M GEMM of the GPTQ-family layers (kernels/common/woq_gemm.cuh; TPQ_WOQ_GEMM at creation). kOff (unset,
  // "0"): the GEMV up to 16 rows, in passes up to 64, then dequantize + cuBLASLt; the GEMM measured slower than those
  // on most Llama shapes (benchmarks/results/README.md, eleventh session), so it is opt-in for now. kMid ("1"): the
  // GEMM for 16 < M <= 512 where it takes the shape. kAlways ("always"): at every M it takes (tests).
  enum class WoqGemmChoice { kOff, kMid, kAlways };
  WoqGemmChoice woq_gemm_choice = WoqGemmChoice::kOff;
  bool woq_gemm = false;  // asked for, and it can run here: sm_80+, its shared memory allowed (woq_gemm_prepare)
};

}  // namespace tpq

namespace tpq::detail {

// The split-K of one GEMV launch (kernels/common/split_k.cuh) over `work` units of K, `wanted` splits asked for:
// at most kGemvMaxSplits and what the context's scratch holds for m x n partial sums, then as few as cover the
// work in splits of `per_split` units (none empty). The splits meet in a cluster where the context allows it and
// they are few enough, unless the kernel never launches as one (`clusters` false).
struct GemvSplit {
  kernels::SplitK split_k;
  int per_split = 0;
};
inline GemvSplit plan_gemv_split(const Context::CudaResources& res, int wanted, int work, int64_t m, int64_t n,
                                 bool clusters = true) {
  const size_t fit = res.gemv_partial_floats / static_cast<size_t>(std::max<int64_t>(1, m * n));
  int splits = std::clamp(wanted, 1, static_cast<int>(std::min<size_t>(kGemvMaxSplits, std::max<size_t>(fit, 1))));
  const int per_split = std::max(1, (work + splits - 1) / splits);
  splits = std::max(1, (work + per_split - 1) / per_split);
  return {.split_k = {.partials = res.gemv_partials,
                      .tile_counters = res.gemv_tile_counters,
                      .splits = splits,
                      .cluster = clusters && res.gemv_clusters && splits > 1 && splits <= kernels::kMaxClusterSplits},
          .per_split = per_split};
}

// The splits the dense and FP8 GEMVs ask for: none when the tiles alone give every SM a block (or there are more
// tiles than counters), else about two blocks per SM, each split at least `min_work` units long.
inline int gemv_splits_wanted(const Context::CudaResources& res, int tiles, int work, int min_work) {
  if (tiles >= res.sm_count || tiles > res.gemv_max_tiles) return 1;
  return std::min((2 * res.sm_count + tiles - 1) / tiles, std::max(1, work / min_work));
}

// How many warps of a GEMV block stand side by side over output tiles (the others split K): the fewest of 1, 2, 4 ..
// max_col_warps whose launch fits in one wave of resident blocks (one_wave(c): the launch with c does), else 1. Fewer,
// longer blocks where the tiles alone take more than a wave (s16, H200: GPTQ llama8b gate_up 1.06-1.15x at 4 bits,
// FP8 70B-TP8 gate_up 1.02-1.06x); where no width brings them within a wave, FP8's llama8b gate_up ran 0.97-1.03x at
// two warps.
template <class OneWave>
int gemv_col_warps(int max_col_warps, const OneWave& one_wave) {
  for (int c = 1; c <= max_col_warps; c *= 2)
    if (one_wave(c)) return c;
  return 1;
}

}  // namespace tpq::detail
