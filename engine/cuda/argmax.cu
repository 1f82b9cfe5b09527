// Row-wise argmax (see argmax.cuh).
#include "absl/strings/str_cat.h"
#include "engine/cuda/argmax.cuh"
#include "engine/cuda/cuda_check.h"

namespace modrwkv::cuda {
namespace {

constexpr int kThreads = 256;

// (value, index) a beats b: larger value, or equal value and lower index (-1 = none).
__device__ bool Beats(float av, int ai, float bv, int bi) {
  if (ai < 0) return false;
  if (bi < 0) return true;
  return av > bv || (av == bv && ai < bi);
}

__global__ void ArgmaxRowsKernel(const float* __restrict__ logits, int V, int32_t* tokens) {
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * V;
  float best = -INFINITY;
  int idx = -1;
  // Each thread visits increasing indices, so a strict > keeps its lowest index of a tie.
  for (int i = threadIdx.x; i < V; i += blockDim.x) {
    const float v = row[i];
    if (v > best) {  // false for NaN and for -inf
      best = v;
      idx = i;
    }
  }
  for (int s = 16; s > 0; s >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, s);
    const int oi = __shfl_xor_sync(0xffffffffu, idx, s);
    if (Beats(ov, oi, best, idx)) {
      best = ov;
      idx = oi;
    }
  }
  __shared__ float warp_best[kThreads / 32];
  __shared__ int warp_idx[kThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    warp_best[warp] = best;
    warp_idx[warp] = idx;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) {
      if (Beats(warp_best[w], warp_idx[w], best, idx)) {
        best = warp_best[w];
        idx = warp_idx[w];
      }
    }
    tokens[blockIdx.x] = idx < 0 ? 0 : idx;
  }
}

}  // namespace

absl::Status LaunchArgmaxRows(cudaStream_t stream, const float* logits, int rows, int V,
                              int32_t* tokens) {
  if (rows < 0 || V <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchArgmaxRows: rows = ", rows, ", V = ", V));
  }
  if (rows == 0) return absl::OkStatus();
  ArgmaxRowsKernel<<<rows, kThreads, 0, stream>>>(logits, V, tokens);
  return CudaStatus(cudaGetLastError(), "ArgmaxRowsKernel launch");
}

}  // namespace modrwkv::cuda
