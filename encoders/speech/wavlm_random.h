// Seeded random WavLM weights and audio, bit-identical to tools/golden/gen_wavlm_fixtures.py
// (generator: docs/random-weights.md; ranges: docs/speech.md). Used by the golden tests of
// models too large to commit (base+, large) and by the benchmark.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "encoders/speech/wavlm_config.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/checkpoint/random_weights.h"  // RandomUniform, the generator

namespace modrwkv::encoders {

// Every tensor of WavLMModel, bare names (no "wavlm." prefix), f32. The positional
// convolution's weight norm is stored as weight_g / weight_v (torch < 2.1 names).
std::vector<OwnedTensor> MakeRandomWavlmWeights(const WavlmConfig& config, uint64_t seed);

// [batch][num_samples] in (-sqrt 3, sqrt 3) (zero mean, unit variance): tensor name "audio".
std::vector<float> RandomWavlmAudio(int batch, int num_samples, uint64_t seed);

// The shapes of microsoft/wavlm-base-plus ("base+") and microsoft/wavlm-large ("large").
absl::StatusOr<WavlmConfig> WavlmConfigForShape(const std::string& shape);

}  // namespace modrwkv::encoders
