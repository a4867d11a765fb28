#pragma once
// Activation quantization for the FP8 x FP8 GEMM: x (bf16 / f16) -> e4m3 codes and f32 scales, with the rules of
// kernels/fp8/traits.hpp, so the CPU emulation (kernels/fp8/reference.hpp) produces the same codes bit for bit.
//  - fp8_amax_kernel: the first of two passes for dynamic per-tensor scales: each block writes the amax(|x|) of its
//    grid-stride share of the input to partials[blockIdx.x] (every block writes its word: no zeroing, no atomics,
//    the same result on every run). kFp8AmaxUnroll loads in flight per thread.
//  - fp8_act_quant_kernel: one block per row of x. Per-tensor schemes use one scale (static: the layer's
//    input_scale; dynamic: the maximum of the amax pass's partials, which every block reduces). Per token, the
//    block reduces the row's amax first. Per 1 x group, each warp takes whole groups and reduces them with
//    shuffles. Scales are written in the layout the GEMM reads (scalar, one per row, or grouped with rows
//    contiguous).
// kVec = 8 reads 16 bytes and writes 8 codes per step (k % 8 == 0, 16-byte aligned rows; not for 1 x group, whose
// warps cover 32 · kVec elements of a group per step); kVec = 4 reads 8 bytes (k % 4 == 0, 8-byte aligned rows);
// kVec = 1 takes any shape.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <cstring>

#include "kernels/common/float_convert.cuh"
#include "kernels/fp8/params.hpp"
#include "kernels/fp8/traits.hpp"

namespace tpq::kernels {

namespace fp8_quant_detail {

// The two elements of a 32-bit word, as floats (low half first).
template <typename T>
__device__ __forceinline__ float2 word_to_float2(uint32_t w);
template <>
__device__ __forceinline__ float2 word_to_float2<__nv_bfloat16>(uint32_t w) {
  return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xFFFF0000u));
}
template <>
__device__ __forceinline__ float2 word_to_float2<__half>(uint32_t w) {
  return make_float2(__half2float(__ushort_as_half(static_cast<unsigned short>(w & 0xFFFFu))),
                     __half2float(__ushort_as_half(static_cast<unsigned short>(w >> 16))));
}

template <typename T, int kVec>
__device__ __forceinline__ void load_vec(const T* p, float (&v)[kVec]) {
  if constexpr (kVec == 8) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = word_to_float2<T>(words[i]);
      v[2 * i] = f.x;
      v[2 * i + 1] = f.y;
    }
  } else if constexpr (kVec == 4) {
    const uint2 raw = __ldg(reinterpret_cast<const uint2*>(p));
    const float2 a = word_to_float2<T>(raw.x), b = word_to_float2<T>(raw.y);
    v[0] = a.x;
    v[1] = a.y;
    v[2] = b.x;
    v[3] = b.y;
  } else {
    static_assert(kVec == 1, "kVec is 1, 4 or 8");
    v[0] = to_float(p[0]);
  }
}

__device__ __forceinline__ uint8_t encode_e4m3(float v) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}

// Four codes of v[first..first+3], packed little-endian.
template <int kVec>
__device__ __forceinline__ uint32_t pack_codes(const float (&v)[kVec], int first, float s) {
  uint32_t packed = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) packed |= static_cast<uint32_t>(encode_e4m3(fp8_prequant(v[first + i], s))) << (8 * i);
  return packed;
}

template <int kVec>
__device__ __forceinline__ void store_codes(uint8_t* q, const float (&v)[kVec], float s) {
  if constexpr (kVec == 8) {
    *reinterpret_cast<uint2*>(q) = make_uint2(pack_codes(v, 0, s), pack_codes(v, 4, s));
  } else if constexpr (kVec == 4) {
    *reinterpret_cast<uint32_t*>(q) = pack_codes(v, 0, s);
  } else {
    q[0] = encode_e4m3(fp8_prequant(v[0], s));
  }
}

template <int kVec>
__device__ __forceinline__ float abs_max(const float (&v)[kVec], float m) {
#pragma unroll
  for (int i = 0; i < kVec; ++i) m = fmaxf(m, fabsf(v[i]));
  return m;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The maximum over the block (every thread gets it). `smem` holds one float per warp.
__device__ __forceinline__ float block_max(float v, float* smem) {
  v = warp_max(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  float r = lane < static_cast<int>(blockDim.x >> 5) ? smem[lane] : 0.0f;
  r = warp_max(r);
  __syncthreads();  // smem is reused by the caller's next reduction
  return r;
}

}  // namespace fp8_quant_detail

template <typename T, int kVec>
__global__ void __launch_bounds__(kFp8QuantThreads) fp8_amax_kernel(const T* x, int64_t count, float* partials) {
  __shared__ float smem[kFp8QuantThreads / 32];
  float m = 0.0f;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x * kVec;
  int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kVec;
  for (; i + (kFp8AmaxUnroll - 1) * stride < count; i += kFp8AmaxUnroll * stride) {
    float v[kFp8AmaxUnroll][kVec];
#pragma unroll
    for (int u = 0; u < kFp8AmaxUnroll; ++u) fp8_quant_detail::load_vec<T, kVec>(x + i + u * stride, v[u]);
#pragma unroll
    for (int u = 0; u < kFp8AmaxUnroll; ++u) m = fp8_quant_detail::abs_max<kVec>(v[u], m);
  }
  for (; i < count; i += stride) {
    float v[kVec];
    fp8_quant_detail::load_vec<T, kVec>(x + i, v);
    m = fp8_quant_detail::abs_max<kVec>(v, m);
  }
  m = fp8_quant_detail::block_max(m, smem);
  if (threadIdx.x == 0) partials[blockIdx.x] = m;
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kFp8QuantThreads) fp8_act_quant_kernel(const Fp8ActQuantParams p) {
  using namespace fp8_quant_detail;
  __shared__ float smem[kFp8QuantThreads / 32];
  const int64_t r = blockIdx.x;
  const int64_t k = p.k;
  const T* xr = static_cast<const T*>(p.x) + r * k;
  uint8_t* qr = p.q + r * k;
  const auto scheme = static_cast<Fp8ActScheme>(p.scheme);
  const bool ue8m0 = p.ue8m0 != 0;

  if (r >= p.m) {  // padding row: contributes nothing to the GEMM
    for (int64_t c = threadIdx.x; c < k; c += kFp8QuantThreads) qr[c] = 0;
    if (threadIdx.x == 0) {
      if (p.layout == static_cast<int>(Fp8ScaleLayout::kPerRow)) p.scales[r] = 1.0f;
      if (p.layout == static_cast<int>(Fp8ScaleLayout::kGrouped))
        for (int g = 0; g < p.layout_groups; ++g) p.scales[static_cast<int64_t>(g) * p.m_pad + r] = 1.0f;
    }
    return;
  }

  if (scheme == Fp8ActScheme::kDynamicGroup) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t groups = (k + p.group - 1) / p.group;
    for (int64_t gi = warp; gi < groups; gi += kFp8QuantThreads / 32) {
      const int64_t c0 = gi * p.group, c1 = min(k, c0 + p.group);
      float amax = 0.0f;
      for (int64_t c = c0 + lane * kVec; c < c1; c += 32 * kVec) {
        float v[kVec];
        load_vec<T, kVec>(xr + c, v);
        amax = abs_max<kVec>(v, amax);
      }
      const float s = fp8_act_scale(warp_max(amax), scheme, ue8m0, p.scale_ub);
      for (int64_t c = c0 + lane * kVec; c < c1; c += 32 * kVec) {
        float v[kVec];
        load_vec<T, kVec>(xr + c, v);
        store_codes<kVec>(qr + c, v, s);
      }
      if (lane == 0) {
        if (p.layout == static_cast<int>(Fp8ScaleLayout::kGrouped)) {
          p.scales[gi * p.m_pad + r] = s;
        } else {
          p.scales[r * groups + gi] = s;  // [m, groups] row-major: not a cuBLASLt layout, for tests
        }
      }
    }
    return;
  }

  float s;
  if (scheme == Fp8ActScheme::kDynamicToken) {
    float amax = 0.0f;
    for (int64_t c = threadIdx.x * kVec; c < k; c += kFp8QuantThreads * kVec) {
      float v[kVec];
      load_vec<T, kVec>(xr + c, v);
      amax = abs_max<kVec>(v, amax);
    }
    s = fp8_act_scale(block_max(amax, smem), scheme, ue8m0, p.scale_ub);
  } else if (scheme == Fp8ActScheme::kDynamicTensor) {
    float amax = 0.0f;
    for (int i = threadIdx.x; i < p.amax_blocks; i += kFp8QuantThreads) amax = fmaxf(amax, p.amax_partials[i]);
    s = fp8_act_scale(block_max(amax, smem), scheme, ue8m0, p.scale_ub);
  } else {
    s = *p.static_scale;
  }
  // Two steps' loads before their stores.
  constexpr int64_t kStride = kFp8QuantThreads * kVec;
  int64_t c = threadIdx.x * kVec;
  for (; c + kStride < k; c += 2 * kStride) {
    float v0[kVec], v1[kVec];
    load_vec<T, kVec>(xr + c, v0);
    load_vec<T, kVec>(xr + c + kStride, v1);
    store_codes<kVec>(qr + c, v0, s);
    store_codes<kVec>(qr + c + kStride, v1, s);
  }
  if (c < k) {
    float v[kVec];
    load_vec<T, kVec>(xr + c, v);
    store_codes<kVec>(qr + c, v, s);
  }
  if (threadIdx.x == 0) {
    switch (static_cast<Fp8ScaleLayout>(p.layout)) {
      case Fp8ScaleLayout::kScalar:
        if (r == 0 && scheme != Fp8ActScheme::kStaticTensor) p.scales[0] = s;
        break;
      case Fp8ScaleLayout::kPerRow:
        p.scales[r] = s;
        break;
      case Fp8ScaleLayout::kGrouped:
        for (int g = 0; g < p.layout_groups; ++g) p.scales[static_cast<int64_t>(g) * p.m_pad + r] = s;
        break;
    }
  }
}

}  // namespace tpq::kernels
