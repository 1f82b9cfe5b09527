// A prefill step's time-mixing core in one kernel: per sequence and head, the sequence's tokens
// walked in order as LaunchWkv7's walking form does, each chunk of tokens prepared first (as
// LaunchPrepareWkv) and its outputs normalised and gated after (as LaunchGroupNormGate). The
// three kernels in turn write and read back about fifteen f32 rows per token between them; this
// one reads the products' rows once and writes y once.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "engine/cuda/to_half.cuh"
#include "engine/cuda/wkv_decode.cuh"

namespace modrwkv::cuda {

// For each sequence b < B, owning rows [seq_offsets[b], seq_offsets[b+1]) of the step, and each
// head h < H (head size 64), token by token:
//   w = Decay(w + w0); a = sigmoid(a + a0); kk = L2-normalised (k * k_k) per head;
//   k' = KeyWithIclr(k, a, k_a); first layer: v_first = v, v' = v; later layers:
//   v' = ValueResidual(v, v_first, v_gate + v0);
//   the recurrence on the state of slot slot_of_seq[b] (in place, as LaunchWkv7);
//   y = (GroupNorm(out) * gn_w + gn_b + sum_j(r k' r_k) * v') * g, per head.
// The same float operations as LaunchPrepareWkv, LaunchWkv7 (WkvForm::kWalk) and
// LaunchGroupNormGate in turn. rows: the step's [R][C] rows (C = 64 H), read only but for
// v_first, which the first layer writes. A sequence with slot_of_seq[b] < 0 (padding) has no
// state: its y rows are zeros; an empty sequence leaves its state untouched. y: [R][C], f32 or
// rounded for a tensor-core product (ActivationsOut). Strides as LaunchWkv7's (elements of the
// pool's type); seq_offsets and slot ids are the caller's contract, as there. InvalidArgument
// for inconsistent sizes (CheckTimeMixArgs), else the launch's error.
absl::Status LaunchWkv7Prefill(cudaStream_t stream, float* state_pool, const int32_t* slot_of_seq,
                               int B, int H, const int32_t* seq_offsets, int64_t slot_stride,
                               int64_t head_stride, const TimeMixRows& rows,
                               const TimeMixParams& params, bool first_layer, ActivationsOut y);
absl::Status LaunchWkv7Prefill(cudaStream_t stream, __half* state_pool, const int32_t* slot_of_seq,
                               int B, int H, const int32_t* seq_offsets, int64_t slot_stride,
                               int64_t head_stride, const TimeMixRows& rows,
                               const TimeMixParams& params, bool first_layer, ActivationsOut y);

}  // namespace modrwkv::cuda
