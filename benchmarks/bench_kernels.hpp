#pragma once
// Device helpers of the benchmark driver (bench_kernels.cu): the read-bandwidth probe, random fills and the
// output comparison. Plain CUDA only (nvcc cannot compile fmt, which the tpq headers bring in).
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace tpq::bench {

enum class ElemType { kBF16, kF16 };

// Reads `bytes` (a multiple of 16) at `p` once with 16-byte loads, `unroll` (4 or 8) loads in flight per thread,
// on a full-occupancy grid. `sink` (one device word) only keeps the loads from being optimized away.
cudaError_t launch_read_sweep(const void* p, size_t bytes, int unroll, int sm_count, unsigned long long* sink,
                              cudaStream_t stream);

// The stream floor of a weight-only layer: reads `bytes` (a multiple of 16) at `p` once, 8 loads of 16 bytes in
// flight per thread, one block per 32 KB, and does nothing else. Shaped like tpq's GEMVs where it matters to a
// launch inside a graph: with `pdl` it is launched for programmatic dependent launch, lets the next launch start
// at once, issues its loads before it waits for the previous launch, and ends after it (a GEMV reads the
// activations the previous layer wrote).
cudaError_t launch_floor_read(const void* p, size_t bytes, bool pdl, unsigned long long* sink, cudaStream_t stream);

// Fills `count` elements with uniform values in [-scale, scale) from a counter-based hash of (seed, index).
cudaError_t launch_fill_random(ElemType type, void* p, size_t count, uint64_t seed, float scale, cudaStream_t stream);

// result[0] = max |out - ref| (+inf if out has a NaN or infinity), result[1] = max |ref|, as float bits; `result`
// must be zeroed first.
cudaError_t launch_compare(ElemType type, const void* out, const void* ref, size_t count, unsigned* result,
                           cudaStream_t stream);

}  // namespace tpq::bench
