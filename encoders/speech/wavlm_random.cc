#include "encoders/speech/wavlm_random.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/checkpoint/random_weights.h"

namespace modrwkv::encoders {

std::vector<OwnedTensor> MakeRandomWavlmWeights(const WavlmConfig& c, uint64_t seed) {
  RandomTensors t(seed);
  const int64_t d = c.hidden_size, f = c.intermediate_size, heads = c.num_attention_heads;
  const int64_t hd = c.head_dim(), cg = d / c.num_conv_pos_embedding_groups;
  const int64_t k = c.num_conv_pos_embeddings;
  int64_t in = 1;
  for (int i = 0; i < c.conv_layers(); ++i) {
    const std::string l = absl::StrCat("feature_extractor.conv_layers.", i, ".");
    const int64_t fan = in * c.conv_kernel[i];
    t.Add(l + "conv.weight", {c.conv_dim[i], in, c.conv_kernel[i]}, -2 * FanInBound(fan),
          2 * FanInBound(fan));
    if (c.conv_bias) t.Add(l + "conv.bias", {c.conv_dim[i]}, -0.1, 0.1);
    if (c.feat_extract_norm == "layer" || i == 0) t.LayerNorm(l + "layer_norm", c.conv_dim[i]);
    in = c.conv_dim[i];
  }
  t.LayerNorm("feature_projection.layer_norm", in);
  t.Linear("feature_projection.projection", d, in);
  t.Add("encoder.pos_conv_embed.conv.weight_g", {1, 1, k}, 1.0, 2.0);
  t.Add("encoder.pos_conv_embed.conv.weight_v", {d, cg, k}, -FanInBound(cg * k),
        FanInBound(cg * k));
  t.Add("encoder.pos_conv_embed.conv.bias", {d}, -0.1, 0.1);
  t.LayerNorm("encoder.layer_norm", d);
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string l = absl::StrCat("encoder.layers.", i, ".");
    for (const char* proj : {"k_proj", "v_proj", "q_proj", "out_proj"}) {
      t.Linear(l + "attention." + proj, d, d);
    }
    t.Add(l + "attention.gru_rel_pos_const", {1, heads, 1, 1}, 0.5, 1.5);
    t.Linear(l + "attention.gru_rel_pos_linear", 8, hd);
    if (i == 0) t.Add(l + "attention.rel_attn_embed.weight", {c.num_buckets, heads}, -1.0, 1.0);
    t.LayerNorm(l + "layer_norm", d);
    t.Linear(l + "feed_forward.intermediate_dense", f, d);
    t.Linear(l + "feed_forward.output_dense", d, f);
    t.LayerNorm(l + "final_layer_norm", d);
  }
  return t.Take();
}

std::vector<float> RandomWavlmAudio(int batch, int num_samples, uint64_t seed) {
  const double r = std::sqrt(3.0);
  return RandomUniform("audio", int64_t{batch} * num_samples, -r, r, seed);
}

absl::StatusOr<WavlmConfig> WavlmConfigForShape(const std::string& shape) {
  if (shape == "base+" || shape == "base-plus") {
    return ParseWavlmConfig(R"({"model_type": "wavlm"})");
  }
  if (shape == "large") {
    return ParseWavlmConfig(R"({"model_type": "wavlm", "hidden_size": 1024,
        "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
        "feat_extract_norm": "layer", "do_stable_layer_norm": true})");
  }
  return absl::InvalidArgumentError(
      absl::StrCat("WavLM shape \"", shape, "\" is not known; expected base+ or large"));
}

}  // namespace modrwkv::encoders
