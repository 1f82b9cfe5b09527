// The Whisper encoder at the whisper-small (768/12/12/3072, ~345 GFLOP per 30 s window) and
// whisper-medium (1024/24/16/4096, ~1.14 TFLOP) shapes with seeded random weights: real-time
// factor (seconds of audio per second), GFLOP/s, and the fraction of the better of OpenBLAS sgemm
// and PanelGemm on 2048^3 at the same thread count, measured in the same run; the same per second
// of process CPU time (a machine shared with other builds slows that much less than wall time).
#include <string>

#include "benchmark/benchmark.h"
#include "encoders/speech/whisper_bench.h"

namespace modrwkv::encoders {
namespace {

void Report(benchmark::State& state, WhisperShape shape, int iterations) {
  const int threads = static_cast<int>(state.range(0));
  const int batch = static_cast<int>(state.range(1));
  for (auto _ : state) {
    auto r = BenchWhisperEncoder(shape, threads, batch, iterations);
    if (!r.ok()) {
      state.SkipWithError(std::string(r.status().message()).c_str());
      return;
    }
    state.counters["audio_s/s"] = r->audio_seconds_per_second;
    state.counters["s/call"] = r->seconds_per_call;
    state.counters["GFLOP/s"] = r->gflops;
    state.counters["GFLOP/clip"] = r->gflop_per_clip;
    state.counters["sgemm_GFLOP/s"] = r->peak.sgemm_gflops;
    state.counters["panel_GFLOP/s"] = r->peak.panel_gemm_gflops;
    state.counters["fraction_of_peak"] = r->fraction_of_peak;
    state.counters["GFLOP/cpu_s"] = r->gflops_per_cpu_s;
    state.counters["peak_GFLOP/cpu_s"] = r->peak.peak_per_cpu_s();
    state.counters["cpu_fraction_of_peak"] = r->cpu_fraction_of_peak;
  }
}

void BM_WhisperSmall(benchmark::State& state) { Report(state, WhisperShape::kSmall, 2); }
void BM_WhisperMedium(benchmark::State& state) { Report(state, WhisperShape::kMedium, 1); }

// Each iteration builds the encoder and times its best of the calls; one iteration is enough.
BENCHMARK(BM_WhisperSmall)
    ->ArgNames({"threads", "batch"})
    ->Args({1, 1})
    ->Args({2, 1})
    ->Args({2, 2})
    ->Iterations(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime();
BENCHMARK(BM_WhisperMedium)
    ->ArgNames({"threads", "batch"})
    ->Args({1, 1})
    ->Args({2, 1})
    ->Iterations(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime();

}  // namespace
}  // namespace modrwkv::encoders
