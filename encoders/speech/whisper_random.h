// Seeded random Whisper encoder weights and log-mel inputs, bit-identical to
// tools/golden/gen_whisper_fixtures.py (generator: docs/random-weights.md; ranges: docs/speech.md).
// Used by the golden tests of the real shapes (whisper-small, whisper-medium), too large to
// commit, and by the benchmark.
#pragma once

#include <cstdint>
#include <vector>

#include "encoders/speech/whisper_config.h"
#include "engine/checkpoint/checkpoint.h"

namespace modrwkv::encoders {

// Every tensor of the encoder under its bare WhisperEncoder name (no "model.encoder." prefix),
// f32, k_proj without bias.
std::vector<OwnedTensor> MakeRandomWhisperWeights(const WhisperConfig& config, uint64_t seed);

// [batch][num_mel_bins][mel_frames] in (-1, 1): tensor name "mel".
std::vector<float> RandomMel(const WhisperConfig& config, int batch, uint64_t seed);

}  // namespace modrwkv::encoders
