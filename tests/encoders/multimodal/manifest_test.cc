// Tests encoders/multimodal/manifest's time_series section (the other sections are tested in
// model_bundle_test.cc): the keys and defaults, the shipped manifests, errors naming the key.
#include "encoders/multimodal/manifest.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace modrwkv::encoders {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ManifestTimeSeries, ParsesEveryKey) {
  auto m = ParseManifest(R"({"format": 1, "checkpoint": "rwkv-0.pth",
      "time_series": {"encoder": "wavenet", "channels": 3, "patch": 8, "dilations": [1, 2, 4, 8],
                      "horizon": 24, "max_length": 1024, "eps": 0.001, "prompt": "Forecast:",
                      "quantiles": [0.05, 0.5, 0.95], "baseline": "last"}})",
                         "/m");
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(m->time_series.has_value());
  const TimeSeriesManifest& ts = *m->time_series;
  EXPECT_EQ(ts.encoder, "wavenet");
  EXPECT_EQ(ts.channels, 3);
  EXPECT_EQ(ts.patch, 8);
  EXPECT_THAT(ts.dilations, ElementsAre(1, 2, 4, 8));
  EXPECT_EQ(ts.horizon, 24);
  EXPECT_EQ(ts.max_length, 1024);
  EXPECT_FLOAT_EQ(ts.eps, 1e-3f);
  EXPECT_EQ(ts.prompt, "Forecast:");
  EXPECT_THAT(ts.quantiles, ElementsAre(0.05f, 0.5f, 0.95f));
  EXPECT_EQ(ts.baseline, "last");
  EXPECT_FALSE(m->vision.has_value());
}

TEST(ManifestTimeSeries, TheTimerEncodersKeys) {
  auto m = ParseManifest(R"({"checkpoint": "c.pth", "time_series": {"encoder": "timer",
      "channels": 1, "patch": 96, "heads": 8, "rope_theta": 5000, "horizon": 96,
      "max_length": 2880}})",
                         "/m");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->time_series->encoder, "timer");
  EXPECT_EQ(m->time_series->heads, 8);
  EXPECT_EQ(m->time_series->rope_theta, 5000.0f);
  EXPECT_TRUE(m->time_series->dilations.empty());
  auto golden = LoadManifest(std::string(MODRWKV_GOLDEN_DIR) + "/timeseries_timer");
  ASSERT_TRUE(golden.ok()) << golden.status();
  EXPECT_EQ(golden->time_series->encoder, "timer");
  EXPECT_EQ(golden->time_series->heads, 4);
  EXPECT_EQ(golden->time_series->patch, 8);
}

TEST(ManifestTimeSeries, DefaultsAndNoSection) {
  auto m = ParseManifest(R"({"checkpoint": "c.pth", "time_series": {"encoder": "wavenet",
      "channels": 1, "dilations": [1], "horizon": 1, "max_length": 4}})",
                         "/m");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->time_series->patch, 4);
  EXPECT_EQ(m->time_series->eps, 1e-5f);
  EXPECT_EQ(m->time_series->prompt, "");
  EXPECT_TRUE(m->time_series->quantiles.empty());
  EXPECT_EQ(m->time_series->baseline, "none");
  auto none = ParseManifest(R"({"checkpoint": "c.pth"})", "/m");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->time_series.has_value());
}

TEST(ManifestTimeSeries, TheShippedManifestsParse) {
  auto golden = LoadManifest(std::string(MODRWKV_GOLDEN_DIR) + "/timeseries");
  ASSERT_TRUE(golden.ok()) << golden.status();
  ASSERT_TRUE(golden->time_series.has_value());
  EXPECT_EQ(golden->time_series->channels, 2);
  EXPECT_THAT(golden->time_series->dilations, ElementsAre(1, 2, 4));
  EXPECT_EQ(golden->time_series->horizon, 6);
  EXPECT_EQ(golden->time_series->max_length, 256);
  auto demo = LoadManifest(std::string(MODRWKV_SOURCE_DIR) + "/assets/ts-demo");
  ASSERT_TRUE(demo.ok()) << demo.status();
  EXPECT_EQ(demo->time_series->channels, 1);
  EXPECT_THAT(demo->time_series->dilations, ElementsAre(1, 2, 4, 8, 1, 2, 4, 8));
  EXPECT_EQ(demo->time_series->horizon, 12);
  EXPECT_EQ(demo->time_series->max_length, 512);
  EXPECT_EQ(demo->checkpoint, std::string(MODRWKV_SOURCE_DIR) + "/assets/ts-demo/rwkv-0.pth");
}

TEST(ManifestTimeSeries, ErrorsNameTheKey) {
  struct Case {
    const char* section;
    const char* says;
  };
  constexpr char kRest[] = R"("channels": 1, "dilations": [1], "horizon": 2, "max_length": 8)";
  for (const Case& c : {
           Case{R"([])", "\"time_series\" must be an object"},
           Case{R"({"channels": 1, "dilations": [1], "horizon": 2, "max_length": 8})",
                "\"time_series.encoder\" is required"},
           Case{R"({"encoder": "tcn", REST})", "\"time_series.encoder\" is \"tcn\""},
           Case{R"({"encoder": "wavenet", "dilations": [1], "horizon": 2, "max_length": 8})",
                "\"time_series.channels\" is required"},
           Case{R"({"encoder": "wavenet", "channels": 1, "horizon": 2, "max_length": 8})",
                "\"time_series.dilations\" is required"},
           Case{R"({"encoder": "wavenet", "channels": 1, "dilations": [1], "max_length": 8})",
                "\"time_series.horizon\" is required"},
           Case{R"({"encoder": "wavenet", "channels": 1, "dilations": [1], "horizon": 2})",
                "\"time_series.max_length\" is required"},
           Case{R"({"encoder": "wavenet", "channels": 0, "dilations": [1], "horizon": 2,
                    "max_length": 8})",
                "\"time_series.channels\" must be an integer in 1..1048576"},
           Case{R"({"encoder": "wavenet", "channels": 1.5, "dilations": [1], "horizon": 2,
                    "max_length": 8})",
                "\"time_series.channels\""},
           Case{R"({"encoder": "wavenet", REST, "patch": -4})", "\"time_series.patch\""},
           Case{R"({"encoder": "wavenet", "channels": 1, "dilations": [], "horizon": 2,
                    "max_length": 8})",
                "\"time_series.dilations\" must be a non-empty array"},
           Case{R"({"encoder": "wavenet", "channels": 1, "dilations": 2, "horizon": 2,
                    "max_length": 8})",
                "\"time_series.dilations\" must be a non-empty array"},
           Case{R"({"encoder": "wavenet", "channels": 1, "dilations": [1, 0], "horizon": 2,
                    "max_length": 8})",
                "\"time_series.dilations[1]\""},
           Case{R"({"encoder": "wavenet", "channels": 1, "dilations": [1], "horizon": 0,
                    "max_length": 8})",
                "\"time_series.horizon\""},
           Case{R"({"encoder": "wavenet", "channels": 1, "dilations": [1], "horizon": 2,
                    "max_length": 3})",
                "\"time_series.max_length\" is 3, less than one patch (4 steps)"},
           Case{R"({"encoder": "wavenet", REST, "eps": 0})", "\"time_series.eps\""},
           Case{R"({"encoder": "wavenet", REST, "eps": "1e-5"})", "\"time_series.eps\""},
           Case{R"({"encoder": "wavenet", REST, "eps": 1e300})", "\"time_series.eps\""},
           Case{R"({"encoder": "wavenet", REST, "prompt": 5})", "\"time_series.prompt\""},
           Case{R"({"encoder": "wavenet", REST, "quantiles": 0.5})",
                "\"time_series.quantiles\" must be an array"},
           Case{R"({"encoder": "wavenet", REST, "quantiles": [0.5, 0.1]})",
                "\"time_series.quantiles[1]\" is 0.1: levels must increase, each in (0, 1)"},
           Case{R"({"encoder": "wavenet", REST, "quantiles": [1]})",
                "\"time_series.quantiles[0]\" is 1"},
           Case{R"({"encoder": "wavenet", REST, "quantiles": ["0.5"]})",
                "\"time_series.quantiles[0]\""},
           Case{R"({"encoder": "timer", "channels": 1, "horizon": 2, "max_length": 8})",
                "\"time_series.heads\" is required"},
           Case{R"({"encoder": "timer", "heads": 0, "channels": 1, "horizon": 2,
                    "max_length": 8})",
                "\"time_series.heads\" must be an integer"},
           Case{R"({"encoder": "timer", "heads": 2, REST})",
                "\"time_series.dilations\" does not apply to the timer encoder"},
           Case{R"({"encoder": "wavenet", REST, "heads": 2})",
                "\"time_series.heads\" does not apply to the wavenet encoder"},
           Case{R"({"encoder": "timer", "heads": 2, "channels": 1, "horizon": 2,
                    "max_length": 8, "rope_theta": 0.5})",
                "\"time_series.rope_theta\" must be a finite number > 1"},
           Case{R"({"encoder": "wavenet", REST, "baseline": "mean"})",
                "\"time_series.baseline\" must be \"none\" or \"last\""},
           Case{R"({"encoder": "wavenet", REST, "horizn": 5})",
                "\"time_series.horizn\" is not a key of \"time_series\""},
       }) {
    std::string section = c.section;
    if (const size_t at = section.find("REST"); at != std::string::npos)
      section.replace(at, 4, kRest);
    const std::string json = R"({"checkpoint": "c.pth", "time_series": )" + section + "}";
    SCOPED_TRACE(json);
    auto m = ParseManifest(json, "/d");
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(m.status().message(), HasSubstr(c.says));
  }
}

}  // namespace
}  // namespace modrwkv::encoders
