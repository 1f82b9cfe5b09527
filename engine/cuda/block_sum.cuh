// The block-wide sums the per-row and per-head kernels share (rwkv7_ops.cu, wkv_decode.cu,
// wkv_prefill.cu): one order of summation, so that a fused kernel's sums equal the separate
// kernels' bit for bit.
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

// K block sums at once, each v[q] replaced by its sum over the block: K calls of BlockSum (the
// same additions in the same order, so the same results) behind two barriers instead of 2K.
// `scratch` holds 32 * K floats of shared memory; the call synchronises the block.
template <int K>
__device__ __forceinline__ void BlockSums(float (&v)[K], float* scratch) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int q = 0; q < K; ++q) {
    for (int o = 16; o > 0; o >>= 1) v[q] += __shfl_xor_sync(0xffffffffu, v[q], o);
  }
  __syncthreads();  // the previous call's readers are done with scratch
  if (lane == 0) {
#pragma unroll
    for (int q = 0; q < K; ++q) scratch[q * 32 + warp] = v[q];
  }
  __syncthreads();
  const bool live = lane < static_cast<int>(blockDim.x / 32);
#pragma unroll
  for (int q = 0; q < K; ++q) {
    float t = live ? scratch[q * 32 + lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
    v[q] = t;
  }
}

}  // namespace modrwkv::cuda
