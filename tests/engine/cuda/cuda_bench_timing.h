// Timing helpers shared by cuda_bench's parts: events around calls on a stream, replayed CUDA
// graphs, and the device's measured limits the figures are ratios to.
#ifndef MODRWKV_TESTS_ENGINE_CUDA_CUDA_BENCH_TIMING_H_
#define MODRWKV_TESTS_ENGINE_CUDA_CUDA_BENCH_TIMING_H_

#include <cuda_runtime.h>

#include <memory>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/base/status_macros.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/launch.h"

namespace modrwkv::cuda::bench {

// Seconds per call of `fn` (after one warm-up call), timed with events on `stream`.
template <typename Fn>
absl::StatusOr<double> TimeOnStream(cudaStream_t stream, int reps, Fn fn) {
  MODRWKV_RETURN_IF_ERROR(fn());
  MODRWKV_ASSIGN_OR_RETURN(CudaEvent start, CreateEvent(cudaEventDefault));
  MODRWKV_ASSIGN_OR_RETURN(CudaEvent stop, CreateEvent(cudaEventDefault));
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaEventRecord(start.get(), stream));
  for (int i = 0; i < reps; ++i) MODRWKV_RETURN_IF_ERROR(fn());
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop.get(), stream));
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop.get()));
  float ms = 0;
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start.get(), stop.get()));
  return ms / 1e3 / reps;
}
struct DeviceLimits {
  double copy_bytes_per_s = 0;  // read + written
  double bf16_flops = 0;        // cuBLAS bf16 x bf16 -> f32, 8192^3
  double f32_flops = 0;         // cuBLAS SGEMM, no TF32, 4096^3
};
// Seconds per launch of `launch(i)` for i = 0..n-1, captured once into a CUDA graph and the graph
// replayed (launch overheads as in a decode step's graph).
template <typename Fn>
absl::StatusOr<double> TimeGraph(cudaStream_t st, int n, Fn launch) {
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  absl::Status captured = absl::OkStatus();
  for (int i = 0; i < n && captured.ok(); ++i) captured = launch(i);
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(st, &graph);
  MODRWKV_RETURN_IF_ERROR(captured);
  MODRWKV_CUDA_RETURN_IF_ERROR(ended);
  std::unique_ptr<std::remove_pointer_t<cudaGraph_t>, cudaError_t (*)(cudaGraph_t)> g(
      graph, cudaGraphDestroy);
  cudaGraphExec_t exec = nullptr;
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaGraphInstantiate(&exec, graph, 0));
  std::unique_ptr<std::remove_pointer_t<cudaGraphExec_t>, cudaError_t (*)(cudaGraphExec_t)> e(
      exec, cudaGraphExecDestroy);
  MODRWKV_ASSIGN_OR_RETURN(const double t, TimeOnStream(st, 5, [&]() -> absl::Status {
                             MODRWKV_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec, st));
                             return absl::OkStatus();
                           }));
  return t / n;
}

// TimeGraph of the same launches with overlapped launches on, then off (launch.h). Leaves the
// process-wide switch off: the caller sets it back.
struct OverlapTimes {
  double overlapped, plain;
};
template <typename Fn>
absl::StatusOr<OverlapTimes> TimeGraphBothWays(cudaStream_t st, int n, Fn launch) {
  OverlapTimes t;
  SetOverlappedLaunches(true);
  MODRWKV_ASSIGN_OR_RETURN(t.overlapped, TimeGraph(st, n, launch));
  SetOverlappedLaunches(false);
  MODRWKV_ASSIGN_OR_RETURN(t.plain, TimeGraph(st, n, launch));
  return t;
}

// --kernels=on (cuda_bench_kernels.cc): single kernels at the shapes of the released models,
// each launched back to back from a CUDA graph, against the copy bandwidth in `lim`; with
// `smoke`, at small shapes (every kernel's row in seconds on the CUDA emulator).
absl::Status BenchKernels(const DeviceLimits& lim, bool smoke);

}  // namespace modrwkv::cuda::bench

#endif  // MODRWKV_TESTS_ENGINE_CUDA_CUDA_BENCH_TIMING_H_
