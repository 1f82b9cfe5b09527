// The time-series golden fixtures (tests/golden/timeseries,
// tools/golden/gen_timeseries_fixtures.py) for the tests of encoders/timeseries: the manifest's
// cases, the checkpoint, a loaded pipeline.
#pragma once

#include <fstream>
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

inline nlohmann::json Fixtures() {
  std::ifstream f(kDir + "manifest.json");
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

inline constexpr int kNEmbd = 64;  // the fixture's RWKV7 width (manifest.json "llm")

inline const Checkpoint& FixtureCheckpoint() {
  static const Checkpoint* ckpt = [] {
    auto c = Checkpoint::Open(kDir + "rwkv-0.pth");
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? c->release() : nullptr;
  }();
  return *ckpt;
}

inline std::unique_ptr<TimeSeriesPipeline> FixturePipeline() {
  auto p =
      TimeSeriesPipeline::Load(FixtureCheckpoint().tensors(), FixtureManifest(), kNEmbd, "golden");
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *std::move(p) : nullptr;
}

// A case's float32 file named by the fixture manifest's entry (e.g. c["encoder_rows"]).
inline std::vector<float> Floats(const nlohmann::json& entry) {
  return golden::ReadF32(kDir + entry["file"].get<std::string>());
}

inline Series Input(const nlohmann::json& c) {
  Series s;
  s.length = c["input"]["shape"][0];
  s.channels = c["input"]["shape"][1];
  s.values = Floats(c["input"]);
  return s;
}

}  // namespace modrwkv::encoders::ts_golden
