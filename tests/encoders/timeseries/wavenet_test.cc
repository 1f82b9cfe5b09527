// Tests encoders/timeseries/wavenet: encoder rows against the PyTorch reference
// (tests/golden/timeseries, every case, with and without a thread pool), causality (a row depends
// only on itself and earlier rows), and load errors naming the tensor or the layer count.
#include "encoders/timeseries/wavenet.h"

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/encoders/timeseries/ts_golden.h"

namespace modrwkv::encoders {
namespace {

using golden::MaxRelDiff;
using ::testing::HasSubstr;

constexpr char kPrefix[] = "modality.ts_encoder.";

std::unique_ptr<WaveNetEncoder> FixtureEncoder() {
  auto e = WaveNetEncoder::Load(ts_golden::FixtureCheckpoint().tensors(), kPrefix, {1, 2, 4});
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? *std::move(e) : nullptr;
}

TEST(WaveNetGolden, EncoderRowsMatchTheReference) {
  const auto enc = FixtureEncoder();
  ASSERT_NE(enc, nullptr);
  EXPECT_EQ(enc->input_dim(), 8);
  EXPECT_EQ(enc->dim(), 16);
  EXPECT_EQ(enc->layers(), 3);
  cpu::ThreadPool pool(2);
  double worst = 0;
  for (const nlohmann::json& c : ts_golden::Cases()) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const std::vector<float> rows = ts_golden::Floats(c["rows_in"]);
    const std::vector<float> want = ts_golden::Floats(c["encoder_rows"]);
    const int R = c["rows"];
    for (cpu::ThreadPool* p : {&pool, static_cast<cpu::ThreadPool*>(nullptr)}) {
      auto got = enc->Encode(rows, R, p);
      ASSERT_TRUE(got.ok()) << got.status();
      ASSERT_EQ(got->size(), want.size());
      const double err = MaxRelDiff(*got, want);
      worst = std::max(worst, err);
      EXPECT_LT(err, 1e-5);  // max |diff| / max |reference|
    }
  }
  RecordProperty("max_rel_diff", absl::StrFormat("%.3g", worst));
}

TEST(WaveNet, EachRowSeesOnlyItselfAndEarlierRows) {
  const auto enc = FixtureEncoder();
  ASSERT_NE(enc, nullptr);
  const int R = 11;
  std::vector<float> rows(R * 8);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = std::sin(0.7f * i);
  auto full = enc->Encode(rows, R, nullptr);
  ASSERT_TRUE(full.ok());
  // A prefix encodes to the same rows, bit for bit (the GEMM is batch-invariant).
  for (int k : {1, 2, 5, 10}) {
    auto part = enc->Encode(absl::MakeConstSpan(rows.data(), k * 8), k, nullptr);
    ASSERT_TRUE(part.ok());
    EXPECT_EQ(*part, std::vector<float>(full->begin(), full->begin() + k * 16)) << k;
  }
  // Changing row 6 changes rows 6.. only; with dilations 1, 2, 4 every later row sees it.
  rows[6 * 8 + 3] += 1;
  auto changed = enc->Encode(rows, R, nullptr);
  ASSERT_TRUE(changed.ok());
  for (int r = 0; r < R; ++r) {
    const std::vector<float> a(full->begin() + r * 16, full->begin() + (r + 1) * 16);
    const std::vector<float> b(changed->begin() + r * 16, changed->begin() + (r + 1) * 16);
    if (r < 6) {
      EXPECT_EQ(a, b) << r;
    } else {
      EXPECT_NE(a, b) << r;
    }
  }
}

TEST(WaveNet, RefusesARowCountThatDoesNotMatchTheValues) {
  const auto enc = FixtureEncoder();
  ASSERT_NE(enc, nullptr);
  std::vector<float> rows(3 * 8);
  EXPECT_FALSE(enc->Encode(rows, 2, nullptr).ok());
  EXPECT_FALSE(enc->Encode({}, 0, nullptr).ok());
}

std::string LoadError(const std::map<std::string, TensorView>& t, std::vector<int> dil) {
  auto e = WaveNetEncoder::Load(t, kPrefix, dil);
  EXPECT_FALSE(e.ok());
  return e.ok() ? "" : std::string(e.status().message());
}

TEST(WaveNet, LoadErrorsNameTheTensorOrTheLayerCount) {
  const std::map<std::string, TensorView>& good = ts_golden::FixtureCheckpoint().tensors();
  EXPECT_THAT(LoadError(good, {1, 2}),
              HasSubstr("the checkpoint has 3 WaveNet layers (modality.ts_encoder.layers.0..2) "
                        "but time_series.dilations names 2"));
  EXPECT_THAT(LoadError(good, {1, 2, 4, 8}), HasSubstr("has 3 WaveNet layers"));
  EXPECT_THAT(LoadError(good, {1, 0, 4}), HasSubstr("dilations[1] is 0"));

  auto missing = good;
  missing.erase("modality.ts_encoder.layers.1.skip.bias");
  EXPECT_THAT(LoadError(missing, {1, 2, 4}),
              HasSubstr("tensor modality.ts_encoder.layers.1.skip.bias is missing"));

  auto shape = good;
  shape["modality.ts_encoder.layers.2.conv.weight"].shape = {32, 16, 3};
  EXPECT_THAT(LoadError(shape, {1, 2, 4}),
              HasSubstr("tensor modality.ts_encoder.layers.2.conv.weight has shape [32,16,3], "
                        "expected [32,16,2]"));

  auto res = good;
  res["modality.ts_encoder.layers.0.res.weight"].shape = {16, 8};
  EXPECT_THAT(LoadError(res, {1, 2, 4}),
              HasSubstr("modality.ts_encoder.layers.0.res.weight has shape [16,8], expected "
                        "[16,16]"));

  auto extra = good;
  TensorView v = good.at("modality.ts_encoder.out.bias");
  v.name = "modality.ts_encoder.out.scale";
  extra[v.name] = v;
  EXPECT_THAT(LoadError(extra, {1, 2, 4}),
              HasSubstr("unexpected tensor modality.ts_encoder.out.scale"));
}

}  // namespace
}  // namespace modrwkv::encoders
