// Throughput of the SigLIP2-base/16@384 vision tower (seeded random weights) on the CPU backend,
// next to the machine's single-thread sgemm rate, for the benchmark and the CLI.
#pragma once

#include "absl/status/statusor.h"

namespace modrwkv::encoders {

struct VisionBenchResult {
  int threads = 0;
  int batch = 0;
  int iterations = 0;
  double seconds_per_call = 0;   // best of the timed Forward calls
  double images_per_second = 0;  // batch / seconds_per_call
  double gflop_per_image = 0;    // projections + attention products, ~111 for this tower
  double gflops = 0;             // achieved GFLOP/s
  double sgemm_gflops = 0;       // OpenBLAS sgemm 2048^3 on one thread, measured in the same run
  double fraction_of_peak = 0;   // gflops / (threads * sgemm_gflops)
};

// OpenBLAS sgemm of n x n x n on the calling thread: best GFLOP/s of `reps` runs.
absl::StatusOr<double> MeasureSgemmGflops(int n, int reps);

// Builds the tower (untimed), runs one warm-up call and `iterations` timed calls.
absl::StatusOr<VisionBenchResult> BenchVisionTower(int threads, int batch, int iterations);

}  // namespace modrwkv::encoders
