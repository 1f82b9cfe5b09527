// Throughput of the Whisper encoder at the released small and medium shapes (seeded random
// weights) on the CPU backend, as a real-time factor and against the machine's measured GEMM
// peak, for the benchmark (tests/bench/whisper_encoder_bench.cc).
#pragma once

#include <algorithm>
#include <string>

#include "absl/status/statusor.h"
#include "encoders/speech/whisper_config.h"

namespace modrwkv::encoders {

enum class WhisperShape { kSmall, kMedium };

// The shape's encoder config (WhisperSmallConfig / WhisperMediumConfig) and its name.
WhisperConfig WhisperShapeConfig(WhisperShape shape);
const char* WhisperShapeName(WhisperShape shape);

// 2048^3 f32 GEMM on `threads` threads, best of 3 after a warm-up, as tools/cli/machine_limits
// measures it: OpenBLAS sgemm (one single-threaded call per thread over a column slice) and the
// backend's PanelGemm (LinearRunner). The peak is the better of the two.
// Each rate is also given per second of process CPU time (summed over threads), which a machine
// shared with other work slows much less than wall time.
struct GemmPeak {
  double sgemm_gflops = 0;  // 0 when OpenBLAS is missing
  double panel_gemm_gflops = 0;
  double sgemm_gflops_per_cpu_s = 0;
  double panel_gemm_gflops_per_cpu_s = 0;
  double peak() const { return std::max(sgemm_gflops, panel_gemm_gflops); }
  double peak_per_cpu_s() const {
    return std::max(sgemm_gflops_per_cpu_s, panel_gemm_gflops_per_cpu_s);
  }
};
GemmPeak MeasureGemmPeak(int threads);

struct WhisperBenchResult {
  std::string shape;
  int threads = 0;
  int batch = 0;
  int iterations = 0;
  double seconds_per_call = 0;  // best of the timed Forward calls (batch clips of 30 s each)
  // Real-time factor: seconds of audio encoded per second of wall time (30 s per clip).
  double audio_seconds_per_second = 0;
  double gflop_per_clip = 0;        // convolutions + projections + attention products
  double gflops = 0;                // achieved GFLOP/s
  double cpu_seconds_per_call = 0;  // process CPU time of the best call, all threads
  double gflops_per_cpu_s = 0;      // GFLOP per CPU second (per busy core)
  GemmPeak peak;                    // measured in the same run, same thread count
  double fraction_of_peak = 0;      // gflops / peak.peak()
  // gflops_per_cpu_s / peak.peak_per_cpu_s(): the efficiency with contention factored out.
  double cpu_fraction_of_peak = 0;
};

// Builds the encoder (untimed), runs one warm-up call and `iterations` timed calls on seeded
// log-mel windows.
absl::StatusOr<WhisperBenchResult> BenchWhisperEncoder(WhisperShape shape, int threads, int batch,
                                                       int iterations = 2);

}  // namespace modrwkv::encoders
