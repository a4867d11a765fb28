#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>

#include "benchmarks/bench_kernels.hpp"
#include "kernels/common/launch.cuh"
#include "kernels/common/ptx_ops.cuh"

namespace tpq::bench {

namespace {

__device__ __forceinline__ uint4 load_stream(const uint4* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

template <int kUnroll>
__global__ void __launch_bounds__(256) read_sweep_kernel(const uint4* p, size_t n16, unsigned long long* sink) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  unsigned acc = 0;
  for (; i + (kUnroll - 1) * stride < n16; i += kUnroll * stride) {
    uint4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = load_stream(p + i + u * stride);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n16; i += stride) {
    const uint4 v = load_stream(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) atomicAdd(sink, 1ull);  // data-dependent, so the loads stay
}

constexpr int kFloorThreads = 256;
constexpr int kFloorLoads = 8;

__global__ void __launch_bounds__(kFloorThreads) floor_read_kernel(const uint4* p, size_t n16,
                                                                   unsigned long long* sink) {
  kernels::pdl_launch_dependents();
  const size_t base = static_cast<size_t>(blockIdx.x) * kFloorThreads * kFloorLoads + threadIdx.x;
  uint4 v[kFloorLoads];
#pragma unroll
  for (int u = 0; u < kFloorLoads; ++u) {
    const size_t i = base + static_cast<size_t>(u) * kFloorThreads;
    v[u] = i < n16 ? load_stream(p + i) : make_uint4(0, 0, 0, 0);
  }
  kernels::pdl_wait();
  unsigned acc = 0;
#pragma unroll
  for (int u = 0; u < kFloorLoads; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  if (acc == 0x9e3779b9u) atomicAdd(sink, 1ull);  // data-dependent, so the loads stay
}

__device__ __forceinline__ uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

template <typename T>
__global__ void fill_random_kernel(T* p, size_t count, uint64_t seed, float scale) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
    const uint64_t h = mix(seed + 0x9e3779b97f4a7c15ull * (i + 1));
    const float u = static_cast<float>(h >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;  // [-1, 1)
    if constexpr (std::is_same_v<T, __half>)
      p[i] = __float2half_rn(u * scale);
    else
      p[i] = __float2bfloat16_rn(u * scale);
  }
}

template <typename T>
__device__ __forceinline__ float as_float(T v) {
  if constexpr (std::is_same_v<T, __half>)
    return __half2float(v);
  else
    return __bfloat162float(v);
}

template <typename T>
__global__ void compare_kernel(const T* out, const T* ref, size_t count, unsigned* result) {
  float max_diff = 0.0f, max_ref = 0.0f;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
    const float o = as_float(out[i]), r = as_float(ref[i]);
    const float d = isfinite(o) ? fabsf(o - r) : INFINITY;
    max_diff = fmaxf(max_diff, d);
    max_ref = fmaxf(max_ref, fabsf(r));
  }
  // Non-negative floats order like their bit patterns.
  atomicMax(&result[0], __float_as_uint(max_diff));
  atomicMax(&result[1], __float_as_uint(max_ref));
}

unsigned grid_for(size_t count) {
  return static_cast<unsigned>(std::clamp<size_t>((count + 255) / 256, 1, 4096));
}

}  // namespace

cudaError_t launch_read_sweep(const void* p, size_t bytes, int unroll, int sm_count, unsigned long long* sink,
                              cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(sm_count * 8));  // 8 blocks of 256 threads: a full SM
  const size_t n16 = bytes / 16;
  if (unroll == 8)
    read_sweep_kernel<8><<<grid, 256, 0, stream>>>(static_cast<const uint4*>(p), n16, sink);
  else
    read_sweep_kernel<4><<<grid, 256, 0, stream>>>(static_cast<const uint4*>(p), n16, sink);
  return cudaGetLastError();
}

cudaError_t launch_floor_read(const void* p, size_t bytes, bool pdl, unsigned long long* sink, cudaStream_t stream) {
  const size_t n16 = bytes / 16;
  const size_t per_block = static_cast<size_t>(kFloorThreads) * kFloorLoads;
  const size_t blocks = (n16 + per_block - 1) / per_block;
  if (blocks == 0 || blocks > 0x7fffffffu) return blocks == 0 ? cudaSuccess : cudaErrorInvalidValue;
  return kernels::launch_kernel(floor_read_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kFloorThreads), 0,
                                stream, {.pdl = pdl}, static_cast<const uint4*>(p), n16, sink);
}

cudaError_t launch_fill_random(ElemType type, void* p, size_t count, uint64_t seed, float scale, cudaStream_t stream) {
  if (type == ElemType::kF16)
    fill_random_kernel<<<grid_for(count), 256, 0, stream>>>(static_cast<__half*>(p), count, seed, scale);
  else
    fill_random_kernel<<<grid_for(count), 256, 0, stream>>>(static_cast<__nv_bfloat16*>(p), count, seed, scale);
  return cudaGetLastError();
}

cudaError_t launch_compare(ElemType type, const void* out, const void* ref, size_t count, unsigned* result,
                           cudaStream_t stream) {
  if (type == ElemType::kF16)
    compare_kernel<<<grid_for(count), 256, 0, stream>>>(static_cast<const __half*>(out),
                                                        static_cast<const __half*>(ref), count, result);
  else
    compare_kernel<<<grid_for(count), 256, 0, stream>>>(static_cast<const __nv_bfloat16*>(out),
                                                        static_cast<const __nv_bfloat16*>(ref), count, result);
  return cudaGetLastError();
}

}  // namespace tpq::bench
