#pragma once
// Device: where a tensor's bytes live. Host-only header; CUDA calls live in src/device.cpp.
#include <cstddef>
#include <string>

#include "tpq/core/error.hpp"

namespace tpq {

struct Device {
  enum class Kind : uint8_t { kCpu, kCuda };
  Kind kind = Kind::kCpu;
  int index = 0;

  static constexpr Device cpu() { return {Kind::kCpu, 0}; }
  static constexpr Device cuda(int i = 0) { return {Kind::kCuda, i}; }
  constexpr bool is_cpu() const { return kind == Kind::kCpu; }
  constexpr bool is_cuda() const { return kind == Kind::kCuda; }
  friend constexpr bool operator==(const Device&, const Device&) = default;
  std::string str() const { return is_cpu() ? std::string("cpu") : fmt::format("cuda:{}", index); }
};

// True when the library was built with CUDA support.
bool built_with_cuda();
// Number of usable CUDA devices: 0 without CUDA support, without a driver or without a GPU.
int cuda_device_count();

namespace detail {
// Raw memory on a device, through the CUDA runtime for CUDA devices. These are for loading and tests;
// forward passes allocate through their Context.
void* device_alloc(size_t bytes, Device d);
void device_free(void* p, Device d) noexcept;
// Copies `rows` rows of `row_bytes` bytes, rows `dst_pitch`/`src_pitch` bytes apart, between any two devices.
// Copies and memsets are complete on return, so work on any stream may use the bytes next.
void device_copy_2d(void* dst, size_t dst_pitch, Device dst_dev, const void* src, size_t src_pitch, Device src_dev,
                    size_t row_bytes, size_t rows);
inline void device_copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  device_copy_2d(dst, bytes, dst_dev, src, bytes, src_dev, bytes, 1);
}
void device_memset(void* p, int value, size_t bytes, Device d);
}  // namespace detail

}  // namespace tpq

template <>
struct fmt::formatter<tpq::Device> : fmt::formatter<std::string> {
  auto format(const tpq::Device& d, format_context& ctx) const { return fmt::formatter<std::string>::format(d.str(), ctx); }
};
