// Reading and writing the state pool's elements, f32 or f16 (ModelOptions::StateType): the
// kernels that touch slots (token shift, shift store, the WKV recurrence) are templates on the
// element type and compute in f32 either way; an f16 state is rounded to nearest even once, when
// the step's final value is stored. Whole state rows (the WKV kernel's 64 values per thread) move
// in 16-byte accesses: 16 instructions per row in f32, 8 in f16, instead of 64.
#pragma once

#include <cuda_fp16.h>

namespace modrwkv::cuda {

__device__ __forceinline__ float LoadState(const float* p) { return *p; }
__device__ __forceinline__ float LoadState(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ void StoreState(float* p, float v) { *p = v; }
__device__ __forceinline__ void StoreState(__half* p, float v) { *p = __float2half_rn(v); }

// Four consecutive elements as floats (p 16-byte aligned for f32, 8-byte for f16).
__device__ __forceinline__ float4 LoadState4(const float* p) {
  return *reinterpret_cast<const float4*>(p);
}
__device__ __forceinline__ float4 LoadState4(const __half* p) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  const float2 lo = __half22float2(*reinterpret_cast<const __half2*>(&raw.x));
  const float2 hi = __half22float2(*reinterpret_cast<const __half2*>(&raw.y));
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}

// The elements per 16-byte access; a row's address must be a multiple of 16 bytes.
template <typename S>
constexpr int kRowVector = 16 / static_cast<int>(sizeof(S));

template <int N>
__device__ __forceinline__ void LoadRow(const float* row, float (&s)[N]) {
  static_assert(N % 4 == 0);
#pragma unroll
  for (int j = 0; j < N; j += 4) {
    const float4 v = reinterpret_cast<const float4*>(row)[j / 4];
    s[j] = v.x;
    s[j + 1] = v.y;
    s[j + 2] = v.z;
    s[j + 3] = v.w;
  }
}

template <int N>
__device__ __forceinline__ void LoadRow(const __half* row, float (&s)[N]) {
  static_assert(N % 8 == 0);
#pragma unroll
  for (int j = 0; j < N; j += 8) {
    const uint4 raw = reinterpret_cast<const uint4*>(row)[j / 8];
    const __half2* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 f = __half22float2(h[k]);
      s[j + 2 * k] = f.x;
      s[j + 2 * k + 1] = f.y;
    }
  }
}

template <int N>
__device__ __forceinline__ void StoreRow(float* row, const float (&s)[N]) {
#pragma unroll
  for (int j = 0; j < N; j += 4) {
    reinterpret_cast<float4*>(row)[j / 4] = make_float4(s[j], s[j + 1], s[j + 2], s[j + 3]);
  }
}

template <int N>
__device__ __forceinline__ void StoreRow(__half* row, const float (&s)[N]) {
#pragma unroll
  for (int j = 0; j < N; j += 8) {
    uint4 raw;
    __half2* h = reinterpret_cast<__half2*>(&raw);
#pragma unroll
    for (int k = 0; k < 4; ++k) h[k] = __floats2half2_rn(s[j + 2 * k], s[j + 2 * k + 1]);
    reinterpret_cast<uint4*>(row)[j / 8] = raw;
  }
}

}  // namespace modrwkv::cuda
