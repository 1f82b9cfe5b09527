// Reading and writing the state pool's elements, f32 or f16 (ModelOptions::StateType): the
// kernels that touch slots (token shift, shift store, the WKV recurrence) are templates on the
// element type and compute in f32 either way; an f16 state is rounded to nearest even once, when
// the step's final value is stored.
#pragma once

#include <cuda_fp16.h>

namespace modrwkv::cuda {

__device__ __forceinline__ float LoadState(const float* p) { return *p; }
__device__ __forceinline__ float LoadState(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ void StoreState(float* p, float v) { *p = v; }
__device__ __forceinline__ void StoreState(__half* p, float v) { *p = __float2half_rn(v); }

}  // namespace modrwkv::cuda
