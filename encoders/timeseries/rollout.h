// Forecasts past the model's horizon: each round's forecast is appended to the series and the
// model runs again on the newest steps. The Forecast RPC and `modrwkv forecast` share this plan.
// Quantile forecasts are collected round by round too; past the model's horizon they are
// conditional on the earlier rounds' point forecasts, so they understate the uncertainty there.
#pragma once

#include <vector>

#include "absl/types/span.h"
#include "encoders/timeseries/series.h"

namespace modrwkv::encoders {

// The rounds of one forecast of `horizon` steps by a model that forecasts `model_horizon` steps
// per run and takes at most `max_length` steps.
class ForecastRollout {
 public:
  ForecastRollout(Series series, int horizon, int model_horizon, int max_length,
                  int quantile_levels = 0);

  // What the next round encodes: the series with the forecast so far appended, its newest
  // max_length steps.
  const Series& window() const { return window_; }
  // Takes one round's forecast ([model_horizon][channels]) and its quantile forecasts
  // ([quantile_levels][model_horizon][channels]); true once `horizon` steps are in.
  bool Add(absl::Span<const float> forecast, absl::Span<const float> quantiles = {});
  // [steps so far, at most horizon][channels].
  const std::vector<float>& values() const { return values_; }
  // Per quantile level: [steps so far, at most horizon][channels].
  const std::vector<std::vector<float>>& quantiles() const { return quantiles_; }
  int rounds() const { return rounds_; }

 private:
  Series window_;
  std::vector<float> values_;
  std::vector<std::vector<float>> quantiles_;  // per level: [steps so far][channels]
  const int horizon_, model_horizon_, max_length_;
  int rounds_ = 0;
};

}  // namespace modrwkv::encoders
