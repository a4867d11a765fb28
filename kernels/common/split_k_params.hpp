#pragma once
// What a GEMV launch says about its split-K (kernels/common/split_k.cuh): plain data for the host launchers (g++)
// and the kernels (nvcc), one member of each GEMV's parameters.
namespace tpq::kernels {

struct SplitK {
  float* partials = nullptr;          // [splits, m, n] f32, when splits > 1
  unsigned* tile_counters = nullptr;  // one per output tile, zero on entry and on exit, when splits > 1
  int splits = 1;                     // blocks per output tile along K (blockIdx.y)
};

}  // namespace tpq::kernels
