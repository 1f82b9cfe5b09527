// Seeded random weights for an adapter chain (docs/random-weights.md's generator), for the tests
// and benchmarks of adapter runners.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "encoders/adapter/adapter_chain.h"
#include "engine/checkpoint/checkpoint.h"

namespace modrwkv::encoders {

// Every tensor `spec` reads, bare stems, f32, for rows `in` wide: each linear or conv1d widens
// to the next of `widths` (a conv of kernel 0 gets 3; a pixel shuffle widens by its factor
// squared), weights in +-1/sqrt(fan-in), biases in +-0.1, norm weights in [0.8, 1.2]. Transformer
// layers are not covered (no spec here uses one).
std::vector<OwnedTensor> MakeRandomAdapterWeights(const AdapterSpec& spec, int in,
                                                  absl::Span<const int> widths, uint64_t seed);

}  // namespace modrwkv::encoders
