#pragma once
// The one place the launchers (src/cuda/*_kernels.cu) turn a DenseType into the element type their kernel templates
// take. nvcc only: it names the CUDA half types.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "src/cuda/linear_kernels.hpp"

namespace tpq::detail {

// Returns f.template operator()<T>() with T the element type of `dtype`: __nv_bfloat16, __half, or float where the
// launcher takes f32 (kWithF32); cudaErrorInvalidValue for any other dtype.
template <bool kWithF32, class F>
cudaError_t with_dense_type(DenseType dtype, F&& f) {
  switch (dtype) {
    case DenseType::kBF16: return f.template operator()<__nv_bfloat16>();
    case DenseType::kF16: return f.template operator()<__half>();
    case DenseType::kF32:
      if constexpr (kWithF32) return f.template operator()<float>();
      break;
  }
  return cudaErrorInvalidValue;
}

}  // namespace tpq::detail
