// Rounding f32 activations to the 16-bit types of tensor-core products, on the device, and the
// stores of kernels whose output rows a product reads next (ActivationsOut, to_half.cuh): the
// conversion kernel (to_half.cu) and the producers that write 16-bit rows directly round alike,
// so a product's input has the same bits either way. And widening 16-bit weights (Widen2).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "engine/base/tensor.h"
#include "engine/cuda/to_half.cuh"

namespace modrwkv::cuda {

// bf16: round to nearest even, NaN stays NaN. fp16: the same, except that finite values beyond
// the range saturate to +-65504 (infinities and NaN stay as they are).
template <HalfType T>
__device__ __forceinline__ uint16_t RoundToHalf(float v) {
  if constexpr (T == HalfType::kBF16) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
  } else {
    const float a = fabsf(v);
    const float c = a <= kF16Max || !(a < INFINITY) ? v : copysignf(kF16Max, v);
    return __half_as_ushort(__float2half_rn(c));
  }
}

// The other way: the two 16-bit values packed in `bits` (low half first) as floats, exactly.
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

// A kernel's output rows as a template parameter: Out::Store(p, i, v) stores value v at index i.
// Out::Store4(p, i, v) stores v.x..v.w at i..i+3 in one access (i a multiple of 4, p 16-byte
// aligned for f32 and 8-byte aligned for 16-bit rows).
struct F32Rows {
  using Elem = float;
  __device__ __forceinline__ static void Store(float* p, int64_t i, float v) { p[i] = v; }
  __device__ __forceinline__ static void Store4(float* p, int64_t i, float4 v) {
    *reinterpret_cast<float4*>(p + i) = v;
  }
};
template <HalfType T>
struct HalfRows {
  using Elem = uint16_t;
  __device__ __forceinline__ static void Store(uint16_t* p, int64_t i, float v) {
    p[i] = RoundToHalf<T>(v);
  }
  __device__ __forceinline__ static void Store4(uint16_t* p, int64_t i, float4 v) {
    const uint2 bits = {RoundToHalf<T>(v.x) | static_cast<uint32_t>(RoundToHalf<T>(v.y)) << 16,
                        RoundToHalf<T>(v.z) | static_cast<uint32_t>(RoundToHalf<T>(v.w)) << 16};
    *reinterpret_cast<uint2*>(p + i) = bits;
  }
};

// Calls launch(Out{}, rows) with the Out that `out` asks for (F32Rows, HalfRows<kBF16> or
// HalfRows<kF16>) and its pointer of the matching type (float* or uint16_t*): `launch` is a
// generic lambda that launches its kernel's instance for decltype(Out).
template <typename Fn>
absl::Status ForActivationsOut(const ActivationsOut& out, Fn&& launch) {
  if (!out.is_half()) return launch(F32Rows{}, out.f32);
  if (out.type == HalfType::kBF16) return launch(HalfRows<HalfType::kBF16>{}, out.half);
  return launch(HalfRows<HalfType::kF16>{}, out.half);
}

}  // namespace modrwkv::cuda
