// WhisperFrontEnd against transformers' WhisperFeatureExtractor (tests/golden/audio/whisper):
// short clips (padded), exactly 30 s, longer than 30 s (trimmed), 80 and 128 mel bins; the config
// reader; decode + features end to end; concurrent use.
#include "encoders/audio/whisper_features.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "encoders/audio/audio_decode.h"
#include "tests/encoders/audio/audio_golden.h"

namespace modrwkv::encoders {
namespace {

using ::modrwkv::encoders::testing::AudioManifest;
using ::modrwkv::encoders::testing::ReadAudioBytes;
using ::modrwkv::encoders::testing::ReadAudioF32;
using ::modrwkv::encoders::testing::SyntheticClip;
using ::testing::HasSubstr;

std::unique_ptr<WhisperFrontEnd> FrontEnd(int mels) {
  WhisperFeatureConfig cfg;
  cfg.feature_size = mels;
  auto fe = WhisperFrontEnd::Create(cfg);
  EXPECT_TRUE(fe.ok()) << fe.status();
  return std::move(fe).value();
}

// Max |ours - reference| over the stored frames, and over the rest against the pad value.
double CompareWithGolden(const WhisperFeatures& got, const nlohmann::json& entry) {
  const int mels = entry["feature_size"];
  const int stored = entry["stored_frames"];
  const std::vector<float> want = ReadAudioF32(entry["features"]);
  EXPECT_EQ(want.size(), static_cast<size_t>(mels) * stored);
  EXPECT_EQ(got.num_mels, mels);
  EXPECT_EQ(got.num_frames, 3000);
  EXPECT_EQ(got.valid_frames, entry["valid_frames"].get<int>());
  double diff = 0;
  for (int m = 0; m < mels; ++m) {
    for (int t = 0; t < 3000; ++t) {
      const double w =
          t < stored ? want[static_cast<size_t>(m) * stored + t] : entry["pad_value"].get<double>();
      diff = std::max(diff, std::abs(got.values[static_cast<size_t>(m) * 3000 + t] - w));
    }
  }
  return diff;
}

std::vector<float> Input(const nlohmann::json& entry) {
  const std::string input = entry["input"];
  if (input.rfind("synthetic:", 0) == 0) return SyntheticClip(std::stoi(input.substr(10)));
  return ReadAudioF32(input);
}

// The target: 1e-4 max abs on the log-mel (values span about -1..2). FFTW and torch's FFT
// differ in float rounding; log10 turns a relative error e of the power into 0.43 e / 4.
TEST(WhisperFeatures, MatchesTransformersOnEveryGolden) {
  const auto manifest = AudioManifest();
  int checked = 0;
  for (const auto& entry : manifest["whisper"]) {
    SCOPED_TRACE(entry["name"].get<std::string>());
    const std::vector<float> x = Input(entry);
    ASSERT_EQ(x.size(), entry["samples"].get<size_t>());
    const WhisperFeatures got = FrontEnd(entry["feature_size"])->Compute(x);
    const double diff = CompareWithGolden(got, entry);
    EXPECT_LE(diff, 1e-4);
    std::cout << entry["name"].get<std::string>() << " (" << entry["feature_size"] << " mels, "
              << x.size() << " samples): max |diff| " << diff << "\n";
    ++checked;
  }
  EXPECT_EQ(checked, 6);
}

// The same clip straight from its FLAC bytes: decode + features, as the server will run them.
TEST(WhisperFeatures, DecodeThenFeatures) {
  const auto manifest = AudioManifest();
  const auto& entry = manifest["whisper"][0];
  ASSERT_EQ(entry["name"], "speech_16k_mono");
  auto samples = DecodeAudio(ReadAudioBytes("files/speech_16k_mono.flac"), {}, "audio");
  ASSERT_TRUE(samples.ok()) << samples.status();
  EXPECT_LE(CompareWithGolden(FrontEnd(80)->Compute(*samples), entry), 1e-4);
}

TEST(WhisperFeatures, AttentionMaskCounts) {
  auto fe = FrontEnd(80);
  EXPECT_EQ(fe->Compute(std::vector<float>(1, 0.1f)).valid_frames, 1);
  EXPECT_EQ(fe->Compute(std::vector<float>(160, 0.1f)).valid_frames, 1);
  EXPECT_EQ(fe->Compute(std::vector<float>(161, 0.1f)).valid_frames, 2);
  EXPECT_EQ(fe->Compute(std::vector<float>(480000, 0.1f)).valid_frames, 3000);
  EXPECT_EQ(fe->Compute(std::vector<float>(600000, 0.1f)).valid_frames, 3000);
  const WhisperFeatures empty = fe->Compute({});
  EXPECT_EQ(empty.valid_frames, 0);
  EXPECT_EQ(empty.values.size(), 80u * 3000);
  for (float v : empty.values) ASSERT_EQ(v, (-10.0f + 4.0f) / 4.0f);  // log10(1e-10), no clamp
}

TEST(WhisperFeatures, MelFiltersAreSlaneyNormalisedTriangles) {
  auto fe = FrontEnd(80);
  const std::vector<float>& f = fe->mel_filters();
  ASSERT_EQ(f.size(), 201u * 80);
  // Bin 0 (DC) is in no filter; every filter has a peak; the top of the bank stops at 8 kHz.
  for (int m = 0; m < 80; ++m) EXPECT_EQ(f[m], 0.0f);
  for (int m = 0; m < 80; ++m) {
    float peak = 0;
    for (int k = 0; k < 201; ++k) peak = std::max(peak, f[static_cast<size_t>(k) * 80 + m]);
    EXPECT_GT(peak, 0.0f) << m;
  }
  for (int m = 0; m < 80; ++m) EXPECT_EQ(f[200 * 80 + m], 0.0f);
}

TEST(WhisperFeatures, ConfigFromJson) {
  auto cfg = WhisperFeatureConfig::FromJson(
      R"({"feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 128,
          "sampling_rate": 16000, "hop_length": 160, "chunk_length": 30, "n_fft": 400,
          "padding_value": 0.0, "n_samples": 480000, "nb_max_frames": 3000,
          "return_attention_mask": false, "processor_class": "WhisperProcessor"})");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->feature_size, 128);
  EXPECT_EQ(cfg->num_frames(), 3000);
  cfg = WhisperFeatureConfig::FromJson("{}");
  ASSERT_TRUE(cfg.ok());
  EXPECT_EQ(cfg->feature_size, 80);
  EXPECT_EQ(cfg->n_fft, 400);

  auto bad = WhisperFeatureConfig::FromJson(R"({"feature_size": "80"})");
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("\"feature_size\""));
  bad = WhisperFeatureConfig::FromJson(R"({"n_fft": 401})");
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("n_fft 401 (even)"));
  bad = WhisperFeatureConfig::FromJson(R"({"feature_extractor_type": "Wav2Vec2FeatureExtractor"})");
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("expected \"WhisperFeatureExtractor\""));
  EXPECT_FALSE(WhisperFeatureConfig::FromJson("[1, 2]").ok());
  EXPECT_FALSE(WhisperFeatureConfig::FromJson("not json").ok());
}

TEST(WhisperFeatures, ConfigFromFolder) {
  const std::string dir = ::testing::TempDir() + "/whisper_cfg";
  std::filesystem::create_directories(dir);
  std::filesystem::remove(dir + "/preprocessor_config.json");
  auto cfg = WhisperFeatureConfig::FromFolder(dir);
  ASSERT_TRUE(cfg.ok());
  EXPECT_EQ(cfg->feature_size, 80);  // no file: defaults
  std::ofstream(dir + "/preprocessor_config.json") << R"({"feature_size": 128})";
  cfg = WhisperFeatureConfig::FromFolder(dir);
  ASSERT_TRUE(cfg.ok());
  EXPECT_EQ(cfg->feature_size, 128);
  std::ofstream(dir + "/preprocessor_config.json") << R"({"hop_length": 0})";
  cfg = WhisperFeatureConfig::FromFolder(dir);
  EXPECT_THAT(std::string(cfg.status().message()), HasSubstr("preprocessor_config.json"));
}

TEST(WhisperFeatures, ConcurrentComputeAgrees) {
  auto fe = FrontEnd(80);
  const std::vector<float> x = SyntheticClip(100000);
  const WhisperFeatures want = fe->Compute(x);
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      // Another front end made and destroyed meanwhile: planning under the lock.
      auto other = FrontEnd(128);
      for (int i = 0; i < 2; ++i) {
        if (fe->Compute(x).values != want.values) ++bad;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
}

}  // namespace
}  // namespace modrwkv::encoders
