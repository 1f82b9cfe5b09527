// Tests of encoders/vision/vit_config.cc: the config.json forms transformers writes.
#include "encoders/vision/vit_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace modrwkv::encoders {
namespace {

using ::testing::HasSubstr;

TEST(VitConfigTest, FullSiglipConfigTakesVisionConfigAndDefaults) {
  // The shape of google/siglip2-base-patch16-384's config: sizes omitted from vision_config
  // come from SiglipVisionConfig's defaults.
  auto c = ParseVitConfig(R"({"model_type": "siglip", "text_config": {"hidden_size": 768},
      "vision_config": {"image_size": 384, "patch_size": 16, "model_type": "siglip_vision_model"}})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kind, VitKind::kSiglip);
  EXPECT_EQ(c->image_size, 384);
  EXPECT_EQ(c->patch_size, 16);
  EXPECT_EQ(c->hidden_size, 768);
  EXPECT_EQ(c->intermediate_size, 3072);
  EXPECT_EQ(c->num_hidden_layers, 12);
  EXPECT_EQ(c->num_attention_heads, 12);
  EXPECT_EQ(c->num_channels, 3);
  EXPECT_FLOAT_EQ(c->layer_norm_eps, 1e-6f);
  EXPECT_EQ(c->hidden_act, "gelu_pytorch_tanh");
  EXPECT_EQ(c->num_positions(), 576);
  EXPECT_EQ(c->head_dim(), 64);
}

TEST(VitConfigTest, SiglipWithoutVisionConfigIsAllDefaults) {
  auto c = ParseVitConfig(R"({"model_type": "siglip"})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->image_size, 224);
  EXPECT_EQ(c->patch_size, 16);
}

TEST(VitConfigTest, VisionOnlySiglip) {
  auto c = ParseVitConfig(R"({"model_type": "siglip_vision_model", "hidden_size": 64,
      "image_size": 32, "intermediate_size": 128, "num_attention_heads": 2,
      "num_hidden_layers": 2, "patch_size": 8, "layer_norm_eps": 1e-5})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->num_patches(), 16);
  EXPECT_FLOAT_EQ(c->layer_norm_eps, 1e-5f);
}

TEST(VitConfigTest, ClipDefaultsAndClassToken) {
  // openai/clip-vit-large-patch14-336's vision sizes.
  auto c = ParseVitConfig(R"({"model_type": "clip", "vision_config": {"hidden_size": 1024,
      "image_size": 336, "intermediate_size": 4096, "num_attention_heads": 16,
      "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768}})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kind, VitKind::kClip);
  EXPECT_EQ(c->hidden_act, "quick_gelu");
  EXPECT_FLOAT_EQ(c->layer_norm_eps, 1e-5f);
  EXPECT_EQ(c->num_positions(), 577);
  auto v = ParseVitConfig(R"({"model_type": "clip_vision_model"})");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->patch_size, 32);  // CLIPVisionConfig's default
}

TEST(VitConfigTest, Errors) {
  auto unknown = ParseVitConfig(R"({"model_type": "vit"})");
  EXPECT_THAT(unknown.status().message(), HasSubstr("siglip, siglip_vision_model, clip"));
  EXPECT_THAT(ParseVitConfig("{not json").status().message(), HasSubstr("not a JSON object"));
  EXPECT_THAT(ParseVitConfig(R"({"model_type": "siglip_vision_model", "hidden_size": "big"})")
                  .status()
                  .message(),
              HasSubstr("vision config key \"hidden_size\" has the wrong type"));
  EXPECT_THAT(
      ParseVitConfig(R"({"model_type": "siglip_vision_model", "image_size": 30, "patch_size": 8})")
          .status()
          .message(),
      HasSubstr("not a multiple of patch_size"));
  EXPECT_THAT(ParseVitConfig(R"({"model_type": "siglip_vision_model", "hidden_act": "relu"})")
                  .status()
                  .message(),
              HasSubstr("hidden_act"));
  EXPECT_THAT(ParseVitConfig(R"({"model_type": "clip", "vision_config": 3})").status().message(),
              HasSubstr("vision_config"));
}

}  // namespace
}  // namespace modrwkv::encoders
