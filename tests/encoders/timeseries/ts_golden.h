// The time-series golden fixtures (tests/golden/timeseries,
// tools/golden/gen_timeseries_fixtures.py) for the tests of encoders/timeseries: the manifest's
// cases, the checkpoint, a loaded pipeline; and the quantile variant (tests/golden/
// timeseries_quantiles, --variant quantiles: the same model with a head that also forecasts the
// 0.1 / 0.5 / 0.9 quantiles, baseline "last").
#pragma once

#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "encoders/timeseries/series.h"
#include "encoders/timeseries/timeseries_manifest.h"
#include "encoders/timeseries/timeseries_model.h"
#include "engine/checkpoint/checkpoint.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/golden_floats.h"

namespace modrwkv::encoders::ts_golden {

inline const std::string kDir = std::string(MODRWKV_GOLDEN_DIR) + "/timeseries/";
inline const std::string kQuantileDir = std::string(MODRWKV_GOLDEN_DIR) + "/timeseries_quantiles/";
inline const std::string kTimerDir = std::string(MODRWKV_GOLDEN_DIR) + "/timeseries_timer/";

inline nlohmann::json Fixtures(const std::string& dir = kDir) {
  std::ifstream f(dir + "manifest.json");
  return nlohmann::json::parse(f);
}

// The cases, by value: `for (c : Fixtures()["cases"])` would iterate a destroyed temporary.
inline nlohmann::json Cases() {
  nlohmann::json cases = Fixtures()["cases"];
  EXPECT_EQ(cases.size(), 4u);  // t32, t45, t7, t45_prompt
  return cases;
}

// The fixture's model manifest section (tests/golden/timeseries/modrwkv-model.json), by hand so
// that these tests do not depend on the manifest parser: c 2, P 4, dilations [1, 2, 4], H 6.
inline TimeSeriesManifest FixtureManifest() {
  TimeSeriesManifest m;
  m.channels = 2;
  m.patch = 4;
  m.dilations = {1, 2, 4};
  m.horizon = 6;
  m.max_length = 256;
  m.eps = 1e-5f;
  return m;
}

// The quantile variant's manifest section: as FixtureManifest, plus its head's settings.
inline TimeSeriesManifest QuantileManifest() {
  TimeSeriesManifest m = FixtureManifest();
  m.quantiles = {0.1f, 0.5f, 0.9f};
  m.baseline = "last";
  return m;
}

// The Timer variant's (--variant timer): encoder "timer", 4 heads, patch 8.
inline TimeSeriesManifest TimerManifest() {
  TimeSeriesManifest m = FixtureManifest();
  m.encoder = "timer";
  m.dilations.clear();
  m.heads = 4;
  m.patch = 8;
  return m;
}

inline constexpr int kNEmbd = 64;  // the fixture's RWKV7 width (manifest.json "llm")

inline const Checkpoint& FixtureCheckpoint(const std::string& dir = kDir) {
  static auto* ckpts = new std::map<std::string, const Checkpoint*>();
  const Checkpoint*& ckpt = (*ckpts)[dir];
  if (ckpt == nullptr) {
    auto c = Checkpoint::Open(dir + "rwkv-0.pth");
    EXPECT_TRUE(c.ok()) << c.status();
    ckpt = c.ok() ? c->release() : nullptr;
  }
  return *ckpt;
}

inline std::unique_ptr<TimeSeriesPipeline> FixturePipeline() {
  auto p =
      TimeSeriesPipeline::Load(FixtureCheckpoint().tensors(), FixtureManifest(), kNEmbd, "golden");
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *std::move(p) : nullptr;
}

inline std::unique_ptr<TimeSeriesPipeline> QuantilePipeline() {
  auto p = TimeSeriesPipeline::Load(FixtureCheckpoint(kQuantileDir).tensors(), QuantileManifest(),
                                    kNEmbd, "golden-q");
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *std::move(p) : nullptr;
}

// A case's float32 file named by the fixture manifest's entry (e.g. c["encoder_rows"]).
inline std::vector<float> Floats(const nlohmann::json& entry, const std::string& dir = kDir) {
  return golden::ReadF32(dir + entry["file"].get<std::string>());
}

inline Series Input(const nlohmann::json& c, const std::string& dir = kDir) {
  Series s;
  s.length = c["input"]["shape"][0];
  s.channels = c["input"]["shape"][1];
  s.values = Floats(c["input"], dir);
  return s;
}

}  // namespace modrwkv::encoders::ts_golden
