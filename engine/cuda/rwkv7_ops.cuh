// The element-wise and per-head ops of one RWKV7 step on the GPU, besides the GEMMs (cuBLAS) and
// the recurrence (wkv.cuh). CUDA twins of the loops in engine/cpu/cpu_model.cc; their arithmetic
// is in rwkv7_math.h. Every launcher enqueues on `stream` and returns the launch error; all
// pointers are device pointers; activations are row-major [rows][C] fp32 with C = n_embd.
//
// Token shift. Row r's predecessor is given by prev[r]: >= 0 is the row prev[r] of the same
// buffer; < 0 is the shift state of slot (-prev[r] - 1), at shift_base + slot * slot_stride.
//
// The ops whose output rows are a product's input (token shift, NormShift, activations,
// GroupNorm + gate) write them as an ActivationsOut (to_half.cuh): f32, or rounded to bf16 / fp16
// for a tensor-core product, bit for bit what LaunchF32ToHalf would make of the f32 rows.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "engine/cuda/to_half.cuh"

namespace modrwkv::cuda {

// out[r] = LayerNorm(in[rows ? rows[r] : r]) * w + b over C channels, for r in [0, n).
absl::Status LaunchLayerNorm(cudaStream_t stream, const float* in, const int32_t* rows, int n,
                             int C, const float* w, const float* b, float eps, float* out);

// For each of the `mixes` lerp vectors m_i ([mixes][C]): out[i][r][c] = TokenShift(x[r][c],
// prev row's [c], m_i[c]), out being [mixes][R][C]. The slots' shift states are f32 or f16.
absl::Status LaunchTokenShift(cudaStream_t stream, const float* x, int R, int C,
                              const int32_t* prev, const float* shift_base, int64_t slot_stride,
                              const float* mix, int mixes, ActivationsOut out);
absl::Status LaunchTokenShift(cudaStream_t stream, const float* x, int R, int C,
                              const int32_t* prev, const __half* shift_base, int64_t slot_stride,
                              const float* mix, int mixes, ActivationsOut out);

// The shift state after the step: slot slots[e] gets row last[e] of x, for e in [0, E) (rounded
// to nearest even when the state is f16); entries with slots[e] < 0 (padding) are skipped.
absl::Status LaunchStoreShift(cudaStream_t stream, const float* x, int C, const int32_t* last,
                              const int32_t* slots, int E, float* shift_base, int64_t slot_stride);
absl::Status LaunchStoreShift(cudaStream_t stream, const float* x, int C, const int32_t* last,
                              const int32_t* slots, int E, __half* shift_base, int64_t slot_stride);

// A prefill step's LayerNorm, token shift and shift store without the normalised rows between
// them: one kernel normalises each row and its predecessor (a row of the step, normalised again,
// or the shift state of slot -prev[r] - 1, as LaunchTokenShift's prev) and stores the mixes, a
// second normalises each sequence's last row (last[e]) again into slot slots[e]'s shift state
// (slots[e] < 0: none). The same float operations as LaunchLayerNorm in its many-rows form,
// LaunchTokenShift and LaunchStoreShift in turn, so the same bits where NormShiftRowsFits(R, C)
// (the form LaunchLayerNorm takes there). C a multiple of 4 up to 4096 and every row, parameter
// vector, state slot and out row aligned for four channels an access (the model's always are),
// else InvalidArgument.
bool NormShiftRowsFits(int R, int C);
absl::Status LaunchNormShiftRows(cudaStream_t stream, const float* x, int R, int C, const float* w,
                                 const float* b, float eps, const int32_t* prev,
                                 const int32_t* last, const int32_t* slots, int E,
                                 float* shift_base, int64_t slot_stride, const float* mix,
                                 int mixes, ActivationsOut out);
absl::Status LaunchNormShiftRows(cudaStream_t stream, const float* x, int R, int C, const float* w,
                                 const float* b, float eps, const int32_t* prev,
                                 const int32_t* last, const int32_t* slots, int E,
                                 __half* shift_base, int64_t slot_stride, const float* mix,
                                 int mixes, ActivationsOut out);

// A decode step's LayerNorm, token shift and shift store in one kernel: row r is sequence r's
// only row, so its predecessor is the shift state of slot slots[r], which row r then replaces.
// out[i][r][c] = TokenShift(n[c], state[c], m_i[c]) with n = LayerNorm(x[r]) * w + b; then
// state = n (rounded when f16). A row with slots[r] < 0 (padding) is its own predecessor and
// stores nothing. The same float operations as LaunchLayerNorm, LaunchTokenShift and
// LaunchStoreShift in turn.
absl::Status LaunchNormShift(cudaStream_t stream, const float* x, int R, int C, const float* w,
                             const float* b, float eps, const int32_t* slots, float* shift_base,
                             int64_t slot_stride, const float* mix, int mixes, ActivationsOut out);
absl::Status LaunchNormShift(cudaStream_t stream, const float* x, int R, int C, const float* w,
                             const float* b, float eps, const int32_t* slots, __half* shift_base,
                             int64_t slot_stride, const float* mix, int mixes, ActivationsOut out);

enum class Activation { kTanh, kSigmoid, kReluSquare };
// x[i] = f(x[i]) for i in [0, n); or out[i] = f(x[i]) (out may be x).
absl::Status LaunchActivation(cudaStream_t stream, Activation f, float* x, int64_t n);
absl::Status LaunchActivation(cudaStream_t stream, Activation f, const float* x, int64_t n,
                              ActivationsOut out);
// In place on 16-bit rows of `type` (a product's output that cuBLAS wrote in bf16 / fp16, for a
// product that reads it so): each value widened, f applied in f32, the result rounded as a
// producer's 16-bit store rounds (half_round.cuh). x 16-byte aligned.
absl::Status LaunchActivation(cudaStream_t stream, Activation f, HalfType type, uint16_t* x,
                              int64_t n);

// After the LoRA products, per row and head (head size 64), in place:
//   w = Decay(w + w0); a = sigmoid(a + a0); kk = L2-normalised (k * k_k) per head;
//   k = KeyWithIclr(k, a, k_a); first layer: v_first = v; later layers:
//   v = ValueResidual(v, v_first, v_gate + v0).
// v_gate and v0 are ignored (may be null) when first_layer.
absl::Status LaunchPrepareWkv(cudaStream_t stream, int R, int C, float* w, const float* w0,
                              float* a, const float* a0, float* k, float* kk, const float* k_k,
                              const float* k_a, float* v, float* v_first, const float* v_gate,
                              const float* v0, bool first_layer);

// After the recurrence, per row and head, in place on y (or into out, which may be y): GroupNorm
// (one group per head, eps 64e-5, weight gn_w, bias gn_b), plus the bonus sum_j(r k r_k) * v,
// times the gate g.
absl::Status LaunchGroupNormGate(cudaStream_t stream, int R, int C, float* y, const float* gn_w,
                                 const float* gn_b, const float* r, const float* k,
                                 const float* r_k, const float* v, const float* g);
absl::Status LaunchGroupNormGate(cudaStream_t stream, int R, int C, const float* y,
                                 const float* gn_w, const float* gn_b, const float* r,
                                 const float* k, const float* r_k, const float* v, const float* g,
                                 ActivationsOut out);

// Keeps the stream busy on the device for `microseconds` (a profiling aid, CudaModel's op
// profile: the launches enqueued behind it queue up, so that events between them time the
// kernels and not the host's launch rate).
absl::Status LaunchSpin(cudaStream_t stream, int microseconds);

}  // namespace modrwkv::cuda
