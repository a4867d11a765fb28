#pragma once
// GPTQ's packing (traits.hpp) as the generic weight-only kernels read it (kernels/common/woq_gemv.cuh,
// woq_dequant.cuh). The kernels ask a format's kernel traits for:
//   kBits, kCodes (codes of one column per block; a multiple of 4), kWords (32-bit words per column per block),
//   word(qweight, n, block, j, col): word j of `block` for column `col`; words of consecutive columns are adjacent,
//     so 4 columns of one word are one 16-byte load,
//   kAdjacentPairs: whether pair p holds codes 2p and 2p + 1 (else p and p + kCodes/2),
//   pair_bits(words, p): the two codes of pair p of one column's block, in bits 0..15 and 16..31,
//   pair_field(words, p): the same codes in the low kBits of each half, with anything above them (one shift),
//   code(words, i): code i of the block.
// Which codes form a pair is the format's choice (the kernels feed the activations in the same order): a pair is
// fields p and p + kCodes/2 of one word, 16 bits apart, so one shift and one mask extract both. For b = 2, 4, 8
// the words on the device are in the GEMV's order (traits.hpp: to_gemv_word), where those fields hold codes 2p and
// 2p + 1: adjacent activations, which the MMA takes as loaded. 3-bit words keep the checkpoint's order.
#include <cstdint>

#include "kernels/gptq/traits.hpp"

namespace tpq::kernels::gptq {

template <int kBitsValue>
struct KernelTraits {
  static constexpr int kBits = kBitsValue;
  static constexpr PackLayout kLayout{kBits};
  static constexpr int kCodes = kLayout.block_codes();
  static constexpr int kWords = kLayout.block_words();
  static constexpr uint32_t kMask = kLayout.mask();
  static_assert(kCodes % 4 == 0, "an MMA takes 4 codes of each column per lane");
  static constexpr bool kAdjacentPairs = gemv_order_applies(kBits);
  static_assert(!kAdjacentPairs || kWords == 1, "the GEMV's order is for one-word blocks");

  static __device__ __forceinline__ const uint32_t* word(const uint32_t* qweight, int64_t n, int64_t block, int j,
                                                         int64_t col) {
    return qweight + (block * kWords + j) * n + col;
  }

  static __device__ __forceinline__ uint32_t code(const uint32_t (&w)[kWords], int i) {
    if constexpr (kAdjacentPairs) return (w[0] >> (kBits * gemv_field(i, kBits))) & kMask;
    // PackLayout's word_of / shift_of / straddles, spelled out so device code uses no host object.
    const int word_index = kBits * i / kWordBits, shift = kBits * i % kWordBits;
    if (shift + kBits > kWordBits) return __funnelshift_r(w[word_index], w[word_index + 1], shift) & kMask;
    return (w[word_index] >> shift) & kMask;
  }

  static __device__ __forceinline__ uint32_t pair_field(const uint32_t (&w)[kWords], int p) {
    if constexpr (kWords == 1) {
      return w[0] >> (kBits * p);
    } else {
      return code(w, p) | (code(w, p + kCodes / 2) << 16);
    }
  }

  static __device__ __forceinline__ uint32_t pair_bits(const uint32_t (&w)[kWords], int p) {
    if constexpr (kWords == 1) {
      return pair_field(w, p) & (kMask | (kMask << 16));  // code p + kCodes/2 starts exactly 16 bits above code p
    } else {
      return pair_field(w, p);  // already masked
    }
  }
};

}  // namespace tpq::kernels::gptq
