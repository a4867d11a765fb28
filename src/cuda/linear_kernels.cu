// Launchers of the dense kernels: the only place their templates are instantiated. No tpq error headers here:
// fmt's compile-time format checks do not build under nvcc, so launchers return the CUDA status and linear.cpp
// turns it into a tpq::Error.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/common/dense_gemv.cuh"
#include "kernels/common/launch.cuh"
#include "kernels/common/simt_gemm.cuh"
#include "src/cuda/dense_dispatch.cuh"
#include "src/cuda/linear_kernels.hpp"

namespace tpq::detail {

namespace {

template <typename T, int kColTiles, int kUnroll>
cudaError_t launch_gemv_typed(const kernels::DenseGemvParams& p, cudaStream_t stream, bool pdl) {
  const dim3 grid(static_cast<unsigned>((p.n + kernels::kGemvTileRows - 1) / kernels::kGemvTileRows),
                  static_cast<unsigned>(p.split_k.splits), 1);
  return kernels::launch_kernel(kernels::dense_gemv_kernel<T, kColTiles, kUnroll>, grid,
                                dim3(kernels::kGemvWarps * 32, 1, 1), 0, stream,
                                {.pdl = pdl, .cluster_y = kernels::cluster_height(p.split_k)}, p);
}

// Loads in flight per lane: 2 x kUnroll weight loads (+ kColTiles x kUnroll x loads). 8 steps keep the register
// count near 128 with one column tile; two column tiles double the x registers, so they get 4.
template <typename T>
cudaError_t launch_gemv_for_m(const kernels::DenseGemvParams& p, cudaStream_t stream, bool pdl) {
  if (p.m <= kGemvColTileRows) return launch_gemv_typed<T, 1, 8>(p, stream, pdl);
  return launch_gemv_typed<T, 2, 4>(p, stream, pdl);
}

}  // namespace

cudaError_t launch_dense_gemv(DenseType dtype, const kernels::DenseGemvParams& p, cudaStream_t stream, bool pdl) {
  if (p.m < 1 || p.m > kGemvMaxM) return cudaErrorInvalidValue;
  return with_dense_type<false>(dtype, [&]<typename T>() { return launch_gemv_for_m<T>(p, stream, pdl); });
}

bool gemv_code_has_clusters() {
  cudaFuncAttributes attributes = {};
  if (cudaFuncGetAttributes(&attributes, kernels::dense_gemv_kernel<__nv_bfloat16, 1, 8>) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return attributes.ptxVersion >= 90;
}

cudaError_t launch_simt_gemm(DenseType dtype, const kernels::SimtGemmParams& p, cudaStream_t stream) {
  const int64_t grid_m = (p.m + kernels::kSimtTileM - 1) / kernels::kSimtTileM;
  const int64_t grid_n = (p.n + kernels::kSimtTileN - 1) / kernels::kSimtTileN;
  if (grid_m > 65535 || grid_n > 0x7fffffff) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(grid_n), static_cast<unsigned>(grid_m));
  return with_dense_type<true>(dtype, [&]<typename T>() {
    kernels::simt_gemm_kernel<T><<<grid, kernels::kSimtThreads, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

cudaError_t launch_add_bias(DenseType dtype, void* y, const void* bias, int64_t count, int64_t n, int sm_count,
                     cudaStream_t stream) {
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((count + kThreads - 1) / kThreads, int64_t{sm_count} * 8);
  const unsigned grid = static_cast<unsigned>(std::max<int64_t>(blocks, 1));
  return with_dense_type<true>(dtype, [&]<typename T>() {
    kernels::add_bias_kernel<<<grid, kThreads, 0, stream>>>(static_cast<T*>(y), static_cast<const T*>(bias), count, n);
    return cudaGetLastError();
  });
}

}  // namespace tpq::detail
