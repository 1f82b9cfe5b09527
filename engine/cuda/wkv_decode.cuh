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
#include "engine/cuda/gemv_half.cuh"
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

// One LoRA up-projection computed by the fused kernel itself: out[b][c] = sum_d
// widen(weights[c][d])
// * hidden[b][d], summed in f32.
struct LoraUpMatrix {
  const uint16_t* weights = nullptr;  // [C][dim] 16-bit, out-major, 16-byte aligned
  const float* hidden = nullptr;      // [B][dim]: the down-projection's output, activated
  int dim = 0;                        // a multiple of 8
};

// A layer's four up-projections (the decay's, the ICLR's, the gate's and, after the first layer,
// the value residual's), for a decode step of few sequences with 16-bit weights: there they are
// a launch of their own that reads ~1 MB (1.5B) and writes four rows the fused kernel reads back,
// while each block of the fused kernel needs only its head's 64 rows of each matrix. Given, the
// kernel computes rows.w, rows.a, rows.g and rows.v_gate itself (those pointers are then not
// read and may be null); the weights, which no kernel writes, are sent to L2 before its wait.
struct LoraUp {
  HalfType type = HalfType::kBF16;
  LoraUpMatrix w, a, g, v;  // v is ignored in the first layer
};
// The most hidden floats (the four dims summed) the fused kernel stages in shared memory.
constexpr int kMaxLoraUpHidden = 4096;

// Whether the fused kernel takes up-projections of these dims (w, a, g, v; v's ignored in the
// first layer): each a positive multiple of 8 (16-byte weight rows), their sum at most
// kMaxLoraUpHidden. InvalidArgument naming the first that does not fit; on success the sum.
absl::Status CheckLoraUpDims(const int (&dims)[4], bool first_layer, int* hidden_floats);

// The checks LaunchWkv7Decode and LaunchWkv7Prefill (wkv_prefill.cuh) share, InvalidArgument
// naming `op`: B and H, the strides, the pool's alignment for its element of `state_bytes`, and
// the pointers the layer needs (rows.w, a and g unless the kernel computes them: `lora_up`).
absl::Status CheckTimeMixArgs(const char* op, const void* state_pool, int state_bytes,
                              const int32_t* slot_of_seq, int B, int H, int64_t slot_stride,
                              int64_t head_stride, const TimeMixRows& rows,
                              const TimeMixParams& params, bool first_layer,
                              const ActivationsOut& y, bool lora_up);

// For each sequence b < B and head h < H (head size 64):
//   w = Decay(w + w0); a = sigmoid(a + a0); kk = L2-normalised (k * k_k) per head;
//   k' = KeyWithIclr(k, a, k_a); first layer: v_first = v, v' = v; later layers:
//   v' = ValueResidual(v, v_first, v_gate + v0);
//   one token of the recurrence on the state of slot slot_of_seq[b] (in place; as LaunchWkv7);
//   y = (GroupNorm(out) * gn_w + gn_b + sum_j(r k' r_k) * v') * g, per head.
// A sequence with slot_of_seq[b] < 0 (padding) has no state: its y row is zeros. y: [B][C], f32
// or rounded for a tensor-core product (ActivationsOut).
// Strides as LaunchWkv7's (elements of the pool's type). With `up`, w, a, g and v_gate come from
// the up-projections (LoraUp) instead of rows. InvalidArgument for inconsistent sizes.
absl::Status LaunchWkv7Decode(cudaStream_t stream, float* state_pool, const int32_t* slot_of_seq,
                              int B, int H, int64_t slot_stride, int64_t head_stride,
                              const TimeMixRows& rows, const TimeMixParams& params,
                              bool first_layer, ActivationsOut y, const LoraUp* up = nullptr);
absl::Status LaunchWkv7Decode(cudaStream_t stream, __half* state_pool, const int32_t* slot_of_seq,
                              int B, int H, int64_t slot_stride, int64_t head_stride,
                              const TimeMixRows& rows, const TimeMixParams& params,
                              bool first_layer, ActivationsOut y, const LoraUp* up = nullptr);

}  // namespace modrwkv::cuda
