// The element-wise kernels of a pre-LN transformer encoder layer on the GPU (CudaLayerStack),
// besides the LayerNorm it shares with the RWKV7 backend (engine/cuda/rwkv7_ops.cuh) and the
// products (cuBLAS). CUDA twins of encoders/vision/transformer_ops.cc's AddBias, ActivationRows
// and ScaledSoftmax. Device pointers, row-major fp32; each launcher enqueues on `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace modrwkv::encoders::cuda {

// transformer_ops.h's Activation, plus none.
enum class BiasActivation { kNone, kGeluErf, kGeluTanh, kQuickGelu };

// y[r][i] = act(y[r][i] + bias[i]) over rows x n.
absl::Status LaunchBiasActivation(cudaStream_t stream, float* y, int64_t rows, int n,
                                  const float* bias, BiasActivation act);

// Each of `rows` rows of n scores, in place: softmax(scale * s) in fp32 with max subtraction.
// causal_period > 0: row r is query r % causal_period and keeps only its first
// r % causal_period + 1 scores (the rest become 0), as SelfAttention's causal mask.
absl::Status LaunchScaledSoftmax(cudaStream_t stream, float* s, int64_t rows, int n, float scale,
                                 int causal_period);

}  // namespace modrwkv::encoders::cuda
