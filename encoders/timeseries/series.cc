// Series validation and the MediaItem packing (format in series.h).
#include "encoders/timeseries/series.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"

namespace modrwkv::encoders {
namespace {

constexpr char kMagic[4] = {'M', 'R', 'T', 'S'};

void PutU32(uint32_t v, char* p) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= static_cast<uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

}  // namespace

absl::Status ValidateSeries(const Series& s, int channels, int patch, int max_length,
                            absl::string_view field) {
  if (s.length < 0 || s.channels < 0 ||
      s.values.size() != static_cast<uint64_t>(s.length) * static_cast<uint64_t>(s.channels)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", s.values.size(), " values for ", s.length, " steps x ",
                     s.channels, " channels (ragged: expected length x channels values)"));
  }
  if (s.length == 0 || s.channels == 0) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": the series is empty; expected ", patch,
                                                   "..", max_length, " time steps of ", channels,
                                                   channels == 1 ? " value" : " values"));
  }
  if (s.channels != channels) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": ", s.channels, " channels per time step, the model takes ", channels));
  }
  if (s.length < patch) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", s.length,
                                                   " time steps, fewer than one patch (", patch,
                                                   "); expected ", patch, "..", max_length));
  }
  if (s.length > max_length) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": ", s.length, " time steps, more than max_length (", max_length, ")"));
  }
  for (size_t i = 0; i < s.values.size(); ++i) {
    const float v = s.values[i];
    if (std::isfinite(v)) continue;
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".values[", i, "] (step ", i / s.channels, ", channel ", i % s.channels,
                     ") is ", std::isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf")));
  }
  return absl::OkStatus();
}

std::string PackSeries(const Series& s) {
  const size_t n = s.values.size();
  std::string out(kSeriesPackHeaderBytes + 4 * n, '\0');
  std::memcpy(out.data(), kMagic, 4);
  PutU32(kSeriesPackVersion, out.data() + 4);
  PutU32(static_cast<uint32_t>(s.length), out.data() + 8);
  PutU32(static_cast<uint32_t>(s.channels), out.data() + 12);
  char* p = out.data() + kSeriesPackHeaderBytes;
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &s.values[i], 4);
    PutU32(bits, p + 4 * i);
  }
  return out;
}

absl::StatusOr<Series> UnpackSeries(std::string_view bytes, absl::string_view field) {
  if (bytes.size() < kSeriesPackHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": a packed series of ", bytes.size(),
                                                   " bytes is shorter than its ",
                                                   kSeriesPackHeaderBytes, "-byte header"));
  }
  if (std::memcmp(bytes.data(), kMagic, 4) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": not a packed series (the bytes do not start with \"MRTS\")"));
  }
  const uint32_t version = GetU32(bytes.data() + 4);
  if (version != kSeriesPackVersion) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": packed series version ", version,
                                                   ", expected ", kSeriesPackVersion));
  }
  const uint32_t length = GetU32(bytes.data() + 8);
  const uint32_t channels = GetU32(bytes.data() + 12);
  constexpr uint32_t kMax = std::numeric_limits<int32_t>::max();
  if (length == 0 || channels == 0 || length > kMax || channels > kMax) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": packed series of ", length,
                                                   " steps x ", channels,
                                                   " channels (each must be in 1..", kMax, ")"));
  }
  // Both are below 2^31, so the product and the byte count fit in 64 bits.
  const uint64_t n = uint64_t{length} * channels;
  const uint64_t want = kSeriesPackHeaderBytes + 4 * n;
  if (bytes.size() != want) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": packed series of ", length,
                                                   " steps x ", channels, " channels needs ", want,
                                                   " bytes, got ", bytes.size()));
  }
  Series s;
  s.length = static_cast<int>(length);
  s.channels = static_cast<int>(channels);
  s.values.resize(n);
  const char* p = bytes.data() + kSeriesPackHeaderBytes;
  for (uint64_t i = 0; i < n; ++i) {
    const uint32_t bits = GetU32(p + 4 * i);
    std::memcpy(&s.values[i], &bits, 4);
  }
  return s;
}

}  // namespace modrwkv::encoders
