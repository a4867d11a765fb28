#pragma once
// What a GEMV launch says about its split-K (kernels/common/split_k.cuh): plain data for the host launchers (g++)
// and the kernels (nvcc), one member of each GEMV's parameters.
namespace tpq::kernels {

struct SplitK {
  float* partials = nullptr;          // [splits, m, n] f32, when splits > 1 (and not cluster)
  unsigned* tile_counters = nullptr;  // one per output tile, zero on entry and on exit, when splits > 1 (same)
  int splits = 1;                     // blocks per output tile along K (blockIdx.y)
  // sm_90+: the splits of a tile are one thread-block cluster along y (launched with cluster dims (1, splits, 1),
  // splits <= 8, the portable size): their partial sums meet in distributed shared memory, not in partials.
  bool cluster = false;
};

// Splits up to which the host asks for a cluster. Measured on an H200 (s9, same-run A/B of GPTQ GEMVs): two splits
// in a cluster 1.04-1.09x the global protocol (llama8b o and down at M = 1, 8); four 0.66-0.70x.
inline constexpr int kMaxClusterSplits = 2;

// The cluster height a launch with this split-K needs (1: no cluster).
inline unsigned cluster_height(const SplitK& sk) { return sk.cluster ? static_cast<unsigned>(sk.splits) : 1u; }

}  // namespace tpq::kernels
