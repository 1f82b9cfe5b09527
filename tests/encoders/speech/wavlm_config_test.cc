// Tests of encoders/speech/wavlm_config.cc: the config.json forms of the hub's WavLM models,
// transformers' defaults, and errors that name the key.
#include "encoders/speech/wavlm_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "encoders/speech/wavlm_random.h"

namespace modrwkv::encoders {
namespace {

using ::testing::HasSubstr;

TEST(WavlmConfigTest, BasePlusIsTheDefaults) {
  auto c = ParseWavlmConfig(R"({"model_type": "wavlm", "architectures": ["WavLMModel"]})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 768);
  EXPECT_EQ(c->num_hidden_layers, 12);
  EXPECT_EQ(c->num_attention_heads, 12);
  EXPECT_EQ(c->intermediate_size, 3072);
  EXPECT_EQ(c->conv_dim, std::vector<int>(7, 512));
  EXPECT_EQ(c->conv_kernel, (std::vector<int>{10, 3, 3, 3, 3, 2, 2}));
  EXPECT_EQ(c->conv_stride, (std::vector<int>{5, 2, 2, 2, 2, 2, 2}));
  EXPECT_FALSE(c->conv_bias);
  EXPECT_EQ(c->feat_extract_norm, "group");
  EXPECT_FALSE(c->do_stable_layer_norm);
  EXPECT_EQ(c->num_conv_pos_embeddings, 128);
  EXPECT_EQ(c->num_conv_pos_embedding_groups, 16);
  EXPECT_EQ(c->num_buckets, 320);
  EXPECT_EQ(c->max_bucket_distance, 800);
  EXPECT_FLOAT_EQ(c->layer_norm_eps, 1e-5f);
  EXPECT_EQ(c->SamplesPerFrame(), 320);
  // 10 s at 16 kHz: 499 frames, as transformers' _get_feat_extract_output_lengths.
  EXPECT_EQ(c->OutputFrames(160000), 499);
  EXPECT_EQ(c->OutputFrames(400), 1);
  EXPECT_EQ(c->OutputFrames(399), 0);
}

TEST(WavlmConfigTest, LargeLayout) {
  auto c = WavlmConfigForShape("large");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 1024);
  EXPECT_EQ(c->num_hidden_layers, 24);
  EXPECT_EQ(c->head_dim(), 64);
  EXPECT_EQ(c->feat_extract_norm, "layer");
  EXPECT_TRUE(c->do_stable_layer_norm);
  EXPECT_FALSE(WavlmConfigForShape("huge").ok());
}

TEST(WavlmConfigTest, ErrorsNameTheKey) {
  struct Case {
    const char* json;
    const char* key;
  };
  for (Case k :
       {Case{R"({"model_type": "wav2vec2"})", "model_type"},
        Case{R"({"hidden_size": 768})", "model_type"},
        Case{R"({"model_type": "wavlm", "hidden_size": "big"})", "hidden_size"},
        Case{R"({"model_type": "wavlm", "num_attention_heads": 7})", "num_attention_heads"},
        Case{R"({"model_type": "wavlm", "num_conv_pos_embedding_groups": 10})",
             "num_conv_pos_embedding_groups"},
        Case{R"({"model_type": "wavlm", "conv_kernel": [10, 3]})", "conv_kernel"},
        Case{R"({"model_type": "wavlm", "conv_stride": [5, 2, 2, 2, 2, 2, 0]})", "conv_stride"},
        Case{R"({"model_type": "wavlm", "feat_extract_norm": "batch"})", "feat_extract_norm"},
        Case{R"({"model_type": "wavlm", "hidden_act": "relu"})", "hidden_act"},
        Case{R"({"model_type": "wavlm", "do_stable_layer_norm": "yes"})", "do_stable_layer_norm"},
        Case{R"({"model_type": "wavlm", "max_bucket_distance": 10})", "max_bucket_distance"},
        Case{R"({"model_type": "wavlm", "layer_norm_eps": 0})", "layer_norm_eps"}}) {
    auto c = ParseWavlmConfig(k.json);
    ASSERT_FALSE(c.ok()) << k.json;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(c.status().message(), HasSubstr(std::string("\"") + k.key + "\"")) << k.json;
  }
  EXPECT_THAT(
      ParseWavlmConfig(R"({"model_type": "wavlm", "hidden_size": "big"})").status().message(),
      HasSubstr("wavlm config key \"hidden_size\" has the wrong type"));
  EXPECT_FALSE(ParseWavlmConfig("[1, 2]").ok());
  EXPECT_FALSE(ParseWavlmConfig("{").ok());
}

}  // namespace
}  // namespace modrwkv::encoders
