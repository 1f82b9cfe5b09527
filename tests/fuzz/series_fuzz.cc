// libFuzzer harness for the time-series inputs a client controls: ParseSeriesCsv (CLI and upload
// CSV text) and UnpackSeries (the MediaItem bytes the encoder pool unpacks). The first byte picks
// the target; the rest is the input. On any input neither may crash, and:
//   CSV:    a parsed series is well-formed (at least one step and channel, length x channels
//           finite values, one name per channel, one timestamp per step); FormatForecastCsv of its
//           first rows parses back to the same values bit for bit (as the value columns of the
//           re-read file; a continued timestamp column may read back as a channel), and so do
//           quantile columns after them, named <channel>_q<level>; and the
//           series survives PackSeries -> UnpackSeries unchanged.
//   Packed: an unpacked series packs back to exactly the input bytes.
// The sources are compiled into this target so that they carry the fuzzer's instrumentation.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "encoders/timeseries/series.cc"
#include "encoders/timeseries/series_csv.cc"

namespace {

using modrwkv::encoders::FormatForecastCsv;
using modrwkv::encoders::PackSeries;
using modrwkv::encoders::ParseSeriesCsv;
using modrwkv::encoders::Series;
using modrwkv::encoders::SeriesCsv;
using modrwkv::encoders::UnpackSeries;
using modrwkv::encoders::ValidateSeries;

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), 4 * a.size()) == 0;
}

void FuzzCsv(std::string_view text) {
  absl::StatusOr<SeriesCsv> csv = ParseSeriesCsv(text, "fuzz.csv");
  if (!csv.ok()) {
    Check(csv.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  const Series& s = csv->series;
  Check(s.length >= 1 && s.channels >= 1);
  Check(s.values.size() == static_cast<size_t>(s.length) * s.channels);
  for (float v : s.values) Check(std::isfinite(v));
  Check(csv->channel_names.size() == static_cast<size_t>(s.channels));
  Check(csv->timestamps.size() == (csv->has_timestamps ? static_cast<size_t>(s.length) : 0));
  Check(ValidateSeries(s, s.channels, 1, s.length, "fuzz").ok());

  const int horizon = s.length < 8 ? s.length : 8;
  const absl::Span<const float> forecast(s.values.data(),
                                         static_cast<size_t>(horizon) * s.channels);
  absl::StatusOr<std::string> out = FormatForecastCsv(*csv, forecast, horizon);
  Check(out.ok());
  absl::StatusOr<SeriesCsv> back = ParseSeriesCsv(*out, "formatted");
  Check(back.ok());
  Check(back->series.length == horizon);
  const int extra = back->series.channels - s.channels;
  Check(extra == 0 || (extra == 1 && csv->has_timestamps));
  for (int h = 0; h < horizon; ++h) {
    for (int c = 0; c < s.channels; ++c) {
      const float a = forecast[static_cast<size_t>(h) * s.channels + c];
      const float b =
          back->series.values[static_cast<size_t>(h) * back->series.channels + extra + c];
      Check(std::memcmp(&a, &b, 4) == 0);
    }
  }

  // With one quantile level (the forecast itself as its values): its columns follow the point
  // columns, named "<channel>_q0.5", and read back to the same bits.
  const float level = 0.5f;
  out = FormatForecastCsv(*csv, forecast, horizon, absl::MakeConstSpan(&level, 1), forecast);
  Check(out.ok());
  back = ParseSeriesCsv(*out, "formatted with quantiles");
  Check(back.ok());
  Check(back->series.channels == 2 * s.channels + extra);
  for (int c = 0; c < s.channels; ++c) {
    const std::string& name = back->channel_names[extra + s.channels + c];
    Check(name.size() >= 5 && name.compare(name.size() - 5, 5, "_q0.5") == 0);
  }
  for (int h = 0; h < horizon; ++h) {
    for (int c = 0; c < s.channels; ++c) {
      const float a = forecast[static_cast<size_t>(h) * s.channels + c];
      const float b =
          back->series
              .values[static_cast<size_t>(h) * back->series.channels + extra + s.channels + c];
      Check(std::memcmp(&a, &b, 4) == 0);
    }
  }

  absl::StatusOr<Series> unpacked = UnpackSeries(PackSeries(s), "packed");
  Check(unpacked.ok() && unpacked->length == s.length && unpacked->channels == s.channels &&
        SameBits(unpacked->values, s.values));
}

void FuzzPacked(std::string_view bytes) {
  absl::StatusOr<Series> s = UnpackSeries(bytes, "fuzz");
  if (!s.ok()) {
    Check(s.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  Check(PackSeries(*s) == bytes);
  (void)ValidateSeries(*s, s->channels, 4, 512, "fuzz");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) {
    FuzzPacked(rest);
  } else {
    FuzzCsv(rest);
  }
  return 0;
}
