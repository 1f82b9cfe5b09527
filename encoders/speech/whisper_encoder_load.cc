// WhisperEncoder construction: tensor lookup with shape checks, conversion to f32, the
// convolutions' weights reordered to (tap, channel), GEMM packing.
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "encoders/speech/whisper_encoder.h"
#include "encoders/vision/tensor_source.h"
#include "engine/base/status_macros.h"
#include "engine/checkpoint/checkpoint.h"

namespace modrwkv::encoders {
namespace {

// Conv1d weight [out][in][k] as a GEMM weight [out][k*in + c] (tap-major), packed.
cpu::Matrix PackConv(const std::vector<float>& w, int64_t out, int64_t in, int64_t k) {
  std::vector<float> r(w.size());
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t c = 0; c < in; ++c) {
      for (int64_t j = 0; j < k; ++j) r[(o * k + j) * in + c] = w[(o * in + c) * k + j];
    }
  }
  return PackF32(r, out, k * in);
}

}  // namespace

absl::StatusOr<std::unique_ptr<WhisperEncoder>> WhisperEncoder::Create(
    const WhisperConfig& config, const std::map<std::string, TensorView>& tensors,
    const std::string& prefix) {
  MODRWKV_RETURN_IF_ERROR(config.Validate());
  const TensorSource src(tensors, prefix);
  const int64_t d = config.d_model, f = config.encoder_ffn_dim, m = config.num_mel_bins;
  std::unique_ptr<WhisperEncoder> e(new WhisperEncoder(config));

  MODRWKV_ASSIGN_OR_RETURN(std::vector<float> c1, src.Floats("conv1.weight", {d, m, 3}));
  e->stem_.conv1 = PackConv(c1, d, m, 3);
  MODRWKV_ASSIGN_OR_RETURN(e->stem_.conv1_b, src.Floats("conv1.bias", {d}));
  MODRWKV_ASSIGN_OR_RETURN(std::vector<float> c2, src.Floats("conv2.weight", {d, d, 3}));
  e->stem_.conv2 = PackConv(c2, d, d, 3);
  MODRWKV_ASSIGN_OR_RETURN(e->stem_.conv2_b, src.Floats("conv2.bias", {d}));
  MODRWKV_ASSIGN_OR_RETURN(e->stem_.pos,
                           src.Floats("embed_positions.weight", {config.max_source_positions, d}));
  MODRWKV_ASSIGN_OR_RETURN(e->ln_w_, src.Floats("layer_norm.weight", {d}));
  MODRWKV_ASSIGN_OR_RETURN(e->ln_b_, src.Floats("layer_norm.bias", {d}));
  e->layers_.resize(config.encoder_layers);
  for (int i = 0; i < config.encoder_layers; ++i) {
    EncoderLayerWeights& l = e->layers_[i];
    const std::string k = absl::StrCat("layers.", i, ".");
    MODRWKV_ASSIGN_OR_RETURN(l.ln1_w, src.Floats(k + "self_attn_layer_norm.weight", {d}));
    MODRWKV_ASSIGN_OR_RETURN(l.ln1_b, src.Floats(k + "self_attn_layer_norm.bias", {d}));
    MODRWKV_ASSIGN_OR_RETURN(l.ln2_w, src.Floats(k + "final_layer_norm.weight", {d}));
    MODRWKV_ASSIGN_OR_RETURN(l.ln2_b, src.Floats(k + "final_layer_norm.bias", {d}));
    std::vector<float> qkv_w;
    qkv_w.reserve(static_cast<size_t>(3 * d * d));
    for (const char* proj : {"q_proj", "k_proj", "v_proj"}) {
      const std::string base = absl::StrCat(k, "self_attn.", proj);
      MODRWKV_ASSIGN_OR_RETURN(std::vector<float> w, src.Floats(base + ".weight", {d, d}));
      qkv_w.insert(qkv_w.end(), w.begin(), w.end());
      if (std::string_view(proj) == "k_proj") {  // k_proj has no bias in Whisper
        l.qkv_b.insert(l.qkv_b.end(), static_cast<size_t>(d), 0.0f);
        continue;
      }
      MODRWKV_ASSIGN_OR_RETURN(std::vector<float> b, src.Floats(base + ".bias", {d}));
      l.qkv_b.insert(l.qkv_b.end(), b.begin(), b.end());
    }
    l.qkv = PackF32(qkv_w, 3 * d, d);
    MODRWKV_ASSIGN_OR_RETURN(l.out, src.Weight(k + "self_attn.out_proj.weight", d, d));
    MODRWKV_ASSIGN_OR_RETURN(l.out_b, src.Floats(k + "self_attn.out_proj.bias", {d}));
    MODRWKV_ASSIGN_OR_RETURN(l.fc1, src.Weight(k + "fc1.weight", f, d));
    MODRWKV_ASSIGN_OR_RETURN(l.fc1_b, src.Floats(k + "fc1.bias", {f}));
    MODRWKV_ASSIGN_OR_RETURN(l.fc2, src.Weight(k + "fc2.weight", d, f));
    MODRWKV_ASSIGN_OR_RETURN(l.fc2_b, src.Floats(k + "fc2.bias", {d}));
  }
  return e;
}

absl::StatusOr<std::unique_ptr<WhisperEncoder>> WhisperEncoder::Load(const std::string& hf_folder) {
  const std::filesystem::path dir(hf_folder);
  MODRWKV_ASSIGN_OR_RETURN(std::string json, ReadFileToString(dir / "config.json"));
  auto config = ParseWhisperConfig(json);
  if (!config.ok()) {
    return absl::Status(config.status().code(), absl::StrCat((dir / "config.json").string(), ": ",
                                                             config.status().message()));
  }
  MODRWKV_ASSIGN_OR_RETURN(const std::filesystem::path weights, FindWeightsFile(dir));
  MODRWKV_ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open(weights.string()));
  const auto& tensors = ckpt->tensors();
  std::string prefix;
  for (const char* p : {"model.encoder.", "encoder."}) {
    if (HasPrefix(tensors, p)) {
      prefix = p;
      break;
    }
  }
  auto encoder = Create(*config, tensors, prefix);
  if (!encoder.ok()) {
    return absl::Status(encoder.status().code(),
                        absl::StrCat(weights.string(), ": ", encoder.status().message()));
  }
  return encoder;
}

}  // namespace modrwkv::encoders
