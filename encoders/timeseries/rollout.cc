#include "encoders/timeseries/rollout.h"

#include <algorithm>

namespace modrwkv::encoders {

int ForecastRounds(int horizon, int model_horizon) {
  return (horizon + model_horizon - 1) / model_horizon;
}

void AppendForecast(absl::Span<const float> forecast, int max_length, Series* window) {
  const int c = window->channels;
  window->values.insert(window->values.end(), forecast.begin(), forecast.end());
  window->length += static_cast<int>(forecast.size()) / c;
  if (window->length > max_length) {
    const int drop = window->length - max_length;
    window->values.erase(window->values.begin(),
                         window->values.begin() + static_cast<int64_t>(drop) * c);
    window->length = max_length;
  }
}

}  // namespace modrwkv::encoders
