#pragma once
// Device-side conversions between the storage types of activations/weights and the f32 every kernel accumulates
// in. Rounding to bf16/f16 is round-to-nearest-even, as cuBLAS and the CPU references do.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace tpq::kernels {

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float to_float<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

// Half `half` (0: bits 0..15, 1: bits 16..31) of a word holding two T, as f32. A bf16 is the top half of its
// float, so that half is one mask or one shift.
template <typename T>
__device__ __forceinline__ float half_to_float(uint32_t word, int half) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __uint_as_float(half != 0 ? word & 0xFFFF0000u : word << 16);
  } else {
    static_assert(std::is_same_v<T, __half>, "half_to_float: bf16 or f16");
    return __half2float(__ushort_as_half(static_cast<unsigned short>(word >> (16 * half))));
  }
}

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

}  // namespace tpq::kernels
