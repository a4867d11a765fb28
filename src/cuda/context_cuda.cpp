// The CUDA half of tpq::Context: Context::cuda, its cuBLASLt handle and workspace, and the default allocator.
// src/context.cpp holds the CPU half (and stubs for these functions when tpq is built without CUDA).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "src/cuda/cuda_resources.hpp"
#include "src/cuda/fp8_kernels.hpp"
#include "src/cuda/woq_kernels.hpp"
#include "tpq/core/context.hpp"
#include "tpq/detail/cuda_check.hpp"

namespace tpq {

namespace {

// Stream-ordered memory: allocation and release are ordered on the stream like kernels, so a buffer freed on the
// stream is reused only after the work that read it, with no device synchronization, and CUDA graph capture
// records both as graph nodes. (The pool's release threshold is left as the engine set it: raising it is a
// process-wide choice.)
class StreamOrderedAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes, Device device, StreamHandle stream) override {
    TPQ_CHECK(device.is_cuda(), kInvalidArgument, "the CUDA allocator was asked for {} memory", device.str());
    detail::CudaDeviceGuard guard(device.index);
    void* p = nullptr;
    TPQ_CUDA_CHECK(cudaMallocAsync(&p, bytes > 0 ? bytes : 1, stream));
    return p;
  }

  void deallocate(void* p, size_t, Device device, StreamHandle stream) noexcept override {
    if (p == nullptr) return;
    // No exceptions here (called from destructors): switch device by hand and ignore failures at teardown.
    int previous = 0;
    const bool switched = cudaGetDevice(&previous) == cudaSuccess && previous != device.index &&
                          cudaSetDevice(device.index) == cudaSuccess;
    (void)cudaFreeAsync(p, stream);
    if (switched) (void)cudaSetDevice(previous);
  }
};

// The value of environment variable `name`, empty when unset.
std::string_view env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

}  // namespace

Context::CudaResources::CudaResources(int dev, size_t ws_bytes) : device(dev), workspace_bytes(ws_bytes) {
  detail::CudaDeviceGuard guard(device);
  TPQ_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  TPQ_CUDA_CHECK(cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, device));
  TPQ_CUDA_CHECK(cudaDeviceGetAttribute(&cc_minor, cudaDevAttrComputeCapabilityMinor, device));
  use_pdl = cc_major >= 9;
  gemv_clusters = cc_major >= 9 && env("TPQ_GEMV_CLUSTERS") != "0" && detail::gemv_code_has_clusters();
  const std::string_view block_gemm = env("TPQ_FP8_BLOCK_GEMM");
  if (block_gemm == "tpq") fp8_block_gemm_choice = BlockGemmChoice::kTpq;
  if (block_gemm == "cublaslt") fp8_block_gemm_choice = BlockGemmChoice::kCublasLt;
  fp8_block_gemm = cc_major == 9 && cc_minor == 0 && detail::fp8_block_gemm_prepare();
  const std::string_view woq_gemm_env = env("TPQ_WOQ_GEMM");
  if (woq_gemm_env == "1") woq_gemm_choice = WoqGemmChoice::kMid;
  if (woq_gemm_env == "always") woq_gemm_choice = WoqGemmChoice::kAlways;
  woq_gemm = woq_gemm_choice != WoqGemmChoice::kOff && cc_major >= 8 && detail::woq_gemm_prepare();

  cublasLtHandle_t handle = nullptr;
  TPQ_CUBLAS_CHECK(cublasLtCreate(&handle));
  lt.reset(handle);

  if (workspace_bytes > 0) {
    void* p = nullptr;
    TPQ_CUDA_CHECK(cudaMalloc(&p, workspace_bytes));
    workspace.reset(p);
  }

  // Allocated here, once, so the forward path never allocates: counters for every tile count that may split,
  // and room for the largest split-K partial sums ([splits][m <= 16][n < 16 * sm_count]).
  gemv_max_tiles = sm_count;
  // The GPTQ GEMM splits only when its tiles (32 x 256) are fewer than the SMs, into at most ceil(SMs / tiles)
  // splits: its partial sums stay under 2 · SMs · 32 · 256 floats.
  gemv_partial_floats = std::max(static_cast<size_t>(detail::kGemvMaxSplits) * detail::kGemvMaxM *
                                     static_cast<size_t>(gemv_max_tiles) * 16,
                                 size_t{2} * static_cast<size_t>(sm_count) * kernels::kWoqGemmRows *
                                     kernels::kWoqGemmCols);
  const size_t counter_bytes = (static_cast<size_t>(gemv_max_tiles) * sizeof(unsigned) + 255) / 256 * 256;
  const size_t scratch_bytes = counter_bytes + gemv_partial_floats * sizeof(float);
  void* scratch = nullptr;
  TPQ_CUDA_CHECK(cudaMalloc(&scratch, scratch_bytes));
  gemv_scratch.reset(scratch);
  TPQ_CUDA_CHECK(cudaMemset(scratch, 0, counter_bytes));  // the split-K protocol needs zeroed counters
  gemv_tile_counters = static_cast<unsigned*>(scratch);
  gemv_partials = reinterpret_cast<float*>(static_cast<char*>(scratch) + counter_bytes);
}

Context::CudaResources::~CudaResources() {
  // cudaFree must run on the right device; it also waits for work still using the buffers.
  int previous = 0;
  const bool switched =
      cudaGetDevice(&previous) == cudaSuccess && previous != device && cudaSetDevice(device) == cudaSuccess;
  gemv_scratch.reset();
  workspace.reset();
  lt.reset();
  if (switched) (void)cudaSetDevice(previous);
}

Context Context::cuda(int device, StreamHandle stream, std::shared_ptr<Allocator> allocator, size_t workspace_bytes) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    fail(ErrorCode::kCuda, "Context::cuda({}): no usable CUDA device ({})", device, cudaGetErrorString(err));
  }
  TPQ_CHECK(device >= 0 && device < count, kInvalidArgument, "Context::cuda: device {} out of range ({} devices)",
            device, count);
#if CUDART_VERSION >= 12080
  if (stream != nullptr) {
    // A stream of another device would fail at the first launch with a less helpful message.
    int stream_device = -1;
    TPQ_CUDA_CHECK(cudaStreamGetDevice(stream, &stream_device));
    TPQ_CHECK(stream_device == device, kInvalidArgument, "Context::cuda: the stream belongs to device {}, not {}",
              stream_device, device);
  }
#endif
  Context c;
  c.device_ = Device::cuda(device);
  c.stream_ = stream;
  c.allocator_ = allocator ? std::move(allocator) : std::make_shared<StreamOrderedAllocator>();
  c.cuda_ = std::make_shared<CudaResources>(device, workspace_bytes);
  return c;
}

void* Context::cublaslt_handle() const { return cuda_ ? static_cast<void*>(cuda_->lt.get()) : nullptr; }
void* Context::workspace() const { return cuda_ ? cuda_->workspace.get() : nullptr; }
size_t Context::workspace_bytes() const { return cuda_ ? cuda_->workspace_bytes : 0; }

}  // namespace tpq
