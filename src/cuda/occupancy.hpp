#pragma once
// Resident blocks per SM of a kernel, as the launchers' host heuristics ask for them (src/cuda/*_kernels.cu) on
// every forward.

namespace tpq::detail {

// Blocks of `kernel` (a __global__ function) with `threads` threads and no dynamic shared memory that fit on one SM
// of `device` at once; 1 where the runtime cannot say. The runtime is asked once per (kernel, threads, device) (one
// process may drive GPUs of different kinds); later calls read a table without a lock or a runtime call, since
// one forward's host plan asks up to about ten times. Thread-safe.
int resident_blocks_per_sm(const void* kernel, int threads, int device);

}  // namespace tpq::detail
