// A decode step's time-mixing core in one kernel: the per-head preparation of the recurrence's
// inputs, one token of the recurrence, and the GroupNorm + bonus + gate after it, for every
// sequence's one token. The same float operations as LaunchPrepareWkv, LaunchWkv7 (walking) and
// LaunchGroupNormGate in turn, without the round trips through memory between them and with two
// launches fewer per layer.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "engine/cuda/to_half.cuh"

namespace modrwkv::cuda {

// A layer's per-channel parameters ([C] each, device pointers).
struct TimeMixParams {
  const float* w0;
  const float* a0;
  const float* k_k;
  const float* k_a;
  const float* v0;  // ignored (may be null) in the first layer
  const float* r_k;
  const float* gn_w;
  const float* gn_b;
};

// The step's activations after the products: row b (sequence b's token) at ptr + b * C.
struct TimeMixRows {
  const float* r;
  const float* w;  // before the decay: the decay LoRA's output
  const float* a;  // before the sigmoid
  const float* k;
  const float* v;
  float* v_first;       // written by the first layer, read by the later ones
  const float* v_gate;  // ignored (may be null) in the first layer
  const float* g;
};

// For each sequence b < B and head h < H (head size 64):
//   w = Decay(w + w0); a = sigmoid(a + a0); kk = L2-normalised (k * k_k) per head;
//   k' = KeyWithIclr(k, a, k_a); first layer: v_first = v, v' = v; later layers:
//   v' = ValueResidual(v, v_first, v_gate + v0);
//   one token of the recurrence on the state of slot slot_of_seq[b] (in place; as LaunchWkv7);
//   y = (GroupNorm(out) * gn_w + gn_b + sum_j(r k' r_k) * v') * g, per head.
// A sequence with slot_of_seq[b] < 0 (padding) has no state: its y row is zeros. y: [B][C], f32
// or rounded for a tensor-core product (ActivationsOut).
// Strides as LaunchWkv7's (elements of the pool's type). InvalidArgument for inconsistent sizes.
absl::Status LaunchWkv7Decode(cudaStream_t stream, float* state_pool, const int32_t* slot_of_seq,
                              int B, int H, int64_t slot_stride, int64_t head_stride,
                              const TimeMixRows& rows, const TimeMixParams& params,
                              bool first_layer, ActivationsOut y);
absl::Status LaunchWkv7Decode(cudaStream_t stream, __half* state_pool, const int32_t* slot_of_seq,
                              int B, int H, int64_t slot_stride, int64_t head_stride,
                              const TimeMixRows& rows, const TimeMixParams& params,
                              bool first_layer, ActivationsOut y);

}  // namespace modrwkv::cuda
