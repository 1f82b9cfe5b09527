// The whole time-series forward against the PyTorch reference (tests/golden/timeseries, random
// weights, tools/golden/gen_timeseries_fixtures.py): the model directory opened as users open it,
// series rows spliced before the (optional) prompt tokens, the RWKV7 model's last hidden state,
// the head, de-normalised; and the roll-out past the model's horizon.
#include "encoders/multimodal/forecast.h"

#include <fstream>

#include "encoders/multimodal/model_bundle.h"
#include "encoders/timeseries/series_csv.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/golden_floats.h"

namespace modrwkv::encoders {
namespace {

const std::string kDir = std::string(MODRWKV_GOLDEN_DIR) + "/timeseries";

nlohmann::json Manifest(const std::string& dir = kDir) {
  std::ifstream in(dir + "/manifest.json");
  return nlohmann::json::parse(in);
}

ModelBundle Open(const std::string& dir = kDir) {
  BundleOptions bo;
  bo.model = dir;
  ModelOptions mo;
  mo.num_slots = 2;
  mo.threads = 2;
  mo.weight_type = ModelOptions::WeightType::kF32;  // the reference computes bf16 weights in f32
  absl::StatusOr<ModelBundle> b = OpenModelBundle(bo, mo, CheckpointOptions{}, nullptr);
  EXPECT_TRUE(b.ok()) << b.status();
  return *std::move(b);
}

Series InputOf(const nlohmann::json& c, const std::string& dir = kDir) {
  Series s;
  s.length = c["steps"];
  s.channels = c["channels"];
  s.values = golden::ReadF32(dir + "/" + c["input"]["file"].get<std::string>());
  return s;
}

std::vector<float> CsvValues(const std::string& file) {
  std::ifstream in(kDir + "/" + file);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  absl::StatusOr<SeriesCsv> csv = ParseSeriesCsv(text, file);
  EXPECT_TRUE(csv.ok()) << csv.status();
  return csv.ok() ? csv->series.values : std::vector<float>{};
}

TEST(ForecastTest, TheModelDirectoryOpensAsATimeSeriesModel) {
  ModelBundle b = Open();
  ASSERT_NE(b.series, nullptr);
  EXPECT_EQ(b.series->channels(), 2);
  EXPECT_EQ(b.series->horizon(), 6);
  EXPECT_EQ(b.series->dim(), b.model->config().n_embd);
  EXPECT_EQ(b.vision, nullptr);
  EXPECT_EQ(b.audio, nullptr);
}

TEST(ForecastTest, ForecastsEqualTheReferenceForEveryCase) {
  ModelBundle b = Open();
  ASSERT_NE(b.series, nullptr);
  cpu::ThreadPool pool(2);
  const nlohmann::json m = Manifest();  // outlives the loop (not a temporary's member)
  for (const nlohmann::json& c : m["cases"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    std::vector<int32_t> prompt;
    if (c.contains("prompt_ids")) prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    const Series s = InputOf(c);
    ASSERT_EQ(s.values.size(), static_cast<size_t>(s.length * s.channels));
    // A chunk smaller than the rows: the prefill crosses chunk borders, and for the prompt case
    // one chunk holds both series rows and tokens.
    absl::StatusOr<SeriesForecast> f =
        ForecastSeries(*b.series, *b.model, 0, s, 6, prompt, &pool, /*chunk_rows=*/4);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ(f->rounds, 1);
    EXPECT_EQ(f->series_rows, s.length / 4);
    EXPECT_EQ(f->prompt_rows, s.length / 4 + static_cast<int64_t>(prompt.size()));
    const std::vector<float> want =
        c.contains("forecast")
            ? golden::ReadF32(kDir + "/" + c["forecast"]["file"].get<std::string>())
            : CsvValues(c["forecast_csv"]);
    ASSERT_EQ(f->values.size(), want.size());
    EXPECT_LT(golden::MaxRelDiff(f->values, want), 1e-4) << name;
    // The CSV the CLI would print carries the same numbers.
    if (c.contains("forecast")) {
      const std::vector<float> csv = CsvValues(c["forecast_csv"]);
      EXPECT_LT(golden::MaxRelDiff(csv, want), 1e-6);
    }
  }
}

TEST(ForecastTest, TheLastHiddenStateEqualsTheReference) {
  ModelBundle b = Open();
  cpu::ThreadPool pool(2);
  const nlohmann::json c = Manifest()["cases"][1];  // t45: one step dropped by the patching
  const Series s = InputOf(c);
  absl::StatusOr<EmbeddingRows> rows = b.series->EncodeSeries(s, "series", &pool);
  ASSERT_TRUE(rows.ok()) << rows.status();
  StepEntry e;
  e.slot = 0;
  e.inputs = {InputRowsView::Embeddings(rows->data)};
  e.output = StepOutput::kHidden;
  std::vector<StepResult> res;
  ASSERT_TRUE(b.model->ResetSlot(0).ok());
  ASSERT_TRUE(b.model->Step({e}, &res).ok());
  const std::vector<float> all =
      golden::ReadF32(kDir + "/" + c["hidden"]["file"].get<std::string>());
  const int C = b.model->config().n_embd;
  ASSERT_EQ(all.size(), static_cast<size_t>(rows->rows) * C);
  const absl::Span<const float> last = absl::MakeConstSpan(all).subspan(all.size() - C);
  EXPECT_LT(golden::MaxRelDiff(res[0].hidden, last), 1e-4);
}

// Past the horizon: round k forecasts from the series plus rounds 1..k-1, exactly as a request
// for the model's own horizon on that longer series would.
TEST(ForecastTest, RollOutAppendsEachRoundAndKeepsTheNewestSteps) {
  ModelBundle b = Open();
  cpu::ThreadPool pool(2);
  const Series s = InputOf(Manifest()["cases"][0]);  // t32
  absl::StatusOr<SeriesForecast> long_f = ForecastSeries(*b.series, *b.model, 0, s, 15, {}, &pool);
  ASSERT_TRUE(long_f.ok()) << long_f.status();
  EXPECT_EQ(long_f->rounds, 3);
  ASSERT_EQ(long_f->values.size(), 15u * 2);
  Series grown = s;
  for (int round = 0; round < 3; ++round) {
    absl::StatusOr<SeriesForecast> one =
        ForecastSeries(*b.series, *b.model, 1, grown, 6, {}, &pool);
    ASSERT_TRUE(one.ok()) << one.status();
    const int steps = std::min(6, 15 - 6 * round);
    for (int i = 0; i < steps * 2; ++i) {
      EXPECT_EQ(long_f->values[round * 12 + i], one->values[i]) << "round " << round << " i " << i;
    }
    grown.values.insert(grown.values.end(), one->values.begin(), one->values.end());
    grown.length += 6;
  }
  // A window at max_length drops its oldest steps as the forecast is appended.
  Series full;
  full.channels = 2;
  full.length = b.series->max_length();
  for (int t = 0; t < full.length; ++t) {
    full.values.push_back(10 + std::sin(t * 0.3f));
    full.values.push_back(200 + t * 0.1f);
  }
  absl::StatusOr<SeriesForecast> f = ForecastSeries(*b.series, *b.model, 0, full, 12, {}, &pool);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->series_rows, 2 * (full.length / 4));
}

// The Timer variant (tests/golden/timeseries_timer): the whole path through the model folder,
// with and without prompt tokens after the series rows.
TEST(ForecastTest, TimerForecastsEqualTheReference) {
  const std::string dir = kDir + "_timer";
  ModelBundle b = Open(dir);
  ASSERT_NE(b.series, nullptr);
  ASSERT_NE(b.series->timer(), nullptr);
  cpu::ThreadPool pool(2);
  const nlohmann::json m = Manifest(dir);
  ASSERT_EQ(m["cases"].size(), 3u);
  for (const nlohmann::json& c : m["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const Series s = InputOf(c, dir);
    std::vector<int32_t> prompt;
    if (c.contains("prompt_ids")) prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    absl::StatusOr<SeriesForecast> f =
        ForecastSeries(*b.series, *b.model, 0, s, 6, prompt, &pool, /*chunk_rows=*/7);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ(f->series_rows, c["rows"].get<int>());
    EXPECT_LT(golden::MaxRelDiff(
                  f->values, golden::ReadF32(dir + "/" + c["forecast"]["file"].get<std::string>())),
              1e-4);
  }
}

// The quantile variant (tests/golden/timeseries_quantiles): the whole path gives the reference's
// point and quantile forecasts; rolled out, each round's quantiles are those of a one-round
// forecast on the grown series.
TEST(ForecastTest, QuantileForecastsEqualTheReferenceAndRollOut) {
  const std::string dir = kDir + "_quantiles";
  ModelBundle b = Open(dir);
  ASSERT_NE(b.series, nullptr);
  ASSERT_EQ(b.series->quantile_levels().size(), 3u);
  cpu::ThreadPool pool(2);
  const nlohmann::json m = Manifest(dir);
  for (const nlohmann::json& c : m["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const Series s = InputOf(c, dir);
    absl::StatusOr<SeriesForecast> f = ForecastSeries(*b.series, *b.model, 0, s, 6, {}, &pool);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_LT(golden::MaxRelDiff(
                  f->values, golden::ReadF32(dir + "/" + c["forecast"]["file"].get<std::string>())),
              1e-4);
    EXPECT_LT(
        golden::MaxRelDiff(f->quantiles,
                           golden::ReadF32(dir + "/" + c["quantiles"]["file"].get<std::string>())),
        1e-4);
    if (c["name"] != "t45") continue;
    absl::StatusOr<SeriesForecast> long_f = ForecastSeries(*b.series, *b.model, 0, s, 9, {}, &pool);
    ASSERT_TRUE(long_f.ok()) << long_f.status();
    ASSERT_EQ(long_f->quantiles.size(), 3u * 9 * 2);
    Series grown = s;
    grown.values.insert(grown.values.end(), f->values.begin(), f->values.end());
    grown.length += 6;
    absl::StatusOr<SeriesForecast> second =
        ForecastSeries(*b.series, *b.model, 1, grown, 6, {}, &pool);
    ASSERT_TRUE(second.ok()) << second.status();
    for (int k = 0; k < 3; ++k) {
      for (int i = 0; i < 9 * 2; ++i) {  // level k: round 1's 6 steps, then round 2's first 3
        const float want = i < 12 ? f->quantiles[k * 12 + i] : second->quantiles[k * 12 + i - 12];
        EXPECT_EQ(long_f->quantiles[k * 18 + i], want) << "level " << k << " i " << i;
      }
    }
  }
}

}  // namespace
}  // namespace modrwkv::encoders
