// Instance normalisation of a time series and its inverse, and the patching of the normalised
// series into encoder rows (docs/models.md, "Time series", steps 1, 2 and 6).
#pragma once

#include <vector>

#include "absl/types/span.h"
#include "encoders/timeseries/series.h"

namespace modrwkv::encoders {

// Per-channel statistics over all T steps of one series: the forecast is de-normalised with the
// same numbers, so a caller keeps them (TimeSeriesPipeline::Stats) while the encoder pool works.
struct SeriesNorm {
  std::vector<float> mean;  // [channels]
  std::vector<float> std;   // [channels]: sqrt(population variance + eps), > 0
  // [channels]: the last step normalised, (x[T-1][c] - mean_c) / std_c in float32 (the value
  // NormalizeSeries gives it); the head's "last" baseline adds it to its output.
  std::vector<float> last;
};

// mean_c = sum_t x[t][c] / T, var_c = sum_t (x[t][c] - mean_c)^2 / T, accumulated in double and
// rounded to float32 once; `last` from them. `s` must be well-formed (ValidateSeries; a series of
// no steps gives empty vectors).
SeriesNorm ComputeSeriesNorm(const Series& s, float eps);

// (x - mean_c) / std_c in float32, as the PyTorch reference computes it: [length][channels].
std::vector<float> NormalizeSeries(const Series& s, const SeriesNorm& norm);

// The encoder's input rows [length / patch][patch * channels] from normalised values
// [length][channels]: the oldest length % patch steps are dropped, and row r holds steps
// drop + r*P .. drop + r*P + P - 1, time-major (feature t*channels + ch). Empty when
// length < patch.
std::vector<float> PatchRows(absl::Span<const float> normalized, int length, int channels,
                             int patch);

// values[h][c] = values[h][c] * std_c + mean_c, in float32; values.size() must be a multiple of
// the channel count.
void Denormalize(absl::Span<float> values, const SeriesNorm& norm);

}  // namespace modrwkv::encoders
