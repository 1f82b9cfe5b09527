// Seeded random RWKV7 weights, bit-identical to tools/golden/random_weights.py (spec in
// docs/random-weights.md). Used by the demo model, the golden tests and the benchmarks.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/base/tensor.h"
#include "engine/checkpoint/checkpoint.h"

namespace modrwkv {

struct RandomModelSpec {
  int n_layer = 2;
  int n_embd = 128;  // multiple of 64
  int vocab_size = 65536;
  uint64_t seed = 1;
  DType dtype = DType::kF32;  // kBF16: every tensor rounded to bf16

  absl::Status Validate() const;
};

// Named shapes: "tiny" (L2 C128), "0.1b" (L12 C768), "0.4b" (L24 C1024), "1.5b" (L24 C2048),
// "2.9b" (L32 C2560), "7.2b" (L32 C4096): the released RWKV7 models' widths and depths.
absl::StatusOr<RandomModelSpec> RandomSpecForShape(const std::string& shape);

// LoRA ranks of the official training code for width C.
struct LoraRanks {
  int w, a, v, g;
};
LoraRanks LoraRanksFor(int n_embd);

// The generator of the spec: element i of the tensor `name`, in [0, 1).
uint64_t SplitMix64(uint64_t x);
uint64_t Fnv1a64(const std::string& s);

// All tensors, BlinkDL names, in checkpoint order.
absl::StatusOr<std::vector<OwnedTensor>> MakeRandomRwkv7(const RandomModelSpec& spec);

// Views over owned tensors, in the form checkpoint readers produce.
std::map<std::string, TensorView> ViewsOf(const std::vector<OwnedTensor>& tensors);

// The values of the f32 tensor `name` of `tensors` (empty when there is none).
std::vector<float> F32Values(const std::vector<OwnedTensor>& tensors, const std::string& name);

}  // namespace modrwkv
