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

// The same core where the recurrence runs in chunks (LaunchWkv7's WkvForm::kChunked: long prompts,
// whose blocks own 16-64 of a head's state rows, so GroupNorm cannot run inside): the chunked
// kernel takes the raw rows and prepares each chunk itself (LaunchPrepareWkv's arithmetic, the
// key norm's sum in another order: within rounding), then LaunchGroupNormGate finishes. Rows and
// parameters as above (rows.g and params.r_k, gn_w, gn_b are GroupNorm's, unused here). Writes y:
// [R][C] f32, the recurrence's output; k_out: [R][C] the prepared key k'; v_out: [R][C] the
// prepared value v' (may be rows.v: a block reads and writes only its own state rows' channels);
// the first layer rows.v_first. Then LaunchGroupNormGate(R, C, y, gn_w, gn_b, rows.r, k_out, r_k,
// v_out, rows.g, out) gives LaunchWkv7Prefill's y. Defined in wkv.cu, beside the chunked kernel.
absl::Status LaunchWkv7ChunkedPrefill(cudaStream_t stream, float* state_pool,
                                      const int32_t* slot_of_seq, int B, int H,
                                      const int32_t* seq_offsets, int64_t slot_stride,
                                      int64_t head_stride, const TimeMixRows& rows,
                                      const TimeMixParams& params, bool first_layer, float* y,
                                      float* k_out, float* v_out);
absl::Status LaunchWkv7ChunkedPrefill(cudaStream_t stream, __half* state_pool,
                                      const int32_t* slot_of_seq, int B, int H,
                                      const int32_t* seq_offsets, int64_t slot_stride,
                                      int64_t head_stride, const TimeMixRows& rows,
                                      const TimeMixParams& params, bool first_layer, float* y,
                                      float* k_out, float* v_out);

}  // namespace modrwkv::cuda
