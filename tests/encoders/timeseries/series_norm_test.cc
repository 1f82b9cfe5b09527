// Tests encoders/timeseries/series_norm: statistics, normalised values and patch rows against the
// PyTorch reference's (tests/golden/timeseries), the drop of the oldest T % P steps, the
// time-major row layout, and de-normalisation.
#include "encoders/timeseries/series_norm.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/encoders/timeseries/ts_golden.h"

namespace modrwkv::encoders {
namespace {

using golden::MaxRelDiff;
using ::testing::ElementsAre;

TEST(SeriesNormGolden, StatisticsNormalisedValuesAndRowsMatchTheReference) {
  const nlohmann::json fixtures = ts_golden::Fixtures();
  ASSERT_EQ(fixtures["cases"].size(), 4u);
  double worst_xn = 0, worst_rows = 0;
  for (const nlohmann::json& c : fixtures["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const Series s = ts_golden::Input(c);
    ASSERT_EQ(s.values.size(), static_cast<size_t>(s.length) * s.channels);
    const SeriesNorm norm = ComputeSeriesNorm(s, 1e-5f);
    ASSERT_EQ(norm.mean.size(), 2u);
    for (int ch = 0; ch < 2; ++ch) {
      const double mean = c["mean"][ch], sd = c["std"][ch];
      EXPECT_LE(std::abs(norm.mean[ch] - mean), 1e-6 * std::abs(mean)) << ch;
      EXPECT_LE(std::abs(norm.std[ch] - sd), 1e-6 * sd) << ch;
    }
    const std::vector<float> xn = NormalizeSeries(s, norm);
    const std::vector<float> want_xn = ts_golden::Floats(c["normalized"]);
    ASSERT_EQ(xn.size(), want_xn.size());
    worst_xn = std::max(worst_xn, MaxRelDiff(xn, want_xn));
    EXPECT_LT(MaxRelDiff(xn, want_xn), 1e-6);
    // `last` is the last step as NormalizeSeries gives it (the head's "last" baseline).
    ASSERT_EQ(norm.last.size(), 2u);
    EXPECT_EQ(norm.last[0], xn[xn.size() - 2]);
    EXPECT_EQ(norm.last[1], xn[xn.size() - 1]);
    const std::vector<float> rows = PatchRows(xn, s.length, s.channels, 4);
    const std::vector<float> want_rows = ts_golden::Floats(c["rows_in"]);
    EXPECT_EQ(rows.size(), static_cast<size_t>(c["rows"].get<int>()) * 8);
    ASSERT_EQ(rows.size(), want_rows.size());
    worst_rows = std::max(worst_rows, MaxRelDiff(rows, want_rows));
    EXPECT_LT(MaxRelDiff(rows, want_rows), 1e-6);
  }
  RecordProperty("normalized_max_rel_diff", absl::StrFormat("%.3g", worst_xn));
  RecordProperty("rows_max_rel_diff", absl::StrFormat("%.3g", worst_rows));
}

TEST(SeriesNorm, PopulationVariancePlusEps) {
  Series s{4, 1, {1, 2, 3, 4}};
  const SeriesNorm norm = ComputeSeriesNorm(s, 0.75f);
  EXPECT_FLOAT_EQ(norm.mean[0], 2.5f);
  EXPECT_FLOAT_EQ(norm.std[0], std::sqrt(1.25f + 0.75f));  // var = 1.25 (over T, not T - 1)
  // A constant channel: std = sqrt(eps), the values normalise to 0.
  Series flat{3, 1, {7, 7, 7}};
  const SeriesNorm fn = ComputeSeriesNorm(flat, 1e-5f);
  EXPECT_FLOAT_EQ(fn.std[0], std::sqrt(1e-5f));
  EXPECT_THAT(NormalizeSeries(flat, fn), ElementsAre(0, 0, 0));
}

TEST(SeriesNorm, LargeOffsetsKeepTheirPrecision) {
  // Values 1e7 apart from their spread: float32 accumulation (or E[x^2] - E[x]^2) would lose the
  // variance; the two-pass double accumulation keeps it exactly.
  Series s{4, 1, {1e7f, 1e7f + 1, 1e7f + 2, 1e7f + 3}};
  const SeriesNorm norm = ComputeSeriesNorm(s, 0);
  EXPECT_EQ(norm.mean[0], 1e7f + 1.5f);
  EXPECT_FLOAT_EQ(norm.std[0], std::sqrt(1.25f));
}

TEST(PatchRows, DropsTheOldestStepsAndLaysRowsOutTimeMajor) {
  // 7 steps x 2 channels, value = 10 * step + channel; P = 2: step 0 dropped, 3 rows.
  std::vector<float> x;
  for (int t = 0; t < 7; ++t)
    for (int ch = 0; ch < 2; ++ch) x.push_back(10.0f * t + ch);
  EXPECT_THAT(PatchRows(x, 7, 2, 2), ElementsAre(10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61));
  EXPECT_THAT(PatchRows(x, 7, 2, 4), ElementsAre(30, 31, 40, 41, 50, 51, 60, 61));
  EXPECT_TRUE(PatchRows(x, 7, 2, 8).empty());  // shorter than one patch
  EXPECT_TRUE(PatchRows(x, 6, 2, 2).empty());  // size mismatch
}

TEST(Denormalize, InvertsNormalize) {
  Series s{5, 2, {1, 100, 2, 300, 4, 200, 8, 100, 16, 0}};
  const SeriesNorm norm = ComputeSeriesNorm(s, 1e-5f);
  std::vector<float> xn = NormalizeSeries(s, norm);
  Denormalize(absl::MakeSpan(xn), norm);
  for (size_t i = 0; i < xn.size(); ++i) EXPECT_NEAR(xn[i], s.values[i], 1e-4f * 300) << i;
  std::vector<float> y = {0, 0, 1, -1};  // [2 steps][2 channels]
  Denormalize(absl::MakeSpan(y), norm);
  EXPECT_FLOAT_EQ(y[0], norm.mean[0]);
  EXPECT_FLOAT_EQ(y[1], norm.mean[1]);
  EXPECT_FLOAT_EQ(y[2], norm.mean[0] + norm.std[0]);
  EXPECT_FLOAT_EQ(y[3], norm.mean[1] - norm.std[1]);
}

}  // namespace
}  // namespace modrwkv::encoders
