#include "encoders/multimodal/forecast.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "encoders/timeseries/rollout.h"
#include "engine/base/status_macros.h"

namespace modrwkv::encoders {

absl::StatusOr<SeriesForecast> ForecastSeries(const TimeSeriesPipeline& ts, Model& model, int slot,
                                              const Series& series, int horizon,
                                              absl::Span<const int32_t> prompt,
                                              cpu::ThreadPool* pool, int chunk_rows) {
  if (horizon < 1) return absl::InvalidArgumentError("horizon must be >= 1");
  if (chunk_rows < 1) return absl::InvalidArgumentError("chunk_rows must be >= 1");
  const int C = model.config().n_embd;
  if (ts.dim() != C) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the time-series rows have width %d, the model %d", ts.dim(), C));
  }
  SeriesForecast out;
  ForecastRollout rollout(series, horizon, ts.horizon(), ts.max_length(),
                          static_cast<int>(ts.quantile_levels().size()));
  std::vector<StepResult> results;
  for (bool done_all = false; !done_all;) {
    const Series& window = rollout.window();
    const SeriesNorm norm = ts.Stats(window);
    MODRWKV_ASSIGN_OR_RETURN(EmbeddingRows rows, ts.EncodeSeries(window, "series", pool));
    MODRWKV_RETURN_IF_ERROR(model.ResetSlot(slot));
    // Every input row in order: the series rows, then the prompt tokens.
    const int total = rows.rows + static_cast<int>(prompt.size());
    for (int done = 0; done < total;) {
      const int n = std::min(chunk_rows, total - done);
      StepEntry e;
      e.slot = slot;
      const int from_rows = std::max(0, std::min(rows.rows - done, n));
      if (from_rows > 0) {
        e.inputs.push_back(InputRowsView::Embeddings(
            absl::MakeConstSpan(rows.data.data() + static_cast<int64_t>(done) * C,
                                static_cast<size_t>(from_rows) * C)));
      }
      if (n > from_rows) {
        const int t0 = done + from_rows - rows.rows;
        e.inputs.push_back(InputRowsView::Tokens(prompt.subspan(t0, n - from_rows)));
      }
      done += n;
      e.output = done == total ? StepOutput::kHidden : StepOutput::kNone;
      MODRWKV_RETURN_IF_ERROR(model.Step({e}, &results));
    }
    MODRWKV_ASSIGN_OR_RETURN(const HeadForecast forecast, ts.Forecast(results[0].hidden, norm));
    out.prompt_rows += total;
    out.series_rows += rows.rows;
    done_all = rollout.Add(forecast.point, forecast.quantiles);
  }
  out.values = rollout.values();
  for (const std::vector<float>& level : rollout.quantiles()) {
    out.quantiles.insert(out.quantiles.end(), level.begin(), level.end());
  }
  out.rounds = rollout.rounds();
  return out;
}

}  // namespace modrwkv::encoders
