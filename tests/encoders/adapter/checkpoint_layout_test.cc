// Tests encoders/adapter/checkpoint_layout: generation detection on the key sets of each official
// generation, the errors for unknown and adapter-less layouts, prefix stripping, and a detected
// layout driving the adapter chain on a golden fixture.
#include "encoders/adapter/checkpoint_layout.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

#include "engine/checkpoint/checkpoint.h"
#include "engine/loader/model_loader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/golden_floats.h"

namespace modrwkv::encoders {
namespace {

using golden::MaxRelDiff;
using golden::ReadF32;
using ::testing::HasSubstr;

// Key sets only: detection reads names and shapes, never data.
std::map<std::string, TensorView> Keys(
    std::initializer_list<std::pair<std::string, std::vector<int64_t>>> keys) {
  std::map<std::string, TensorView> m;
  for (const auto& [name, shape] : keys) {
    TensorView v;
    v.name = name;
    v.shape = shape;
    m[name] = v;
  }
  return m;
}

std::map<std::string, TensorView> Rwkv(const std::string& p) {
  return Keys({{p + "emb.weight", {256, 64}},
               {p + "blocks.0.ln0.weight", {64}},
               {p + "blocks.0.att.key.weight", {64, 64}},
               {p + "ln_out.weight", {64}},
               {p + "head.weight", {256, 64}}});
}

void Merge(std::map<std::string, TensorView>* into, const std::map<std::string, TensorView>& m) {
  into->insert(m.begin(), m.end());
}

std::string Json(const AdapterSpec& s) { return AdapterSpecToJson(s); }

TEST(CheckpointLayout, TextOnly) {
  auto l = DetectCheckpointLayout(Rwkv(""));
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->generation, 'T');
  EXPECT_EQ(l->llm_prefix, "");
  EXPECT_EQ(l->adapter_prefix, "");
  EXPECT_TRUE(l->adapter.layers.empty());
}

TEST(CheckpointLayout, GenerationAVision) {
  auto t = Rwkv("");
  Merge(&t, Keys({{"modality.world_encoder.adapter.proj.0.weight", {128, 768}},
                  {"modality.world_encoder.adapter.proj.0.bias", {128}},
                  {"modality.world_encoder.adapter.proj.2.weight", {64, 128}},
                  {"modality.world_encoder.adapter.proj.2.bias", {64}},
                  {"modality.world_encoder.adapter.pre_norm.weight", {64}},
                  {"modality.world_encoder.adapter.pre_norm.bias", {64}}}));
  auto l = DetectCheckpointLayout(t);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->generation, 'A');
  EXPECT_EQ(l->llm_prefix, "");
  EXPECT_EQ(l->adapter_prefix, "modality.world_encoder.adapter.");
  EXPECT_EQ(l->encoder_prefix, "");
  EXPECT_EQ(Json(l->adapter), Json(VisionAdapterA()));
  // The LLM's tensors leave the modality ones out.
  auto llm = LlmTensors(*l, t);
  EXPECT_EQ(llm.size(), 5u);
  EXPECT_TRUE(llm.count("emb.weight"));
}

TEST(CheckpointLayout, GenerationASpeechWithEncoder) {
  auto t = Rwkv("");
  Merge(&t, Keys({{"modality.world_encoder.adapter.conv.weight", {128, 768, 3}},
                  {"modality.world_encoder.adapter.conv.bias", {128}},
                  {"modality.world_encoder.adapter.proj.0.weight", {128, 128}},
                  {"modality.world_encoder.adapter.proj.2.weight", {64, 128}},
                  {"modality.world_encoder.model.encoder.layers.0.fc1.weight", {3072, 768}}}));
  auto l = DetectCheckpointLayout(t);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->generation, 'A');
  EXPECT_EQ(l->encoder_prefix, "modality.world_encoder.model.");
  EXPECT_EQ(Json(l->adapter), Json(SpeechAdapterA(2)));
}

TEST(CheckpointLayout, GenerationAEarlierSpeechAdapterWithTransformer) {
  const std::string p = "modality.world_encoder.adapter.";
  auto t = Rwkv("");
  Merge(&t, Keys({{p + "conv.weight", {3072, 768, 3}},
                  {p + "conv.bias", {3072}},
                  {p + "transformer.self_attn.in_proj_weight", {9216, 3072}},
                  {p + "linear.weight", {64, 3072}}}));
  auto l = DetectCheckpointLayout(t);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->generation, 'A');
  EXPECT_EQ(Json(l->adapter), Json(SpeechAdapterATransformer(8)));
}

TEST(CheckpointLayout, GenerationAWithoutAdapterIsAnError) {
  auto t = Rwkv("");
  Merge(&t, Keys({{"modality.world_encoder.model.x.weight", {4}}}));
  auto l = DetectCheckpointLayout(t);
  ASSERT_FALSE(l.ok());
  EXPECT_THAT(l.status().message(), HasSubstr("without adapter tensors"));
}

std::map<std::string, TensorView> GenB(bool conv, bool encoder) {
  auto t = Rwkv("llm.");
  Merge(&t, Keys({{"proj.mlp.0.weight", {256, 768}},
                  {"proj.mlp.0.bias", {256}},
                  {"proj.mlp.2.weight", {64, 256}},
                  {"proj.mlp.2.bias", {64}},
                  {"proj.pre_norm.weight", {64}},
                  {"proj.pre_norm.bias", {64}}}));
  if (conv) Merge(&t, Keys({{"proj.conv.weight", {768, 768, 3}}}));
  if (encoder)
    Merge(&t, Keys({{"encoder.model.embeddings.patch_embedding.weight", {768, 3, 16, 16}}}));
  return t;
}

TEST(CheckpointLayout, GenerationB) {
  for (bool conv : {false, true})
    for (bool encoder : {false, true}) {
      auto t = GenB(conv, encoder);
      auto l = DetectCheckpointLayout(t);
      ASSERT_TRUE(l.ok()) << l.status();
      EXPECT_EQ(l->generation, 'B');
      EXPECT_EQ(l->llm_prefix, "llm.");
      EXPECT_EQ(l->adapter_prefix, "proj.");
      EXPECT_EQ(l->encoder_prefix, encoder ? "encoder.model." : "");
      EXPECT_EQ(Json(l->adapter), Json(VisionAdapterB(conv)));
      auto llm = LlmTensors(*l, t);
      EXPECT_EQ(llm.size(), 5u);
      ASSERT_TRUE(llm.count("blocks.0.att.key.weight"));
      EXPECT_EQ(llm.at("blocks.0.att.key.weight").name, "blocks.0.att.key.weight");
    }
}

TEST(CheckpointLayout, GenerationBWithoutProjSaysWhereTheAdapterIs) {
  auto t = Rwkv("llm.");
  Merge(&t, Keys({{"encoder.model.post_layernorm.weight", {768}}}));
  auto l = DetectCheckpointLayout(t);
  ASSERT_FALSE(l.ok());
  EXPECT_EQ(l.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(l.status().message(), HasSubstr("no adapter tensors (proj.*)"));
  EXPECT_THAT(l.status().message(), HasSubstr("separate file"));
}

TEST(CheckpointLayout, GenerationCProjectors) {
  auto shuffle = Rwkv("llm.");
  Merge(&shuffle, Keys({{"proj.proj.weight", {64, 12288}}}));
  auto l = DetectCheckpointLayout(shuffle);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->generation, 'C');
  EXPECT_EQ(Json(l->adapter), Json(PixelShuffleProjectorC()));

  auto conv = GenB(false, false);
  Merge(&conv, Keys({{"proj.conv.weight", {768, 768, 6}}}));
  l = DetectCheckpointLayout(conv);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->generation, 'C');
  EXPECT_EQ(Json(l->adapter), Json(ConvProjectorC()));
}

TEST(CheckpointLayout, UnknownLayoutNamesExpectedAndFoundKeys) {
  auto t = Keys({{"model.embeddings.weight", {256, 64}}, {"lm_head.weight", {256, 64}}});
  auto l = DetectCheckpointLayout(t);
  ASSERT_FALSE(l.ok());
  EXPECT_THAT(l.status().message(),
              HasSubstr("expected emb.weight and modality.world_encoder.adapter.* (generation A)"));
  EXPECT_THAT(l.status().message(), HasSubstr("llm.emb.weight and proj.* (generation B)"));
  EXPECT_THAT(l.status().message(), HasSubstr("found keys like lm_head.weight, model.embeddings"));
  EXPECT_FALSE(DetectCheckpointLayout({}).ok());
}

TEST(CheckpointLayout, StripPrefix) {
  auto t = GenB(true, true);
  auto proj = StripPrefix(t, "proj.");
  EXPECT_EQ(proj.size(), 7u);
  ASSERT_TRUE(proj.count("conv.weight"));
  EXPECT_EQ(proj.at("conv.weight").name, "conv.weight");
  EXPECT_EQ(proj.at("conv.weight").shape, (std::vector<int64_t>{768, 768, 3}));
  EXPECT_EQ(StripPrefix(t, "encoder.model.").size(), 1u);
  EXPECT_TRUE(StripPrefix(t, "nothing.").empty());
}

// A detected layout drives the chain on the official module's golden output.
TEST(CheckpointLayout, DetectedAdapterRunsTheGoldenFixture) {
  const std::string dir = std::string(MODRWKV_GOLDEN_DIR) + "/adapter/";
  for (const char* name : {"vision_a", "speech_a_pad2", "vision_b_conv", "conv_projector_c"}) {
    SCOPED_TRACE(name);
    auto ckpt = Checkpoint::Open(dir + name + ".safetensors");
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    auto t = (*ckpt)->tensors();
    const bool gen_a = t.begin()->first.rfind("modality.", 0) == 0;
    Merge(&t, Rwkv(gen_a ? "" : "llm."));
    auto l = DetectCheckpointLayout(t);
    ASSERT_TRUE(l.ok()) << l.status();
    auto chain = AdapterChain::Create(l->adapter, t, l->adapter_prefix);
    ASSERT_TRUE(chain.ok()) << chain.status();
    const std::vector<float> in = ReadF32(dir + name + "_input.bin");
    const std::vector<float> want = ReadF32(dir + name + "_output.bin");
    const int rows = static_cast<int>(in.size()) / (*chain)->input_dim();
    std::vector<float> out;
    ASSERT_TRUE((*chain)->Run(in, rows, &out, nullptr).ok());
    ASSERT_EQ(out.size(), want.size());
    EXPECT_LT(MaxRelDiff(out, want), 1e-4);
  }
}

// The whole-forward fixture's checkpoints: both generations detected, their LLM tensors load as
// an RWKV7 model, and their (bf16) adapters reproduce the official adapter outputs.
TEST(CheckpointLayout, VisionForwardCheckpoints) {
  const std::string dir = std::string(MODRWKV_GOLDEN_DIR) + "/vision_forward/";
  struct Case {
    const char* file;
    char generation;
    const char* encoder_prefix;
    const char* adapter_output;
  };
  for (const Case& c : {Case{"rwkv-0.pth", 'A', "", "gen_a_adapter_output.bin"},
                        Case{"rwkv-b.pth", 'B', "encoder.model.", "gen_b_adapter_output.bin"}}) {
    SCOPED_TRACE(c.file);
    auto ckpt = Checkpoint::Open(dir + c.file);
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    auto l = DetectCheckpointLayout((*ckpt)->tensors());
    ASSERT_TRUE(l.ok()) << l.status();
    EXPECT_EQ(l->generation, c.generation);
    EXPECT_EQ(l->encoder_prefix, c.encoder_prefix);
    if (c.generation == 'B') {
      EXPECT_TRUE((*ckpt)->tensors().count("encoder.model.embeddings.patch_embedding.weight"));
    }
    ModelOptions options;
    options.threads = 1;
    auto model = CreateModel(LlmTensors(*l, (*ckpt)->tensors()), options);
    ASSERT_TRUE(model.ok()) << model.status();
    auto chain = AdapterChain::Create(l->adapter, (*ckpt)->tensors(), l->adapter_prefix);
    ASSERT_TRUE(chain.ok()) << chain.status();
    const std::vector<float> in = ReadF32(dir + "encoder_features.bin");
    const std::vector<float> want = ReadF32(dir + c.adapter_output);
    std::vector<float> out;
    ASSERT_TRUE((*chain)->Run(in, 16, &out, nullptr).ok());
    ASSERT_EQ(out.size(), want.size());
    EXPECT_LT(MaxRelDiff(out, want), 1e-4);
  }
}

}  // namespace
}  // namespace modrwkv::encoders
