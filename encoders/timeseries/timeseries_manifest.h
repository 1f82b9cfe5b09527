// The `time_series` section of the model manifest (docs/models.md, "Time series"): what a
// time-series checkpoint's keys cannot say. Parsed by encoders/multimodal/manifest.cc; defined
// here, header-only, so that the time-series pipeline depends on no layer above it.
#pragma once

#include <string>
#include <vector>

namespace modrwkv::encoders {

struct TimeSeriesManifest {
  std::string encoder = "wavenet";  // "wavenet" or "timer" (thuml/timer-base-84m's TimerModel)
  int channels = 0;                 // c, values per time step (>= 1)
  int patch = 4;                    // P, time steps per encoder row (>= 1)
  std::vector<int> dilations;       // one per WaveNet layer (each >= 1); wavenet only
  int heads = 0;                    // timer only: attention heads (>= 1)
  float rope_theta = 10000.0f;      // timer only: the rotary embedding's base
  int horizon = 0;                  // H, forecast steps (>= 1)
  int max_length = 0;               // the longest series accepted, in steps (>= patch)
  float eps = 1e-5f;                // added to the variance in the normalisation (> 0)
  std::string prompt;               // text whose tokens follow the series rows; "" = none
  // Quantile levels the head forecasts after the point forecast, increasing, each in (0, 1);
  // empty = a point forecast only.
  std::vector<float> quantiles;
  // "none": the head's output is the normalised forecast; "last": it is the change from the last
  // normalised input value of each channel (NLinear's normalisation), which is added to it.
  std::string baseline = "none";
};

}  // namespace modrwkv::encoders
