// Speed of the WavLM encoder (seeded random weights, base+ or large shape) on the CPU backend:
// real-time factor on one clip, and GFLOP/s against the machine's GEMM peak measured in the
// same run (the better of OpenBLAS sgemm and the engine's PanelGemm on 2048^3, same threads).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace modrwkv::encoders {

struct WavlmBenchResult {
  std::string shape;
  int threads = 0;
  double audio_seconds = 0;  // length of the clip
  int frames = 0;            // output rows
  int iterations = 0;
  double seconds_per_call = 0;  // best of the timed Forward calls
  double real_time_factor = 0;  // audio_seconds / seconds_per_call (seconds of audio per second)
  // Of which (CPU time): conv feature encoder, feature projection, positional conv.
  double features_cpu_seconds = 0;
  double gflop_per_clip = 0;     // convolutions, projections, attention products
  double gflops = 0;             // achieved GFLOP/s
  double sgemm_gflops = 0;       // OpenBLAS sgemm 2048^3, columns split over `threads`
  double panel_gemm_gflops = 0;  // PanelGemm (LinearRunner) 2048^3 on `threads`
  double fraction_of_peak = 0;   // gflops / max(sgemm_gflops, panel_gemm_gflops)
  // The same by process CPU time instead of wall time: on a machine shared with other jobs a
  // preempted thread stops its CPU clock, so with one thread these stay close to the figures of
  // an idle machine (with two, pool threads that spin while waiting count too).
  double cpu_seconds_per_call = 0;        // least process CPU time of the timed calls
  double gflops_per_cpu_second = 0;       // gflop_per_clip / cpu_seconds_per_call
  double peak_gflops_per_cpu_second = 0;  // better of sgemm and PanelGemm, by CPU time
  double fraction_of_peak_cpu = 0;
};

// shape: "base+" or "large". Builds the encoder (untimed), runs one warm-up call and then
// `iterations` timed calls on one clip of `audio_seconds` seconds at 16 kHz.
absl::StatusOr<WavlmBenchResult> BenchWavlmEncoder(const std::string& shape, int threads,
                                                   double audio_seconds, int iterations = 2);

}  // namespace modrwkv::encoders
