// Tests encoders/timeseries/series: validation errors (each names the field, and a bad value its
// step and channel) and the packed form (round trip; truncated, oversized and garbled bytes).
#include "encoders/timeseries/series.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace modrwkv::encoders {
namespace {

using ::testing::HasSubstr;

Series Ramp(int length, int channels) {
  Series s;
  s.length = length;
  s.channels = channels;
  for (int i = 0; i < length * channels; ++i) s.values.push_back(0.5f * i - 3);
  return s;
}

void ExpectInvalid(const absl::Status& st, const std::string& says) {
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(st.message(), HasSubstr(says));
}

TEST(ValidateSeries, AcceptsAWellFormedSeries) {
  EXPECT_TRUE(ValidateSeries(Ramp(4, 2), 2, 4, 8, "s").ok());
  EXPECT_TRUE(ValidateSeries(Ramp(8, 2), 2, 4, 8, "s").ok());
}

TEST(ValidateSeries, ErrorsNameTheFieldAndWhatWasWrong) {
  ExpectInvalid(ValidateSeries(Series{}, 2, 4, 8, "input[1].series"),
                "input[1].series: the series is empty; expected 4..8 time steps");
  ExpectInvalid(ValidateSeries(Ramp(3, 2), 2, 4, 8, "input[1].series"),
                "input[1].series: 3 time steps, fewer than one patch (4)");
  ExpectInvalid(ValidateSeries(Ramp(9, 2), 2, 4, 8, "input[1].series"),
                "input[1].series: 9 time steps, more than max_length (8)");
  ExpectInvalid(ValidateSeries(Ramp(5, 3), 2, 4, 8, "input[1].series"),
                "input[1].series: 3 channels per time step, the model takes 2");
  Series ragged = Ramp(5, 2);
  ragged.values.pop_back();
  ExpectInvalid(ValidateSeries(ragged, 2, 4, 8, "input[1].series"),
                "input[1].series: 9 values for 5 steps x 2 channels (ragged");
}

TEST(ValidateSeries, ABadValueIsNamedByIndexStepAndChannel) {
  Series s = Ramp(40, 2);
  s.values[37] = std::numeric_limits<float>::quiet_NaN();
  ExpectInvalid(ValidateSeries(s, 2, 4, 64, "series"),
                "series.values[37] (step 18, channel 1) is NaN");
  s.values[37] = 1;
  s.values[4] = -std::numeric_limits<float>::infinity();
  ExpectInvalid(ValidateSeries(s, 2, 4, 64, "series"),
                "series.values[4] (step 2, channel 0) is -Inf");
  s.values[4] = std::numeric_limits<float>::infinity();
  ExpectInvalid(ValidateSeries(s, 2, 4, 64, "series"), "is +Inf");
}

TEST(PackSeries, RoundTripsBitForBit) {
  Series s = Ramp(7, 3);
  s.values[2] = -0.0f;
  s.values[5] = std::numeric_limits<float>::denorm_min();
  s.values[6] = std::numeric_limits<float>::quiet_NaN();  // packing does not validate
  const std::string bytes = PackSeries(s);
  ASSERT_EQ(bytes.size(), kSeriesPackHeaderBytes + 4 * 21);
  EXPECT_EQ(bytes.substr(0, 4), "MRTS");
  EXPECT_EQ(bytes[4], 1);   // version, little-endian
  EXPECT_EQ(bytes[8], 7);   // length
  EXPECT_EQ(bytes[12], 3);  // channels
  auto back = UnpackSeries(bytes, "item");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->length, 7);
  EXPECT_EQ(back->channels, 3);
  ASSERT_EQ(back->values.size(), s.values.size());
  EXPECT_EQ(std::memcmp(back->values.data(), s.values.data(), 4 * s.values.size()), 0);
}

TEST(PackSeries, ValuesAreLittleEndianFloat32) {
  Series s;
  s.length = 1;
  s.channels = 1;
  s.values = {1.0f};  // 0x3f800000
  const std::string bytes = PackSeries(s);
  EXPECT_EQ(bytes.substr(16), std::string("\x00\x00\x80\x3f", 4));
}

TEST(UnpackSeries, RefusesTruncatedOversizedAndGarbledBytes) {
  const std::string good = PackSeries(Ramp(5, 2));
  ExpectInvalid(UnpackSeries("", "item").status(), "item: a packed series of 0 bytes is shorter");
  ExpectInvalid(UnpackSeries(good.substr(0, 15), "item").status(), "shorter than its 16-byte");
  ExpectInvalid(UnpackSeries(good.substr(0, good.size() - 1), "item").status(),
                "item: packed series of 5 steps x 2 channels needs 56 bytes, got 55");
  ExpectInvalid(UnpackSeries(good + "x", "item").status(), "needs 56 bytes, got 57");
  std::string magic = good;
  magic[0] = 'X';
  ExpectInvalid(UnpackSeries(magic, "item").status(), "not a packed series");
  std::string version = good;
  version[4] = 2;
  ExpectInvalid(UnpackSeries(version, "item").status(), "version 2, expected 1");
  std::string zero = good;
  zero[8] = 0;
  ExpectInvalid(UnpackSeries(zero, "item").status(), "0 steps x 2 channels");
  // A huge length whose byte count would overflow 32 bits must be refused by the size check.
  std::string huge = good;
  huge[8] = huge[9] = huge[10] = '\xff';
  huge[11] = '\x7f';
  ExpectInvalid(UnpackSeries(huge, "item").status(), "needs 17179869192 bytes, got 56");
  huge[11] = '\xff';
  ExpectInvalid(UnpackSeries(huge, "item").status(), "each must be in 1..2147483647");
}

}  // namespace
}  // namespace modrwkv::encoders
