#include "encoders/speech/whisper_random.h"

#include <cmath>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "encoders/vision/random_vit.h"

namespace modrwkv::encoders {

std::vector<OwnedTensor> MakeRandomWhisperWeights(const WhisperConfig& c, uint64_t seed) {
  std::vector<OwnedTensor> out;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, double lo, double hi) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    const std::vector<float> v = RandomUniform(name, n, lo, hi, seed);
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
  auto linear = [&](const std::string& name, int64_t o, int64_t i, bool bias) {
    add(name + ".weight", {o, i}, -s(i), s(i));
    if (bias) add(name + ".bias", {o}, -0.1, 0.1);
  };
  const int64_t d = c.d_model, f = c.encoder_ffn_dim, m = c.num_mel_bins;
  add("conv1.weight", {d, m, 3}, -s(3 * m), s(3 * m));
  add("conv1.bias", {d}, -0.1, 0.1);
  add("conv2.weight", {d, d, 3}, -s(3 * d), s(3 * d));
  add("conv2.bias", {d}, -0.1, 0.1);
  add("embed_positions.weight", {c.max_source_positions, d}, -1.0, 1.0);
  for (int i = 0; i < c.encoder_layers; ++i) {
    const std::string l = absl::StrCat("layers.", i, ".");
    linear(l + "self_attn.k_proj", d, d, /*bias=*/false);
    linear(l + "self_attn.v_proj", d, d, true);
    linear(l + "self_attn.q_proj", d, d, true);
    linear(l + "self_attn.out_proj", d, d, true);
    ln(l + "self_attn_layer_norm", d);
    linear(l + "fc1", f, d, true);
    linear(l + "fc2", d, f, true);
    ln(l + "final_layer_norm", d);
  }
  ln("layer_norm", d);
  return out;
}

std::vector<float> RandomMel(const WhisperConfig& c, int batch, uint64_t seed) {
  const int64_t n = int64_t{batch} * c.num_mel_bins * c.mel_frames();
  return RandomUniform("mel", n, -1.0, 1.0, seed);
}

}  // namespace modrwkv::encoders
