// Per-clip zero-mean, unit-variance normalisation of the WavLM input (see wavlm_features.h).
#include "encoders/audio/wavlm_features.h"

#include <cmath>

namespace modrwkv::encoders {

std::vector<float> NormalizeWavLmInput(absl::Span<const float> samples) {
  std::vector<float> out(samples.size());
  if (samples.empty()) return out;
  const double n = static_cast<double>(samples.size());
  double sum = 0;
  for (float v : samples) sum += v;
  const double mean = sum / n;
  double sq = 0;  // two passes: no cancellation for loud clips with a DC offset
  for (float v : samples) sq += (v - mean) * (v - mean);
  const double inv_std = 1.0 / std::sqrt(sq / n + 1e-7);
  for (size_t i = 0; i < samples.size(); ++i) {
    out[i] = static_cast<float>((samples[i] - mean) * inv_std);
  }
  return out;
}

}  // namespace modrwkv::encoders
