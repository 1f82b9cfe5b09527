#include "encoders/vision/random_vit.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/checkpoint/random_weights.h"

namespace modrwkv::encoders {

std::vector<float> RandomUniform(const std::string& name, int64_t n, double lo, double hi,
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

std::vector<OwnedTensor> MakeRandomVitWeights(const VitConfig& c, uint64_t seed) {
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
  auto linear = [&](const std::string& name, int64_t o, int64_t i) {
    add(name + ".weight", {o, i}, -s(i), s(i));
    add(name + ".bias", {o}, -0.1, 0.1);
  };
  const int64_t d = c.hidden_size, f = c.intermediate_size, ch = c.num_channels, p = c.patch_size;
  const bool clip = c.kind == VitKind::kClip;
  if (clip) add("embeddings.class_embedding", {d}, -1.0, 1.0);
  add("embeddings.patch_embedding.weight", {d, ch, p, p}, -s(ch * p * p), s(ch * p * p));
  if (!clip) add("embeddings.patch_embedding.bias", {d}, -0.1, 0.1);
  add("embeddings.position_embedding.weight", {c.num_positions(), d}, -0.5, 0.5);
  if (clip) ln("pre_layrnorm", d);
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string l = absl::StrCat("encoder.layers.", i, ".");
    for (const char* proj : {"k_proj", "v_proj", "q_proj", "out_proj"}) {
      linear(l + "self_attn." + proj, d, d);
    }
    ln(l + "layer_norm1", d);
    linear(l + "mlp.fc1", f, d);
    linear(l + "mlp.fc2", d, f);
    ln(l + "layer_norm2", d);
  }
  ln("post_layernorm", d);
  return out;
}

std::vector<float> RandomPixels(const VitConfig& c, int batch, uint64_t seed) {
  const int64_t n = int64_t{batch} * c.num_channels * c.image_size * c.image_size;
  return RandomUniform("pixels", n, -1.0, 1.0, seed);
}

}  // namespace modrwkv::encoders
