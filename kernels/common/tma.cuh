#pragma once
// The Hopper bulk-tensor copy engine (TMA) as the streaming kernels use it: a 2D tile of a tensor map copied to
// shared memory, completing on an mbarrier that counts the bytes. sm_90+ only; the bodies are empty elsewhere and
// the host never launches a kernel that uses them on an older part.
#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace tpq::kernels {

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// An mbarrier expecting one arrival per phase; visible to the copy engine after the fence.
__device__ __forceinline__ void mbarrier_init(uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(shared_address(bar)) : "memory");
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}

// Arrives on `bar` announcing `bytes` still to land on it (the copies issued next).
__device__ __forceinline__ void mbarrier_expect_bytes(uint64_t* bar, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(shared_address(bar)), "r"(bytes)
               : "memory");
#endif
}

// Blocks until the phase with parity `parity` of `bar` has completed.
__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, uint32_t parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "{\n\t.reg .pred done;\n"
      "wait_%=:\n\t"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n\t"
      "@!done bra wait_%=;\n\t}" ::"r"(shared_address(bar)),
      "r"(parity)
      : "memory");
#endif
}

// Orders this thread's earlier generic-proxy accesses to shared memory before its later async-proxy ones (a TMA
// copy into a buffer the warp has just read).
__device__ __forceinline__ void fence_proxy_async_shared() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}

// 16 bytes at the shared-memory address `smem` (an LDS: ptxas tracks it apart from the global loads). Volatile, so
// it stays after the mbarrier wait that made the bytes valid.
__device__ __forceinline__ uint4 load_shared_16(uint32_t smem) {
  uint4 r;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "r"(smem));
  return r;
}

// kRegs 32-bit words (2, 4 or 8) at the shared-memory address `smem` (8-byte aligned for 2, else 16).
template <int kRegs>
__device__ __forceinline__ void load_shared_regs(uint32_t (&r)[kRegs], uint32_t smem) {
  if constexpr (kRegs == 2) {
    asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(smem));
  } else {
#pragma unroll
    for (int i = 0; i < kRegs / 4; ++i) {
      const uint4 v = load_shared_16(smem + 16 * i);
      r[4 * i] = v.x;
      r[4 * i + 1] = v.y;
      r[4 * i + 2] = v.z;
      r[4 * i + 3] = v.w;
    }
  }
}

// Copies the box at element coordinates (x0, y0) of the 2D tensor map to the shared-memory address `smem`,
// completing on `bar`. Elements outside the tensor land as zeros (and still count as bytes).
__device__ __forceinline__ void tma_load_2d(uint32_t smem, const CUtensorMap* map, int x0, int y0, uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::
          "r"(smem),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(x0), "r"(y0), "r"(shared_address(bar))
      : "memory");
#endif
}

}  // namespace tpq::kernels
