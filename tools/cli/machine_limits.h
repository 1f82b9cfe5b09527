// Measures this machine's limits that the benchmarks are judged against: memory read bandwidth
// (a STREAM-like pass over a large buffer), the sgemm peak (OpenBLAS) and the integer products'
// instruction peak, with the backend's own kernels measured next to them.
#pragma once

#include <string>

namespace modrwkv::cli {

struct MachineLimits {
  int threads = 1;
  double read_gbps = 0;          // GB/s (1e9), best of several passes over 1 GiB
  double sgemm_gflops = 0;       // 2048^3 OpenBLAS sgemm: the machine's measured GEMM peak
  double panel_gemm_gflops = 0;  // the same product through the backend's PanelGemm
  // The int4 weights' integer products (I4Gemm: bytes multiplied and added into int32, VNNI where
  // the CPU has it): the instruction sequence's peak in integer ops/s (2 per multiply-add) on
  // every thread, 0 where the products are scalar loops; and a 2048^3 int4 product through the
  // backend (x rounded to int8 included) against it.
  double int_dot_gops = 0;
  double i4_gemm_gops = 0;
  std::string blas_core;   // OpenBLAS kernel family in use
  std::string kernel_isa;  // our SIMD kernels: avx512 / avx2 / scalar
  std::string cpu_model;   // from /proc/cpuinfo
};

MachineLimits MeasureMachine(int threads);

}  // namespace modrwkv::cli
