// f32 -> bf16 rounding (see to_bf16.cuh).
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/to_bf16.cuh"

namespace modrwkv::cuda {
namespace {

constexpr int kThreads = 256;

// Two values per thread (one 8-byte load, one 4-byte store); n is even for every caller but the
// odd tail is handled anyway.
__global__ void F32ToBf16Kernel(const float* __restrict__ in, int64_t n,
                                uint16_t* __restrict__ out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; 2 * p < n;
       p += stride) {
    const int64_t i = 2 * p;
    if (i + 1 < n) {
      const float2 v = reinterpret_cast<const float2*>(in)[p];
      const __nv_bfloat162 b = __floats2bfloat162_rn(v.x, v.y);
      reinterpret_cast<__nv_bfloat162*>(out)[p] = b;
    } else {
      out[i] = __bfloat16_as_ushort(__float2bfloat16_rn(in[i]));
    }
  }
}

}  // namespace

absl::Status LaunchF32ToBf16(cudaStream_t stream, const float* in, int64_t n, uint16_t* out) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("LaunchF32ToBf16: n = ", n));
  if (n == 0) return absl::OkStatus();
  if (in == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("LaunchF32ToBf16: null device pointer");
  }
  if (reinterpret_cast<uintptr_t>(in) % 8 != 0 || reinterpret_cast<uintptr_t>(out) % 4 != 0) {
    return absl::InvalidArgumentError("LaunchF32ToBf16: in must be 8-byte and out 4-byte aligned");
  }
  const int64_t pairs = (n + 1) / 2;
  const unsigned blocks =
      static_cast<unsigned>(std::min<int64_t>((pairs + kThreads - 1) / kThreads, 65535));
  F32ToBf16Kernel<<<blocks, kThreads, 0, stream>>>(in, n, out);
  return CudaStatus(cudaGetLastError(), "F32ToBf16Kernel launch");
}

}  // namespace modrwkv::cuda
