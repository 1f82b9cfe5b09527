// bf16-weight products (see gemv_bf16.cuh).
#include <cuda_bf16.h>

#include "absl/strings/str_cat.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/gemv_bf16.cuh"

namespace modrwkv::cuda {
namespace {

constexpr int kRowsPerPass = 8;
constexpr int kWarpsPerBlock = 8;

__global__ void GemvBf16Kernel(const __nv_bfloat162* __restrict__ w, int out, int in,
                               const float* __restrict__ x, int rows, float* y, bool accumulate) {
  const int o = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (o >= out) return;
  const int pairs = in / 2;
  const __nv_bfloat162* wrow = w + static_cast<int64_t>(o) * pairs;
  for (int r0 = 0; r0 < rows; r0 += kRowsPerPass) {
    const int nr = min(kRowsPerPass, rows - r0);
    float acc[kRowsPerPass];
#pragma unroll
    for (int r = 0; r < kRowsPerPass; ++r) acc[r] = 0.0f;
    for (int p = lane; p < pairs; p += 32) {
      const float2 wv = __bfloat1622float2(wrow[p]);
#pragma unroll
      for (int r = 0; r < kRowsPerPass; ++r) {
        if (r < nr) {
          const float2 xv =
              reinterpret_cast<const float2*>(x + static_cast<int64_t>(r0 + r) * in)[p];
          acc[r] = fmaf(wv.x, xv.x, acc[r]);
          acc[r] = fmaf(wv.y, xv.y, acc[r]);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kRowsPerPass; ++r) {
      float v = acc[r];
      for (int s = 16; s > 0; s >>= 1) v += __shfl_xor_sync(0xffffffffu, v, s);
      if (lane == 0 && r < nr) {
        float* dst = y + static_cast<int64_t>(r0 + r) * out + o;
        *dst = accumulate ? *dst + v : v;
      }
    }
  }
}

}  // namespace

absl::Status LaunchGemvBf16(cudaStream_t stream, const uint16_t* w, int out, int in, const float* x,
                            int rows, float* y, bool accumulate) {
  if (out < 0 || in <= 0 || in % 2 != 0 || rows < 0) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchGemvBf16: out = ", out, ", in = ", in,
                                                   ", rows = ", rows,
                                                   " (expected in > 0 and even)"));
  }
  if (out == 0 || rows == 0) return absl::OkStatus();
  const unsigned blocks = static_cast<unsigned>((out + kWarpsPerBlock - 1) / kWarpsPerBlock);
  GemvBf16Kernel<<<blocks, kWarpsPerBlock * 32, 0, stream>>>(
      reinterpret_cast<const __nv_bfloat162*>(w), out, in, x, rows, y, accumulate);
  return CudaStatus(cudaGetLastError(), "GemvBf16Kernel launch");
}

}  // namespace modrwkv::cuda
