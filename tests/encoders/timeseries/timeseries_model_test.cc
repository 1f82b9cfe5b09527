// Tests encoders/timeseries/timeseries_model: the adapter rows and the forecast against the
// PyTorch reference (tests/golden/timeseries, every case: the forecast from the fixture's hidden
// state), the pool path (PackSeries -> Prepare -> EncodeBatch) against the synchronous one,
// errors (load, validation, kinds, sizes) naming what was wrong, concurrent use, and the trained
// demo (assets/ts-demo) loading.
#include "encoders/timeseries/timeseries_model.h"

#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/encoders/timeseries/ts_golden.h"

namespace modrwkv::encoders {
namespace {

using golden::MaxRelDiff;
using ::testing::HasSubstr;

// The last position's hidden state [C] of a case's *_hidden.bin ([rows + prompt tokens, C]).
std::vector<float> LastHidden(const nlohmann::json& c) {
  const std::vector<float> all = ts_golden::Floats(c["hidden"]);
  const int n = c["hidden"]["shape"][0], dim = c["hidden"]["shape"][1];
  EXPECT_EQ(all.size(), static_cast<size_t>(n) * dim);
  return std::vector<float>(all.end() - dim, all.end());
}

TEST(TimeSeriesPipelineGolden, AdapterRowsMatchTheReference) {
  const auto p = ts_golden::FixturePipeline();
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->dim(), 64);
  EXPECT_EQ(p->encoder_dim(), 16);
  cpu::ThreadPool pool(2);
  double worst = 0;
  for (const nlohmann::json& c : ts_golden::Cases()) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const Series s = ts_golden::Input(c);
    EXPECT_EQ(p->RowsFor(s.length), c["rows"].get<int>());
    auto rows = p->EncodeSeries(s, "series", &pool);
    ASSERT_TRUE(rows.ok()) << rows.status();
    EXPECT_EQ(rows->rows, c["rows"].get<int>());
    EXPECT_EQ(rows->dim, 64);
    const std::vector<float> want = ts_golden::Floats(c["adapter_rows"]);
    ASSERT_EQ(rows->data.size(), want.size());
    const double err = MaxRelDiff(rows->data, want);
    worst = std::max(worst, err);
    EXPECT_LT(err, 1e-5);  // max |diff| / max |reference|
  }
  RecordProperty("max_rel_diff", absl::StrFormat("%.3g", worst));
}

// Per channel (the channels' scales differ: about 10 and 200), max |diff| / max |want| < tol;
// values [..][2 channels].
void ExpectPerChannelClose(const std::vector<float>& got, const std::vector<float>& want,
                           double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (int ch = 0; ch < 2; ++ch) {
    double diff = 0, scale = 0;
    for (size_t i = ch; i < want.size(); i += 2) {
      diff = std::max(diff, std::abs(static_cast<double>(got[i]) - want[i]));
      scale = std::max(scale, std::abs(static_cast<double>(want[i])));
    }
    EXPECT_LT(diff / scale, tol) << "channel " << ch;
  }
}

TEST(TimeSeriesPipelineGolden, ForecastFromTheHiddenStateMatchesTheReference) {
  const auto p = ts_golden::FixturePipeline();
  ASSERT_NE(p, nullptr);
  double worst_n = 0, worst = 0;
  for (const nlohmann::json& c : ts_golden::Cases()) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const std::vector<float> hidden = LastHidden(c);
    const SeriesNorm norm = p->Stats(ts_golden::Input(c));
    auto yn = p->ForecastNormalized(hidden, norm);
    ASSERT_TRUE(yn.ok()) << yn.status();
    EXPECT_TRUE(yn->quantiles.empty());
    const std::vector<float> want_n = ts_golden::Floats(c["forecast_normalized"]);
    ASSERT_EQ(yn->point.size(), want_n.size());
    worst_n = std::max(worst_n, MaxRelDiff(yn->point, want_n));
    EXPECT_LT(MaxRelDiff(yn->point, want_n), 1e-5);
    // De-normalised with the statistics of the case's input.
    auto y = p->Forecast(hidden, norm);
    ASSERT_TRUE(y.ok()) << y.status();
    const std::vector<float> want = ts_golden::Floats(c["forecast"]);
    ASSERT_EQ(y->point.size(), want.size());
    worst = std::max(worst, MaxRelDiff(y->point, want));
    ExpectPerChannelClose(y->point, want, 1e-6);
  }
  RecordProperty("normalized_max_rel_diff", absl::StrFormat("%.3g", worst_n));
  RecordProperty("forecast_max_rel_diff", absl::StrFormat("%.3g", worst));
}

// The quantile variant: a head of (1 + 3) x horizon x channels outputs on the change from the
// last input value, its quantiles sorted per step (the random head's raw levels cross: the
// reference sorts them, so an unsorted C++ head fails here).
TEST(TimeSeriesPipelineGolden, QuantileHeadMatchesTheReference) {
  const auto p = ts_golden::QuantilePipeline();
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->quantile_levels(), (std::vector<float>{0.1f, 0.5f, 0.9f}));
  const std::string dir = ts_golden::kQuantileDir;
  const nlohmann::json cases = ts_golden::Fixtures(dir)["cases"];
  ASSERT_EQ(cases.size(), 2u);  // t45, t7
  for (const nlohmann::json& c : cases) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const std::vector<float> all = ts_golden::Floats(c["hidden"], dir);
    const std::vector<float> hidden(all.end() - ts_golden::kNEmbd, all.end());
    const SeriesNorm norm = p->Stats(ts_golden::Input(c, dir));
    auto yn = p->ForecastNormalized(hidden, norm);
    ASSERT_TRUE(yn.ok()) << yn.status();
    EXPECT_LT(MaxRelDiff(yn->point, ts_golden::Floats(c["forecast_normalized"], dir)), 1e-5);
    EXPECT_LT(MaxRelDiff(yn->quantiles, ts_golden::Floats(c["quantiles_normalized"], dir)), 1e-5);
    auto y = p->Forecast(hidden, norm);
    ASSERT_TRUE(y.ok()) << y.status();
    ExpectPerChannelClose(y->point, ts_golden::Floats(c["forecast"], dir), 1e-6);
    const std::vector<float> want_q = ts_golden::Floats(c["quantiles"], dir);
    ASSERT_EQ(y->quantiles.size(), 3 * y->point.size());
    ExpectPerChannelClose(y->quantiles, want_q, 1e-6);
    for (size_t i = 0; i < y->point.size(); ++i) {
      const size_t n = y->point.size();
      EXPECT_LE(y->quantiles[i], y->quantiles[n + i]) << i;
      EXPECT_LE(y->quantiles[n + i], y->quantiles[2 * n + i]) << i;
    }
  }
}

// The plain fixture's head read as a "last"-baseline head forecasts the same values moved by the
// last normalised input value, channel by channel.
TEST(TimeSeriesPipeline, TheLastBaselineAddsTheLastNormalisedValue) {
  TimeSeriesManifest m = ts_golden::FixtureManifest();
  m.baseline = "last";
  auto last =
      TimeSeriesPipeline::Load(ts_golden::FixtureCheckpoint().tensors(), m, ts_golden::kNEmbd, "x");
  ASSERT_TRUE(last.ok()) << last.status();
  const auto plain = ts_golden::FixturePipeline();
  const nlohmann::json c = ts_golden::Cases()[0];
  const std::vector<float> hidden = LastHidden(c);
  const SeriesNorm norm = plain->Stats(ts_golden::Input(c));
  ASSERT_EQ(norm.last.size(), 2u);
  EXPECT_NE(norm.last[0], 0.0f);
  auto a = plain->ForecastNormalized(hidden, norm);
  auto b = (*last)->ForecastNormalized(hidden, norm);
  ASSERT_TRUE(a.ok() && b.ok());
  for (size_t i = 0; i < a->point.size(); ++i) {
    EXPECT_EQ(b->point[i], a->point[i] + norm.last[i % 2]) << i;
  }
}

std::string LoadError(const std::map<std::string, TensorView>& t, const TimeSeriesManifest& m,
                      int n_embd = ts_golden::kNEmbd) {
  auto p = TimeSeriesPipeline::Load(t, m, n_embd, "x");
  EXPECT_FALSE(p.ok());
  return p.ok() ? "" : std::string(p.status().message());
}

// The Timer encoder (tests/golden/timeseries_timer: the official TimerModel as sktime ships it,
// checked there against an independent float64 implementation): patch 8, width 32, 4 heads, two
// layers, two channels each encoded alone; the adapter rows of every case, up to 25 patches (the
// rotary embedding at later positions), and the pool path.
TEST(TimeSeriesPipelineGolden, TimerRowsMatchTheReference) {
  const std::string dir = ts_golden::kTimerDir;
  auto p = TimeSeriesPipeline::Load(ts_golden::FixtureCheckpoint(dir).tensors(),
                                    ts_golden::TimerManifest(), ts_golden::kNEmbd, "golden-timer");
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_NE((*p)->timer(), nullptr);
  EXPECT_EQ((*p)->wavenet(), nullptr);
  EXPECT_EQ((*p)->encoder_dim(), 32);
  EXPECT_EQ((*p)->timer()->layers(), 2);
  const nlohmann::json cases = ts_golden::Fixtures(dir)["cases"];
  ASSERT_EQ(cases.size(), 3u);  // t45, t200, t45_prompt
  cpu::ThreadPool pool(2);
  double worst = 0;
  for (const nlohmann::json& c : cases) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const Series s = ts_golden::Input(c, dir);
    EXPECT_EQ((*p)->PatchesFor(s.length), c["patches"].get<int>());
    EXPECT_EQ((*p)->RowsFor(s.length), c["rows"].get<int>());  // patches x 2 channels
    auto rows = (*p)->EncodeSeries(s, "series", &pool);
    ASSERT_TRUE(rows.ok()) << rows.status();
    ASSERT_EQ(rows->rows, c["rows"].get<int>());
    const double err = MaxRelDiff(rows->data, ts_golden::Floats(c["adapter_rows"], dir));
    worst = std::max(worst, err);
    EXPECT_LT(err, 1e-5);
    // The pool path gives the same rows, bit for bit.
    MediaItem item{std::make_shared<const std::string>(PackSeries(s)), "s", kSeriesKind};
    auto prepared = (*p)->Prepare(item, nullptr);
    ASSERT_TRUE(prepared.ok()) << prepared.status();
    std::vector<EmbeddingRows> out;
    ASSERT_TRUE((*p)->EncodeBatch({prepared->get()}, &out, &pool).ok());
    EXPECT_EQ(out[0].data, rows->data);
  }
  RecordProperty("max_rel_diff", absl::StrFormat("%.3g", worst));
}

// Channels encoded together (one pass through every projection) give each channel's rows as if
// it were encoded alone, bit for bit: the sequences never see each other.
TEST(TimeSeriesPipeline, TimerSequencesEncodedTogetherEqualEachAlone) {
  auto p = TimeSeriesPipeline::Load(ts_golden::FixtureCheckpoint(ts_golden::kTimerDir).tensors(),
                                    ts_golden::TimerManifest(), ts_golden::kNEmbd, "t");
  ASSERT_TRUE(p.ok()) << p.status();
  const TimerEncoder& timer = *(*p)->timer();
  constexpr int R = 7, S = 3, P = 8;
  std::vector<float> patches(R * S * P);
  for (size_t i = 0; i < patches.size(); ++i) patches[i] = std::sin(0.37f * i) + 0.01f * i;
  cpu::ThreadPool pool(2);
  auto together = timer.Encode(patches, R, &pool, S);
  ASSERT_TRUE(together.ok()) << together.status();
  ASSERT_EQ(together->size(), static_cast<size_t>(S * R * 32));
  for (int s = 0; s < S; ++s) {
    auto alone = timer.Encode(absl::MakeConstSpan(patches).subspan(s * R * P, R * P), R, &pool);
    ASSERT_TRUE(alone.ok()) << alone.status();
    EXPECT_TRUE(std::equal(alone->begin(), alone->end(), together->begin() + s * R * 32)) << s;
  }
  EXPECT_FALSE(timer.Encode(patches, R, &pool, 2).ok());  // 3 sequences' values for 2
}

// A Timer runner standing in for a GPU's: it records what Encode hands it and writes rows that
// name their position.
class PatternTimer final : public TimerRunner {
 public:
  explicit PatternTimer(int dim) : dim(dim) {}
  absl::Status Run(const float* patches, int R, int S, float* out) const override {
    calls.push_back({R, S});
    seen.assign(patches, patches + static_cast<size_t>(R) * S * 8);
    for (int64_t i = 0; i < int64_t{R} * S * dim; ++i) out[i] = 0.5f * static_cast<float>(i);
    return absl::OkStatus();
  }
  const int dim;
  mutable std::vector<std::pair<int, int>> calls;
  mutable std::vector<float> seen;
};

// With a runner, the Timer hands it all of its weights once and every Encode's patches, and
// returns its rows; a factory that declines (a null runner) leaves the encoder on the CPU.
TEST(TimeSeriesPipeline, ATimerRunnerGetsTheWeightsAndThePatches) {
  const auto& tensors = ts_golden::FixtureCheckpoint(ts_golden::kTimerDir).tensors();
  const TimeSeriesManifest m = ts_golden::TimerManifest();
  auto cpu = TimerEncoder::Load(tensors, kTsEncoderPrefix, m.heads, m.rope_theta);
  auto declined = TimerEncoder::Load(tensors, kTsEncoderPrefix, m.heads, m.rope_theta);
  auto placed = TimerEncoder::Load(tensors, kTsEncoderPrefix, m.heads, m.rope_theta);
  ASSERT_TRUE(cpu.ok() && declined.ok() && placed.ok());
  ASSERT_TRUE(
      (*declined)
          ->UseRunner([](const TimerWeights&) -> absl::StatusOr<std::unique_ptr<TimerRunner>> {
            return std::unique_ptr<TimerRunner>();
          })
          .ok());
  EXPECT_FALSE((*declined)->placed());
  const PatternTimer* runner = nullptr;
  ASSERT_TRUE(
      (*placed)
          ->UseRunner([&](const TimerWeights& w) -> absl::StatusOr<std::unique_ptr<TimerRunner>> {
            EXPECT_EQ(w.layers.size(), 2u);
            EXPECT_EQ(w.heads, 4);
            EXPECT_EQ(w.inv_freq.size(), 4u);  // head width 8
            EXPECT_EQ(w.embed.rows, 32);
            EXPECT_EQ(w.embed.cols, 8);
            EXPECT_EQ(w.norm_w.size(), 32u);
            auto r = std::make_unique<PatternTimer>(32);
            runner = r.get();
            return std::unique_ptr<TimerRunner>(std::move(r));
          })
          .ok());
  EXPECT_TRUE((*placed)->placed());
  EXPECT_EQ((*placed)->heads(), 4);
  constexpr int R = 5, S = 2;
  std::vector<float> patches(R * S * 8);
  for (size_t i = 0; i < patches.size(); ++i) patches[i] = std::cos(0.3f * i);
  auto a = (*cpu)->Encode(patches, R, nullptr, S);
  auto b = (*declined)->Encode(patches, R, nullptr, S);
  auto c = (*placed)->Encode(patches, R, nullptr, S);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(*b, *a);
  ASSERT_EQ(runner->calls.size(), 1u);
  EXPECT_EQ(runner->calls[0], std::make_pair(R, S));
  EXPECT_EQ(runner->seen, patches);
  ASSERT_EQ(c->size(), static_cast<size_t>(R * S * 32));
  for (size_t i = 0; i < c->size(); ++i) ASSERT_EQ((*c)[i], 0.5f * static_cast<float>(i));
  EXPECT_FALSE((*placed)->Encode(patches, R, nullptr, 3).ok());  // checked before the runner
  EXPECT_EQ(runner->calls.size(), 1u);
}

TEST(TimeSeriesPipeline, TimerLoadErrorsNameTheSettingOrTheTensor) {
  const auto& good = ts_golden::FixtureCheckpoint(ts_golden::kTimerDir).tensors();
  TimeSeriesManifest m = ts_golden::TimerManifest();
  m.heads = 3;
  EXPECT_THAT(LoadError(good, m), HasSubstr("time_series.heads is 3"));
  m = ts_golden::TimerManifest();
  m.patch = 4;
  EXPECT_THAT(LoadError(good, m),
              HasSubstr("embed_layer.emb.weight takes patches of 8 steps, but time_series.patch "
                        "is 4"));
  auto missing = good;
  missing.erase("modality.ts_encoder.layers.1.norm2.bias");
  EXPECT_THAT(LoadError(missing, ts_golden::TimerManifest()),
              HasSubstr("tensor modality.ts_encoder.layers.1.norm2.bias is missing"));
  auto extra = good;
  TensorView v = good.at("modality.ts_encoder.norm.bias");
  v.name = "modality.ts_encoder.embed_layer.emb.bias";
  extra[v.name] = v;
  EXPECT_THAT(LoadError(extra, ts_golden::TimerManifest()),
              HasSubstr("unexpected tensor modality.ts_encoder.embed_layer.emb.bias"));
  // The WaveNet's manifest on the Timer's tensors: refused, naming what does not fit.
  TimeSeriesManifest wavenet = ts_golden::FixtureManifest();
  wavenet.dilations = {1, 2};  // as many as the Timer's layers
  EXPECT_THAT(LoadError(good, wavenet),
              HasSubstr("tensor modality.ts_encoder.embed.weight is missing"));
}

TEST(TimeSeriesPipeline, PoolPathEqualsTheSynchronousPath) {
  const auto p = ts_golden::FixturePipeline();
  ASSERT_NE(p, nullptr);
  const nlohmann::json cases = ts_golden::Cases();
  std::vector<std::shared_ptr<const PreparedItem>> prepared;
  std::vector<const PreparedItem*> batch;
  for (const nlohmann::json& c : cases) {
    MediaItem item{std::make_shared<const std::string>(PackSeries(ts_golden::Input(c))),
                   "input[0].series", kSeriesKind};
    auto pi = p->Prepare(item, nullptr);
    ASSERT_TRUE(pi.ok()) << pi.status();
    EXPECT_EQ((*pi)->shape, (std::vector<int64_t>{c["rows"].get<int>(), 8}));
    EXPECT_EQ((*pi)->kind, "series");
    EXPECT_LT(MaxRelDiff((*pi)->data, ts_golden::Floats(c["rows_in"])), 1e-6);
    prepared.push_back(*pi);
    batch.push_back(pi->get());
  }
  std::vector<EmbeddingRows> out;
  ASSERT_TRUE(p->EncodeBatch(batch, &out, nullptr).ok());
  ASSERT_EQ(out.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    auto one = p->EncodeSeries(ts_golden::Input(cases[i]), "s", nullptr);
    ASSERT_TRUE(one.ok());
    EXPECT_EQ(out[i].rows, one->rows);
    EXPECT_EQ(out[i].data, one->data) << i;  // bit for bit
  }
}

TEST(TimeSeriesPipeline, ConcurrentCallsGiveTheSameRows) {
  const auto p = ts_golden::FixturePipeline();
  ASSERT_NE(p, nullptr);
  const Series s = ts_golden::Input(ts_golden::Cases()[1]);
  auto want = p->EncodeSeries(s, "s", nullptr);
  ASSERT_TRUE(want.ok());
  std::vector<std::thread> threads;
  std::vector<int> same(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      cpu::ThreadPool pool(2);
      for (int i = 0; i < 20; ++i) {
        auto got = p->EncodeSeries(s, "s", &pool);
        same[t] += got.ok() && got->data == want->data;
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(same[t], 20) << t;
}

TEST(TimeSeriesPipeline, PrepareErrorsNameTheField) {
  const auto p = ts_golden::FixturePipeline();
  ASSERT_NE(p, nullptr);
  auto prepare = [&](const std::string& bytes, const char* kind) {
    MediaItem item{std::make_shared<const std::string>(bytes), "input[3].series", kind};
    auto r = p->Prepare(item, nullptr);
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    return r.ok() ? std::string() : std::string(r.status().message());
  };
  Series s{8, 2, std::vector<float>(16, 1.0f)};
  EXPECT_THAT(prepare(PackSeries(s), "image"),
              HasSubstr("input[3].series: the time-series encoder got a \"image\" item"));
  EXPECT_THAT(prepare("garbage", kSeriesKind), HasSubstr("input[3].series: a packed series"));
  s.values[13] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(prepare(PackSeries(s), kSeriesKind),
              HasSubstr("input[3].series.values[13] (step 6, channel 1) is NaN"));
  EXPECT_THAT(prepare(PackSeries(Series{3, 2, std::vector<float>(6, 1.0f)}), kSeriesKind),
              HasSubstr("3 time steps, fewer than one patch (4)"));
  EXPECT_THAT(prepare(PackSeries(Series{257, 2, std::vector<float>(514, 1.0f)}), kSeriesKind),
              HasSubstr("257 time steps, more than max_length (256)"));
  EXPECT_THAT(prepare(PackSeries(Series{8, 1, std::vector<float>(8, 1.0f)}), kSeriesKind),
              HasSubstr("1 channels per time step, the model takes 2"));
  // x - mean overflows float32: mean = -max/2, so the first value is 1.5 max from it.
  const float big = std::numeric_limits<float>::max();
  Series wide{4, 2, {big, 0, -big, 0, -big, 0, -big, 0}};
  EXPECT_THAT(prepare(PackSeries(wide), kSeriesKind),
              HasSubstr("input[3].series.values[0] (step 0, channel 0) does not normalise to a "
                        "finite value"));
}

TEST(TimeSeriesPipeline, ForecastRefusesWrongSizes) {
  const auto p = ts_golden::FixturePipeline();
  ASSERT_NE(p, nullptr);
  const SeriesNorm norm{{0, 0}, {1, 1}, {0, 0}};
  auto y = p->Forecast(std::vector<float>(63, 0.0f), norm);
  ASSERT_FALSE(y.ok());
  EXPECT_THAT(y.status().message(), HasSubstr("hidden state of 63 values, expected n_embd = 64"));
  y = p->Forecast(std::vector<float>(64, 0.0f), SeriesNorm{{0}, {1}, {0}});
  ASSERT_FALSE(y.ok());
  EXPECT_THAT(y.status().message(), HasSubstr("the model has 2"));
  y = p->Forecast(std::vector<float>(64, 0.0f), SeriesNorm{{0, 0}, {1, 1}, {}});
  ASSERT_FALSE(y.ok());  // no last values
  EXPECT_THAT(y.status().message(), HasSubstr("2 / 2 / 0 channels"));
  y = p->Forecast(std::vector<float>(64, 1e30f), SeriesNorm{{0, 0}, {1e10f, 1e10f}, {0, 0}});
  ASSERT_FALSE(y.ok());  // the de-normalised value overflows float32
  EXPECT_THAT(y.status().message(), HasSubstr("is not finite"));
  y = p->Forecast(std::vector<float>(64, 0.0f), norm);
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->point.size(), 12u);  // horizon 6 x 2 channels
  // A quantile head refuses an overflow too.
  const auto q = ts_golden::QuantilePipeline();
  ASSERT_NE(q, nullptr);
  y = q->Forecast(std::vector<float>(64, 1e30f), SeriesNorm{{0, 0}, {1e10f, 1e10f}, {0, 0}});
  ASSERT_FALSE(y.ok());
  EXPECT_THAT(y.status().message(), HasSubstr("time-series head: the forecast at step 0"));
}

TEST(TimeSeriesPipeline, LoadErrorsNameTheKeyOrTheTensor) {
  const auto& good = ts_golden::FixtureCheckpoint().tensors();
  TimeSeriesManifest m = ts_golden::FixtureManifest();
  m.channels = 1;
  EXPECT_THAT(LoadError(good, m),
              HasSubstr("embed.weight takes rows of width 8, but time_series.patch x "
                        "time_series.channels = 4 x 1 = 4"));
  m = ts_golden::FixtureManifest();
  m.horizon = 5;
  EXPECT_THAT(LoadError(good, m),
              HasSubstr("tensor modality.ts_head.weight has shape [12,64], expected [10,64]"));
  m = ts_golden::FixtureManifest();
  m.quantiles = {0.5f};  // a head of 2 x 6 x 2 outputs expected, the checkpoint's has 12
  EXPECT_THAT(LoadError(good, m),
              HasSubstr("has shape [12,64], expected [24,64] ([(1 + quantile levels) x "
                        "time_series.horizon x time_series.channels = (1 + 1) x 6 x 2"));
  m.quantiles = {0.5f, 0.5f};
  EXPECT_THAT(LoadError(good, m), HasSubstr("time_series.quantiles[1] is 0.5"));
  m = ts_golden::FixtureManifest();
  m.baseline = "mean";
  EXPECT_THAT(LoadError(good, m), HasSubstr("time_series.baseline is \"mean\""));
  m = ts_golden::FixtureManifest();
  m.dilations = {1, 2};
  EXPECT_THAT(LoadError(good, m), HasSubstr("time_series.dilations names 2"));
  m = ts_golden::FixtureManifest();
  m.eps = 0;
  EXPECT_THAT(LoadError(good, m), HasSubstr("time_series.eps"));
  m = ts_golden::FixtureManifest();
  m.max_length = 3;
  EXPECT_THAT(LoadError(good, m), HasSubstr("time_series.max_length"));
  m = ts_golden::FixtureManifest();
  m.encoder = "tcn";
  EXPECT_THAT(LoadError(good, m), HasSubstr("time_series.encoder"));
  EXPECT_THAT(LoadError(good, ts_golden::FixtureManifest(), 128),
              HasSubstr("proj.2.weight gives width 64, but the language model's width is 128"));
  auto missing = good;
  missing.erase("modality.ts_head.bias");
  EXPECT_THAT(LoadError(missing, ts_golden::FixtureManifest()),
              HasSubstr("tensor modality.ts_head.bias is missing"));
  auto extra = good;
  TensorView v = good.at("modality.ts_adapter.proj.0.bias");
  v.name = "modality.ts_adapter.pre_norm.bias";
  extra[v.name] = v;
  EXPECT_THAT(LoadError(extra, ts_golden::FixtureManifest()),
              HasSubstr("unexpected tensor modality.ts_adapter.pre_norm.bias"));
}

TEST(TimeSeriesPipeline, IdNamesTheWeightsAndWhatChangesTheRows) {
  const auto& t = ts_golden::FixtureCheckpoint().tensors();
  TimeSeriesManifest m = ts_golden::FixtureManifest();
  auto a = TimeSeriesPipeline::Load(t, m, 64, "ckpt@1234");
  ASSERT_TRUE(a.ok());
  EXPECT_THAT((*a)->id(), HasSubstr("ckpt@1234"));
  EXPECT_THAT((*a)->id(), HasSubstr("dilations=1,2,4"));
  m.eps = 1e-3f;
  auto b = TimeSeriesPipeline::Load(t, m, 64, "ckpt@1234");
  ASSERT_TRUE(b.ok());
  EXPECT_NE((*a)->id(), (*b)->id());
}

TEST(TimeSeriesPipeline, LoadsTheTrainedDemo) {
  auto ckpt = Checkpoint::Open(std::string(MODRWKV_SOURCE_DIR) + "/assets/ts-demo/rwkv-0.pth");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const TensorView* emb = (*ckpt)->Find("emb.weight");
  ASSERT_NE(emb, nullptr);
  TimeSeriesManifest m;
  m.channels = 1;
  m.dilations = {1, 2, 4, 8, 1, 2, 4, 8};
  m.horizon = 12;
  m.max_length = 512;
  m.quantiles = {0.1f, 0.5f, 0.9f};  // the demo forecasts three quantiles besides the point
  auto p = TimeSeriesPipeline::Load((*ckpt)->tensors(), m, static_cast<int>(emb->shape[1]), "demo");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)->encoder_dim(), 32);
  ASSERT_NE((*p)->wavenet(), nullptr);
  EXPECT_EQ((*p)->wavenet()->layers(), 8);
  EXPECT_EQ((*p)->timer(), nullptr);
  Series s{96, 1, {}};
  for (int t = 0; t < 96; ++t) s.values.push_back(100 + 10 * std::sin(t * 0.5236f));
  auto rows = (*p)->EncodeSeries(s, "s", nullptr);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->rows, 24);
  EXPECT_EQ(rows->dim, (*p)->dim());
  for (float v : rows->data) ASSERT_TRUE(std::isfinite(v));
}

}  // namespace
}  // namespace modrwkv::encoders
