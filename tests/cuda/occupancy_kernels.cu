#include "tests/cuda/occupancy_kernels.hpp"

namespace tpq::test {

namespace {

__global__ void light(float* out) {
  if (out != nullptr) out[threadIdx.x] = 1.0f;
}

__global__ void shared(float* out) {
  __shared__ float buf[10240];
  buf[threadIdx.x] = static_cast<float>(threadIdx.x);
  __syncthreads();
  if (out != nullptr) out[threadIdx.x] = buf[(threadIdx.x + 1) % blockDim.x];
}

}  // namespace

const void* light_kernel() { return reinterpret_cast<const void*>(&light); }
const void* shared_kernel() { return reinterpret_cast<const void*>(&shared); }

}  // namespace tpq::test
