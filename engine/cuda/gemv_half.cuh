// y = x * W^T with W in a 16-bit float type (bf16 or fp16) and x, y in fp32 (fp32 accumulation):
// the products of few rows (decode of small batches) for a model whose weights are kept in 16
// bits on the device. The CUDA twin of the CPU backend's bf16 PanelGemm (the same products of
// widened weights and fp32 activations, summed in another order).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace modrwkv::cuda {

enum class HalfType { kBF16, kF16 };

// y[r][o] (+)= sum_i x[r][i] * widen(w[o][i]) for r < rows, o < out. w: [out][in] row-major
// 16-bit bits of `type`; x: [rows][in]; y: [rows][out]; `in` must be even. One warp per output
// row (rows of weights longer than 4 KB shared by 2, 4 or 8 warps of a block, their sums added in
// a fixed order), the rows of x taken 8 at a time, so every weight is read once per 8 rows
// (decode reads each weight once; prefill leans on L2). When `in` is a multiple of 8 and w, x
// are 16-byte aligned, each lane loads 8 weights at once with several loads in flight: a decode
// step is bound by how many weight bytes are in flight, and 4-byte loads, one per warp at a
// time, would reach a fraction of HBM bandwidth (Little's law: bandwidth x latency ~ megabytes
// in flight). Launched overlapped with the kernel before it (launch.cuh).
absl::Status LaunchGemvHalf(cudaStream_t stream, HalfType type, const uint16_t* w, int out, int in,
                            const float* x, int rows, float* y, bool accumulate);

// What a product's store applies to each sum: nothing, accumulation into y, or an activation
// (the element-wise function that follows the product in the model, fused into it: the same
// float operations as LaunchActivation's, on the same sums).
enum class GemvEpilogue { kStore, kAccumulate, kTanh, kSigmoid, kReluSquare };

// One product of a group: y[r][o] = epilogue(sum_i x[r][i] * widen(w[o][i])), as above.
struct GemvJob {
  const uint16_t* w = nullptr;
  int out = 0, in = 0;
  const float* x = nullptr;
  float* y = nullptr;
  GemvEpilogue epilogue = GemvEpilogue::kStore;
};
constexpr int kMaxGemvJobs = 8;

// Up to kMaxGemvJobs independent products over the same `rows` in one launch (a layer's r, k, v
// projections with its LoRA down-projections; their up-projections): the small products of a decode
// step cost their launch and ramp more than their bytes, so one launch runs them side by side.
// The jobs must not write what another reads.
absl::Status LaunchGemvHalfGroup(cudaStream_t stream, HalfType type, absl::Span<const GemvJob> jobs,
                                 int rows);

}  // namespace modrwkv::cuda
