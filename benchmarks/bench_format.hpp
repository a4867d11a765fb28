#pragma once
// The benchmark's format seam. Every row of the table comes from a BenchFormat: it builds its weights from the
// shared random bf16/f16 master weight, launches one forward, and says how many weight bytes a forward reads and
// which dense weight its output should match. Adding a format (FP8, GPTQ, ...) is one class in its own
// benchmarks/format_<name>.cpp and one line in format_registry() (formats.cpp).
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tests/common/device_buffer.hpp"
#include "tpq/core/context.hpp"
#include "tpq/core/dtype.hpp"
#include "tpq/detail/cuda_check.hpp"

namespace tpq::bench {

// Device memory owned by the benchmark (setup may allocate, forwards may not).
using test::DeviceBuffer;

// One timed problem: y[m, n] = x[m, k] · W[n, k]ᵀ in `dtype` (BF16 or F16), no bias.
struct BenchProblem {
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  DType dtype = DType::BF16;
  const Context* ctx = nullptr;    // tpq context on the benchmark's stream
  cublasHandle_t cublas = nullptr;  // bound to the same stream, with its own workspace
};

class BenchFormat {
 public:
  virtual ~BenchFormat() = default;
  // Bytes of weight data (values, scales, zeros, indices) one forward reads: the "weight GB/s" column.
  virtual double weight_bytes(int64_t n, int64_t k) const = 0;
  // Builds `copies` independent device copies of the weight from `master` (device, [n, k] in p.dtype, uniform
  // random). Copies are cycled through so that the timed weights always come from DRAM, not L2.
  virtual void setup(const BenchProblem& p, const void* master, int copies) = 0;
  // Launches one forward with weight copy `copy` on the problem's stream: no synchronization, no allocation
  // (it is captured into a CUDA graph).
  virtual void run(int copy, const void* x, void* y) = 0;
  // The dense weight (device, [n, k] in p.dtype) the output should equal up to rounding: the master for
  // unquantized formats, the dequantized weight for quantized ones. The error column compares against cuBLAS
  // on this weight.
  virtual const void* reference_weight() const = 0;
};

// A dense (bf16/f16) weight kept as `copies` device copies of the master: the baseline's and unquant's shared
// setup. Subclasses supply only run().
class DenseCopiesFormat : public BenchFormat {
 public:
  double weight_bytes(int64_t n, int64_t k) const override {
    return static_cast<double>(n) * static_cast<double>(k) * 2.0;
  }
  void setup(const BenchProblem& p, const void* master, int copies) override {
    problem_ = p;
    master_ = master;
    const size_t bytes = static_cast<size_t>(p.n * p.k) * dtype_size(p.dtype);
    weights_.clear();
    for (int c = 0; c < copies; ++c) {
      weights_.emplace_back(bytes);
      TPQ_CUDA_CHECK(cudaMemcpy(weights_.back().get(), master, bytes, cudaMemcpyDeviceToDevice));
    }
  }
  const void* reference_weight() const override { return master_; }

 protected:
  const BenchProblem& problem() const { return problem_; }
  const void* weight(int copy) const { return weights_[static_cast<size_t>(copy)].get(); }

 private:
  BenchProblem problem_;
  const void* master_ = nullptr;
  std::vector<DeviceBuffer> weights_;
};

struct FormatEntry {
  std::string name;
  std::function<std::unique_ptr<BenchFormat>()> make;
};

// Every format the driver can time, in table order.
const std::vector<FormatEntry>& format_registry();

// The baseline every row is measured against: cuBLAS (cublasGemmEx, f32 accumulation, no bias) in p.dtype.
std::unique_ptr<BenchFormat> make_cublas_baseline();
// y = x·Wᵀ through cublasGemmEx on p.cublas (the baseline's forward, and the reference of the error column).
void cublas_linear(const BenchProblem& p, const void* x, const void* w, void* y);

}  // namespace tpq::bench
