#include "encoders/vision/random_vit.h"

#include "absl/strings/str_cat.h"
#include "engine/checkpoint/random_weights.h"

namespace modrwkv::encoders {

std::vector<OwnedTensor> MakeRandomVitWeights(const VitConfig& c, uint64_t seed) {
  RandomTensors t(seed);
  const int64_t d = c.hidden_size, f = c.intermediate_size, ch = c.num_channels, p = c.patch_size;
  const bool clip = c.kind == VitKind::kClip;
  if (clip) t.Add("embeddings.class_embedding", {d}, -1.0, 1.0);
  t.Add("embeddings.patch_embedding.weight", {d, ch, p, p}, -FanInBound(ch * p * p),
        FanInBound(ch * p * p));
  if (!clip) t.Add("embeddings.patch_embedding.bias", {d}, -0.1, 0.1);
  t.Add("embeddings.position_embedding.weight", {c.num_positions(), d}, -0.5, 0.5);
  if (clip) t.LayerNorm("pre_layrnorm", d);
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string l = absl::StrCat("encoder.layers.", i, ".");
    for (const char* proj : {"k_proj", "v_proj", "q_proj", "out_proj"}) {
      t.Linear(l + "self_attn." + proj, d, d);
    }
    t.LayerNorm(l + "layer_norm1", d);
    t.Linear(l + "mlp.fc1", f, d);
    t.Linear(l + "mlp.fc2", d, f);
    t.LayerNorm(l + "layer_norm2", d);
  }
  t.LayerNorm("post_layernorm", d);
  return t.Take();
}

std::vector<float> RandomPixels(const VitConfig& c, int batch, uint64_t seed) {
  const int64_t n = int64_t{batch} * c.num_channels * c.image_size * c.image_size;
  return RandomUniform("pixels", n, -1.0, 1.0, seed);
}

}  // namespace modrwkv::encoders
