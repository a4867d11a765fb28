#pragma once
// Context: everything a forward pass needs from the engine: the device, the CUDA stream to run on, a cuBLASLt
// handle, a workspace and an allocator. `forward` allocates only through the context and never synchronizes
// the device, so an engine can capture it in a CUDA graph.
#include <cstddef>
#include <memory>

#include "tpq/core/tensor.hpp"

struct CUstream_st;  // cudaStream_t without including the CUDA headers

namespace tpq {

using StreamHandle = CUstream_st*;

// Memory for forward passes. The default CUDA allocator is stream-ordered (cudaMallocAsync/cudaFreeAsync on
// the context's stream), which CUDA graph capture records as graph nodes. Engines can supply their own.
class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes, Device device, StreamHandle stream) = 0;
  virtual void deallocate(void* p, size_t bytes, Device device, StreamHandle stream) noexcept = 0;
};

class Context {
 public:
  // A CPU context; `threads` = 0 uses the hardware concurrency.
  static Context cpu(int threads = 0);
  // A CUDA context on `device`, running on `stream` (null = the legacy default stream), with its own cuBLASLt
  // handle and a workspace of `workspace_bytes`. Throws kUnsupported when built without CUDA.
  static Context cuda(int device = 0, StreamHandle stream = nullptr, std::shared_ptr<Allocator> allocator = nullptr,
                      size_t workspace_bytes = size_t{32} << 20);

  Device device() const { return device_; }
  StreamHandle stream() const { return stream_; }
  int cpu_threads() const { return cpu_threads_; }
  // cublasLtHandle_t, as an opaque pointer (null on CPU).
  void* cublaslt_handle() const;
  void* workspace() const;
  size_t workspace_bytes() const;
  Allocator& allocator() const { return *allocator_; }

  // FP8 GEMMs with per-tensor weight and activation scales (cuBLASLt on sm_89+) accumulate in the tensor cores'
  // fast mode: partial sums are not promoted to FP32 registers every few K steps. On by default, as FP8 inference
  // engines run these GEMMs. Measured on an H200 (benchmarks/results/README.md, sixth session): 1.04-1.10x faster
  // at M = 4096; 1.5e-3 relative RMS error at K = 4096 against an exact sum of the same quantized operands, where
  // quantizing the activations costs 3.8e-2 against unquantized ones (tests/cuda/test_fp8_cuda.cpp prints both).
  // Off: the promoted accumulation. Per-row, per-token and block scales always use the promoted one (the fast mode
  // is not measured with them); the weight-only GEMV and the CPU reference accumulate in FP32 whatever this says.
  // Copies of a context keep their own setting.
  void set_fp8_fast_accumulation(bool on) { fp8_fast_accum_ = on; }
  bool fp8_fast_accumulation() const { return fp8_fast_accum_; }

  // A tensor on this context's device, from its allocator, released on its stream.
  Tensor empty(const Shape& shape, DType dtype) const;

  // Internal to src/cuda/ (defined in src/cuda/cuda_resources.hpp): the cuBLASLt handle, workspace, cached
  // cuBLASLt plans and kernel scratch, shared by copies of the context. Null for a CPU context. Copies share one
  // workspace, so they must share the stream too (they do: the stream is fixed at creation).
  struct CudaResources;
  CudaResources* cuda_resources() const { return cuda_.get(); }

 private:
  Device device_ = Device::cpu();
  StreamHandle stream_ = nullptr;
  int cpu_threads_ = 1;
  bool fp8_fast_accum_ = true;
  std::shared_ptr<Allocator> allocator_;
  std::shared_ptr<CudaResources> cuda_;
};

}  // namespace tpq
