// The WavLM input as the official ModRWKV code prepares it: 16 kHz mono samples normalised per
// clip.
#pragma once

#include <vector>

#include "absl/types/span.h"

namespace modrwkv::encoders {

// (x - mean) / sqrt(var + 1e-7) over the whole clip (population variance), as
// Wav2Vec2FeatureExtractor(do_normalize=True) computes it for one unpadded clip. The official
// code uses this even where a WavLM folder's preprocessor_config.json says do_normalize false
// (its AutoProcessor call fails on WavLM folders and falls back to
// facebook/hubert-large-ls960-ft's extractor; docs in /work/shared/ARCHITECTURE.md), so the
// folder's config is not consulted. Statistics are accumulated in double. Empty in, empty out.
std::vector<float> NormalizeWavLmInput(absl::Span<const float> samples);

}  // namespace modrwkv::encoders
