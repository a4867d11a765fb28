#pragma once
// GPTQ layout facts (shared/FORMATS.md §3a), usable from the CPU reference and from kernels.
//
// Codes of b bits are packed LSB-first into 32-bit words along one dimension: qweight [K·b/32, N] along K (words
// of one column are consecutive rows), qzeros [G, N·b/32] along N (consecutive columns). For b = 2, 4, 8 a word
// holds 32/b codes, code i at bits b·i. For b = 3, 32 codes share 3 consecutive words as one little-endian 96-bit
// stream (code i at stream bits 3i..3i+2; codes 10 and 21 straddle two words). A *block* is the smallest run of
// codes that fills whole words: 32/b codes in 1 word, or 32 codes in 3 words for b = 3. Shards, kernels and the
// reference all move whole blocks.
//
// Zero points: checkpoint_format "gptq" (v1) stores zero − 1 (AutoGPTQ's packer subtracts 1; its kernels add 1
// back and mask), "gptq_v2" and everything tpq keeps internally store the true zero.
#include <cstdint>

#include "kernels/common/host_device.hpp"

namespace tpq::kernels::gptq {

inline constexpr int kWordBits = 32;

constexpr bool supported_bits(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 8; }

struct PackLayout {
  int bits = 4;

  constexpr int block_codes() const { return bits == 3 ? 32 : kWordBits / bits; }
  constexpr int block_words() const { return bits == 3 ? 3 : 1; }
  constexpr uint32_t mask() const { return (1u << bits) - 1u; }
  // Words holding `codes` codes, the last block padded.
  constexpr int64_t words_for(int64_t codes) const {
    return (codes + block_codes() - 1) / block_codes() * block_words();
  }
  // Where code i of a block starts: the word within the block and the bit within that word. A code whose
  // shift + bits > 32 continues in the low bits of the next word.
  constexpr int word_of(int i) const { return bits * i / kWordBits; }
  constexpr int shift_of(int i) const { return bits * i % kWordBits; }
  constexpr bool straddles(int i) const { return shift_of(i) + bits > kWordBits; }
};

// The GEMV's order of a qweight word on CUDA, for the one-word blocks (bits 2, 4, 8): field f < h holds code 2f
// and field h + f code 2f + 1 (h = codes per word / 2). Each MMA pair of the GEMV is fields p and p + h (16 bits
// apart, one shift and one mask), so in this order its two codes are adjacent in K and the activations enter the
// MMA as loaded (kernels/common/woq_gemv.cuh). GptqWeights::qweight_order says which order a layer's words are in.
TPQ_HOST_DEVICE constexpr bool gemv_order_applies(int bits) { return bits == 2 || bits == 4 || bits == 8; }
// The field holding code i in the GEMV's order.
TPQ_HOST_DEVICE constexpr int gemv_field(int i, int bits) {
  const int half = kWordBits / bits / 2;
  return (i & 1) ? half + (i >> 1) : (i >> 1);
}
TPQ_HOST_DEVICE constexpr uint32_t to_gemv_word(uint32_t word, int bits) {
  const uint32_t mask = (1u << bits) - 1u;
  uint32_t out = 0;
  for (int i = 0; i < kWordBits / bits; ++i) out |= ((word >> (bits * i)) & mask) << (bits * gemv_field(i, bits));
  return out;
}
TPQ_HOST_DEVICE constexpr uint32_t from_gemv_word(uint32_t word, int bits) {
  const uint32_t mask = (1u << bits) - 1u;
  uint32_t out = 0;
  for (int i = 0; i < kWordBits / bits; ++i) out |= ((word >> (bits * gemv_field(i, bits))) & mask) << (bits * i);
  return out;
}

// Code i of a block from the word it starts in (`lo`) and the next word (`hi`, read only when the code straddles).
TPQ_HOST_DEVICE constexpr uint32_t code_from_words(uint32_t lo, uint32_t hi, int shift, int bits) {
  const uint64_t both = (static_cast<uint64_t>(hi) << 32) | lo;
  return static_cast<uint32_t>(both >> shift) & ((1u << bits) - 1u);
}

// Code i (0 <= i < block_codes) of the block whose first word is at `words`, its words `stride` apart
// (qweight: N; qzeros: 1).
TPQ_HOST_DEVICE constexpr uint32_t block_code(const uint32_t* words, int64_t stride, int i, int bits) {
  const PackLayout l{bits};
  const int w = l.word_of(i);
  const uint32_t lo = words[w * stride];
  const uint32_t hi = l.straddles(i) ? words[(w + 1) * stride] : 0u;
  return code_from_words(lo, hi, l.shift_of(i), bits);
}

// The true zero point from a stored qzeros field: v1 adds 1 and masks (a stored mask value reads as zero 0).
TPQ_HOST_DEVICE constexpr uint32_t true_zero(uint32_t stored, int bits, bool v1) {
  return v1 ? (stored + 1u) & ((1u << bits) - 1u) : stored;
}

// The zero point of a symmetric quantizer: (maxq + 1) / 2.
constexpr uint32_t symmetric_zero(int bits) { return 1u << (bits - 1); }

// Act-order weights on a GPU are kept with their rows sorted by group and each group padded with zero-code rows
// to a multiple of this: one step of the weight-only GEMV (4 blocks of codes, kernels/common/woq_gemv.cuh), so that
// every step reads one group.
constexpr int sorted_group_multiple(int bits) { return 4 * PackLayout{bits}.block_codes(); }

// Alignment of a tensor-parallel shard of the logical W[N, K]: N moves whole qzeros blocks, K whole qweight blocks
// (and whole groups, see the backend).
constexpr int n_pack_factor(int bits) { return PackLayout{bits}.block_codes(); }
constexpr int k_pack_factor(int bits) { return PackLayout{bits}.block_codes(); }

}  // namespace tpq::kernels::gptq
