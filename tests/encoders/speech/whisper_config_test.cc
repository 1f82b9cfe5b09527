// Tests of encoders/speech/whisper_config.cc: transformers' defaults, the released shapes, errors
// that name the key.
#include "encoders/speech/whisper_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace modrwkv::encoders {
namespace {

using ::testing::HasSubstr;

TEST(WhisperConfigTest, DefaultsOfTransformers) {
  auto c = ParseWhisperConfig(R"({"model_type": "whisper"})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_mel_bins, 80);
  EXPECT_EQ(c->d_model, 384);
  EXPECT_EQ(c->encoder_layers, 4);
  EXPECT_EQ(c->encoder_attention_heads, 6);
  EXPECT_EQ(c->encoder_ffn_dim, 1536);
  EXPECT_EQ(c->max_source_positions, 1500);
  EXPECT_EQ(c->activation_function, "gelu");
  EXPECT_EQ(c->mel_frames(), 3000);
  EXPECT_EQ(c->frames(), 1500);
  EXPECT_EQ(c->head_dim(), 64);
}

TEST(WhisperConfigTest, ReleasedShapes) {
  // openai/whisper-large-v3's encoder keys (the decoder's are ignored).
  auto c = ParseWhisperConfig(R"({"model_type": "whisper", "d_model": 1280,
      "encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120,
      "num_mel_bins": 128, "max_source_positions": 1500, "activation_function": "gelu",
      "decoder_layers": 32, "vocab_size": 51866, "scale_embedding": false})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_mel_bins, 128);
  EXPECT_EQ(c->head_dim(), 64);
  EXPECT_EQ(WhisperSmallConfig().d_model, 768);
  EXPECT_EQ(WhisperSmallConfig().encoder_layers, 12);
  EXPECT_EQ(WhisperMediumConfig().encoder_attention_heads, 16);
  EXPECT_EQ(WhisperMediumConfig().encoder_ffn_dim, 4096);
  EXPECT_TRUE(WhisperMediumConfig().Validate().ok());
}

TEST(WhisperConfigTest, SavedFixtureConfig) {
  std::ifstream in(std::string(MODRWKV_GOLDEN_DIR) + "/whisper/tiny_cond_gen/config.json");
  std::stringstream ss;
  ss << in.rdbuf();
  auto c = ParseWhisperConfig(ss.str());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->d_model, 48);
  EXPECT_EQ(c->encoder_attention_heads, 3);
  EXPECT_EQ(c->max_source_positions, 24);
}

TEST(WhisperConfigTest, ErrorsNameTheKey) {
  struct Case {
    const char* json;
    const char* message;
  };
  for (const Case& c : {
           Case{"[1, 2]", "not a JSON object"},
           Case{"{", "not a JSON object"},
           Case{R"({"model_type": "wavlm"})", "\"model_type\" is \"wavlm\"; expected \"whisper\""},
           Case{R"({"d_model": 768})", "\"model_type\" is \"\""},
           Case{R"({"model_type": 3})", "key \"model_type\" has the wrong type"},
           Case{R"({"model_type": "whisper", "d_model": "768"})",
                "key \"d_model\" has the wrong type"},
           Case{R"({"model_type": "whisper", "encoder_layers": 0})",
                "key \"encoder_layers\" is 0, expected a value in [1, 65536]"},
           Case{R"({"model_type": "whisper", "num_mel_bins": -80})", "key \"num_mel_bins\" is -80"},
           Case{R"({"model_type": "whisper", "d_model": 100})",
                "\"d_model\" (100) is not a multiple of \"encoder_attention_heads\" (6)"},
           Case{R"({"model_type": "whisper", "activation_function": "swish"})",
                "key \"activation_function\" is \"swish\""},
           Case{R"({"model_type": "whisper", "max_source_positions": 0})",
                "key \"max_source_positions\" is 0"},
       }) {
    auto r = ParseWhisperConfig(c.json);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_THAT(r.status().message(), HasSubstr(c.message)) << c.json;
  }
}

}  // namespace
}  // namespace modrwkv::encoders
