#include "encoders/timeseries/rollout.h"

#include <algorithm>

namespace modrwkv::encoders {

ForecastRollout::ForecastRollout(Series series, int horizon, int model_horizon, int max_length,
                                 int quantile_levels)
    : window_(std::move(series)),
      quantiles_(static_cast<size_t>(std::max(0, quantile_levels))),
      horizon_(horizon),
      model_horizon_(model_horizon),
      max_length_(max_length) {
  values_.reserve(static_cast<size_t>(horizon) * window_.channels);
}

bool ForecastRollout::Add(absl::Span<const float> forecast, absl::Span<const float> quantiles) {
  const int c = window_.channels;
  ++rounds_;
  const int done = static_cast<int>(values_.size()) / c;
  const int steps = std::min(model_horizon_, horizon_ - done);
  values_.insert(values_.end(), forecast.begin(), forecast.begin() + steps * c);
  const size_t per = static_cast<size_t>(model_horizon_) * c;
  for (size_t k = 0; k < quantiles_.size() && quantiles.size() >= (k + 1) * per; ++k) {
    const float* q = quantiles.data() + k * per;
    quantiles_[k].insert(quantiles_[k].end(), q, q + static_cast<size_t>(steps) * c);
  }
  if (done + steps >= horizon_) return true;
  // The next round's window: the whole forecast appended, the oldest steps dropped.
  window_.values.insert(window_.values.end(), forecast.begin(), forecast.end());
  window_.length += static_cast<int>(forecast.size()) / c;
  if (window_.length > max_length_) {
    const int drop = window_.length - max_length_;
    window_.values.erase(window_.values.begin(),
                         window_.values.begin() + static_cast<int64_t>(drop) * c);
    window_.length = max_length_;
  }
  return false;
}

}  // namespace modrwkv::encoders
