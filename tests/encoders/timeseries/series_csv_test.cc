// Tests encoders/timeseries/series_csv: the golden fixtures' CSV files read back to their exact
// float32 values (tests/golden/timeseries) and the forecast written back byte for byte; the
// held-out demo series (tests/golden/ts_demo/heldout); errors naming line and column; timestamp
// column detection and continuation; CRLF, quoting, BOM and trailing blank lines.
#include "encoders/timeseries/series_csv.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/golden_floats.h"

namespace modrwkv::encoders {
namespace {

using golden::ReadF32;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string kDir = std::string(MODRWKV_GOLDEN_DIR) + "/timeseries/";

std::string ReadText(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

nlohmann::json Manifest() { return nlohmann::json::parse(ReadText(kDir + "manifest.json")); }

SeriesCsv MustParse(const std::string& text) {
  auto csv = ParseSeriesCsv(text, "t.csv");
  EXPECT_TRUE(csv.ok()) << csv.status();
  return csv.ok() ? *std::move(csv) : SeriesCsv{};
}

void ExpectError(const std::string& text, const std::string& says) {
  auto csv = ParseSeriesCsv(text, "t.csv");
  ASSERT_FALSE(csv.ok()) << text;
  EXPECT_EQ(csv.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(csv.status().message(), HasSubstr(says)) << text;
}

TEST(SeriesCsvGolden, InputCsvEqualsInputBinBitForBit) {
  const nlohmann::json m = Manifest();
  ASSERT_EQ(m["cases"].size(), 4u);
  for (const nlohmann::json& c : m["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const SeriesCsv csv = MustParse(ReadText(kDir + c["input_csv"].get<std::string>()));
    const std::vector<float> want = ReadF32(kDir + c["input"]["file"].get<std::string>());
    EXPECT_EQ(csv.series.length, c["input"]["shape"][0].get<int>());
    EXPECT_EQ(csv.series.channels, c["input"]["shape"][1].get<int>());
    EXPECT_FALSE(csv.has_timestamps);
    EXPECT_THAT(csv.channel_names, ElementsAre("ch0", "ch1"));
    ASSERT_EQ(csv.series.values.size(), want.size());
    EXPECT_EQ(std::memcmp(csv.series.values.data(), want.data(), 4 * want.size()), 0);
  }
}

TEST(SeriesCsvGolden, ForecastCsvIsWrittenAsTheReferenceWritesIt) {
  const nlohmann::json m = Manifest();  // outlives the loop (not a temporary's member)
  for (const nlohmann::json& c : m["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const SeriesCsv in = MustParse(ReadText(kDir + c["input_csv"].get<std::string>()));
    const std::vector<float> y = ReadF32(kDir + c["forecast"]["file"].get<std::string>());
    auto text = FormatForecastCsv(in, y, c["forecast"]["shape"][0].get<int>());
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(*text, ReadText(kDir + c["forecast_csv"].get<std::string>()));
  }
}

TEST(SeriesCsvGolden, ReadsTheHeldOutDemoSeries) {
  const std::string dir = std::string(MODRWKV_GOLDEN_DIR) + "/ts_demo/";
  const nlohmann::json results = nlohmann::json::parse(ReadText(dir + "torch_mse.json"));
  ASSERT_EQ(results["series"].size(), 10u);
  for (const auto& [name, entry] : results["series"].items()) {
    SCOPED_TRACE(name);
    const SeriesCsv in = MustParse(ReadText(dir + entry["input"].get<std::string>()));
    EXPECT_EQ(in.series.length, entry["input_steps"].get<int>());
    EXPECT_EQ(in.series.channels, 1);
    EXPECT_FALSE(in.has_timestamps);
    EXPECT_THAT(in.channel_names, ElementsAre(name));
    const SeriesCsv target = MustParse(ReadText(dir + entry["target"].get<std::string>()));
    EXPECT_EQ(target.series.length, results["horizon"].get<int>());
  }
}

TEST(SeriesCsv, ReadsValuesAsPythonFloatThenFloat32) {
  const SeriesCsv csv = MustParse("a,b\n1,-2.5\n+3e2, 0.1 \n.5,1E-3\n");
  EXPECT_EQ(csv.series.length, 3);
  EXPECT_EQ(csv.series.channels, 2);
  EXPECT_THAT(csv.series.values, ElementsAre(1.0f, -2.5f, 300.0f, 0.1f, 0.5f, 0.001f));
  // Below the float32 range: rounds to zero (as torch.tensor(float(s)) does), not an error.
  EXPECT_THAT(MustParse("a\n1e-60\n").series.values, ElementsAre(0.0f));
}

TEST(SeriesCsv, CrlfQuotesBomAndTrailingBlankLines) {
  const SeriesCsv csv =
      MustParse("\xEF\xBB\xBF\"temp, \"\"C\"\"\",rain\r\n1,2\r\n3,4\r\n\r\n  \r\n\n");
  EXPECT_THAT(csv.channel_names, ElementsAre("temp, \"C\"", "rain"));
  EXPECT_THAT(csv.series.values, ElementsAre(1, 2, 3, 4));
  // No line break at the end; a lone CR ends a line too.
  EXPECT_THAT(MustParse("x\r5\r6").series.values, ElementsAre(5, 6));
  // A quoted value is a value.
  EXPECT_THAT(MustParse("x\n\"7\"\n").series.values, ElementsAre(7));
}

TEST(SeriesCsv, ErrorsNameLineAndColumn) {
  ExpectError("", "t.csv: the CSV is empty");
  ExpectError("\n\n", "t.csv: the CSV is empty");
  ExpectError("a,b\n", "t.csv: the CSV has a header row but no time steps");
  ExpectError("a,b\r\n\r\n", "no time steps");
  ExpectError("a,b\n1,2\n3\n", "t.csv: line 3: has 1 fields, the header has 2");
  ExpectError("a,b\n1,2\n3,4,5\n", "line 3: has 3 fields, the header has 2");
  ExpectError("a,b\n1,2\n3,x4\n", "t.csv: line 3: column 2 (\"b\"): \"x4\" is not a number");
  ExpectError("a,b\n1,2\n3,NaN\n", "line 3: column 2 (\"b\"): \"NaN\" is not a finite value");
  ExpectError("a,b\n1,2\n-inf,3\n", "line 3: column 1 (\"a\"): \"-inf\" is not a finite value");
  ExpectError("a,b\n1,2\n1e39,3\n", "\"1e39\" is beyond the float32 range");
  ExpectError("a,b\n1,2\n3,\n", "line 3: column 2 (\"b\"): empty value");
  ExpectError("a\n1\n\n2\n", "line 3: is blank (a blank line is accepted only at the end");
  ExpectError("a\n\"1\n2\n", "line 2: column 1: a quoted field is not closed");
  ExpectError("a\n\"1\"2\n", "line 2: column 1: text after the closing quote");
  ExpectError("\n1\n", "line 1: the header row is blank");
  ExpectError("a\n1\n1 2\n", "\"1 2\" is not a number");
  ExpectError("a\n1\n++1\n", "is not a number");
  ExpectError("a\n1\n0x10\n", "is not a number");
}

TEST(SeriesCsv, LineNumbersCountLineBreaksInsideQuotedHeaders) {
  ExpectError("\"two\nlines\"\n1\nx2\n", "line 4: column 1");
}

TEST(SeriesCsv, TimestampColumnByHeaderNameOrByANonNumberInTheFirstRow) {
  // By value: the first field of the first row is not a number.
  SeriesCsv csv = MustParse("when,v\n2024-01-01,1\n2024-01-02,2\n");
  EXPECT_TRUE(csv.has_timestamps);
  EXPECT_EQ(csv.timestamp_name, "when");
  EXPECT_THAT(csv.timestamps, ElementsAre("2024-01-01", "2024-01-02"));
  EXPECT_THAT(csv.channel_names, ElementsAre("v"));
  EXPECT_THAT(csv.series.values, ElementsAre(1, 2));
  // By name, though the values are numbers (any case, spaces trimmed).
  for (const char* name : {"time", "Timestamp", " DATE", "datetime", "ds"}) {
    csv = MustParse(absl::StrCat(name, ",v\n0,1\n1,2\n"));
    EXPECT_TRUE(csv.has_timestamps) << name;
    EXPECT_EQ(csv.series.channels, 1);
    EXPECT_THAT(csv.timestamps, ElementsAre("0", "1"));
  }
  // A numeric first column with another name is a channel.
  csv = MustParse("t,v\n0,1\n1,2\n");
  EXPECT_FALSE(csv.has_timestamps);
  EXPECT_EQ(csv.series.channels, 2);
  // A timestamp column alone is no series.
  ExpectError("date\n2024-01-01\n", "the only column (\"date\") is a timestamp column");
  // With a timestamp column, a non-number in a later value column is still an error.
  ExpectError("date,v\n2024-01-01,1\n2024-01-02,x\n", "line 3: column 2 (\"v\")");
}

TEST(ContinueTimestamps, EvenlySpacedNumbersAndDates) {
  EXPECT_THAT(ContinueTimestamps({"1", "2", "3"}, 2), ElementsAre("4", "5"));
  EXPECT_THAT(ContinueTimestamps({"1949", "1950"}, 2), ElementsAre("1951", "1952"));
  EXPECT_THAT(ContinueTimestamps({"0.5", "1", "1.5"}, 3), ElementsAre("2.0", "2.5", "3.0"));
  EXPECT_THAT(ContinueTimestamps({"-0.25", "-0.15"}, 3), ElementsAre("-0.05", "0.05", "0.15"));
  EXPECT_THAT(ContinueTimestamps({"1700000000", "1700003600"}, 1), ElementsAre("1700007200"));
  EXPECT_THAT(ContinueTimestamps({"2023-11", "2023-12"}, 2), ElementsAre("2024-01", "2024-02"));
  EXPECT_THAT(ContinueTimestamps({"2024-02-27", "2024-02-28"}, 3),
              ElementsAre("2024-02-29", "2024-03-01", "2024-03-02"));
  EXPECT_THAT(ContinueTimestamps({"2023-12-18", "2023-12-25"}, 2),
              ElementsAre("2024-01-01", "2024-01-08"));
  // Monthly dates: the same day of each month steps in months, not in days.
  EXPECT_THAT(ContinueTimestamps({"2024-01-01", "2024-02-01", "2024-03-01"}, 2),
              ElementsAre("2024-04-01", "2024-05-01"));
  EXPECT_THAT(ContinueTimestamps({"2023-10-15", "2024-01-15"}, 1), ElementsAre("2024-04-15"));
  EXPECT_THAT(ContinueTimestamps({"2024-12-31 22:00", "2024-12-31 23:00"}, 2),
              ElementsAre("2025-01-01 00:00", "2025-01-01 01:00"));
  EXPECT_THAT(ContinueTimestamps({"2016-07-01T00:00:00", "2016-07-01T00:15:00"}, 1),
              ElementsAre("2016-07-01T00:30:00"));
}

TEST(ContinueTimestamps, StepNumbersWhenTheFormIsUnknownOrUneven) {
  const auto steps = ElementsAre("+1", "+2", "+3");
  EXPECT_THAT(ContinueTimestamps({"1", "2", "4"}, 3), steps);  // uneven
  EXPECT_THAT(ContinueTimestamps({"3", "2", "1"}, 3), steps);  // backwards
  EXPECT_THAT(ContinueTimestamps({"7"}, 3), steps);            // one timestamp
  EXPECT_THAT(ContinueTimestamps({"mon", "tue"}, 3), steps);   // not a form
  EXPECT_THAT(ContinueTimestamps({"1e3", "2e3"}, 3), steps);   // exponent notation
  EXPECT_THAT(ContinueTimestamps({"2024-01-31", "2024-02-29", "2024-03-31"}, 3), steps);
  EXPECT_THAT(ContinueTimestamps({"2024-01-01", "2024-13-01"}, 3), steps);  // no month 13
  EXPECT_THAT(ContinueTimestamps({"2024-01-01 00:00", "2024-01-01T01:00"}, 3), steps);
  EXPECT_THAT(ContinueTimestamps({"2024-01-01T00:00Z", "2024-01-01T01:00Z"}, 3), steps);
  EXPECT_THAT(ContinueTimestamps({"9999-10", "9999-12"}, 3), steps);  // past year 9999
  EXPECT_THAT(ContinueTimestamps({"12345678901234567890", "12345678901234567891"}, 3), steps);
  // 9e17 * 11 overflows int64: step numbers, not garbage.
  const std::vector<std::string> eleven = ContinueTimestamps({"0", "900000000000000000"}, 11);
  ASSERT_EQ(eleven.size(), 11u);
  EXPECT_EQ(eleven.front(), "+1");
  EXPECT_EQ(eleven.back(), "+11");
}

TEST(FormatForecastCsv, KeepsTheLayoutAndContinuesTheTimestamps) {
  const SeriesCsv in = MustParse("date,\"a,b\",c\n2024-01-01,1,2\n2024-01-02,3,4\n");
  auto text = FormatForecastCsv(in, {0.5f, 1.0f / 3, -2e-7f, 12345678.0f}, 2);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text,
            "date,\"a,b\",c\n"
            "2024-01-03,0.5,0.333333343\n"
            "2024-01-04,-2.00000002e-07,12345678\n");
  const SeriesCsv odd = MustParse("label,v\nx,1\ny,2\n");
  text = FormatForecastCsv(odd, {7, 8}, 2);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "label,v\n+1,7\n+2,8\n");
}

TEST(FormatForecastCsv, AChannelNameStartingWithAByteOrderMarkReadsBack) {
  // The reader drops one BOM at the start of the file; a name that begins with a second one keeps
  // it only if the writer quotes it (found by series_fuzz).
  const SeriesCsv in = MustParse("\xEF\xBB\xBF\xEF\xBB\xBF\r2");
  ASSERT_THAT(in.channel_names, ElementsAre("\xEF\xBB\xBF"));
  auto text = FormatForecastCsv(in, {5}, 1);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "\"\xEF\xBB\xBF\"\n5\n");
  const SeriesCsv back = MustParse(*text);
  EXPECT_THAT(back.channel_names, ElementsAre("\xEF\xBB\xBF"));
  EXPECT_THAT(back.series.values, ElementsAre(5));
}

TEST(FormatForecastCsv, RefusesAForecastOfTheWrongSize) {
  const SeriesCsv in = MustParse("a,b\n1,2\n");
  auto text = FormatForecastCsv(in, {1, 2, 3}, 2);
  ASSERT_FALSE(text.ok());
  EXPECT_THAT(text.status().message(), HasSubstr("3 forecast values for 2 steps x 2 channels"));
  text = FormatForecastCsv(in, {1, 2, 3, 4}, 2, {0.5f}, {1, 2, 3});
  ASSERT_FALSE(text.ok());
  EXPECT_THAT(text.status().message(), HasSubstr("3 quantile values for 1 levels x 4 forecast"));
}

TEST(FormatForecastCsv, QuantileColumnsFollowLevelByLevel) {
  const SeriesCsv in = MustParse("date,\"a,b\",c\n2024-01-01,1,2\n2024-01-02,3,4\n");
  // 2 steps x 2 channels; levels 0.1 and 0.9: [level][step][channel].
  auto text = FormatForecastCsv(in, {5, 6, 7, 8}, 2, {0.1f, 0.9f}, {1, 2, 3, 4, 9, 10, 11, 12});
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text,
            "date,\"a,b\",c,\"a,b_q0.1\",c_q0.1,\"a,b_q0.9\",c_q0.9\n"
            "2024-01-03,5,6,1,2,9,10\n"
            "2024-01-04,7,8,3,4,11,12\n");
  // Read back, the columns are channels like any other.
  const SeriesCsv back = MustParse(*text);
  EXPECT_THAT(back.channel_names,
              ElementsAre("a,b", "c", "a,b_q0.1", "c_q0.1", "a,b_q0.9", "c_q0.9"));
}

}  // namespace
}  // namespace modrwkv::encoders
