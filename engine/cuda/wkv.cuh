// WKV7 recurrence on the GPU for a batch of sequences whose states live in a slot pool.
// CUDA twin of modrwkv::cpu::scalar::WkvHead (engine/cpu/kernels.h).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace modrwkv::cuda {

// How LaunchWkv7 walks a sequence's tokens.
//   kWalk: token by token, one block per (sequence, head), a state row per thread.
//   kChunked: in chunks of 16 tokens as small matrix products (wkv_chunked.h), the chunk's tokens
//             in parallel; for long prompts, whose walk is otherwise a chain of one token after
//             another. Needs every w >= 0.01 (the model's decay is >= 0.545).
//   kAuto: chunked when the step has kChunkedMinTokens or more tokens per sequence on average and
//          at most kChunkedMaxHeadsPerSm (sequence, head) pairs per SM. The chunked form does
//          about twice the walk's arithmetic per token, in parallel: it wins where the walk is a
//          few long chains on a mostly idle device (one long prompt: H blocks), and loses where
//          many sequences' walks already fill it (16 prompts of 128 tokens on 1.5B: 512 blocks).
//          Both numbers are estimates until measured (cuda_bench --kernels=on times both forms).
enum class WkvForm { kAuto, kWalk, kChunked };
constexpr int kChunkedMinTokens = 16;
constexpr int kChunkedMaxHeadsPerSm = 2;

// The form LaunchWkv7 runs for `form` on a step of B sequences, H heads and `rows` tokens:
// kWalk or kChunked, kAuto resolved (above) on the current device.
absl::StatusOr<WkvForm> ResolveWkvForm(WkvForm form, int B, int H, int64_t rows);

// Runs the recurrence of B sequences x H heads (head size 64) over each sequence's tokens,
// enqueued on `stream` (asynchronous: errors in the kernel itself surface at the next sync).
// All pointers are device pointers.
//   state_pool: f32 or f16 (read into f32 registers, written back once, rounded to nearest
//               even, after the sequence's last token); the [64 value i][64 key j] state of
//               (sequence b, head h) starts at state_pool + slot_of_seq[b]*slot_stride_floats +
//               h*head_stride_floats; updated in place. Slots must be distinct across the batch.
//   slot_of_seq: [B] slot index of each sequence; < 0: a padding sequence: no state is read or
//                written, its y rows are set to zero.
//   seq_offsets: [B+1] row offsets; sequence b owns rows [seq_offsets[b], seq_offsets[b+1])
//                (non-decreasing; an empty sequence leaves its state untouched).
//   rows: seq_offsets[B], the step's tokens, known on the host. It only picks the form (kAuto)
//         and, walking, how many tokens the kernel stages in shared memory at a time (rows == B,
//         a decode step: one; else 8): any value gives the same results.
//   form: WkvForm above; the forms agree within rounding (tests/engine/cuda/wkv_chunked_test.cc).
//   r, w, k, v, kk, a: [rows][ld] fp32; head h of row t is at ptr + t*ld + h*64. w is the decay
//                      in (0, 1) (already exp(-e^-0.5 * sigmoid(.))).
//   y: [rows][ldy] fp32 output, head h of row t at y + t*ldy + h*64.
// Per token: sa_i = sum_j S[i][j]*(-kk_j); S[i][j] = S[i][j]*w_j + sa_i*kk_j*a_j + v_i*k_j;
//            y_i = sum_j S[i][j]*r_j.
// Strides count elements of the pool's type (f32 or f16).
// Returns InvalidArgument for inconsistent sizes/strides (checked on the host; device-side
// contents such as offsets and slot ids are the caller's contract) and the launch error, if any.
absl::Status LaunchWkv7(cudaStream_t stream, float* state_pool, const int32_t* slot_of_seq, int B,
                        int H, const int32_t* seq_offsets, int64_t rows, WkvForm form,
                        const float* r, const float* w, const float* k, const float* v,
                        const float* kk, const float* a, int64_t ld, float* y, int64_t ldy,
                        int64_t slot_stride_floats, int64_t head_stride_floats);
absl::Status LaunchWkv7(cudaStream_t stream, __half* state_pool, const int32_t* slot_of_seq, int B,
                        int H, const int32_t* seq_offsets, int64_t rows, WkvForm form,
                        const float* r, const float* w, const float* k, const float* v,
                        const float* kk, const float* a, int64_t ld, float* y, int64_t ldy,
                        int64_t slot_stride_floats, int64_t head_stride_floats);

}  // namespace modrwkv::cuda
