#pragma once
// Integer codes to bf16/f16 pairs for the weight-only kernels, two codes at a time.
//
// MagicPlanes (the grouped GEMV): the codes themselves, offset by a constant, as exact 16-bit floats; zero point
// and scale are applied once per group to the f32 sums (y += s · (Σ x·(q + c) − (c + z) · Σ x)). OR-ing a code
// into the mantissa of a float whose exponent gives one unit per code step is exact (f16 0x6400 = 1024 for codes
// below 1024; bf16 0x4300 = 128 for codes below 128): one LOP3 per two weights. bf16 cannot hold 128 + an 8-bit
// code, so 8-bit codes go in two planes of nibbles (q = 16·hi + lo), each exact, summed 16:1 at the flush.
//
// PairDecoder (the general GEMV and anything needing the weight itself): w = s · (q − z) per pair.
//
// A pair arrives as one 32-bit word with code a in bits 0..15 and code b in bits 16..31 (each below 2^bits). Two
// exact paths, chosen at compile time:
//  - "magic": OR the pair into the mantissas of two 16-bit floats whose exponent makes one unit per code step
//    (f16 0x6400 = 1024: exact for codes below 1024; bf16 0x4300 = 128: exact below 128), subtract (magic + z) in
//    the same type (an exact small integer), multiply by the scale: one rounding, the same as the CPU reference's
//    float product rounded to the activation type. One LOP3, one HSUB2, one HMUL2 per two weights.
//  - "float" for bf16 with 8-bit codes (128 + 255 is not exact in bf16): the codes become floats through the
//    2^23 mantissa trick, q − z and the product run in f32, and one cvt rounds the pair to bf16.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "kernels/common/ptx_ops.cuh"

namespace tpq::kernels {

template <typename T>
struct Vec2;
template <>
struct Vec2<__half> {
  using type = __half2;
};
template <>
struct Vec2<__nv_bfloat16> {
  using type = __nv_bfloat162;
};

template <typename T, int kBits>
struct MagicPlanes {
  static constexpr bool kHalf = std::is_same_v<T, __half>;
  static constexpr int kPlanes = !kHalf && kBits > 7 ? 2 : 1;
  static constexpr uint32_t kMagicBits = kHalf ? 0x64006400u : 0x43004300u;
  static constexpr float kMagicValue = kHalf ? 1024.0f : 128.0f;
  // What the planes add to every code: Σ weight(plane) · magic.
  static constexpr float kOffset = kPlanes == 2 ? 17.0f * kMagicValue : kMagicValue;
  static constexpr uint32_t kOnes = kHalf ? 0x3C003C00u : 0x3F803F80u;  // (1, 1)

  // Plane `plane` of a pair field (Traits::pair_field: codes in the low kBits of bits 0..15 and 16..31, anything
  // above them) as T2 bits, in one LOP3 (plus a shift for the high plane): plane 0 weighs 16 (high nibbles) when
  // there are two planes.
  static __device__ __forceinline__ uint32_t plane(uint32_t field, int plane) {
    if constexpr (kPlanes == 1) {
      constexpr uint32_t kMask = (1u << kBits) - 1u;
      return and_or(field, kMask | (kMask << 16), kMagicBits);
    } else {
      return and_or(plane == 0 ? field >> 4 : field, 0x000F000Fu, kMagicBits);
    }
  }
  // Σ x·q + offset·Σ x from the planes' sums.
  static __device__ __forceinline__ float combine(const float (&planes)[kPlanes]) {
    if constexpr (kPlanes == 1) {
      return planes[0];
    } else {
      return fmaf(16.0f, planes[0], planes[1]);
    }
  }
};

template <typename T, int kBits>
struct PairDecoder {
  using T2 = typename Vec2<T>::type;
  static constexpr bool kMagic = std::is_same_v<T, __half> || kBits <= 7;
  static constexpr uint32_t kMagicBits = std::is_same_v<T, __half> ? 0x64006400u : 0x43004300u;
  static constexpr float kMagicValue = std::is_same_v<T, __half> ? 1024.0f : 128.0f;

  // Per column and group: what apply() needs, prepared once.
  struct Column {
    uint32_t zero;   // magic: T2 (magic + z, magic + z) bits; float: the float bits of 2^23 + z
    uint32_t scale;  // magic: T2 (s, s) bits; float: the float bits of s
  };

  static __device__ __forceinline__ Column column(uint32_t zero, T scale) {
    Column c;
    if constexpr (kMagic) {
      const T zm = static_cast<T>(kMagicValue + static_cast<float>(zero));
      const T2 z2{zm, zm};
      const T2 s2{scale, scale};
      c.zero = reinterpret_cast<const uint32_t&>(z2);
      c.scale = reinterpret_cast<const uint32_t&>(s2);
    } else {
      c.zero = __float_as_uint(8388608.0f + static_cast<float>(zero));
      c.scale = __float_as_uint(static_cast<float>(scale));
    }
    return c;
  }

  // The decoders of 4 adjacent columns from their zero points (one byte each, as loaded: 4 in a word) and their
  // scales (two T per word).
  static __device__ __forceinline__ void columns(uint32_t zeros, uint2 scales, Column (&cols)[4]) {
    const uint32_t sw[2] = {scales.x, scales.y};
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const uint16_t sb = static_cast<uint16_t>(sw[c >> 1] >> (16 * (c & 1)));
      cols[c] = column((zeros >> (8 * c)) & 0xFFu, reinterpret_cast<const T&>(sb));
    }
  }

  // "magic": a pair already in the magic float's mantissas (v), as s · (v − (magic + z)) in T2 bits.
  static __device__ __forceinline__ uint32_t scale_magic(uint32_t v, const Column& c) {
    const T2 w = __hmul2(__hsub2(reinterpret_cast<const T2&>(v), reinterpret_cast<const T2&>(c.zero)),
                         reinterpret_cast<const T2&>(c.scale));
    return reinterpret_cast<const uint32_t&>(w);
  }

  // The pair of weights, as T2 bits.
  static __device__ __forceinline__ uint32_t apply(uint32_t pair, const Column& c) {
    if constexpr (kMagic) {
      return scale_magic(pair | kMagicBits, c);
    } else {
      const float z = __uint_as_float(c.zero), s = __uint_as_float(c.scale);
      const float lo = (__uint_as_float(0x4B000000u | (pair & 0xFFFFu)) - z) * s;
      const float hi = (__uint_as_float(0x4B000000u | (pair >> 16)) - z) * s;
      const __nv_bfloat162 w = __floats2bfloat162_rn(lo, hi);
      return reinterpret_cast<const uint32_t&>(w);
    }
  }

  // The same from a pair field (Traits::pair_field: codes in the low kBits of each half, anything above them): the
  // mask and the magic exponent in one LOP3.
  static __device__ __forceinline__ uint32_t apply_field(uint32_t field, const Column& c) {
    constexpr uint32_t kMask = ((1u << kBits) - 1u) * 0x00010001u;
    if constexpr (kMagic) {
      return scale_magic(and_or(field, kMask, kMagicBits), c);
    } else {
      return apply(field & kMask, c);
    }
  }

  // One code to the output type (the dequantize kernel), with the same rounding.
  static __device__ __forceinline__ float value(uint32_t code, uint32_t zero, float scale) {
    return static_cast<float>(static_cast<int>(code) - static_cast<int>(zero)) * scale;
  }
};

}  // namespace tpq::kernels
