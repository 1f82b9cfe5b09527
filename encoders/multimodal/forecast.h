// Forecasting with a time-series model on one state slot of a Model, synchronously: the series'
// rows (and the manifest's prompt tokens) prefilled in chunks, the hidden state after the last
// row through the forecasting head, rolled out past the model's horizon
// (encoders/timeseries/rollout.h). For the CLI, the golden tests and the benchmarks; the server
// runs the same rounds asynchronously (server/forecast_reactor.h).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "encoders/timeseries/series.h"
#include "encoders/timeseries/timeseries_model.h"
#include "engine/cpu/thread_pool.h"
#include "engine/model/model.h"

namespace modrwkv::encoders {

struct SeriesForecast {
  std::vector<float> values;     // [horizon][channels], in the series' units
  std::vector<float> quantiles;  // [ts.quantile_levels()][horizon][channels]
  int rounds = 0;                // model runs
  int64_t prompt_rows = 0;       // rows prefilled over all rounds
  int64_t series_rows = 0;       // of which from the series
};

// `series` must pass ValidateSeries for `ts`; horizon >= 1. `slot` is reset before each round.
// Rows are prefilled `chunk_rows` at a time (the scheduler's step budget plays this part in the
// server).
absl::StatusOr<SeriesForecast> ForecastSeries(const TimeSeriesPipeline& ts, Model& model, int slot,
                                              const Series& series, int horizon,
                                              absl::Span<const int32_t> prompt,
                                              cpu::ThreadPool* pool, int chunk_rows = 512);

}  // namespace modrwkv::encoders
