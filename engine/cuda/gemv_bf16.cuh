// y = x * W^T with W in bf16 and x, y in fp32 (fp32 accumulation): the products of a model whose
// weights are kept in bf16 on the device. The CUDA twin of the CPU backend's bf16 PanelGemm
// (the same products of widened bf16 weights and fp32 activations, summed in another order).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace modrwkv::cuda {

// y[r][o] (+)= sum_i x[r][i] * bf16(w[o][i]) for r < rows, o < out. w: [out][in] row-major
// bf16 bits; x: [rows][in]; y: [rows][out]; `in` must be even (pairs of weights are read at
// once). One warp per output row, the rows of x taken 8 at a time: every weight is read once
// per 8 rows (decode reads each weight once; prefill leans on L2).
absl::Status LaunchGemvBf16(cudaStream_t stream, const uint16_t* w, int out, int in, const float* x,
                            int rows, float* y, bool accumulate);

}  // namespace modrwkv::cuda
