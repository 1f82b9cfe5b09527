// Time series as CSV text, for the CLI (and any client that uploads a file): reading a series and
// writing a forecast in the same layout.
//
// Input: a header row, then one row per time step, one column per channel, and optionally a
// first timestamp column. RFC 4180 fields: separated by commas, records ended by LF, CRLF or a
// lone CR; a field starting with a double quote runs to the closing quote and may hold commas,
// line breaks and doubled quotes (""). A UTF-8 byte order mark is skipped. Unquoted fields are
// trimmed of spaces and tabs. Blank lines are accepted only at the end: a blank line between
// steps would be a missing step, and closing the gap silently would shift the time axis.
//
// The first column is the timestamp column when its header is one of time, timestamp, date,
// datetime, ds (any case), or when the first data row's first field is not a number; otherwise
// it is a channel. This is the rule of tools/train/timeseries_model.py's read_csv (first field
// not a number) plus the usual names, so that a numeric time column ("time": 0, 1, 2, ...) is
// not taken for a channel. Timestamps are kept as text, never interpreted when reading.
//
// Values: decimal or exponent notation with an optional sign, as Python's float() reads them
// (parsed to double, then rounded to float32, as the PyTorch reference does). "nan", "inf" and
// values beyond the float32 range are refused, as is an empty field. Errors are InvalidArgument
// naming the field, the line (1-based, physical) and the column (1-based, with its header).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "encoders/timeseries/series.h"

namespace modrwkv::encoders {

struct SeriesCsv {
  Series series;                           // [length][channels]
  std::vector<std::string> channel_names;  // [channels], the value columns' headers
  bool has_timestamps = false;
  std::string timestamp_name;           // the timestamp column's header (when has_timestamps)
  std::vector<std::string> timestamps;  // [length], that column's text (when has_timestamps)
};

// `field` names the input in errors ("--series data.csv"). The series is not validated against a
// model here (ValidateSeries does that), but it always has at least one step and one channel.
absl::StatusOr<SeriesCsv> ParseSeriesCsv(std::string_view text, absl::string_view field);

// The forecast [horizon][channels] as CSV in the input's layout: the same header (quoted where
// RFC 4180 needs it), then one row per forecast step, values printed exactly ("%.9g" of the
// float32, as tools/golden writes them), lines ended by LF. With a timestamp column, the column
// holds ContinueTimestamps(input.timestamps, horizon). InvalidArgument when forecast.size() is
// not horizon * channels. With quantile `levels`, `quantiles` ([levels][horizon][channels]) follow
// as more columns, level by level, each named "<channel>_q<level>" ("sales_q0.9").
absl::StatusOr<std::string> FormatForecastCsv(const SeriesCsv& input,
                                              absl::Span<const float> forecast, int horizon,
                                              absl::Span<const float> levels = {},
                                              absl::Span<const float> quantiles = {});

// The `horizon` timestamps after `timestamps`, when all of them share one of these forms and are
// evenly spaced (a constant positive step between every pair; at least two of them):
//   decimal numbers  "17", "-3.25" (no exponent; the step and the output keep the most decimal
//                    places of the input, computed exactly in scaled integers)
//   year-month       "2024-01"                         step in months
//   date             "2024-01-31"                      step in days, or in months when every
//                                                      date is the same day of the month (<= 28)
//   date and time    "2024-01-31 13:00", "2024-01-31T13:00:05" (one separator and one precision
//                    throughout; no time zone)         step in seconds
// Anything else (time zones, uneven steps, a single timestamp, a result past year 9999): the
// step numbers "+1", "+2", ..., "+horizon".
std::vector<std::string> ContinueTimestamps(absl::Span<const std::string> timestamps, int horizon);

}  // namespace modrwkv::encoders
