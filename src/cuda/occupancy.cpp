// resident_blocks_per_sm (occupancy.hpp): an insert-only open-addressing table. Readers probe it with acquire loads
// and never lock; writers insert under a mutex, storing the answer before publishing the slot's kernel pointer with
// release, so a reader that sees the pointer sees the answer. Keys are never removed, so a probe that reaches an
// empty slot has missed.
#include "src/cuda/occupancy.hpp"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>

namespace tpq::detail {

namespace {

// Far more than tpq's GEMV instantiations times the devices of a node; a full table still answers (uncached).
constexpr size_t kSlots = 4096;

struct Slot {
  std::atomic<const void*> kernel{nullptr};  // published last
  std::atomic<uint64_t> value{0};            // threads | device << 20 | blocks << 40
};

uint64_t pack(int threads, int device, int blocks) {
  return static_cast<uint64_t>(static_cast<uint32_t>(threads)) |
         static_cast<uint64_t>(static_cast<uint32_t>(device)) << 20 |
         static_cast<uint64_t>(static_cast<uint32_t>(blocks)) << 40;
}
bool same_key(uint64_t v, int threads, int device) {
  return (v & ((uint64_t{1} << 40) - 1)) == pack(threads, device, 0);
}
int blocks_of(uint64_t v) { return static_cast<int>(v >> 40); }

size_t home(const void* kernel, int threads, int device) {
  uint64_t h = reinterpret_cast<uintptr_t>(kernel) ^ (static_cast<uint64_t>(threads) << 32) ^
               (static_cast<uint64_t>(device) << 48);
  h *= 0x9E3779B97F4A7C15ull;
  return static_cast<size_t>(h >> 52) % kSlots;
}

std::array<Slot, kSlots>& table() {
  static std::array<Slot, kSlots> slots;
  return slots;
}

// Where the key's probe sequence ends: the slot holding the key (found), or the first empty one (not found);
// nullptr where neither exists (the table is full).
struct Probe {
  Slot* slot = nullptr;
  bool found = false;
};
Probe probe(const void* kernel, int threads, int device) {
  auto& slots = table();
  const size_t start = home(kernel, threads, device);
  for (size_t i = 0; i < kSlots; ++i) {
    Slot& s = slots[(start + i) % kSlots];
    const void* k = s.kernel.load(std::memory_order_acquire);
    if (k == nullptr) return {&s, false};
    if (k == kernel && same_key(s.value.load(std::memory_order_relaxed), threads, device)) return {&s, true};
  }
  return {};
}

// 0 where the runtime cannot say.
int ask_runtime(const void* kernel, int threads, int device) {
  int current = 0;
  if (cudaGetDevice(&current) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  if (current != device && cudaSetDevice(device) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  int blocks = 0;
  const bool ok = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, 0) == cudaSuccess;
  if (!ok) (void)cudaGetLastError();
  if (current != device) (void)cudaSetDevice(current);
  return ok ? std::max(blocks, 1) : 0;
}

}  // namespace

int resident_blocks_per_sm(const void* kernel, int threads, int device) {
  if (kernel == nullptr || threads < 1 || threads >= (1 << 20) || device < 0 || device >= (1 << 20)) return 1;
  if (const Probe p = probe(kernel, threads, device); p.found)
    return blocks_of(p.slot->value.load(std::memory_order_relaxed));
  static std::mutex mutex;
  const std::lock_guard lock(mutex);
  const Probe p = probe(kernel, threads, device);  // again: another thread may have inserted the key meanwhile
  if (p.found) return blocks_of(p.slot->value.load(std::memory_order_relaxed));
  const int blocks = ask_runtime(kernel, threads, device);
  if (blocks == 0) return 1;  // not cached: asked again next time
  if (p.slot != nullptr) {
    p.slot->value.store(pack(threads, device, blocks), std::memory_order_relaxed);
    p.slot->kernel.store(kernel, std::memory_order_release);
  }
  return blocks;
}

}  // namespace tpq::detail
