// Tests of encoders/vision/vision_tower*.cc against transformers' SiglipVisionModel and
// CLIPVisionModel (fixtures: tools/golden/gen_vision_fixtures.py). Metric: max |ours - ref| over
// an output, divided by max |ref| of that output, must be <= 1e-4.
#include "encoders/vision/vision_tower.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_format.h"
#include "encoders/vision/random_vit.h"
#include "engine/checkpoint/random_weights.h"
#include "tests/encoders/vision/cpu_layer_stack.h"

namespace modrwkv::encoders {
namespace {

using ::testing::HasSubstr;

const std::string kDir = std::string(MODRWKV_GOLDEN_DIR) + "/vision/";

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

std::vector<float> Encode(const VisionTower& tower, const std::vector<float>& pixels, int batch,
                          int threads) {
  cpu::ThreadPool pool(threads);
  std::vector<float> out(static_cast<size_t>(batch) * tower.output_rows() * tower.output_dim());
  absl::Status s = tower.Forward(pixels, batch, absl::MakeSpan(out), &pool);
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

class SiglipSmallTest : public ::testing::TestWithParam<std::string> {};

TEST_P(SiglipSmallTest, MatchesTransformers) {
  auto tower = VisionTower::Load(kDir + GetParam(), {});
  ASSERT_TRUE(tower.ok()) << tower.status();
  EXPECT_EQ((*tower)->output_rows(), 16);
  EXPECT_EQ((*tower)->output_dim(), 64);
  const std::vector<float> px = ReadF32("siglip_small_pixels.bin");
  const std::vector<float> want = ReadF32("siglip_small_last_hidden_state.bin");
  for (int threads : {1, 2}) {
    const double err = MaxRelError(Encode(**tower, px, 2, threads), want);
    EXPECT_LE(err, 1e-4) << GetParam() << " threads " << threads;
    RecordProperty("max_rel_error_" + std::to_string(threads), absl::StrFormat("%.3g", err));
  }
  // One image at a time gives the same rows as the batch of two.
  const std::vector<float> one(px.begin() + px.size() / 2, px.end());
  const std::vector<float> second(want.begin() + want.size() / 2, want.end());
  EXPECT_LE(MaxRelError(Encode(**tower, one, 1, 1), second), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Folders, SiglipSmallTest,
                         ::testing::Values("siglip_small", "siglip_small_bin",
                                           "siglip_small_full"));

TEST(ClipSmallTest, LastHiddenStateAndEarlierLayers) {
  const std::vector<float> px = ReadF32("clip_small_pixels.bin");
  struct Case {
    int feature_layer;
    const char* file;
  };
  for (Case c :
       {Case{-1, "clip_small_last_hidden_state.bin"}, Case{3, "clip_small_last_hidden_state.bin"},
        Case{-2, "clip_small_hidden_states_m2.bin"}, Case{0, "clip_small_hidden_states_0.bin"}}) {
    VisionTowerOptions opt;
    opt.feature_layer = c.feature_layer;
    auto tower = VisionTower::Load(kDir + "clip_small", opt);
    ASSERT_TRUE(tower.ok()) << tower.status();
    EXPECT_EQ((*tower)->output_rows(), 17);
    const double err = MaxRelError(Encode(**tower, px, 2, 2), ReadF32(c.file));
    EXPECT_LE(err, 1e-4) << "feature_layer " << c.feature_layer;
    RecordProperty(absl::StrFormat("max_rel_error_layer_%d", c.feature_layer),
                   absl::StrFormat("%.3g", err));
  }
  // Without the class token: rows 1..16 of each image.
  VisionTowerOptions opt;
  opt.feature_layer = -2;
  opt.drop_class_token = true;
  auto tower = VisionTower::Load(kDir + "clip_small", opt);
  ASSERT_TRUE(tower.ok()) << tower.status();
  ASSERT_EQ((*tower)->output_rows(), 16);
  const std::vector<float> all = ReadF32("clip_small_hidden_states_m2.bin");
  std::vector<float> want;
  for (int b = 0; b < 2; ++b)
    want.insert(want.end(), all.begin() + (b * 17 + 1) * 64, all.begin() + (b + 1) * 17 * 64);
  EXPECT_LE(MaxRelError(Encode(**tower, px, 2, 1), want), 1e-4);
}

TEST(Siglip2BaseTest, SeededWeightsMatchTransformers) {
  std::ifstream mf(kDir + "manifest.json");
  const nlohmann::json m = nlohmann::json::parse(mf)["siglip2_base"];
  const uint64_t seed = m["seed"].get<uint64_t>();
  auto config = ParseVitConfig(R"({"model_type": "siglip",
      "vision_config": {"image_size": 384, "patch_size": 16}})");
  ASSERT_TRUE(config.ok()) << config.status();
  const std::vector<OwnedTensor> weights = MakeRandomVitWeights(*config, seed);
  // A generation-B ModRWKV checkpoint stores the encoder under "encoder.model.".
  std::vector<OwnedTensor> prefixed = weights;
  for (OwnedTensor& t : prefixed) t.name = "encoder.model." + t.name;
  auto tower = VisionTower::Create(*config, ViewsOf(prefixed), "encoder.model.", {});
  ASSERT_TRUE(tower.ok()) << tower.status();
  const std::vector<float> out = Encode(**tower, RandomPixels(*config, 1, seed), 1, 2);
  const std::vector<int> rows = m["rows_checked"].get<std::vector<int>>();
  std::vector<float> got;
  for (int r : rows) got.insert(got.end(), out.begin() + r * 768, out.begin() + (r + 1) * 768);
  const double err = MaxRelError(got, ReadF32("siglip2_base_rows.bin"));
  EXPECT_LE(err, 1e-4);
  RecordProperty("max_rel_error_rows", absl::StrFormat("%.3g", err));
  const std::vector<float> sums = ReadF32("siglip2_base_row_sums.bin");
  const std::vector<float> abs_sums = ReadF32("siglip2_base_row_abs_sums.bin");
  ASSERT_EQ(sums.size(), 576u);
  double worst = 0;
  for (int r = 0; r < 576; ++r) {
    double s = 0;
    for (int i = 0; i < 768; ++i) s += out[r * 768 + i];
    worst = std::max(worst, std::abs(s - sums[r]) / abs_sums[r]);
  }
  EXPECT_LE(worst, 1e-4);  // every row's sum, relative to the row's sum of |x|
  RecordProperty("max_rel_error_row_sums", absl::StrFormat("%.3g", worst));
}

// With a layer runner (a GPU's in production, here one that runs the same layers on the CPU),
// the tower hands it exactly the layers it would run — CLIP's up to the feature layer — and
// returns what its CPU loop returns.
TEST(VisionTowerTest, ALayerRunnerGetsTheLayersTheTowerRuns) {
  const std::vector<float> px = ReadF32("clip_small_pixels.bin");
  for (const int feature_layer : {-1, -2, 0}) {
    VisionTowerOptions opt;
    opt.feature_layer = feature_layer;
    auto plain = VisionTower::Load(kDir + "clip_small", opt);
    auto placed = VisionTower::Load(kDir + "clip_small", opt);
    ASSERT_TRUE(plain.ok() && placed.ok()) << plain.status() << placed.status();
    const CpuLayerStack* runner = nullptr;
    ASSERT_TRUE((*placed)->UseLayerStack(CpuLayerStackFactory(&runner)).ok());
    ASSERT_NE(runner, nullptr);
    EXPECT_TRUE((*placed)->layers_placed());
    EXPECT_FALSE((*plain)->layers_placed());
    EXPECT_EQ(runner->layers(), feature_layer == -1 ? 3 : feature_layer == -2 ? 2 : 0);
    EXPECT_EQ(Encode(**placed, px, 2, 2), Encode(**plain, px, 2, 2)) << feature_layer;
    EXPECT_EQ(runner->runs, 1);
  }
  auto siglip = VisionTower::Load(kDir + "siglip_small", {});
  ASSERT_TRUE(siglip.ok()) << siglip.status();
  const absl::Status refused = (*siglip)->UseLayerStack(
      [](absl::Span<const EncoderLayerWeights>,
         const EncoderLayerShape&) -> absl::StatusOr<std::unique_ptr<LayerStackRunner>> {
        return absl::ResourceExhaustedError("no room on the device");
      });
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
}

// A stem runner standing in for a GPU's: it records the pixels it is handed and writes rows that
// name their position.
class PatternStem final : public VisionStemRunner {
 public:
  PatternStem(int64_t rows_per_image, int64_t dim, int64_t image_floats)
      : rows_per_image(rows_per_image), dim(dim), image_floats(image_floats) {}
  absl::Status Run(const float* pixels, int batch, float* x) const override {
    this->pixels.assign(pixels, pixels + batch * image_floats);
    for (int64_t i = 0; i < batch * rows_per_image * dim; ++i) x[i] = Pattern(i);
    return absl::OkStatus();
  }
  static float Pattern(int64_t i) { return std::sin(0.13f * i) + 0.001f * i; }
  const int64_t rows_per_image, dim, image_floats;
  mutable std::vector<float> pixels;
};

// With a stem runner, the tower hands it the pixels and its rows are the first layer's input: a
// CLIP tower whose feature layer is 0 (the embeddings, no layer run) returns them as they are.
TEST(VisionTowerTest, AStemRunnerGetsThePixelsAndItsRowsFeedTheLayers) {
  VisionTowerOptions opt;
  opt.feature_layer = 0;
  auto tower = VisionTower::Load(kDir + "clip_small", opt);
  ASSERT_TRUE(tower.ok()) << tower.status();
  const VitConfig& c = (*tower)->config();
  const PatternStem* stem = nullptr;
  ASSERT_TRUE((*tower)
                  ->UseStem([&](const VisionStemWeights& w, const VitConfig& config)
                                -> absl::StatusOr<std::unique_ptr<VisionStemRunner>> {
                    EXPECT_EQ(w.patch.rows, config.hidden_size);
                    EXPECT_EQ(w.class_emb.size(), static_cast<size_t>(config.hidden_size));
                    auto r = std::make_unique<PatternStem>(
                        config.num_positions(), config.hidden_size,
                        int64_t{config.num_channels} * config.image_size * config.image_size);
                    stem = r.get();
                    return std::unique_ptr<VisionStemRunner>(std::move(r));
                  })
                  .ok());
  EXPECT_TRUE((*tower)->stem_placed());
  const std::vector<float> px = ReadF32("clip_small_pixels.bin");
  const std::vector<float> out = Encode(**tower, px, 2, 2);
  EXPECT_EQ(stem->pixels, px);
  ASSERT_EQ(out.size(), static_cast<size_t>(2) * c.num_positions() * c.hidden_size);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], PatternStem::Pattern(i)) << i;
}

TEST(VisionTowerTest, ConcurrentCallersWithTheirOwnPools) {
  auto tower = VisionTower::Load(kDir + "siglip_small", {});
  ASSERT_TRUE(tower.ok()) << tower.status();
  const std::vector<float> px = ReadF32("siglip_small_pixels.bin");
  const std::vector<float> want = Encode(**tower, px, 2, 1);
  std::vector<std::vector<float>> got(3);
  std::vector<std::thread> threads;
  for (auto& g : got) threads.emplace_back([&] { g = Encode(**tower, px, 2, 1); });
  for (auto& t : threads) t.join();
  for (const auto& g : got) EXPECT_EQ(g, want);
}

class VisionTowerErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = ParseVitConfig(R"({"model_type": "siglip_vision_model", "hidden_size": 64,
        "image_size": 32, "intermediate_size": 128, "num_attention_heads": 2,
        "num_hidden_layers": 2, "patch_size": 8})");
    ASSERT_TRUE(c.ok());
    config_ = *c;
    weights_ = MakeRandomVitWeights(config_, 5);
  }
  absl::Status CreateStatus(const VisionTowerOptions& opt = {}) {
    return VisionTower::Create(config_, ViewsOf(weights_), "", opt).status();
  }
  OwnedTensor* Find(const std::string& name) {
    for (auto& t : weights_)
      if (t.name == name) return &t;
    return nullptr;
  }
  VitConfig config_;
  std::vector<OwnedTensor> weights_;
};

TEST_F(VisionTowerErrorTest, MissingTensor) {
  EXPECT_TRUE(CreateStatus().ok());
  std::erase_if(weights_,
                [](const OwnedTensor& t) { return t.name == "encoder.layers.1.mlp.fc2.bias"; });
  EXPECT_THAT(CreateStatus().message(),
              HasSubstr("missing tensor encoder.layers.1.mlp.fc2.bias (expected shape [64])"));
}

TEST_F(VisionTowerErrorTest, WrongShape) {
  OwnedTensor* q = Find("encoder.layers.1.self_attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  q->shape = {64, 32};
  q->bytes.resize(64 * 32 * 4);
  EXPECT_THAT(CreateStatus().message(),
              HasSubstr("tensor encoder.layers.1.self_attn.q_proj.weight has shape [64,32], "
                        "expected [64,64]"));
}

TEST_F(VisionTowerErrorTest, Bf16WeightsLoad) {
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

TEST_F(VisionTowerErrorTest, BadOptionsAndInputs) {
  VisionTowerOptions opt;
  opt.feature_layer = -2;
  EXPECT_THAT(CreateStatus(opt).message(), HasSubstr("not supported for SigLIP"));
  auto tower = VisionTower::Create(config_, ViewsOf(weights_), "", {});
  ASSERT_TRUE(tower.ok());
  cpu::ThreadPool pool(1);
  std::vector<float> px(3 * 16 * 16), out(16 * 64);
  EXPECT_THAT((*tower)->Forward(px, 1, absl::MakeSpan(out), &pool).message(),
              HasSubstr("expected [1,3,32,32]"));
  px.resize(3 * 32 * 32);
  out.resize(10);
  EXPECT_THAT((*tower)->Forward(px, 1, absl::MakeSpan(out), &pool).message(),
              HasSubstr("expected [1,16,64]"));
  EXPECT_THAT(VisionTower::Load(kDir + "no_such_folder", {}).status().message(),
              HasSubstr("config.json"));
}

}  // namespace
}  // namespace modrwkv::encoders
