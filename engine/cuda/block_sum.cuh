// The block-wide sum the per-row and per-head kernels share (rwkv7_ops.cu, wkv_decode.cu): one
// order of summation, so that a fused kernel's sums equal the separate kernels' bit for bit.
#pragma once

namespace modrwkv::cuda {

// The sum of v over the block (blockDim.x a multiple of 32, at most 1024), in every thread.
// `scratch` holds 32 floats of shared memory; the call synchronises the block.
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // the previous call's readers are done with scratch
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < static_cast<int>(blockDim.x / 32) ? scratch[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
  return t;
}

}  // namespace modrwkv::cuda
