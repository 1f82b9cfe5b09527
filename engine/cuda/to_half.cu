// f32 -> bf16 / fp16 rounding (see to_half.cuh).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "engine/base/tensor.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/half_round.cuh"
#include "engine/cuda/launch.cuh"
#include "engine/cuda/to_half.cuh"

namespace modrwkv::cuda {
namespace {

constexpr int kThreads = 256;

// Two values per thread (one 8-byte load, one 4-byte store); n is even for every caller but the
// odd tail is handled anyway.
template <HalfType T>
__global__ void F32ToHalfKernel(const float* __restrict__ in, int64_t n,
                                uint16_t* __restrict__ out) {
  AllowSuccessor();
  WaitForPredecessor();
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; 2 * p < n;
       p += stride) {
    const int64_t i = 2 * p;
    if (i + 1 < n) {
      const float2 v = reinterpret_cast<const float2*>(in)[p];
      const uint32_t packed = static_cast<uint32_t>(RoundToHalf<T>(v.x)) |
                              (static_cast<uint32_t>(RoundToHalf<T>(v.y)) << 16);
      reinterpret_cast<uint32_t*>(out)[p] = packed;
    } else {
      out[i] = RoundToHalf<T>(in[i]);
    }
  }
}

}  // namespace

absl::Status LaunchF32ToHalf(cudaStream_t stream, HalfType type, const float* in, int64_t n,
                             uint16_t* out) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("LaunchF32ToHalf: n = ", n));
  if (n == 0) return absl::OkStatus();
  if (in == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("LaunchF32ToHalf: null device pointer");
  }
  if (reinterpret_cast<uintptr_t>(in) % 8 != 0 || reinterpret_cast<uintptr_t>(out) % 4 != 0) {
    return absl::InvalidArgumentError("LaunchF32ToHalf: in must be 8-byte and out 4-byte aligned");
  }
  const int64_t pairs = (n + 1) / 2;
  const unsigned blocks =
      static_cast<unsigned>(std::min<int64_t>((pairs + kThreads - 1) / kThreads, 65535));
  return Launch(
      "F32ToHalfKernel",
      type == HalfType::kBF16 ? F32ToHalfKernel<HalfType::kBF16> : F32ToHalfKernel<HalfType::kF16>,
      dim3(blocks), dim3(kThreads), 0, stream, in, n, out);
}

}  // namespace modrwkv::cuda
