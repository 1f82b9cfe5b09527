#include "encoders/speech/wavlm_random.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/checkpoint/random_weights.h"

namespace modrwkv::encoders {

std::vector<float> WavlmRandomUniform(const std::string& name, int64_t n, double lo, double hi,
                                      uint64_t seed) {
  const uint64_t key = SplitMix64(seed ^ Fnv1a64(name));
  const double span = hi - lo;
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double u =
        static_cast<double>(SplitMix64(key + static_cast<uint64_t>(i)) >> 40) * (1.0 / 16777216.0);
    v[static_cast<size_t>(i)] = static_cast<float>(lo + span * u);
  }
  return v;
}

std::vector<OwnedTensor> MakeRandomWavlmWeights(const WavlmConfig& c, uint64_t seed) {
  std::vector<OwnedTensor> out;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, double lo, double hi) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    const std::vector<float> v = WavlmRandomUniform(name, n, lo, hi, seed);
    OwnedTensor t;
    t.name = name;
    t.dtype = DType::kF32;
    t.shape = std::move(shape);
    t.bytes.resize(v.size() * 4);
    std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
    out.push_back(std::move(t));
  };
  auto s = [](int64_t n) { return 1.0 / std::sqrt(static_cast<double>(n)); };
  auto ln = [&](const std::string& name, int64_t d) {
    add(name + ".weight", {d}, 0.8, 1.2);
    add(name + ".bias", {d}, -0.1, 0.1);
  };
  auto linear = [&](const std::string& name, int64_t o, int64_t i) {
    add(name + ".weight", {o, i}, -s(i), s(i));
    add(name + ".bias", {o}, -0.1, 0.1);
  };
  const int64_t d = c.hidden_size, f = c.intermediate_size, heads = c.num_attention_heads;
  const int64_t hd = c.head_dim(), cg = d / c.num_conv_pos_embedding_groups;
  const int64_t k = c.num_conv_pos_embeddings;
  int64_t in = 1;
  for (int i = 0; i < c.conv_layers(); ++i) {
    const std::string l = absl::StrCat("feature_extractor.conv_layers.", i, ".");
    const int64_t fan = in * c.conv_kernel[i];
    add(l + "conv.weight", {c.conv_dim[i], in, c.conv_kernel[i]}, -2 * s(fan), 2 * s(fan));
    if (c.conv_bias) add(l + "conv.bias", {c.conv_dim[i]}, -0.1, 0.1);
    if (c.feat_extract_norm == "layer" || i == 0) ln(l + "layer_norm", c.conv_dim[i]);
    in = c.conv_dim[i];
  }
  ln("feature_projection.layer_norm", in);
  linear("feature_projection.projection", d, in);
  add("encoder.pos_conv_embed.conv.weight_g", {1, 1, k}, 1.0, 2.0);
  add("encoder.pos_conv_embed.conv.weight_v", {d, cg, k}, -s(cg * k), s(cg * k));
  add("encoder.pos_conv_embed.conv.bias", {d}, -0.1, 0.1);
  ln("encoder.layer_norm", d);
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string l = absl::StrCat("encoder.layers.", i, ".");
    for (const char* proj : {"k_proj", "v_proj", "q_proj", "out_proj"}) {
      linear(l + "attention." + proj, d, d);
    }
    add(l + "attention.gru_rel_pos_const", {1, heads, 1, 1}, 0.5, 1.5);
    linear(l + "attention.gru_rel_pos_linear", 8, hd);
    if (i == 0) add(l + "attention.rel_attn_embed.weight", {c.num_buckets, heads}, -1.0, 1.0);
    ln(l + "layer_norm", d);
    linear(l + "feed_forward.intermediate_dense", f, d);
    linear(l + "feed_forward.output_dense", d, f);
    ln(l + "final_layer_norm", d);
  }
  return out;
}

std::vector<float> RandomWavlmAudio(int batch, int num_samples, uint64_t seed) {
  const double r = std::sqrt(3.0);
  return WavlmRandomUniform("audio", int64_t{batch} * num_samples, -r, r, seed);
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
