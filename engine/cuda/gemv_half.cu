// 16-bit-weight products (see gemv_half.cuh).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "absl/strings/str_cat.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/gemv_half.cuh"

namespace modrwkv::cuda {
namespace {

constexpr int kRowsPerPass = 8;
constexpr int kWarpsPerBlock = 8;

// The two 16-bit weights packed in `bits` (low half first) as floats.
template <HalfType T>
__device__ __forceinline__ float2 Widen2(uint32_t bits) {
  if constexpr (T == HalfType::kBF16) {
    return make_float2(__uint_as_float(bits << 16), __uint_as_float(bits & 0xffff0000u));
  } else {
    __half2 h;
    static_assert(sizeof(h) == 4);
    memcpy(&h, &bits, 4);
    return __half22float2(h);
  }
}

// acc[r] += the dot product of the weights in `wv` (2 x `pairs` floats) with row r's x at
// float offset `at` (16-byte loads of x when kPairs is even: `at` is then a multiple of 4).
template <int kPairs>
__device__ __forceinline__ void Accumulate(const float2 (&wv)[kPairs], const float* x, int64_t ldx,
                                           int64_t at, int nr, float (&acc)[kRowsPerPass]) {
#pragma unroll
  for (int r = 0; r < kRowsPerPass; ++r) {
    if (r >= nr) break;
    const float* xr = x + r * ldx + at;
    if constexpr (kPairs % 2 == 0) {
#pragma unroll
      for (int q = 0; q < kPairs; q += 2) {
        const float4 xv = reinterpret_cast<const float4*>(xr)[q / 2];
        acc[r] = fmaf(wv[q].x, xv.x, acc[r]);
        acc[r] = fmaf(wv[q].y, xv.y, acc[r]);
        acc[r] = fmaf(wv[q + 1].x, xv.z, acc[r]);
        acc[r] = fmaf(wv[q + 1].y, xv.w, acc[r]);
      }
    } else {
#pragma unroll
      for (int q = 0; q < kPairs; ++q) {
        const float2 xv = reinterpret_cast<const float2*>(xr)[q];
        acc[r] = fmaf(wv[q].x, xv.x, acc[r]);
        acc[r] = fmaf(wv[q].y, xv.y, acc[r]);
      }
    }
  }
}

__device__ __forceinline__ void Store(float (&acc)[kRowsPerPass], int nr, int lane, float* y,
                                      int out, int o, bool accumulate) {
#pragma unroll
  for (int r = 0; r < kRowsPerPass; ++r) {
    float v = acc[r];
    for (int s = 16; s > 0; s >>= 1) v += __shfl_xor_sync(0xffffffffu, v, s);
    if (lane == 0 && r < nr) {
      float* dst = y + static_cast<int64_t>(r) * out + o;
      *dst = accumulate ? *dst + v : v;
    }
  }
}

// Wide form: each lane takes 8 weights (one 16-byte load) per chunk, kUnroll chunks in flight.
template <HalfType T>
__global__ void GemvHalfWideKernel(const uint4* __restrict__ w, int out, int in,
                                   const float* __restrict__ x, int rows, float* y,
                                   bool accumulate) {
  constexpr int kUnroll = 4;
  const int o = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (o >= out) return;
  const int chunks = in / 8;
  const uint4* wrow = w + static_cast<int64_t>(o) * chunks;
  for (int r0 = 0; r0 < rows; r0 += kRowsPerPass) {
    const int nr = min(kRowsPerPass, rows - r0);
    const float* xr = x + static_cast<int64_t>(r0) * in;
    float acc[kRowsPerPass];
#pragma unroll
    for (int r = 0; r < kRowsPerPass; ++r) acc[r] = 0.0f;
    int c = lane;
    for (; c + 32 * (kUnroll - 1) < chunks; c += 32 * kUnroll) {
      uint4 raw[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) raw[u] = __ldg(wrow + c + 32 * u);  // all in flight
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const float2 wv[4] = {Widen2<T>(raw[u].x), Widen2<T>(raw[u].y), Widen2<T>(raw[u].z),
                              Widen2<T>(raw[u].w)};
        Accumulate<4>(wv, xr, in, static_cast<int64_t>(c + 32 * u) * 8, nr, acc);
      }
    }
    for (; c < chunks; c += 32) {
      const uint4 raw = __ldg(wrow + c);
      const float2 wv[4] = {Widen2<T>(raw.x), Widen2<T>(raw.y), Widen2<T>(raw.z), Widen2<T>(raw.w)};
      Accumulate<4>(wv, xr, in, static_cast<int64_t>(c) * 8, nr, acc);
    }
    Store(acc, nr, lane, y + static_cast<int64_t>(r0) * out, out, o, accumulate);
  }
}

// Narrow form, for any even `in`: one pair of weights per lane at a time.
template <HalfType T>
__global__ void GemvHalfPairKernel(const uint32_t* __restrict__ w, int out, int in,
                                   const float* __restrict__ x, int rows, float* y,
                                   bool accumulate) {
  const int o = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (o >= out) return;
  const int pairs = in / 2;
  const uint32_t* wrow = w + static_cast<int64_t>(o) * pairs;
  for (int r0 = 0; r0 < rows; r0 += kRowsPerPass) {
    const int nr = min(kRowsPerPass, rows - r0);
    const float* xr = x + static_cast<int64_t>(r0) * in;
    float acc[kRowsPerPass];
#pragma unroll
    for (int r = 0; r < kRowsPerPass; ++r) acc[r] = 0.0f;
    for (int p = lane; p < pairs; p += 32) {
      const float2 wv[1] = {Widen2<T>(__ldg(wrow + p))};
      Accumulate<1>(wv, xr, in, static_cast<int64_t>(p) * 2, nr, acc);
    }
    Store(acc, nr, lane, y + static_cast<int64_t>(r0) * out, out, o, accumulate);
  }
}

template <HalfType T>
void Launch(cudaStream_t stream, const uint16_t* w, int out, int in, const float* x, int rows,
            float* y, bool accumulate) {
  const unsigned blocks = static_cast<unsigned>((out + kWarpsPerBlock - 1) / kWarpsPerBlock);
  const bool wide = in % 8 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 &&
                    reinterpret_cast<uintptr_t>(x) % 16 == 0;
  if (wide) {
    GemvHalfWideKernel<T><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(
        reinterpret_cast<const uint4*>(w), out, in, x, rows, y, accumulate);
  } else {
    GemvHalfPairKernel<T><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(
        reinterpret_cast<const uint32_t*>(w), out, in, x, rows, y, accumulate);
  }
}

}  // namespace

absl::Status LaunchGemvHalf(cudaStream_t stream, HalfType type, const uint16_t* w, int out, int in,
                            const float* x, int rows, float* y, bool accumulate) {
  if (out < 0 || in <= 0 || in % 2 != 0 || rows < 0) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchGemvHalf: out = ", out, ", in = ", in,
                                                   ", rows = ", rows,
                                                   " (expected in > 0 and even)"));
  }
  if (out == 0 || rows == 0) return absl::OkStatus();
  if (w == nullptr || x == nullptr || y == nullptr) {
    return absl::InvalidArgumentError("LaunchGemvHalf: null device pointer");
  }
  if (reinterpret_cast<uintptr_t>(w) % 4 != 0 || reinterpret_cast<uintptr_t>(x) % 8 != 0) {
    return absl::InvalidArgumentError("LaunchGemvHalf: w must be 4-byte and x 8-byte aligned");
  }
  if (type == HalfType::kBF16) {
    Launch<HalfType::kBF16>(stream, w, out, in, x, rows, y, accumulate);
  } else {
    Launch<HalfType::kF16>(stream, w, out, in, x, rows, y, accumulate);
  }
  return CudaStatus(cudaGetLastError(), "GemvHalf kernel launch");
}

}  // namespace modrwkv::cuda
