// Tests of encoders/speech/whisper_encoder*.cc against transformers' WhisperEncoder (fixtures:
// tools/golden/gen_whisper_fixtures.py). Metric: max |ours - ref| over an output, divided by
// max |ref| of that output, must be <= 1e-4.
#include "encoders/speech/whisper_encoder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_format.h"
#include "encoders/speech/whisper_random.h"
#include "engine/checkpoint/random_weights.h"
#include "tests/encoders/vision/cpu_layer_stack.h"

namespace modrwkv::encoders {
namespace {

using ::testing::HasSubstr;

const std::string kDir = std::string(MODRWKV_GOLDEN_DIR) + "/whisper/";

nlohmann::json Manifest() {
  std::ifstream in(kDir + "manifest.json");
  return nlohmann::json::parse(in);
}

std::vector<float> ReadF32(const std::string& name) {
  std::ifstream in(kDir + name, std::ios::binary | std::ios::ate);
  EXPECT_TRUE(in) << name;
  std::vector<float> v(static_cast<size_t>(in.tellg()) / 4);
  in.seekg(0);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
  return v;
}

double MaxRelError(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double err = 0, scale = 0;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    err = std::max(err, std::abs(static_cast<double>(got[i]) - want[i]));
    scale = std::max(scale, std::abs(static_cast<double>(want[i])));
  }
  return err / scale;
}

std::vector<float> Encode(const WhisperEncoder& e, const std::vector<float>& mel, int batch,
                          int threads) {
  cpu::ThreadPool pool(threads);
  std::vector<float> out(static_cast<size_t>(batch) * e.frames() * e.dim());
  absl::Status s = e.Forward(mel, batch, absl::MakeSpan(out), &pool);
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

class WhisperTinyTest : public ::testing::TestWithParam<std::string> {};

TEST_P(WhisperTinyTest, MatchesTransformers) {
  auto enc = WhisperEncoder::Load(kDir + GetParam());
  ASSERT_TRUE(enc.ok()) << enc.status();
  EXPECT_EQ((*enc)->frames(), 24);
  EXPECT_EQ((*enc)->mel_frames(), 48);
  EXPECT_EQ((*enc)->dim(), 48);
  const std::vector<float> mel = ReadF32("tiny_mel.bin");
  const std::vector<float> want = ReadF32("tiny_last_hidden_state.bin");
  for (int threads : {1, 2}) {
    const double err = MaxRelError(Encode(**enc, mel, 2, threads), want);
    EXPECT_LE(err, 1e-4) << GetParam() << " threads " << threads;
    RecordProperty("max_rel_error_" + std::to_string(threads), absl::StrFormat("%.3g", err));
  }
  // One clip at a time gives the same rows as the batch of two.
  const std::vector<float> one(mel.begin() + mel.size() / 2, mel.end());
  const std::vector<float> second(want.begin() + want.size() / 2, want.end());
  EXPECT_LE(MaxRelError(Encode(**enc, one, 1, 1), second), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Folders, WhisperTinyTest,
                         ::testing::Values("tiny_cond_gen", "tiny_model_bin", "tiny_encoder"));

TEST(WhisperTruncationTest, KeptFramesOfTheFrontEndsMask) {
  // Valid-frame counts that WhisperFeatureExtractor's attention mask gave for several clip
  // lengths, and the rows kept (the official x[:, :sum(mask) // 2 + 1]).
  const nlohmann::json manifest = Manifest();
  for (const auto& c : manifest["truncation"]) {
    auto k = WhisperKeptFrames(c["valid_mel_frames"].get<int>(), 1500);
    ASSERT_TRUE(k.ok());
    EXPECT_EQ(*k, c["kept_frames"].get<int>()) << c.dump();
  }
  EXPECT_EQ(*WhisperKeptFrames(0, 1500), 1);
  EXPECT_EQ(*WhisperKeptFrames(2998, 1500), 1500);
  EXPECT_EQ(*WhisperKeptFrames(2997, 1500), 1499);
  EXPECT_EQ(*WhisperKeptFrames(6000, 1500), 1500);  // capped, as the mask is
  EXPECT_THAT(WhisperKeptFrames(-1, 1500).status().message(), HasSubstr("must be >= 0"));
}

TEST(WhisperTruncationTest, EncodeKeepsTheFirstRowsOfEachClip) {
  auto enc = WhisperEncoder::Load(kDir + "tiny_encoder");
  ASSERT_TRUE(enc.ok()) << enc.status();
  const std::vector<float> mel = ReadF32("tiny_mel.bin");
  const std::vector<float> want = ReadF32("tiny_last_hidden_state.bin");
  cpu::ThreadPool pool(2);
  const std::vector<int> valid = {11, 48};  // 11 // 2 + 1 = 6 rows; 48 // 2 + 1 capped at 24
  auto clips = (*enc)->Encode(mel, valid, &pool);
  ASSERT_TRUE(clips.ok()) << clips.status();
  ASSERT_EQ(clips->size(), 2u);
  const int d = 48, per_clip = 24 * d;
  ASSERT_EQ((*clips)[0].size(), 6u * d);
  ASSERT_EQ((*clips)[1].size(), 24u * d);
  EXPECT_LE(MaxRelError((*clips)[0], std::vector<float>(want.begin(), want.begin() + 6 * d)), 1e-4);
  EXPECT_LE(MaxRelError((*clips)[1], std::vector<float>(want.begin() + per_clip, want.end())),
            1e-4);
  const std::vector<int> bad = {11, -3};
  EXPECT_THAT((*enc)->Encode(mel, bad, &pool).status().message(),
              HasSubstr("clip 1: valid mel frame count -3 must be >= 0"));
}

// The released shapes with seeded weights, built from tensors inside a (ModRWKV-like) checkpoint
// under a prefix, against rows and row sums of transformers' last_hidden_state.
void CheckRealShape(const std::string& name, const WhisperConfig& config) {
  const nlohmann::json m = Manifest()[name];
  const uint64_t seed = m["seed"].get<uint64_t>();
  std::vector<OwnedTensor> weights = MakeRandomWhisperWeights(config, seed);
  for (OwnedTensor& t : weights) t.name = "modality.world_encoder.model.encoder." + t.name;
  auto enc =
      WhisperEncoder::Create(config, ViewsOf(weights), "modality.world_encoder.model.encoder.");
  ASSERT_TRUE(enc.ok()) << enc.status();
  weights.clear();
  const int d = config.d_model, p = config.frames();
  const std::vector<float> out = Encode(**enc, RandomMel(config, 1, seed), 1, 2);
  const std::vector<int> rows = m["rows_checked"].get<std::vector<int>>();
  std::vector<float> got;
  for (int r : rows) got.insert(got.end(), out.begin() + r * d, out.begin() + (r + 1) * d);
  const double err = MaxRelError(got, ReadF32(name + "_rows.bin"));
  EXPECT_LE(err, 1e-4);
  ::testing::Test::RecordProperty("max_rel_error_rows", absl::StrFormat("%.3g", err));
  const std::vector<float> sums = ReadF32(name + "_row_sums.bin");
  const std::vector<float> abs_sums = ReadF32(name + "_row_abs_sums.bin");
  ASSERT_EQ(sums.size(), static_cast<size_t>(p));
  double worst = 0;
  for (int r = 0; r < p; ++r) {
    double s = 0;
    for (int i = 0; i < d; ++i) s += out[static_cast<size_t>(r) * d + i];
    worst = std::max(worst, std::abs(s - sums[r]) / abs_sums[r]);
  }
  EXPECT_LE(worst, 1e-4);  // every row's sum, relative to the row's sum of |x|
  ::testing::Test::RecordProperty("max_rel_error_row_sums", absl::StrFormat("%.3g", worst));
}

TEST(WhisperRealShapeTest, SmallSeededWeightsMatchTransformers) {
  CheckRealShape("whisper_small", WhisperSmallConfig());
}

TEST(WhisperRealShapeTest, MediumSeededWeightsMatchTransformers) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "1.1 TFLOP; the small shape covers the same code under sanitizers";
#endif
  CheckRealShape("whisper_medium", WhisperMediumConfig());
}

// With a layer runner (a GPU's in production, here one that runs the same layers on the CPU),
// the encoder hands it its layers and shape and returns what its CPU loop returns.
TEST(WhisperEncoderTest, ALayerRunnerGetsEveryLayer) {
  auto plain = WhisperEncoder::Load(kDir + "tiny_encoder");
  auto placed = WhisperEncoder::Load(kDir + "tiny_encoder");
  ASSERT_TRUE(plain.ok() && placed.ok()) << plain.status() << placed.status();
  const CpuLayerStack* runner = nullptr;
  ASSERT_TRUE((*placed)->UseLayerStack(CpuLayerStackFactory(&runner)).ok());
  ASSERT_NE(runner, nullptr);
  EXPECT_TRUE((*placed)->layers_placed());
  EXPECT_FALSE((*plain)->layers_placed());
  EXPECT_EQ(runner->layers(), (*plain)->config().encoder_layers);
  const std::vector<float> mel = ReadF32("tiny_mel.bin");
  EXPECT_EQ(Encode(**placed, mel, 2, 2), Encode(**plain, mel, 2, 2));
  EXPECT_EQ(runner->runs, 1);
}

// Stand-ins for a GPU's runners: a stem that records the log-mel it is handed and writes rows
// that name their position, and layers that change nothing.
class PatternStem final : public WhisperStemRunner {
 public:
  PatternStem(int rows_per_clip, int dim) : rows_per_clip(rows_per_clip), dim(dim) {}
  absl::Status Run(const float* mel, int batch, float* x) const override {
    this->batch = batch;
    this->mel.assign(mel, mel + static_cast<int64_t>(batch) * mel_floats);
    for (int64_t i = 0; i < int64_t{batch} * rows_per_clip * dim; ++i) x[i] = Pattern(i);
    return absl::OkStatus();
  }
  float Pattern(int64_t i) const { return std::cos(0.29f * i) + 0.02f * (i / dim); }
  const int rows_per_clip, dim;
  int64_t mel_floats = 0;
  mutable int batch = 0;
  mutable std::vector<float> mel;
};
class NoLayers final : public LayerStackRunner {
 public:
  absl::Status Run(float*, int) const override { return absl::OkStatus(); }
};

// With a stem runner, Forward hands it the log-mel and feeds its rows to the layers: with layers
// that change nothing, the output is the final LayerNorm of the runner's rows.
TEST(WhisperEncoderTest, AStemRunnerGetsTheMelAndItsRowsFeedTheLayers) {
  auto c = ParseWhisperConfig(R"({"model_type": "whisper", "d_model": 32, "encoder_layers": 2,
      "encoder_attention_heads": 2, "encoder_ffn_dim": 64, "num_mel_bins": 8,
      "max_source_positions": 10})");
  ASSERT_TRUE(c.ok()) << c.status();
  const std::vector<OwnedTensor> weights = MakeRandomWhisperWeights(*c, 6);
  const std::vector<float> ln_w = F32Values(weights, "layer_norm.weight"),
                           ln_b = F32Values(weights, "layer_norm.bias");
  ASSERT_EQ(ln_w.size(), 32u);
  auto enc = WhisperEncoder::Create(*c, ViewsOf(weights), "");
  ASSERT_TRUE(enc.ok()) << enc.status();
  const PatternStem* stem = nullptr;
  ASSERT_TRUE((*enc)
                  ->UseStem([&](const WhisperStemWeights& w, const WhisperConfig& config)
                                -> absl::StatusOr<std::unique_ptr<WhisperStemRunner>> {
                    EXPECT_EQ(w.conv1.cols, 3 * config.num_mel_bins);
                    auto r = std::make_unique<PatternStem>(config.frames(), config.d_model);
                    r->mel_floats = int64_t{config.num_mel_bins} * config.mel_frames();
                    stem = r.get();
                    return std::unique_ptr<WhisperStemRunner>(std::move(r));
                  })
                  .ok());
  ASSERT_TRUE(
      (*enc)
          ->UseLayerStack([](absl::Span<const EncoderLayerWeights>, const EncoderLayerShape&)
                              -> absl::StatusOr<std::unique_ptr<LayerStackRunner>> {
            return std::make_unique<NoLayers>();
          })
          .ok());
  EXPECT_TRUE((*enc)->stem_placed());
  const std::vector<float> mel = RandomMel(*c, 2, 6);
  const std::vector<float> out = Encode(**enc, mel, 2, 2);
  EXPECT_EQ(stem->batch, 2);
  EXPECT_EQ(stem->mel, mel);
  const int d = 32, rows = 2 * c->frames();
  ASSERT_EQ(out.size(), static_cast<size_t>(rows) * d);
  for (int r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int i = 0; i < d; ++i) mean += stem->Pattern(r * d + i);
    mean /= d;
    for (int i = 0; i < d; ++i) var += std::pow(stem->Pattern(r * d + i) - mean, 2);
    const double inv = 1 / std::sqrt(var / d + 1e-5);
    for (int i = 0; i < d; ++i) {
      const double want = (stem->Pattern(r * d + i) - mean) * inv * ln_w[i] + ln_b[i];
      ASSERT_NEAR(out[r * d + i], want, 1e-4) << "row " << r << ", column " << i;
    }
  }
}

TEST(WhisperEncoderTest, ConcurrentCallersWithTheirOwnPools) {
  auto enc = WhisperEncoder::Load(kDir + "tiny_encoder");
  ASSERT_TRUE(enc.ok()) << enc.status();
  const std::vector<float> mel = ReadF32("tiny_mel.bin");
  const std::vector<float> want = Encode(**enc, mel, 2, 1);
  std::vector<std::vector<float>> got(3);
  std::vector<std::thread> threads;
  for (auto& g : got) threads.emplace_back([&] { g = Encode(**enc, mel, 2, 1); });
  for (auto& t : threads) t.join();
  for (const auto& g : got) EXPECT_EQ(g, want);
}

class WhisperErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = ParseWhisperConfig(R"({"model_type": "whisper", "d_model": 32, "encoder_layers": 2,
        "encoder_attention_heads": 2, "encoder_ffn_dim": 64, "num_mel_bins": 8,
        "max_source_positions": 10})");
    ASSERT_TRUE(c.ok());
    config_ = *c;
    weights_ = MakeRandomWhisperWeights(config_, 5);
  }
  absl::Status CreateStatus() {
    return WhisperEncoder::Create(config_, ViewsOf(weights_), "").status();
  }
  OwnedTensor* Find(const std::string& name) {
    for (auto& t : weights_)
      if (t.name == name) return &t;
    return nullptr;
  }
  WhisperConfig config_;
  std::vector<OwnedTensor> weights_;
};

TEST_F(WhisperErrorTest, MissingTensorsAreNamed) {
  EXPECT_TRUE(CreateStatus().ok());
  for (const char* name : {"layers.1.fc2.bias", "embed_positions.weight", "conv2.weight",
                           "layers.0.self_attn.k_proj.weight", "layer_norm.bias"}) {
    std::vector<OwnedTensor> saved = weights_;
    std::erase_if(weights_, [&](const OwnedTensor& t) { return t.name == name; });
    EXPECT_THAT(CreateStatus().message(), HasSubstr(std::string("missing tensor ") + name)) << name;
    weights_ = saved;
  }
  // Under a prefix, the full name is reported.
  EXPECT_THAT(
      WhisperEncoder::Create(config_, ViewsOf(weights_), "model.encoder.").status().message(),
      HasSubstr("missing tensor model.encoder.conv1.weight (expected shape [32,8,3])"));
}

TEST_F(WhisperErrorTest, WrongShapeAndExtraKeys) {
  OwnedTensor* c1 = Find("conv1.weight");
  ASSERT_NE(c1, nullptr);
  c1->shape = {32, 16, 3};  // a 128-mel checkpoint with an 8-mel config
  c1->bytes.resize(32 * 16 * 3 * 4);
  EXPECT_THAT(CreateStatus().message(),
              HasSubstr("tensor conv1.weight has shape [32,16,3], expected [32,8,3]"));
  weights_ = MakeRandomWhisperWeights(config_, 5);
  OwnedTensor extra = weights_.back();
  extra.name = "layers.0.self_attn.k_proj.bias";  // not used by Whisper; ignored
  weights_.push_back(extra);
  EXPECT_TRUE(CreateStatus().ok());
}

TEST_F(WhisperErrorTest, Bf16WeightsLoad) {
  for (OwnedTensor& t : weights_) {
    std::vector<uint8_t> b(t.bytes.size() / 2);
    for (size_t i = 0; i < b.size() / 2; ++i) {
      float f;
      std::memcpy(&f, t.bytes.data() + 4 * i, 4);
      const uint16_t h = F32ToBF16(f);
      std::memcpy(b.data() + 2 * i, &h, 2);
    }
    t.bytes = std::move(b);
    t.dtype = DType::kBF16;
  }
  EXPECT_TRUE(CreateStatus().ok());
}

TEST_F(WhisperErrorTest, BadInputs) {
  auto enc = WhisperEncoder::Create(config_, ViewsOf(weights_), "");
  ASSERT_TRUE(enc.ok());
  cpu::ThreadPool pool(1);
  std::vector<float> mel(8 * 19), out(10 * 32);
  EXPECT_THAT((*enc)->Forward(mel, 1, absl::MakeSpan(out), &pool).message(),
              HasSubstr("expected [1,8,20]"));
  mel.resize(8 * 20);
  out.resize(10);
  EXPECT_THAT((*enc)->Forward(mel, 1, absl::MakeSpan(out), &pool).message(),
              HasSubstr("expected [1,10,32]"));
  EXPECT_THAT((*enc)->Forward(mel, 0, absl::MakeSpan(out), &pool).message(),
              HasSubstr("batch 0 must be > 0"));
  EXPECT_THAT(WhisperEncoder::Load(kDir + "no_such_folder").status().message(),
              HasSubstr("config.json"));
}

}  // namespace
}  // namespace modrwkv::encoders
