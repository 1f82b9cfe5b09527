// Helpers shared by the CUDA model tests (cuda_model_check.cc, cuda_half_check.cc): whether a
// device is present, the small random models, bf16 options, a step of several sequences, and the
// comparison of logits between backends.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/checkpoint/random_weights.h"
#include "engine/cuda/cuda_check.h"
#include "engine/model/model.h"
#include "gtest/gtest.h"
#include "tests/engine/compare.h"

namespace modrwkv::cuda::testing_util {

using ::modrwkv::testing_util::RelErr;  // tests/engine/compare.h

inline bool HaveDevice() {
  absl::StatusOr<int> n = CudaDeviceCount();
  return n.ok() && *n > 0;
}

// The random models of the model tests: vocabulary 1024, 2 layers of 128 unless said.
inline RandomModelSpec SmallSpec(uint64_t seed, DType dtype = DType::kF32, int n_layer = 2,
                                 int n_embd = 128) {
  RandomModelSpec spec;
  spec.n_layer = n_layer;
  spec.n_embd = n_embd;
  spec.vocab_size = 1024;
  spec.seed = seed;
  spec.dtype = dtype;
  return spec;
}

// Options for the bf16 tests: `slots` slots, one CPU thread, bf16 weights.
inline ModelOptions Bf16Options(int slots) {
  ModelOptions o;
  o.num_slots = slots;
  o.threads = 1;
  o.weight_type = ModelOptions::WeightType::kBF16;
  return o;
}

// A step of every sequence: tokens[s] into slot s, logits out.
inline std::vector<StepEntry> EntriesFor(const std::vector<std::vector<int32_t>>& tokens) {
  std::vector<StepEntry> entries(tokens.size());
  for (size_t s = 0; s < tokens.size(); ++s) {
    entries[s].slot = static_cast<int>(s);
    entries[s].inputs = {InputRowsView::Tokens(tokens[s])};
    entries[s].output = StepOutput::kLogits;
  }
  return entries;
}

// The bound between the GPU and the CPU with f32 weights (only the order of float sums differs).
inline constexpr double kTol = 1e-3;

}  // namespace modrwkv::cuda::testing_util
