#pragma once
// Host-side launch of a kernel with or without programmatic dependent launch (PDL, sm_90+): with `pdl` the kernel
// may start while the previous kernel on the stream is still running, and must wait for it (griddepcontrol.wait,
// ptx_ops.cuh) before reading what that kernel writes; and with or without thread-block clusters (the GEMVs'
// split-K, split_k.cuh). Plain CUDA only, so the .cu launchers can include it.
#include <cuda_runtime.h>

#include <cstddef>

namespace tpq::kernels {

// How a kernel is launched beyond its grid: programmatic stream serialization allowed (`pdl`), and the height of
// its thread-block clusters along y (1: none; sm_90+, must divide gridDim.y).
struct LaunchOptions {
  bool pdl = false;
  unsigned cluster_y = 1;
};

// Launches kernel<<<grid, block, smem, stream>>>(args...) through cudaLaunchKernelEx with `options`. Returns the
// launch status, or else the cudaGetLastError that follows it.
template <class Kernel, class... Args>
cudaError_t launch_kernel(Kernel kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                          LaunchOptions options, const Args&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attributes[2] = {};
  unsigned count = 0;
  if (options.pdl) {
    attributes[count].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attributes[count].val.programmaticStreamSerializationAllowed = 1;
    ++count;
  }
  if (options.cluster_y > 1) {
    attributes[count].id = cudaLaunchAttributeClusterDimension;
    attributes[count].val.clusterDim.x = 1;
    attributes[count].val.clusterDim.y = options.cluster_y;
    attributes[count].val.clusterDim.z = 1;
    ++count;
  }
  config.attrs = attributes;
  config.numAttrs = count;
  const cudaError_t launched = cudaLaunchKernelEx(&config, kernel, args...);
  const cudaError_t last = cudaGetLastError();
  return launched != cudaSuccess ? launched : last;
}

}  // namespace tpq::kernels
