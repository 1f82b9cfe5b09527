// Activations rounded to bf16 for the tensor-core products of bf16 weights (cuda_model.cc: cuBLAS
// multiplies bf16 by bf16 with f32 accumulation; it has no bf16 x f32 product).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace modrwkv::cuda {

// out[i] = bf16 bits of in[i], rounded to nearest even (NaN stays NaN), for i in [0, n): the
// rounding of the host's F32ToBF16 (engine/base/tensor.h). `in` 8-byte aligned, `out` 4-byte.
absl::Status LaunchF32ToBf16(cudaStream_t stream, const float* in, int64_t n, uint16_t* out);

}  // namespace modrwkv::cuda
