#include "encoders/speech/whisper_random.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "engine/checkpoint/random_weights.h"

namespace modrwkv::encoders {

std::vector<OwnedTensor> MakeRandomWhisperWeights(const WhisperConfig& c, uint64_t seed) {
  RandomTensors t(seed);
  const int64_t d = c.d_model, f = c.encoder_ffn_dim, m = c.num_mel_bins;
  t.Add("conv1.weight", {d, m, 3}, -FanInBound(3 * m), FanInBound(3 * m));
  t.Add("conv1.bias", {d}, -0.1, 0.1);
  t.Add("conv2.weight", {d, d, 3}, -FanInBound(3 * d), FanInBound(3 * d));
  t.Add("conv2.bias", {d}, -0.1, 0.1);
  t.Add("embed_positions.weight", {c.max_source_positions, d}, -1.0, 1.0);
  for (int i = 0; i < c.encoder_layers; ++i) {
    const std::string l = absl::StrCat("layers.", i, ".");
    t.Linear(l + "self_attn.k_proj", d, d, /*bias=*/false);
    t.Linear(l + "self_attn.v_proj", d, d, true);
    t.Linear(l + "self_attn.q_proj", d, d, true);
    t.Linear(l + "self_attn.out_proj", d, d, true);
    t.LayerNorm(l + "self_attn_layer_norm", d);
    t.Linear(l + "fc1", f, d, true);
    t.Linear(l + "fc2", d, f, true);
    t.LayerNorm(l + "final_layer_norm", d);
  }
  t.LayerNorm("layer_norm", d);
  return t.Take();
}

std::vector<float> RandomMel(const WhisperConfig& c, int batch, uint64_t seed) {
  const int64_t n = int64_t{batch} * c.num_mel_bins * c.mel_frames();
  return RandomUniform("mel", n, -1.0, 1.0, seed);
}

}  // namespace modrwkv::encoders
