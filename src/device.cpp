#include "tpq/core/device.hpp"

#include <cstdlib>
#include <cstring>
#include <new>

#ifdef TPQ_WITH_CUDA
#include <cuda_runtime_api.h>
#include "tpq/detail/cuda_check.hpp"
#endif

namespace tpq {

bool built_with_cuda() {
#ifdef TPQ_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef TPQ_WITH_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver or no device: not an error for the caller
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

namespace detail {

namespace {
[[noreturn, maybe_unused]] void no_cuda(const char* what) {
  fail(ErrorCode::kUnsupported, "{} on a CUDA device, but tpq was built without CUDA (TPQ_CUDA=OFF)", what);
}

#ifdef TPQ_WITH_CUDA
// Makes `d` current for the duration of a call and restores the caller's device after.
class DeviceGuard {
 public:
  explicit DeviceGuard(Device d) {
    TPQ_CUDA_CHECK(cudaGetDevice(&previous_));
    if (d.is_cuda() && d.index != previous_) TPQ_CUDA_CHECK(cudaSetDevice(d.index));
  }
  ~DeviceGuard() { (void)cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};
#endif
}  // namespace

void* device_alloc(size_t bytes, Device d) {
  const size_t n = bytes ? bytes : 1;
  if (d.is_cpu()) {
    void* p = std::aligned_alloc(64, (n + 63) / 64 * 64);
    if (!p) throw std::bad_alloc();
    return p;
  }
#ifdef TPQ_WITH_CUDA
  DeviceGuard guard(d);
  void* p = nullptr;
  TPQ_CUDA_CHECK(cudaMalloc(&p, n));
  return p;
#else
  no_cuda("allocation");
#endif
}

void device_free(void* p, Device d) noexcept {
  if (d.is_cpu()) {
    std::free(p);
    return;
  }
#ifdef TPQ_WITH_CUDA
  (void)cudaFree(p);
#endif
}

void device_copy_2d(void* dst, size_t dst_pitch, Device dst_dev, const void* src, size_t src_pitch, Device src_dev,
                    size_t row_bytes, size_t rows) {
  if (row_bytes == 0 || rows == 0) return;
  if (dst_dev.is_cpu() && src_dev.is_cpu()) {
    for (size_t r = 0; r < rows; ++r)
      std::memcpy(static_cast<char*>(dst) + r * dst_pitch, static_cast<const char*>(src) + r * src_pitch, row_bytes);
    return;
  }
#ifdef TPQ_WITH_CUDA
  DeviceGuard guard(dst_dev.is_cuda() ? dst_dev : src_dev);
  // Complete on return, whatever stream reads the data next: cudaMemcpy2D from pageable host memory may return
  // once the bytes are staged, before the DMA lands, and a non-blocking stream does not wait for the legacy one.
  TPQ_CUDA_CHECK(
      cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, row_bytes, rows, cudaMemcpyDefault, cudaStreamLegacy));
  TPQ_CUDA_CHECK(cudaStreamSynchronize(cudaStreamLegacy));
#else
  no_cuda("copy");
#endif
}

void device_memset(void* p, int value, size_t bytes, Device d) {
  if (bytes == 0) return;
  if (d.is_cpu()) {
    std::memset(p, value, bytes);
    return;
  }
#ifdef TPQ_WITH_CUDA
  DeviceGuard guard(d);
  // cudaMemset on device memory returns before it runs; complete it (see device_copy_2d).
  TPQ_CUDA_CHECK(cudaMemsetAsync(p, value, bytes, cudaStreamLegacy));
  TPQ_CUDA_CHECK(cudaStreamSynchronize(cudaStreamLegacy));
#else
  no_cuda("memset");
#endif
}

}  // namespace detail
}  // namespace tpq
