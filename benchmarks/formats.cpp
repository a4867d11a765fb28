// The format list of the benchmark driver: one line per format, in table order. A new format adds its
// benchmarks/format_<name>.cpp (a BenchFormat) and one line here.
#include "benchmarks/bench_format.hpp"

namespace tpq::bench {

std::unique_ptr<BenchFormat> make_unquant_format();
std::unique_ptr<BenchFormat> make_gptq4_format();
std::unique_ptr<BenchFormat> make_gptq8_format();
std::unique_ptr<BenchFormat> make_awq4_format();
std::unique_ptr<BenchFormat> make_gptq4_act_format();
std::unique_ptr<BenchFormat> make_fp8_format();
std::unique_ptr<BenchFormat> make_fp8_static_format();
std::unique_ptr<BenchFormat> make_fp8_block_format();

const std::vector<FormatEntry>& format_registry() {
  static const std::vector<FormatEntry> formats = {
      {"unquant", make_unquant_format},
      {"gptq4_g128", make_gptq4_format},
      {"gptq8_g128", make_gptq8_format},
      {"awq4_g128", make_awq4_format},
      {"gptq4_g128_act", make_gptq4_act_format},
      {"fp8", make_fp8_format},
      {"fp8-static", make_fp8_static_format},
      {"fp8-block", make_fp8_block_format},
  };
  return formats;
}

}  // namespace tpq::bench
