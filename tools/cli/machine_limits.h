// Measures this machine's limits that the benchmarks are judged against: memory read bandwidth
// (a STREAM-like pass over a large buffer) and the sgemm peak
// (OpenBLAS), with the backend's own dense-layer kernel measured next to it.
#pragma once

#include <string>

namespace modrwkv::cli {

struct MachineLimits {
  int threads = 1;
  double read_gbps = 0;          // GB/s (1e9), best of several passes over 1 GiB
  double sgemm_gflops = 0;       // 2048^3 OpenBLAS sgemm: the machine's measured GEMM peak
  double panel_gemm_gflops = 0;  // the same product through the backend's PanelGemm
  std::string blas_core;         // OpenBLAS kernel family in use
  std::string kernel_isa;        // our SIMD kernels: avx512 / avx2 / scalar
  std::string cpu_model;         // from /proc/cpuinfo
};

MachineLimits MeasureMachine(int threads);

}  // namespace modrwkv::cli
