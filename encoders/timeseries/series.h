// A time series as the server and the CLI hand it to the time-series encoder: [length][channels]
// float32 values, its validation against a model's limits, and a compact binary packing that
// carries it through the encoder pool as a MediaItem's bytes (kind kSeriesKind).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace modrwkv::encoders {

struct Series {
  int length = 0;             // T, time steps
  int channels = 0;           // c, values per step
  std::vector<float> values;  // [length][channels] row-major: step t, channel ch at t*c + ch
};

// Checks `s` against a model: at least one value, values.size() == length * channels (not
// ragged), `channels` values per step, patch <= length <= max_length, every value finite.
// InvalidArgument naming `field` ("input[0].series"), and for a bad value its index, step and
// channel: "input[0].series.values[37] (step 18, channel 1) is NaN".
absl::Status ValidateSeries(const Series& s, int channels, int patch, int max_length,
                            absl::string_view field);

// The packed form: a 16-byte header, then the values.
//   bytes 0..3   magic "MRTS"
//   bytes 4..7   version, u32 LE (1)
//   bytes 8..11  length, u32 LE
//   bytes 12..15 channels, u32 LE
//   then length * channels f32 LE values (row-major as Series::values)
// Values are copied bit for bit (NaN payloads included); PackSeries does not validate.
inline constexpr int kSeriesPackVersion = 1;
inline constexpr size_t kSeriesPackHeaderBytes = 16;
std::string PackSeries(const Series& s);

// Strict inverse of PackSeries: wrong magic or version, length or channels of 0 or above
// INT32_MAX, and a byte count other than 16 + 4 * length * channels are InvalidArgument naming
// `field`. Values are not checked here (ValidateSeries does that).
absl::StatusOr<Series> UnpackSeries(std::string_view bytes, absl::string_view field);

}  // namespace modrwkv::encoders
