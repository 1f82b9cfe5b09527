// The WavLM encoder (seeded random weights) in the base+ and large shapes on a 10 s clip at 1 and
// 2 threads: real-time factor (seconds of audio per second), GFLOP/s, and the fraction of the
// machine's GEMM peak (the better of OpenBLAS sgemm and PanelGemm, 2048^3, measured in the same
// run with the same threads).
#include <string>

#include "benchmark/benchmark.h"
#include "encoders/speech/wavlm_bench.h"

namespace modrwkv::encoders {
namespace {

void Run(benchmark::State& state, const std::string& shape) {
  const int threads = static_cast<int>(state.range(0));
  for (auto _ : state) {
    auto r = BenchWavlmEncoder(shape, threads, 10.0);
    if (!r.ok()) {
      state.SkipWithError(std::string(r.status().message()).c_str());
      return;
    }
    state.counters["RTF"] = r->real_time_factor;
    state.counters["s/clip"] = r->seconds_per_call;
    state.counters["features_cpu_s"] = r->features_cpu_seconds;
    state.counters["GFLOP/clip"] = r->gflop_per_clip;
    state.counters["GFLOP/s"] = r->gflops;
    state.counters["sgemm_GFLOP/s"] = r->sgemm_gflops;
    state.counters["panel_GFLOP/s"] = r->panel_gemm_gflops;
    state.counters["fraction_of_peak"] = r->fraction_of_peak;
    state.counters["cpu_s/clip"] = r->cpu_seconds_per_call;
    state.counters["GFLOP/cpu_s"] = r->gflops_per_cpu_second;
    state.counters["peak_GFLOP/cpu_s"] = r->peak_gflops_per_cpu_second;
    state.counters["fraction_of_peak_cpu"] = r->fraction_of_peak_cpu;
  }
}

void BM_WavlmBasePlus10s(benchmark::State& state) { Run(state, "base+"); }
void BM_WavlmLarge10s(benchmark::State& state) { Run(state, "large"); }

// Each iteration builds the model and times its best of 2 calls; one iteration is enough.
BENCHMARK(BM_WavlmBasePlus10s)
    ->ArgNames({"threads"})
    ->Arg(1)
    ->Arg(2)
    ->Iterations(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime();
BENCHMARK(BM_WavlmLarge10s)
    ->ArgNames({"threads"})
    ->Arg(1)
    ->Arg(2)
    ->Iterations(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime();

}  // namespace
}  // namespace modrwkv::encoders
