// Instance normalisation and patching (see series_norm.h).
#include "encoders/timeseries/series_norm.h"

#include <cmath>
#include <cstddef>

namespace modrwkv::encoders {

SeriesNorm ComputeSeriesNorm(const Series& s, float eps) {
  const size_t c = s.channels > 0 ? static_cast<size_t>(s.channels) : 0;
  const size_t t = s.length > 0 ? static_cast<size_t>(s.length) : 0;
  SeriesNorm norm;
  if (c == 0 || t == 0 || s.values.size() != t * c) return norm;
  std::vector<double> sum(c, 0.0), sq(c, 0.0);
  for (size_t i = 0; i < t; ++i)
    for (size_t ch = 0; ch < c; ++ch) sum[ch] += s.values[i * c + ch];
  for (size_t ch = 0; ch < c; ++ch) sum[ch] /= static_cast<double>(t);  // now the mean
  for (size_t i = 0; i < t; ++i) {
    for (size_t ch = 0; ch < c; ++ch) {
      const double d = s.values[i * c + ch] - sum[ch];
      sq[ch] += d * d;
    }
  }
  norm.mean.resize(c);
  norm.std.resize(c);
  norm.last.resize(c);
  for (size_t ch = 0; ch < c; ++ch) {
    norm.mean[ch] = static_cast<float>(sum[ch]);
    norm.std[ch] = static_cast<float>(std::sqrt(sq[ch] / static_cast<double>(t) + eps));
    norm.last[ch] = (s.values[(t - 1) * c + ch] - norm.mean[ch]) / norm.std[ch];
  }
  return norm;
}

std::vector<float> NormalizeSeries(const Series& s, const SeriesNorm& norm) {
  const size_t c = norm.mean.size();
  std::vector<float> out(s.values.size());
  if (c == 0 || norm.std.size() != c) return out;
  // Divide (not multiply by 1/std): the reference's rounding.
  for (size_t i = 0; i < out.size(); ++i) {
    const size_t ch = i % c;
    out[i] = (s.values[i] - norm.mean[ch]) / norm.std[ch];
  }
  return out;
}

std::vector<float> PatchRows(absl::Span<const float> normalized, int length, int channels,
                             int patch) {
  if (length < 1 || channels < 1 || patch < 1 || length < patch ||
      normalized.size() != static_cast<size_t>(length) * channels)
    return {};
  // Time-major rows are consecutive steps: the rows are the tail of the series as it is.
  const size_t rows = static_cast<size_t>(length / patch);
  const size_t drop = static_cast<size_t>(length) - rows * patch;
  return std::vector<float>(normalized.begin() + drop * channels, normalized.end());
}

void Denormalize(absl::Span<float> values, const SeriesNorm& norm) {
  const size_t c = norm.mean.size();
  if (c == 0 || norm.std.size() != c) return;
  for (size_t i = 0; i < values.size(); ++i) {
    const size_t ch = i % c;
    values[i] = values[i] * norm.std[ch] + norm.mean[ch];
  }
}

}  // namespace modrwkv::encoders
