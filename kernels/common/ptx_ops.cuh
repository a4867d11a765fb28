#pragma once
// Thin wrappers over the PTX the memory-bound kernels need and CUDA C++ does not spell: streaming 16-byte loads,
// a fused LOP3, programmatic dependent launch, and the m16n8k16 tensor-core MMA with f32 accumulation.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace tpq::kernels {

// 16 bytes read once per forward (weights): the read-only path, and not allocated in L1, so L1 keeps the
// activations that every warp of the SM re-reads.
__device__ __forceinline__ uint4 load_stream_16(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

// The same, issued only when `pred` holds (the address is not touched otherwise); zeros when it does not. The
// predicate lives inside the asm so the compiler emits a predicated load rather than a branch.
__device__ __forceinline__ uint4 load_stream_16_if(const void* p, bool pred) {
  uint4 r;
  asm volatile(
      "{\n\t.reg .pred q;\n\t"
      "setp.ne.b32 q, %5, 0;\n\t"
      "mov.b32 %0, 0;\n\tmov.b32 %1, 0;\n\tmov.b32 %2, 0;\n\tmov.b32 %3, 0;\n\t"
      "@q ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n\t}"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p), "r"(static_cast<int>(pred)));
  return r;
}

// 16 bytes that many warps re-read (activations): an ordinary (coherent) load, cached in L1. Deliberately not
// the read-only path: ptxas moves ld.global.nc above griddepcontrol.wait (seen in the sm_90a SASS), and
// activations are exactly what the previous kernel writes.
__device__ __forceinline__ uint4 load_cached_16(const void* p) {
  uint4 r;
  asm volatile("ld.global.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

// The same, issued only when `pred` holds; zeros when it does not.
__device__ __forceinline__ uint4 load_cached_16_if(const void* p, bool pred) {
  uint4 r;
  asm volatile(
      "{\n\t.reg .pred q;\n\t"
      "setp.ne.b32 q, %5, 0;\n\t"
      "mov.b32 %0, 0;\n\tmov.b32 %1, 0;\n\tmov.b32 %2, 0;\n\tmov.b32 %3, 0;\n\t"
      "@q ld.global.v4.u32 {%0, %1, %2, %3}, [%4];\n\t}"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p), "r"(static_cast<int>(pred)));
  return r;
}

// 32-bit word c (0..3, known at compile time after unrolling) of a 16-byte load.
__device__ __forceinline__ uint32_t component(const uint4& v, int c) {
  return c == 0 ? v.x : c == 1 ? v.y : c == 2 ? v.z : v.w;
}

// (a & b) | c in one LOP3 (ptxas does not always merge the two operations itself).
__device__ __forceinline__ uint32_t and_or(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

// Two bf16 products in one instruction (bf16x2 words a * b, round to nearest; subnormal inputs and results are
// kept). An FMA with -0.0 added, so sm_80 has it too; -0.0 leaves every product, +0.0 included, unchanged.
__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  uint32_t d = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(0x80008000u));
#elif defined(__CUDA_ARCH__)
  __trap();  // bf16 arithmetic needs sm_80, as the MMA below
#endif
  return d;
}

// Asks for `bytes` (a multiple of 16, 16-byte aligned) at `p` to be brought into L2, without waiting and
// without registers (sm_90+; nothing elsewhere). Used for the weights a kernel will read right after its
// programmatic-dependent-launch wait, so that DRAM works on them while the previous kernel drains.
__device__ __forceinline__ void prefetch_l2_bulk(const void* p, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#endif
}

// Asynchronous copies global -> shared (sm_80+): kBytes (4, 8 or 16) from `src` to `dst` (both kBytes-aligned), or
// kBytes of zeros when `valid` is false (the source is then not read, but must still be a valid address). 16-byte
// copies bypass L1 (.cg); smaller ones go through it (.ca, the only mode PTX allows for them). A thread's copies
// form groups (cp_async_commit); cp_async_wait<N>() waits until at most N of its groups are pending.
template <int kBytes>
__device__ __forceinline__ void cp_async(void* dst, const void* src, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  const uint32_t src_bytes = valid ? kBytes : 0;
  if constexpr (kBytes == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(src_bytes) : "memory");
  } else {
    static_assert(kBytes == 4 || kBytes == 8, "cp.async copies 4, 8 or 16 bytes");
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;" ::"r"(d), "l"(src), "n"(kBytes), "r"(src_bytes)
                 : "memory");
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // cp.async needs sm_80; the host never launches its users there
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending) : "memory");
#endif
}

// Programmatic dependent launch (sm_90+). A kernel launched with the programmatic-serialization attribute may
// start before the previous kernel on the stream has finished; pdl_wait() blocks until that kernel's writes are
// visible, so everything the previous kernel may write (activations, outputs, scratch) is touched only after it.
// Both are no-ops on older architectures and for kernels launched without the attribute.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
// Lets the next kernel on the stream (when launched with the attribute) start scheduling its blocks.
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// D += A·B for one m16n8k16 tile (A 16x16 row-major fragment, B 16x8 column fragment, D 16x8 f32), in the
// register layouts of the PTX ISA ("Matrix Fragments for mma.m16n8k16"). T: __nv_bfloat16 or __half.
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                             uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    static_assert(std::is_same_v<T, __half>, "mma_m16n8k16: bf16 or f16 operands");
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // tensor-core bf16/f16 MMA needs sm_80; the host side never launches these kernels there
#endif
}

}  // namespace tpq::kernels
