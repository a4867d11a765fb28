#pragma once
// Timing pieces both benchmark drivers use: an RAII CUDA event, the time between two events, a median, and the
// wall-clock stamp of a run.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <ctime>
#include <string>
#include <vector>

#include "tpq/detail/cuda_check.hpp"

namespace tpq::bench {

class Event {
 public:
  Event() { TPQ_CUDA_CHECK(cudaEventCreate(&e_)); }
  ~Event() { (void)cudaEventDestroy(e_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  Event(Event&& o) noexcept : e_(o.e_) { o.e_ = nullptr; }
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

inline float elapsed_ms(const Event& a, const Event& b) {
  float ms = 0.0f;
  TPQ_CUDA_CHECK(cudaEventElapsedTime(&ms, a.get(), b.get()));
  return ms;
}

template <typename T>
T median(std::vector<T> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / T(2);
}

// Now, in UTC, for the header of a recorded run.
inline std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

}  // namespace tpq::bench
