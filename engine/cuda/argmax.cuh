// Greedy picks on the device: the CUDA twin of the sampler's ArgMaxKernel (engine/sampling), so
// that a plain greedy sequence (Sampler::IsPlainGreedy) gets its token without its logits being
// copied to the host.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace modrwkv::cuda {

// tokens[r] = the lowest index of the largest of logits[r][0..V) (NaN ignored; 0 when no entry is
// above -inf, the sampler's answer with nothing banned), for r in [0, rows).
absl::Status LaunchArgmaxRows(cudaStream_t stream, const float* logits, int rows, int V,
                              int32_t* tokens);

}  // namespace modrwkv::cuda
