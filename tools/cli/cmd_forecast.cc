// forecast: a time-series model's forecast of a CSV series, printed as CSV in the same layout.
// Runs the model in process on one slot (encoders/multimodal/forecast.h); `modrwkv client
// forecast` asks a server instead.
#include <cstdio>

#include "absl/strings/str_format.h"
#include "encoders/multimodal/forecast.h"
#include "encoders/timeseries/series_csv.h"
#include "engine/cpu/cpu_budget.h"
#include "engine/cpu/thread_pool.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"

namespace modrwkv::cli {

int RunForecast(int argc, char** argv) {
  Flags flags("forecast", "--model DIR --csv FILE [--horizon N]",
              "Forecasts the next steps of the series in FILE (a header row, then one row per "
              "time step: an optional timestamp column, then one column per channel) with a "
              "time-series model, and prints the forecast as CSV in the same layout: the "
              "timestamps continued when they are evenly spaced, else +1, +2, ...");
  AddModelFlags(flags);
  flags.Add("csv", "", "the series, as CSV", true)
      .Add("horizon", "0",
           "steps to forecast (0 = the model's own horizon; more are rolled out, each round's "
           "forecast appended to the series)")
      .Add("vocab", "", "vocabulary for the manifest's prompt (default: the model's, then World)")
      .AddBool("quantiles",
               "also print the model's quantile forecasts, as columns <channel>_q<level>");
  auto parsed = flags.Parse(argc, argv, 2);
  if (!parsed.ok()) return UsageError(flags, parsed.status());
  if (!*parsed) return 0;
  auto horizon_flag = flags.Int("horizon", 0, 1 << 20);
  if (!horizon_flag.ok()) return UsageError(flags, horizon_flag.status());
  auto tok = LoadTokenizer(flags.Str("vocab"), flags.Str("model"));
  if (!tok.ok()) return Fail(tok.status());
  auto bundle = LoadBundleFromFlags(flags, 1, tok->get());
  if (!bundle.ok()) return Fail(bundle.status());
  if (!bundle->series) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat(flags.Str("model"),
                     " is not a time-series model (no \"time_series\" section in its manifest)")));
  }
  const encoders::TimeSeriesPipeline& ts = *bundle->series;
  auto text = ReadFile(flags.Str("csv"));
  if (!text.ok()) return Fail(text.status());
  const std::string field = absl::StrCat("--csv ", flags.Str("csv"));
  auto csv = encoders::ParseSeriesCsv(*text, field);
  if (!csv.ok()) return Fail(csv.status());
  if (absl::Status st = ts.Validate(csv->series, field); !st.ok()) {
    return Fail(st);
  }
  const int horizon = *horizon_flag == 0 ? ts.horizon() : static_cast<int>(*horizon_flag);
  auto threads = flags.Int("threads", 0, 1024);
  if (!threads.ok()) return UsageError(flags, threads.status());
  cpu::ThreadPool pool(*threads > 0 ? static_cast<int>(*threads) : cpu::DetectCpuBudget().threads);
  auto result = encoders::ForecastSeries(ts, *bundle->model, 0, csv->series, horizon,
                                         bundle->series_prompt, &pool);
  if (!result.ok()) return Fail(result.status());
  const bool bands = flags.Bool("quantiles");
  auto out = encoders::FormatForecastCsv(
      *csv, result->values, horizon,
      bands ? absl::MakeConstSpan(ts.quantile_levels()) : absl::Span<const float>(),
      bands ? absl::MakeConstSpan(result->quantiles) : absl::Span<const float>());
  if (!out.ok()) return Fail(out.status());
  std::fwrite(out->data(), 1, out->size(), stdout);
  return 0;
}

}  // namespace modrwkv::cli
