// Activations rounded to a 16-bit float type for the tensor-core products of 16-bit weights
// (cuda_model.cc: cuBLAS multiplies bf16 by bf16 or fp16 by fp16 with f32 accumulation; it has no
// 16-bit x f32 product).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "engine/cuda/gemv_half.cuh"

namespace modrwkv::cuda {

// out[i] = the 16-bit bits of in[i] in `type`, rounded to nearest even, for i in [0, n):
//   bf16: the host's F32ToBF16 (engine/base/tensor.h), NaN stays NaN;
//   fp16: the host's F32ToF16, except that finite values beyond fp16's range saturate to
//         +-65504 instead of becoming infinities (one out-of-range activation would otherwise
//         turn a whole output row into inf/NaN).
// `in` 8-byte aligned, `out` 4-byte.
absl::Status LaunchF32ToHalf(cudaStream_t stream, HalfType type, const float* in, int64_t n,
                             uint16_t* out);

// Where an op writes the activations a product reads next: f32 rows, or the same values rounded
// to a 16-bit type as LaunchF32ToHalf rounds them, for a tensor-core product that then needs no
// conversion launch (and reads half the bytes). Built from a float* implicitly (f32 rows), or by
// Half().
struct ActivationsOut {
  // Implicit: f32 rows are the usual case (and every f32 caller passes its float* as before).
  ActivationsOut(float* rows) : f32(rows) {}  // NOLINT(google-explicit-constructor)
  static ActivationsOut Half(HalfType type, uint16_t* rows) {
    ActivationsOut o(nullptr);
    o.half = rows;
    o.type = type;
    return o;
  }
  bool is_half() const { return half != nullptr; }
  bool valid() const { return f32 != nullptr || half != nullptr; }

  float* f32 = nullptr;
  uint16_t* half = nullptr;  // when set, the rows are stored here (rounded) instead of in f32
  HalfType type = HalfType::kBF16;
};

}  // namespace modrwkv::cuda
