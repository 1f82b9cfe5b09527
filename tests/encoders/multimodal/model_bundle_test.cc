// Tests encoders/multimodal: the model manifest, and OpenModelBundle's whole vision forward —
// image file -> libvips decode -> SigLIP preprocessing -> tower -> adapter -> splice -> RWKV7 —
// against the official generation A and B model code (tests/golden/vision_forward, written by
// tools/golden/gen_vision_forward_fixture.py).
#include "encoders/multimodal/model_bundle.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/cpu/thread_pool.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/golden_floats.h"

namespace modrwkv::encoders {
namespace {

namespace fs = std::filesystem;
using golden::MaxDiffOverStd;
using golden::MaxRelDiff;
using golden::ReadF32;
using ::testing::HasSubstr;

const fs::path kDir = fs::path(MODRWKV_GOLDEN_DIR) / "vision_forward";

nlohmann::json FixtureManifest() {
  std::ifstream f(kDir / "manifest.json");
  return nlohmann::json::parse(f);
}

std::string ReadBytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// A fresh folder per test for manifests.
class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("modrwkv_bundle_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }
  void Write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ / name) << text;
  }

 private:
  fs::path path_;
};

absl::StatusOr<ModelBundle> Open(const std::string& model, const std::string& encoder = "") {
  BundleOptions b;
  b.model = model;
  b.vision_encoder = encoder;
  ModelOptions m;
  m.threads = 1;
  return OpenModelBundle(b, m, CheckpointOptions{}, nullptr);
}

// Runs `inputs` on slot 0 of a fresh state and returns the logits after the last row.
std::vector<float> LastLogits(Model& model, const std::vector<InputRowsView>& inputs) {
  EXPECT_TRUE(model.ResetSlot(0).ok());
  StepEntry e;
  e.slot = 0;
  e.inputs = inputs;
  e.output = StepOutput::kLogits;
  std::vector<StepResult> results;
  absl::Status st = model.Step({e}, &results);
  EXPECT_TRUE(st.ok()) << st;
  if (!st.ok()) return {};
  return std::vector<float>(results[0].logits.begin(), results[0].logits.end());
}

// The image's rows as the bundle's pipeline makes them from the file.
EmbeddingRows EncodeFixtureImage(const ModelBundle& b) {
  const std::string bytes = ReadBytes(kDir / "image.png");
  cpu::ThreadPool pool(1);
  absl::StatusOr<EmbeddingRows> rows = b.vision->EncodeImage(
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), "image",
      &pool);
  EXPECT_TRUE(rows.ok()) << rows.status();
  return rows.ok() ? *std::move(rows) : EmbeddingRows{};
}

std::vector<float> LastRow(const std::vector<float>& logits, int vocab) {
  return std::vector<float>(logits.end() - vocab, logits.end());
}

// Generation A as users download it: a bare checkpoint plus the encoder's Hugging Face folder.
// The image rows are prepended to the prompt's tokens.
TEST(ModelBundle, GenerationAWholeForwardMatchesTheOfficialModel) {
  const nlohmann::json m = FixtureManifest();
  auto b = Open((kDir / "rwkv-0.pth").string(), (kDir / "encoder").string());
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->layout.generation, 'A');
  ASSERT_NE(b->vision, nullptr);
  EXPECT_TRUE(b->encoder_missing.empty());
  EXPECT_EQ(b->image_splice.mode, SpliceMode::kPrepend);
  EXPECT_EQ(b->image_splice.rows, 16);

  const EmbeddingRows rows = EncodeFixtureImage(*b);
  ASSERT_EQ(rows.rows, 16);
  ASSERT_EQ(rows.dim, 64);
  EXPECT_LT(MaxRelDiff(rows.data, ReadF32((kDir / "gen_a_adapter_output.bin").string())), 1e-4);

  const std::vector<int32_t> tokens = m["gen_a"]["token_ids"].get<std::vector<int32_t>>();
  const int vocab = b->model->config().vocab_size;
  const std::vector<float> got =
      LastLogits(*b->model, {InputRowsView::Embeddings(rows.data), InputRowsView::Tokens(tokens)});
  const std::vector<float> want = LastRow(ReadF32((kDir / "gen_a_logits.bin").string()), vocab);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_LT(MaxDiffOverStd(got, want), 1e-4);
  EXPECT_EQ(std::max_element(got.begin(), got.end()) - got.begin(),
            m["gen_a"]["logits_argmax"].get<int>());
}

// Generation B through a model directory: the manifest names the encoder folder and the marker
// token ids (this fixture's vocabulary has 256 rows, so the official 65530/65531 do not exist).
// The encoder's weights come from the checkpoint's encoder.model.* keys, not from the folder.
TEST(ModelBundle, GenerationBWholeForwardMatchesTheOfficialModel) {
  const nlohmann::json m = FixtureManifest();
  TempDir dir;
  dir.Write("modrwkv-model.json", nlohmann::json({{"format", 1},
                                                  {"checkpoint", (kDir / "rwkv-b.pth").string()},
                                                  {"vision",
                                                   {{"encoder", (kDir / "encoder").string()},
                                                    {"image_start", m["gen_b"]["vision_start_id"]},
                                                    {"image_end", m["gen_b"]["vision_end_id"]}}}})
                                      .dump());
  auto b = Open(dir.path().string());
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->layout.generation, 'B');
  EXPECT_EQ(b->layout.encoder_prefix, "encoder.model.");
  ASSERT_NE(b->vision, nullptr);
  EXPECT_EQ(b->image_splice.mode, SpliceMode::kReplacePad);
  EXPECT_EQ(b->image_splice.start_token, m["gen_b"]["vision_start_id"].get<int>());
  EXPECT_EQ(b->image_splice.end_token, m["gen_b"]["vision_end_id"].get<int>());

  const EmbeddingRows rows = EncodeFixtureImage(*b);
  EXPECT_LT(MaxRelDiff(rows.data, ReadF32((kDir / "gen_b_adapter_output.bin").string())), 1e-4);

  // The official prompt holds start, 16 pads, end; ours is start, the rows, end.
  const std::vector<int32_t> ids = m["gen_b"]["token_ids"].get<std::vector<int32_t>>();
  const auto start = std::find(ids.begin(), ids.end(), b->image_splice.start_token);
  const auto end = std::find(ids.begin(), ids.end(), b->image_splice.end_token);
  ASSERT_EQ(end - start, 17);
  const std::vector<int32_t> before(ids.begin(), start + 1);
  const std::vector<int32_t> after(end, ids.end());
  const int vocab = b->model->config().vocab_size;
  const std::vector<float> got =
      LastLogits(*b->model, {InputRowsView::Tokens(before), InputRowsView::Embeddings(rows.data),
                             InputRowsView::Tokens(after)});
  const std::vector<float> want = LastRow(ReadF32((kDir / "gen_b_logits.bin").string()), vocab);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_LT(MaxDiffOverStd(got, want), 1e-4);
}

// A vision checkpoint without an encoder folder serves text and says why images are off.
TEST(ModelBundle, AVisionCheckpointWithoutEncoderServesTextAndSaysWhy) {
  auto b = Open((kDir / "rwkv-0.pth").string());
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->vision, nullptr);
  EXPECT_THAT(b->encoder_missing, HasSubstr("--vision-encoder"));
  EXPECT_EQ(b->model->config().vocab_size, 256);
}

TEST(ModelBundle, AMissingEncoderFolderIsAnErrorNamingIt) {
  auto b = Open((kDir / "rwkv-0.pth").string(), "/nonexistent/siglip");
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(b.status().message(), HasSubstr("/nonexistent/siglip"));
}

TEST(Manifest, ParsesKeysAndResolvesPathsAgainstTheFolder) {
  auto m = ParseManifest(R"({"format": 1, "checkpoint": "w/rwkv-0.pth", "vocab": "v.txt",
      "chat_template": "{image}U: {text}\u0017A:", "stop_tokens": [24, 261], "ban_tokens": [0],
      "vision": {"encoder": "siglip", "splice": "replace_pad", "feature_layer": -2,
                 "drop_class_token": true, "image_start": "<s>", "image_end": 9,
                 "adapter": [{"op": "linear", "weights": "proj.0"}]}})",
                         "/models/demo");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->checkpoint, "/models/demo/w/rwkv-0.pth");
  EXPECT_EQ(m->vocab, "/models/demo/v.txt");
  EXPECT_EQ(m->stop_tokens, (std::vector<int32_t>{24, 261}));
  EXPECT_EQ(m->ban_tokens, (std::vector<int32_t>{0}));
  ASSERT_TRUE(m->vision.has_value());
  EXPECT_EQ(m->vision->encoder, "/models/demo/siglip");
  EXPECT_EQ(m->vision->splice, SpliceMode::kReplacePad);
  EXPECT_EQ(m->vision->feature_layer, -2);
  EXPECT_TRUE(m->vision->drop_class_token);
  EXPECT_EQ(m->vision->image_start, "<s>");
  EXPECT_EQ(m->vision->image_start_id, -1);
  EXPECT_EQ(m->vision->image_end_id, 9);
  EXPECT_THAT(m->vision->adapter_json, HasSubstr("proj.0"));
}

TEST(Manifest, AdaptersByPresetNameAndTheAudioSection) {
  auto m = ParseManifest(
      R"({"checkpoint": "a.pth", "vision": {"encoder": "e", "adapter": "vision_b_conv"},
      "audio": {"encoder": "/abs/whisper", "adapter": "speech_a_pad0"}})",
      "/d");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->vision->adapter_json, AdapterSpecToJson(VisionAdapterB(true)));
  ASSERT_TRUE(m->audio.has_value());
  EXPECT_EQ(m->audio->encoder, "/abs/whisper");
  EXPECT_EQ(m->audio->adapter_json, AdapterSpecToJson(SpeechAdapterA(0)));
  // A preset's chain parses back into the preset.
  auto spec = ParseAdapterSpec(m->audio->adapter_json);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(AdapterSpecToJson(*spec), AdapterSpecToJson(SpeechAdapterA(0)));
}

TEST(Manifest, EarlierSpeechAdapterPreset) {
  auto m = ParseManifest(
      R"({"checkpoint": "a.pth", "audio": {"encoder": "w", "adapter": "speech_a_transformer"}})",
      "/d");
  ASSERT_TRUE(m.ok()) << m.status();
  // The official nn.TransformerEncoderLayer(nhead=8): the head count comes with the preset.
  EXPECT_EQ(m->audio->adapter_json, AdapterSpecToJson(SpeechAdapterATransformer(8)));
  auto spec = ParseAdapterSpec(m->audio->adapter_json);
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->layers.size(), 3u);
  EXPECT_EQ(spec->layers[0].padding, 0);
  EXPECT_EQ(spec->layers[1].op, AdapterOp::kTransformerEncoderLayer);
  EXPECT_EQ(spec->layers[1].heads, 8);
  EXPECT_FALSE(spec->layers[1].norm_first);
  EXPECT_FALSE(spec->layers[1].ffn_gelu);
  EXPECT_EQ(spec->layers[2].weights, "linear");
}

TEST(Manifest, ErrorsNameTheKey) {
  struct Case {
    const char* json;
    const char* says;
  };
  for (const Case& c : {
           Case{R"([1])", "not a JSON object"},
           Case{R"({"checkpoint": "a.pth", "modle": 1})", "\"modle\""},
           Case{R"({"format": 2, "checkpoint": "a.pth"})", "\"format\""},
           Case{R"({"vocab": "v.txt"})", "\"checkpoint\" is required"},
           Case{R"({"checkpoint": "a.pth", "chat_template": "no slot"})", "{text}"},
           Case{R"({"checkpoint": "a.pth", "stop_tokens": [-1]})", "\"stop_tokens\""},
           Case{R"({"checkpoint": "a.pth", "vision": {}})", "\"vision.encoder\""},
           Case{R"({"checkpoint": "a.pth", "vision": {"encoder": "e", "splice": "x"}})",
                "\"vision.splice\""},
           Case{R"({"checkpoint": "a.pth", "vision": {"encoder": "e", "image_start": [1]}})",
                "\"vision.image_start\""},
           Case{R"({"checkpoint": "a.pth", "vision": {"encoder": "e", "adapter": {}}})",
                "\"vision.adapter\""},
           Case{R"({"checkpoint": "a.pth", "vision": {"encoder": "e", "adapter": "vision_z"}})",
                "no preset 'vision_z'"},
           Case{R"({"checkpoint": "a.pth", "audio": {"adapter": "speech_a"}})",
                "\"audio.encoder\""},
           Case{R"({"checkpoint": "a.pth", "audio": {"encoder": "w", "kind": "whisper"}})",
                "\"audio.kind\""},
       }) {
    SCOPED_TRACE(c.json);
    auto m = ParseManifest(c.json, "/d");
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(m.status().message(), HasSubstr(c.says));
  }
}

TEST(Manifest, AMissingFileIsNotFoundNamingIt) {
  auto m = LoadManifest("/nonexistent/model");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(m.status().message(), HasSubstr("cannot read the model manifest /nonexistent/model"));
}

}  // namespace
}  // namespace modrwkv::encoders
