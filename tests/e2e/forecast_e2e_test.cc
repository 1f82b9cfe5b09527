// Time series end to end through the real server with the trained forecaster (assets/ts-demo,
// tools/train/train_timeseries_demo.py): the held-out tails of real and generated series against
// PyTorch's forecasts and the seasonal-naive baseline, the roll-out past the model's horizon,
// time-series parts in Generate, the errors a client can cause, GetModelInfo and the metrics.
#include <cmath>

#include "absl/strings/str_format.h"
#include "encoders/timeseries/series_csv.h"
#include "gmock/gmock.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/e2e_util.h"
#include "tests/shell_run.h"

namespace modrwkv::e2e {
namespace {

const fs::path kDemo = fs::path(MODRWKV_SOURCE_DIR) / "assets" / "ts-demo";
const fs::path kHeldOut = fs::path(MODRWKV_SOURCE_DIR) / "tests" / "golden" / "ts_demo";

std::vector<float> CsvValues(const fs::path& p) {
  absl::StatusOr<encoders::SeriesCsv> csv = encoders::ParseSeriesCsv(ReadAll(p), p.string());
  EXPECT_TRUE(csv.ok()) << csv.status();
  return csv.ok() ? csv->series.values : std::vector<float>{};
}

pb::ForecastRequest Request(const std::vector<float>& values, int horizon = 0, int channels = 1) {
  pb::ForecastRequest req;
  req.mutable_series()->mutable_values()->Assign(values.begin(), values.end());
  req.mutable_series()->set_channels(channels);
  req.set_horizon(horizon);
  return req;
}

grpc::Status Forecast(pb::Inference::Stub* stub, const pb::ForecastRequest& req,
                      pb::ForecastResponse* resp) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  return stub->Forecast(&ctx, req, resp);
}

double Mse(absl::Span<const float> a, absl::Span<const float> b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  return s / a.size();
}

// y[T+h] = y[T+h-m*ceil((h+1)/m)]: the last season repeated (m = 1: the last value).
std::vector<float> SeasonalNaive(const std::vector<float>& y, int m, int horizon) {
  std::vector<float> out;
  const int T = static_cast<int>(y.size());
  for (int h = 0; h < horizon; ++h) out.push_back(y[T + h - m * ((h + m) / m)]);
  return out;
}

ServerProcess::Options DemoOptions(std::vector<std::string> args = {}) {
  ServerProcess::Options o;
  o.model = kDemo;
  o.args = std::move(args);
  return o;
}

TEST(ForecastE2eTest, TheDemoModelForecastsHeldOutTailsAsPyTorchDoes) {
  const nlohmann::json ref = nlohmann::json::parse(ReadAll(kHeldOut / "torch_mse.json"));
  ASSERT_GE(ref["series"].size(), 10u);
  auto server = ServerProcess::Start(DemoOptions());
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  int beats_naive = 0, torch_beats_naive = 0;
  int inside_band = 0, targets = 0;  // targets between the 0.1 and 0.9 quantile forecasts
  std::string report;
  for (const auto& [name, s] : ref["series"].items()) {
    SCOPED_TRACE(name);
    const std::vector<float> input = CsvValues(kHeldOut / s["input"].get<std::string>());
    const std::vector<float> target = CsvValues(kHeldOut / s["target"].get<std::string>());
    ASSERT_EQ(static_cast<int>(input.size()), s["input_steps"].get<int>());
    pb::ForecastResponse resp;
    grpc::Status st = Forecast(stub.get(), Request(input), &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    ASSERT_EQ(resp.horizon(), 12);
    ASSERT_EQ(resp.values_size(), 12);
    EXPECT_EQ(resp.rounds(), 1);
    EXPECT_EQ(resp.usage().series_rows(), static_cast<int>(input.size()) / 4);
    const std::vector<float> got(resp.values().begin(), resp.values().end());
    // The same numbers as the PyTorch model (bf16 weights computed in float32 on both sides).
    const std::vector<float> torch = s["forecast_model"].get<std::vector<float>>();
    double scale = 0;
    for (float v : target) scale = std::max(scale, std::abs(double(v)));
    for (int h = 0; h < 12; ++h) {
      EXPECT_NEAR(got[h], torch[h], 1e-4 * scale) << "step " << h;
    }
    // The quantile forecasts (0.1, 0.5, 0.9): PyTorch's numbers, never crossing.
    ASSERT_EQ(resp.quantiles_size(), 3);
    const std::vector<std::vector<float>> torch_q =
        s["quantiles_model"].get<std::vector<std::vector<float>>>();
    for (int k = 0; k < 3; ++k) {
      EXPECT_FLOAT_EQ(resp.quantiles(k).level(), (std::vector<float>{0.1f, 0.5f, 0.9f})[k]);
      ASSERT_EQ(resp.quantiles(k).values_size(), 12);
      for (int h = 0; h < 12; ++h) {
        EXPECT_NEAR(resp.quantiles(k).values(h), torch_q[k][h], 1e-4 * scale) << k << " " << h;
        if (k > 0) {
          EXPECT_LE(resp.quantiles(k - 1).values(h), resp.quantiles(k).values(h));
        }
      }
    }
    for (int h = 0; h < 12; ++h) {
      inside_band +=
          resp.quantiles(0).values(h) <= target[h] && target[h] <= resp.quantiles(2).values(h);
      ++targets;
    }
    const double mse = Mse(got, target);
    EXPECT_NEAR(mse, s["mse_model"].get<double>(), 1e-3 * s["mse_model"].get<double>());
    const double naive = Mse(SeasonalNaive(input, s["period"], 12), target);
    // (The CSVs hold the values as float32; the reference computed in float64.)
    EXPECT_NEAR(naive, s["mse_seasonal_naive"].get<double>(), 1e-4 * naive);
    beats_naive += mse < naive;
    torch_beats_naive += s["mse_model"].get<double>() < naive;
    report += absl::StrFormat("%s: mse %.4g, seasonal naive %.4g\n", name, mse, naive);
  }
  // The shipped model beats the seasonal-naive forecast on every held-out tail (the closest:
  // nile, 0.976x; docs/benchmarks.md); the server must do exactly as well as PyTorch.
  EXPECT_EQ(beats_naive, torch_beats_naive) << report;
  EXPECT_EQ(beats_naive, 10) << report;
  // The 0.1..0.9 band holds about 80 % of the held-out values (78 %: 94 of 120); a band that
  // ignored the data would hold far fewer, or all of them.
  EXPECT_GE(inside_band, targets * 6 / 10) << inside_band << " of " << targets;
  EXPECT_LE(inside_band, targets * 95 / 100) << inside_band << " of " << targets;
}

TEST(ForecastE2eTest, LongHorizonsAreRolledOutRoundByRound) {
  auto server = ServerProcess::Start(DemoOptions({"--max-forecast-horizon", "30"}));
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  const std::vector<float> input = CsvValues(kHeldOut / "heldout" / "airline_input.csv");
  pb::ForecastResponse long_resp;
  ASSERT_TRUE(Forecast(stub.get(), Request(input, 30), &long_resp).ok());
  EXPECT_EQ(long_resp.horizon(), 30);
  EXPECT_EQ(long_resp.rounds(), 3);
  ASSERT_EQ(long_resp.values_size(), 30);
  // Round k equals a plain request on the series grown by rounds 1..k-1.
  std::vector<float> grown = input;
  for (int round = 0; round < 3; ++round) {
    pb::ForecastResponse one;
    ASSERT_TRUE(Forecast(stub.get(), Request(grown), &one).ok());
    for (int h = 0; h < std::min(12, 30 - 12 * round); ++h) {
      EXPECT_EQ(long_resp.values(12 * round + h), one.values(h)) << round << " " << h;
    }
    grown.insert(grown.end(), one.values().begin(), one.values().end());
  }
  EXPECT_EQ(long_resp.usage().series_rows(), 96 / 4 + 108 / 4 + 120 / 4);
  pb::ForecastResponse resp;
  grpc::Status st = Forecast(stub.get(), Request(input, 31), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(BadFieldOf(st), "horizon") << st.error_message();
  EXPECT_NE(st.error_message().find("max-forecast-horizon"), std::string::npos);
}

TEST(ForecastE2eTest, BadSeriesAreRefusedNamingTheField) {
  auto server = ServerProcess::Start(DemoOptions());
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  auto expect_invalid = [&](const pb::ForecastRequest& req, const std::string& field,
                            const std::string& words) {
    pb::ForecastResponse resp;
    grpc::Status st = Forecast(stub.get(), req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_EQ(BadFieldOf(st), field) << st.error_message();
    EXPECT_NE(st.error_message().find(words), std::string::npos) << st.error_message();
  };
  std::vector<float> ok(40, 1.5f);
  std::vector<float> nan = ok;
  nan[17] = std::nanf("");
  expect_invalid(Request(nan), "series.values", "NaN");
  std::vector<float> inf = ok;
  inf[3] = INFINITY;
  expect_invalid(Request(inf), "series.values", "values[3]");
  expect_invalid(Request(ok, 0, 2), "series.channels", "takes 1");
  expect_invalid(Request({}), "series.values", "series");
  expect_invalid(Request({1.f, 2.f, 3.f}), "series.values", "3");                 // < patch 4
  expect_invalid(Request(std::vector<float>(513, 1.f)), "series.values", "512");  // max_length
  expect_invalid(pb::ForecastRequest(), "series", "required");
  expect_invalid(Request(ok, -1), "horizon", "horizon");
  pb::ForecastRequest too_urgent = Request(ok);
  too_urgent.set_priority(1);  // above --max-request-priority (0)
  expect_invalid(too_urgent, "priority", "max-request-priority");
  pb::ForecastRequest yielding = Request(ok);
  yielding.set_priority(-3);
  pb::ForecastResponse yielded;
  EXPECT_TRUE(Forecast(stub.get(), yielding, &yielded).ok());
  // A model without a time-series encoder: UNIMPLEMENTED, and time_series parts too.
  ServerProcess::Options text;  // the random text demo model
  auto text_server = ServerProcess::Start(text);
  ASSERT_NE(text_server, nullptr);
  auto text_stub = pb::Inference::NewStub(text_server->Channel());
  pb::ForecastResponse resp;
  grpc::Status st = Forecast(text_stub.get(), Request(ok), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNIMPLEMENTED) << st.error_message();
  pb::GenerateRequest gen = Greedy("x", 2);
  *gen.add_input()->mutable_time_series() = Request(ok).series();
  StreamResult r = RunGenerate(text_stub.get(), gen);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_NE(r.status.error_message().find("input[1].time_series"), std::string::npos)
      << r.status.error_message();
}

TEST(ForecastE2eTest, SeriesPartsInGenerateAndModelInfoAndMetrics) {
  auto server = ServerProcess::Start(DemoOptions({"--max-series-per-request", "2"}));
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  pb::ModelInfo info;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->GetModelInfo(&ctx, pb::GetModelInfoRequest(), &info).ok());
  }
  EXPECT_NE(std::find(info.modalities().begin(), info.modalities().end(), pb::MODALITY_TIME_SERIES),
            info.modalities().end());
  EXPECT_EQ(info.limits().series_channels(), 1);
  EXPECT_EQ(info.limits().series_patch(), 4);
  EXPECT_EQ(info.limits().max_series_length(), 512);
  EXPECT_EQ(info.limits().forecast_horizon(), 12);
  EXPECT_EQ(info.limits().max_forecast_horizon(), 96);  // 8 x the horizon by default
  EXPECT_EQ(info.limits().max_series_per_request(), 2);
  EXPECT_THAT(info.limits().forecast_quantiles(), testing::ElementsAre(0.1f, 0.5f, 0.9f));
  // A series as a Generate part: its rows enter the prompt (the demo's LM head is untrained, so
  // only the accounting is checked).
  const std::vector<float> input = CsvValues(kHeldOut / "heldout" / "co2_input.csv");
  pb::GenerateRequest gen;
  *gen.add_input()->mutable_time_series() = Request(input).series();
  gen.add_input()->set_text("Describe the trend.");
  gen.mutable_sampling()->set_temperature(0);
  gen.mutable_stop()->set_max_tokens(3);
  StreamResult r = RunGenerate(stub.get(), gen);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_TRUE(r.result.has_value());
  EXPECT_EQ(r.result->usage().series_rows(), 24);
  EXPECT_GT(r.result->usage().prompt_tokens(), 24);
  for (int i = 0; i < 2; ++i) *gen.add_input()->mutable_time_series() = Request(input).series();
  r = RunGenerate(stub.get(), gen);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(r.status.error_message().find("max-series-per-request"), std::string::npos);
  pb::ForecastResponse resp;
  ASSERT_TRUE(Forecast(stub.get(), Request(input), &resp).ok());
  // The Generate part and the forecast: two requests with series rows; the forecast's series
  // was encoded for Generate already (the cache).
  EXPECT_EQ(ScrapeMetric(*server, "modrwkv_series_rows_per_request_count"), 2);
  EXPECT_EQ(ScrapeMetric(*server, "modrwkv_encoder_cache_lookups_total{result=\"hit\"}"), 1);
  EXPECT_EQ(ScrapeMetric(*server, "modrwkv_grpc_requests_total{code=\"OK\",method=\"Forecast\"}"),
            1);
}

// `modrwkv client forecast` prints what the in-process `modrwkv forecast` prints.
TEST(ForecastE2eTest, TheTerminalClientPrintsTheServersForecastAsCsv) {
  auto server = ServerProcess::Start(DemoOptions());
  ASSERT_NE(server, nullptr);
  const std::string csv = (kHeldOut / "heldout" / "co2_input.csv").string();
  // The server's answer through `client forecast` and the in-process one, for the same flags.
  auto remote_and_local = [&](const std::string& flags) {
    const testing_shell::ShellRun remote =
        testing_shell::RunShell(std::string(MODRWKV_CLI) + " client forecast --target " +
                                server->target() + " --csv " + csv + " " + flags + " --usage");
    const testing_shell::ShellRun local =
        testing_shell::RunShell(std::string(MODRWKV_CLI) + " forecast --model " + kDemo.string() +
                                " --csv " + csv + " " + flags);
    EXPECT_EQ(remote.code, 0) << remote.err;
    EXPECT_EQ(local.code, 0) << local.err;
    EXPECT_EQ(remote.out, local.out);
    return remote;
  };
  const testing_shell::ShellRun remote = remote_and_local("--horizon 16");
  EXPECT_EQ(std::count(remote.out.begin(), remote.out.end(), '\n'), 17);
  EXPECT_NE(remote.err.find("2 round(s)"), std::string::npos) << remote.err;
  // With --quantiles: the point column, then one column per level, on both sides alike.
  const testing_shell::ShellRun remote_q = remote_and_local("--quantiles");
  EXPECT_EQ(remote_q.out.substr(0, remote_q.out.find('\n')), "co2,co2_q0.1,co2_q0.5,co2_q0.9");
  EXPECT_EQ(std::count(remote_q.out.begin(), remote_q.out.end(), '\n'), 13);
  const testing_shell::ShellRun bad =
      testing_shell::RunShell(std::string(MODRWKV_CLI) + " client forecast --target " +
                              server->target() + " --csv " + csv + " --horizon 1000");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("INVALID_ARGUMENT"), std::string::npos) << bad.err;
}

// A Timer-encoded model (make-demo-model --series-encoder timer-tiny: random weights, 2 channels,
// patch 8) through the real server: its rows are one per patch and channel in Forecast and in
// Generate parts, and the server's forecast is the in-process CLI's.
TEST(ForecastE2eTest, ATimerModelServesForecastsAndSeriesParts) {
  const fs::path dir =
      fs::temp_directory_path() / ("modrwkv_e2e_timer_" + std::to_string(getpid()));
  const testing_shell::ShellRun made = testing_shell::RunShell(
      std::string(MODRWKV_CLI) + " make-demo-model --time-series --series-encoder timer-tiny " +
      "--max-series-length 512 --out " + dir.string());
  ASSERT_EQ(made.code, 0) << made.err;
  ServerProcess::Options o;
  o.model = dir;
  auto timer = ServerProcess::Start(o);
  ASSERT_NE(timer, nullptr);
  auto stub = pb::Inference::NewStub(timer->Channel());
  pb::ModelInfo info;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->GetModelInfo(&ctx, pb::GetModelInfoRequest(), &info).ok());
  }
  EXPECT_EQ(info.limits().series_channels(), 2);
  EXPECT_EQ(info.limits().series_patch(), 8);
  EXPECT_TRUE(info.limits().forecast_quantiles().empty());
  // 44 steps x 2 channels: 5 patches (the oldest 4 steps dropped) x 2 channels = 10 rows.
  std::vector<float> values;
  std::string csv_text = "a,b\n";
  for (int t = 0; t < 44; ++t) {
    const float a = 10 + std::sin(t * 0.5f), b = 200 + 3 * std::cos(t * 0.3f);
    values.insert(values.end(), {a, b});
    csv_text += absl::StrFormat("%.9g,%.9g\n", a, b);
  }
  pb::ForecastResponse resp;
  ASSERT_TRUE(Forecast(stub.get(), Request(values, 0, 2), &resp).ok());
  EXPECT_EQ(resp.horizon(), 12);
  EXPECT_EQ(resp.channels(), 2);
  ASSERT_EQ(resp.values_size(), 24);
  EXPECT_EQ(resp.usage().series_rows(), 10);
  EXPECT_TRUE(resp.quantiles().empty());
  pb::GenerateRequest gen;
  *gen.add_input()->mutable_time_series() = Request(values, 0, 2).series();
  gen.add_input()->set_text("Describe it.");
  gen.mutable_sampling()->set_temperature(0);
  gen.mutable_stop()->set_max_tokens(2);
  StreamResult r = RunGenerate(stub.get(), gen);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_TRUE(r.result.has_value());
  EXPECT_EQ(r.result->usage().series_rows(), 10);
  // The in-process CLI on the same series prints the server's numbers.
  const fs::path csv = dir / "series.csv";
  { std::ofstream(csv) << csv_text; }
  const testing_shell::ShellRun local = testing_shell::RunShell(
      std::string(MODRWKV_CLI) + " forecast --model " + dir.string() + " --csv " + csv.string());
  ASSERT_EQ(local.code, 0) << local.err;
  std::string want = "a,b\n";
  for (int h = 0; h < 12; ++h) {
    want += absl::StrFormat("%.9g,%.9g\n", resp.values(2 * h), resp.values(2 * h + 1));
  }
  EXPECT_EQ(local.out, want);
  timer.reset();
  std::error_code ec;
  fs::remove_all(dir, ec);
}

}  // namespace
}  // namespace modrwkv::e2e
