// Tests of encoders/speech/wavlm_encoder*.cc against transformers' WavLMModel (fixtures:
// tools/golden/gen_wavlm_fixtures.py). Metric: max |ours - ref| over an output, divided by
// max |ref| of that output, must be <= 1e-4.
#include "encoders/speech/wavlm_encoder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_format.h"
#include "encoders/speech/wavlm_random.h"
#include "engine/checkpoint/random_weights.h"

namespace modrwkv::encoders {
namespace {

using ::testing::HasSubstr;

const std::string kDir = std::string(MODRWKV_GOLDEN_DIR) + "/wavlm/";

template <typename T = float>
std::vector<T> ReadBin(const std::string& name) {
  std::ifstream in(kDir + name, std::ios::binary | std::ios::ate);
  EXPECT_TRUE(in) << name;
  std::vector<T> v(static_cast<size_t>(in.tellg()) / sizeof(T));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
  return v;
}

nlohmann::json Manifest() {
  std::ifstream in(kDir + "manifest.json");
  return nlohmann::json::parse(in);
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

std::vector<float> Encode(const WavlmEncoder& e, const std::vector<float>& audio, int batch,
                          int threads) {
  cpu::ThreadPool pool(threads);
  const int n = static_cast<int>(audio.size()) / batch;
  std::vector<float> out(static_cast<size_t>(batch) * e.OutputFrames(n) * e.output_dim());
  absl::Status s = e.Forward(audio, batch, n, absl::MakeSpan(out), &pool);
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

TEST(WavlmBucketTest, MatchesTransformers) {
  const std::vector<int32_t> b320 = ReadBin<int32_t>("buckets_320_800.bin");
  ASSERT_EQ(b320.size(), 3999u);
  for (int i = 0; i < 3999; ++i) {
    ASSERT_EQ(WavlmRelativeBucket(i - 1999, 320, 800), b320[i]) << "relative " << i - 1999;
  }
  const std::vector<int32_t> b32 = ReadBin<int32_t>("buckets_32_40.bin");
  ASSERT_EQ(b32.size(), 399u);
  for (int i = 0; i < 399; ++i) {
    ASSERT_EQ(WavlmRelativeBucket(i - 199, 32, 40), b32[i]) << "relative " << i - 199;
  }
}

// Both layouts, each from safetensors and from pytorch_model.bin, with the weight norm under
// its old (weight_g / weight_v) and new (parametrizations.weight.original0 / 1) names, bare and
// under "wavlm.".
class WavlmSmallTest : public ::testing::TestWithParam<std::string> {};

TEST_P(WavlmSmallTest, MatchesTransformers) {
  const std::string folder = GetParam();
  const std::string layout = folder.substr(0, folder.find('_'));
  auto e = WavlmEncoder::Load(kDir + folder);
  ASSERT_TRUE(e.ok()) << e.status();
  const nlohmann::json m = Manifest()[layout];
  const std::vector<int> shape = m["last_hidden_state"]["shape"].get<std::vector<int>>();
  const std::vector<float> audio = ReadBin(m["audio"]["file"].get<std::string>());
  const std::vector<float> want = ReadBin(m["last_hidden_state"]["file"].get<std::string>());
  const int n = static_cast<int>(audio.size()) / 2;
  EXPECT_EQ((*e)->OutputFrames(n), shape[1]);
  EXPECT_EQ((*e)->output_dim(), shape[2]);
  for (int threads : {1, 2}) {
    const double err = MaxRelError(Encode(**e, audio, 2, threads), want);
    EXPECT_LE(err, 1e-4) << folder << " threads " << threads;
    RecordProperty("max_rel_error_" + std::to_string(threads), absl::StrFormat("%.3g", err));
  }
  // One clip at a time gives the rows of the batch of two.
  const std::vector<float> one(audio.begin() + n, audio.end());
  const std::vector<float> second(want.begin() + want.size() / 2, want.end());
  EXPECT_LE(MaxRelError(Encode(**e, one, 1, 2), second), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Folders, WavlmSmallTest,
                         ::testing::Values("group", "group_bin_new_names", "layer", "layer_bin"));

// The hub's shapes with seeded weights (too large to commit): a few full rows and every row's
// sum against transformers.
void CheckSeeded(const std::string& name, const std::string& shape, int threads) {
  const nlohmann::json m = Manifest()[name];
  auto config = WavlmConfigForShape(shape);
  ASSERT_TRUE(config.ok()) << config.status();
  const uint64_t seed = m["seed"].get<uint64_t>();
  std::vector<OwnedTensor> weights = MakeRandomWavlmWeights(*config, seed);
  // A ModRWKV checkpoint stores its encoder under a prefix.
  for (OwnedTensor& t : weights) t.name = "encoder.model." + t.name;
  auto e = WavlmEncoder::Create(*config, ViewsOf(weights), "encoder.model.");
  ASSERT_TRUE(e.ok()) << e.status();
  weights.clear();
  const int samples = m["samples"].get<int>(), frames = m["frames"].get<int>();
  const int d = config->hidden_size;
  ASSERT_EQ((*e)->OutputFrames(samples), frames);
  const std::vector<float> out = Encode(**e, RandomWavlmAudio(1, samples, seed), 1, threads);
  const std::vector<int> rows = m["rows_checked"].get<std::vector<int>>();
  std::vector<float> got;
  for (int r : rows) got.insert(got.end(), out.begin() + r * d, out.begin() + (r + 1) * d);
  const double err = MaxRelError(got, ReadBin(name + "_rows.bin"));
  EXPECT_LE(err, 1e-4);
  ::testing::Test::RecordProperty("max_rel_error_rows", absl::StrFormat("%.3g", err));
  const std::vector<float> sums = ReadBin(name + "_row_sums.bin");
  const std::vector<float> abs_sums = ReadBin(name + "_row_abs_sums.bin");
  ASSERT_EQ(sums.size(), static_cast<size_t>(frames));
  double worst = 0;
  for (int r = 0; r < frames; ++r) {
    double s = 0;
    for (int i = 0; i < d; ++i) s += out[static_cast<size_t>(r) * d + i];
    worst = std::max(worst, std::abs(s - sums[r]) / abs_sums[r]);
  }
  EXPECT_LE(worst, 1e-4);  // every row's sum, relative to the row's sum of |x|
  ::testing::Test::RecordProperty("max_rel_error_row_sums", absl::StrFormat("%.3g", worst));
}

TEST(WavlmSeededTest, BasePlusMatchesTransformers) { CheckSeeded("base_plus", "base+", 2); }

TEST(WavlmSeededTest, LargeMatchesTransformers) { CheckSeeded("large", "large", 2); }

// A small WavLM (32 wide, 2 layers, 7 convolutions of 32 channels).
absl::StatusOr<WavlmConfig> SmallConfig() {
  return ParseWavlmConfig(R"({"model_type": "wavlm", "hidden_size": 32,
      "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
      "conv_dim": [32, 32, 32, 32, 32, 32, 32], "num_conv_pos_embeddings": 16,
      "num_conv_pos_embedding_groups": 4})");
}

// A runner standing in for a GPU's: it records what Forward hands it and adds `add` to the rows.
class RecordingRunner final : public WavlmLayerRunner {
 public:
  RecordingRunner(int layers, float add) : layers(layers), add(add) {}
  absl::Status Run(float* x, int batch, int frames, const float* rel) const override {
    calls.push_back({batch, frames});
    rels.emplace_back(rel, rel + heads * (2 * frames - 1));
    for (int64_t i = 0; i < int64_t{batch} * frames * dim; ++i) x[i] += add;
    return absl::OkStatus();
  }
  const int layers;
  const float add;
  int heads = 0, dim = 0;
  mutable std::vector<std::pair<int, int>> calls;
  mutable std::vector<std::vector<float>> rels;
};

// With a layer runner, WavlmEncoder hands it every layer, and per Forward its rows, the frame
// count and the relative position bias of rel_attn_embed's buckets, and keeps the rows it
// returns.
TEST(WavlmEncoderTest, ALayerRunnerGetsTheLayersRowsAndRelativeBias) {
  auto config = ParseWavlmConfig(R"({"model_type": "wavlm", "hidden_size": 32,
      "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
      "conv_dim": [32, 32, 32, 32, 32, 32, 32], "num_conv_pos_embeddings": 16,
      "num_conv_pos_embedding_groups": 4, "num_buckets": 32, "max_bucket_distance": 40})");
  ASSERT_TRUE(config.ok()) << config.status();
  const std::vector<OwnedTensor> weights = MakeRandomWavlmWeights(*config, 2);
  const std::vector<float> embed =  // [buckets][heads]
      F32Values(weights, "encoder.layers.0.attention.rel_attn_embed.weight");
  ASSERT_EQ(embed.size(), 32u * 2);
  std::vector<const RecordingRunner*> runners;
  auto factory = [&](float add) -> WavlmLayerFactory {
    return
        [&runners, add](absl::Span<const WavlmLayerWeights> layers,
                        const WavlmConfig& c) -> absl::StatusOr<std::unique_ptr<WavlmLayerRunner>> {
          auto r = std::make_unique<RecordingRunner>(static_cast<int>(layers.size()), add);
          r->heads = c.num_attention_heads;
          r->dim = c.hidden_size;
          runners.push_back(r.get());
          return std::unique_ptr<WavlmLayerRunner>(std::move(r));
        };
  };
  auto same = WavlmEncoder::Create(*config, ViewsOf(weights), "");
  auto plus = WavlmEncoder::Create(*config, ViewsOf(weights), "");
  ASSERT_TRUE(same.ok() && plus.ok());
  ASSERT_TRUE((*same)->UseLayerStack(factory(0.0f)).ok());
  ASSERT_TRUE((*plus)->UseLayerStack(factory(1.0f)).ok());
  ASSERT_EQ(runners.size(), 2u);
  EXPECT_TRUE((*same)->layers_placed());
  EXPECT_EQ(runners[0]->layers, 2);
  const int samples = 8000, frames = (*same)->OutputFrames(samples);
  const std::vector<float> audio = RandomWavlmAudio(2, samples, 2);
  const std::vector<float> a = Encode(**same, audio, 2, 2), b = Encode(**plus, audio, 2, 2);
  ASSERT_EQ(runners[0]->calls.size(), 1u);
  EXPECT_EQ(runners[0]->calls[0], std::make_pair(2, frames));
  const std::vector<float>& rel = runners[0]->rels[0];
  for (int head = 0; head < 2; ++head) {
    for (int r = -(frames - 1); r <= frames - 1; ++r) {
      ASSERT_EQ(rel[head * (2 * frames - 1) + r + frames - 1],
                embed[WavlmRelativeBucket(r, 32, 40) * 2 + head])
          << "head " << head << " relative " << r;
    }
  }
  // Post-LN layout: the output is the runner's rows as they are.
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(b[i] - a[i], 1.0f, 1e-5) << i;
}

// A stem runner standing in for a GPU's: it records the clips Forward hands it and writes rows
// that name their clip, frame and column.
class PatternStem final : public WavlmStemRunner {
 public:
  explicit PatternStem(int dim) : dim(dim) {}
  absl::Status Run(const float* samples, int batch, int num_samples, float* x) const override {
    clips.assign(samples, samples + int64_t{batch} * num_samples);
    calls.push_back({batch, num_samples});
    const int64_t n = int64_t{batch} * frames * dim;
    for (int64_t i = 0; i < n; ++i) x[i] = Pattern(i);
    return absl::OkStatus();
  }
  float Pattern(int64_t i) const { return std::sin(0.37f * i) + 0.01f * (i / dim); }
  const int dim;
  int frames = 0;
  mutable std::vector<float> clips;
  mutable std::vector<std::pair<int, int>> calls;
};

// With a stem runner, Forward hands it the clips and feeds its rows to the layers: with layers
// that change nothing, the output is the runner's rows. In this post-LN layout the stem is given
// the encoder's LayerNorm (it comes before the layers), so the encoder applies none of its own.
TEST(WavlmEncoderTest, AStemRunnerGetsTheClipsAndItsRowsFeedTheLayers) {
  auto config = SmallConfig();
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_FALSE(config->do_stable_layer_norm);
  const std::vector<OwnedTensor> weights = MakeRandomWavlmWeights(*config, 3);
  const std::vector<float> ln_w = F32Values(weights, "encoder.layer_norm.weight"),
                           ln_b = F32Values(weights, "encoder.layer_norm.bias");
  ASSERT_EQ(ln_w.size(), 32u);
  auto e = WavlmEncoder::Create(*config, ViewsOf(weights), "");
  ASSERT_TRUE(e.ok()) << e.status();
  const int samples = 8000, frames = (*e)->OutputFrames(samples), batch = 2;
  const PatternStem* stem = nullptr;
  ASSERT_TRUE(
      (*e)->UseStem([&](const WavlmStemWeights& w,
                        const WavlmConfig& c) -> absl::StatusOr<std::unique_ptr<WavlmStemRunner>> {
            EXPECT_EQ(w.convs.size(), 7u);
            EXPECT_EQ(w.pos.size(), 4u);
            EXPECT_EQ(w.ln_w, ln_w);
            EXPECT_EQ(w.ln_b, ln_b);
            auto r = std::make_unique<PatternStem>(c.hidden_size);
            r->frames = frames;
            stem = r.get();
            return std::unique_ptr<WavlmStemRunner>(std::move(r));
          })
          .ok());
  ASSERT_TRUE((*e)->UseLayerStack([](absl::Span<const WavlmLayerWeights> layers, const WavlmConfig&)
                                      -> absl::StatusOr<std::unique_ptr<WavlmLayerRunner>> {
                    return std::make_unique<RecordingRunner>(static_cast<int>(layers.size()), 0.0f);
                  })
                  .ok());
  EXPECT_TRUE((*e)->stem_placed());
  const std::vector<float> audio = RandomWavlmAudio(batch, samples, 3);
  const std::vector<float> out = Encode(**e, audio, batch, 2);
  ASSERT_EQ(stem->calls.size(), 1u);
  EXPECT_EQ(stem->calls[0], std::make_pair(batch, samples));
  EXPECT_EQ(stem->clips, audio);
  ASSERT_EQ(out.size(), static_cast<size_t>(batch) * frames * 32);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], stem->Pattern(i)) << i;
}

// In the pre-LN layout the encoder's LayerNorm follows the layers: the stem is not given it.
TEST(WavlmEncoderTest, APreLnStemRunnerIsNotGivenTheFinalLayerNorm) {
  auto config = ParseWavlmConfig(R"({"model_type": "wavlm", "hidden_size": 32,
      "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 48,
      "conv_dim": [16, 16], "conv_kernel": [10, 3], "conv_stride": [5, 2],
      "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4,
      "do_stable_layer_norm": true, "feat_extract_norm": "layer", "conv_bias": true})");
  ASSERT_TRUE(config.ok()) << config.status();
  const std::vector<OwnedTensor> weights = MakeRandomWavlmWeights(*config, 5);
  auto e = WavlmEncoder::Create(*config, ViewsOf(weights), "");
  ASSERT_TRUE(e.ok()) << e.status();
  bool called = false;
  ASSERT_TRUE(
      (*e)->UseStem([&](const WavlmStemWeights& w,
                        const WavlmConfig& c) -> absl::StatusOr<std::unique_ptr<WavlmStemRunner>> {
            called = true;
            EXPECT_TRUE(w.ln_w.empty() && w.ln_b.empty());
            return std::unique_ptr<WavlmStemRunner>(std::make_unique<PatternStem>(c.hidden_size));
          })
          .ok());
  EXPECT_TRUE(called);
}

TEST(WavlmEncoderTest, MissingAndMisshapenTensorsAreNamed) {
  auto config = SmallConfig();
  ASSERT_TRUE(config.ok()) << config.status();
  const std::vector<OwnedTensor> all = MakeRandomWavlmWeights(*config, 1);
  ASSERT_TRUE(WavlmEncoder::Create(*config, ViewsOf(all), "").ok());
  for (const char* key :
       {"encoder.layers.1.attention.gru_rel_pos_const",
        "encoder.layers.0.attention.rel_attn_embed.weight", "encoder.pos_conv_embed.conv.weight_v",
        "feature_extractor.conv_layers.0.layer_norm.bias",
        "feature_extractor.conv_layers.6.conv.weight"}) {
    std::vector<OwnedTensor> some;
    for (const OwnedTensor& t : all) {
      if (t.name != key) some.push_back(t);
    }
    auto e = WavlmEncoder::Create(*config, ViewsOf(some), "");
    ASSERT_FALSE(e.ok()) << key;
    EXPECT_EQ(e.status().code(), absl::StatusCode::kNotFound);
    EXPECT_THAT(e.status().message(), HasSubstr(std::string("missing tensor ") + key));
  }
  std::vector<OwnedTensor> bad = all;
  for (OwnedTensor& t : bad) {
    if (t.name == "encoder.layers.1.feed_forward.output_dense.weight") t.shape = {64, 32};
  }
  auto e = WavlmEncoder::Create(*config, ViewsOf(bad), "");
  ASSERT_FALSE(e.ok());
  EXPECT_THAT(e.status().message(),
              HasSubstr("encoder.layers.1.feed_forward.output_dense.weight has shape [64,32], "
                        "expected [32,64]"));
  // A checkpoint with its encoder under a prefix, asked for without it.
  std::vector<OwnedTensor> prefixed = all;
  for (OwnedTensor& t : prefixed) t.name = "encoder.model." + t.name;
  auto p = WavlmEncoder::Create(*config, ViewsOf(prefixed), "");
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(), HasSubstr("missing tensor feature_extractor."));
}

TEST(WavlmEncoderTest, BadInputsAreErrors) {
  auto e = WavlmEncoder::Load(kDir + "group");
  ASSERT_TRUE(e.ok()) << e.status();
  cpu::ThreadPool pool(1);
  std::vector<float> audio(2 * 1000), out(2 * 2 * 32);
  ASSERT_EQ((*e)->OutputFrames(1000), 2);
  EXPECT_TRUE((*e)->Forward(audio, 2, 1000, absl::MakeSpan(out), &pool).ok());
  EXPECT_FALSE((*e)->Forward(audio, 2, 999, absl::MakeSpan(out), &pool).ok());
  EXPECT_FALSE((*e)->Forward(audio, 0, 1000, absl::MakeSpan(out), &pool).ok());
  std::vector<float> small(2 * 1 * 32);
  EXPECT_FALSE((*e)->Forward(audio, 2, 1000, absl::MakeSpan(small), &pool).ok());
  std::vector<float> shorter(300);
  auto s = (*e)->Forward(shorter, 1, 300, absl::MakeSpan(out), &pool);
  EXPECT_THAT(s.message(), HasSubstr("too short"));
  EXPECT_FALSE(WavlmEncoder::Load(kDir + "no_such_folder").ok());
}

TEST(WavlmEncoderTest, ConcurrentCallersWithTheirOwnPools) {
  auto e = WavlmEncoder::Load(kDir + "layer");
  ASSERT_TRUE(e.ok()) << e.status();
  const std::vector<float> audio = ReadBin("layer_audio.bin");
  const std::vector<float> want = Encode(**e, audio, 2, 1);
  std::vector<std::vector<float>> got(3);
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) threads.emplace_back([&, i] { got[i] = Encode(**e, audio, 2, 2); });
  for (std::thread& t : threads) t.join();
  for (const auto& g : got) EXPECT_EQ(g, want);  // PanelGemm is batch- and thread-invariant
}

}  // namespace
}  // namespace modrwkv::encoders
