// Forecasts past the model's horizon: each round's forecast is appended to the series and the
// model runs again on the newest steps. The Forecast RPC and `modrwkv forecast` share this plan.
#pragma once

#include "absl/types/span.h"
#include "encoders/timeseries/series.h"

namespace modrwkv::encoders {

// Model runs needed for `horizon` steps when one run forecasts `model_horizon`.
int ForecastRounds(int horizon, int model_horizon);

// Appends `forecast` ([steps][window->channels]) to `window` and drops its oldest steps beyond
// `max_length`, so the next round sees the newest max_length steps.
void AppendForecast(absl::Span<const float> forecast, int max_length, Series* window);

}  // namespace modrwkv::encoders
