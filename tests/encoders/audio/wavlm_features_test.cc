// NormalizeWavLmInput against Wav2Vec2FeatureExtractor(do_normalize=True)
// (tests/golden/audio/wavlm).
#include "encoders/audio/wavlm_features.h"

#include <gtest/gtest.h>

#include <cmath>
#include <iostream>

#include "tests/encoders/audio/audio_golden.h"

namespace modrwkv::encoders {
namespace {

using ::modrwkv::encoders::testing::AudioManifest;
using ::modrwkv::encoders::testing::MaxAbsDiff;
using ::modrwkv::encoders::testing::ReadAudioF32;

// transformers computes the mean and variance in float32 (numpy's pairwise sums), we in double:
// the outputs (unit variance, peaks of a few units) agree to a few float32 ulps.
TEST(WavLmFeatures, MatchesTheOfficialExtractor) {
  const auto manifest = AudioManifest();
  ASSERT_FALSE(manifest["wavlm"].empty());
  for (const auto& entry : manifest["wavlm"]) {
    const std::vector<float> x = ReadAudioF32(entry["input"]);
    const std::vector<float> want = ReadAudioF32(entry["output"]);
    ASSERT_EQ(x.size(), want.size());
    const std::vector<float> got = NormalizeWavLmInput(x);
    const double diff = MaxAbsDiff(got, want);
    EXPECT_LE(diff, 1e-5);
    std::cout << entry["input"].get<std::string>() << ": max |diff| " << diff << "\n";
  }
}

TEST(WavLmFeatures, ZeroMeanUnitVariance) {
  std::vector<float> x(16000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.3f + 0.2f * std::sin(0.01f * i);
  const std::vector<float> y = NormalizeWavLmInput(x);
  double mean = 0, var = 0;
  for (float v : y) mean += v;
  mean /= y.size();
  for (float v : y) var += (v - mean) * (v - mean);
  var /= y.size();
  EXPECT_NEAR(mean, 0, 1e-6);
  EXPECT_NEAR(var, 1, 1e-4);  // var / (var + 1e-7)
}

TEST(WavLmFeatures, ConstantAndEmptyInputs) {
  EXPECT_TRUE(NormalizeWavLmInput({}).empty());
  const std::vector<float> y = NormalizeWavLmInput(std::vector<float>(100, 0.5f));
  for (float v : y) EXPECT_EQ(v, 0.0f);  // eps keeps silence finite
}

}  // namespace
}  // namespace modrwkv::encoders
