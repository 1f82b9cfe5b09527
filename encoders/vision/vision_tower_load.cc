// VisionTower construction: tensor lookup with shape checks, conversion to f32, GEMM packing.
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "encoders/vision/tensor_source.h"
#include "encoders/vision/vision_tower.h"
#include "engine/base/status_macros.h"
#include "engine/checkpoint/checkpoint.h"

namespace modrwkv::encoders {

absl::Status VisionTowerOptions::Validate(const VitConfig& config) const {
  const int layers = config.num_hidden_layers;
  if (config.kind == VitKind::kSiglip) {
    if (feature_layer != -1) {
      return absl::InvalidArgumentError(absl::StrCat("feature_layer ", feature_layer,
                                                     " is not supported for SigLIP; expected -1"));
    }
    if (drop_class_token) {
      return absl::InvalidArgumentError("drop_class_token: SigLIP has no class token");
    }
    return absl::OkStatus();
  }
  if (feature_layer < -(layers + 1) || feature_layer > layers) {
    return absl::InvalidArgumentError(absl::StrCat("feature_layer ", feature_layer,
                                                   " is out of range; expected [", -(layers + 1),
                                                   ", ", layers, "]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<VisionTower>> VisionTower::Create(
    const VitConfig& config, const std::map<std::string, TensorView>& tensors,
    const std::string& prefix, const VisionTowerOptions& options) {
  MODRWKV_RETURN_IF_ERROR(config.Validate());
  MODRWKV_RETURN_IF_ERROR(options.Validate(config));
  const TensorSource src(tensors, prefix);
  const int64_t d = config.hidden_size, f = config.intermediate_size, c = config.num_channels,
                p = config.patch_size;
  const bool clip = config.kind == VitKind::kClip;
  std::unique_ptr<VisionTower> t(new VisionTower(config, options));

  MODRWKV_ASSIGN_OR_RETURN(const TensorView* patch,
                           src.Get("embeddings.patch_embedding.weight", {d, c, p, p}));
  TensorView flat = *patch;  // Conv2d [D,C,p,p] as [D, C*p*p]: im2col order (c, ky, kx)
  flat.shape = {d, c * p * p};
  t->stem_.patch = cpu::MakeMatrix(flat, false, cpu::WType::kF32, cpu::Layout::kPanels);
  MODRWKV_ASSIGN_OR_RETURN(t->stem_.pos, src.Floats("embeddings.position_embedding.weight",
                                                    {config.num_positions(), d}));
  if (clip) {
    MODRWKV_ASSIGN_OR_RETURN(t->stem_.class_emb, src.Floats("embeddings.class_embedding", {d}));
    MODRWKV_ASSIGN_OR_RETURN(t->stem_.pre_ln_w, src.Floats("pre_layrnorm.weight", {d}));
    MODRWKV_ASSIGN_OR_RETURN(t->stem_.pre_ln_b, src.Floats("pre_layrnorm.bias", {d}));
  } else {
    MODRWKV_ASSIGN_OR_RETURN(t->stem_.patch_b, src.Floats("embeddings.patch_embedding.bias", {d}));
    MODRWKV_ASSIGN_OR_RETURN(t->post_ln_w_, src.Floats("post_layernorm.weight", {d}));
    MODRWKV_ASSIGN_OR_RETURN(t->post_ln_b_, src.Floats("post_layernorm.bias", {d}));
  }
  // Layers past the feature layer never run, so they are neither required nor loaded.
  t->layers_.resize(t->layers_to_run());
  for (int i = 0; i < t->layers_to_run(); ++i) {
    EncoderLayerWeights& l = t->layers_[i];
    const std::string k = absl::StrCat("encoder.layers.", i, ".");
    MODRWKV_ASSIGN_OR_RETURN(l.ln1_w, src.Floats(k + "layer_norm1.weight", {d}));
    MODRWKV_ASSIGN_OR_RETURN(l.ln1_b, src.Floats(k + "layer_norm1.bias", {d}));
    MODRWKV_ASSIGN_OR_RETURN(l.ln2_w, src.Floats(k + "layer_norm2.weight", {d}));
    MODRWKV_ASSIGN_OR_RETURN(l.ln2_b, src.Floats(k + "layer_norm2.bias", {d}));
    std::vector<float> qkv_w;
    qkv_w.reserve(static_cast<size_t>(3 * d * d));
    for (const char* proj : {"q_proj", "k_proj", "v_proj"}) {
      const std::string base = absl::StrCat(k, "self_attn.", proj);
      MODRWKV_ASSIGN_OR_RETURN(std::vector<float> w, src.Floats(base + ".weight", {d, d}));
      MODRWKV_ASSIGN_OR_RETURN(std::vector<float> b, src.Floats(base + ".bias", {d}));
      qkv_w.insert(qkv_w.end(), w.begin(), w.end());
      l.qkv_b.insert(l.qkv_b.end(), b.begin(), b.end());
    }
    l.qkv = PackF32(qkv_w, 3 * d, d);
    MODRWKV_ASSIGN_OR_RETURN(l.out, src.Weight(k + "self_attn.out_proj.weight", d, d));
    MODRWKV_ASSIGN_OR_RETURN(l.out_b, src.Floats(k + "self_attn.out_proj.bias", {d}));
    MODRWKV_ASSIGN_OR_RETURN(l.fc1, src.Weight(k + "mlp.fc1.weight", f, d));
    MODRWKV_ASSIGN_OR_RETURN(l.fc1_b, src.Floats(k + "mlp.fc1.bias", {f}));
    MODRWKV_ASSIGN_OR_RETURN(l.fc2, src.Weight(k + "mlp.fc2.weight", d, f));
    MODRWKV_ASSIGN_OR_RETURN(l.fc2_b, src.Floats(k + "mlp.fc2.bias", {d}));
  }
  return t;
}

absl::StatusOr<std::unique_ptr<VisionTower>> VisionTower::Load(const std::string& hf_folder,
                                                               const VisionTowerOptions& options) {
  const std::filesystem::path dir(hf_folder);
  MODRWKV_ASSIGN_OR_RETURN(std::string json, ReadFileToString(dir / "config.json"));
  auto config = ParseVitConfig(json);
  if (!config.ok()) {
    return absl::Status(config.status().code(), absl::StrCat((dir / "config.json").string(), ": ",
                                                             config.status().message()));
  }
  MODRWKV_ASSIGN_OR_RETURN(const std::filesystem::path weights, FindWeightsFile(dir));
  MODRWKV_ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open(weights.string()));
  const auto& tensors = ckpt->tensors();
  const std::string prefix = HasPrefix(tensors, "vision_model.") ? "vision_model." : "";
  auto tower = Create(*config, tensors, prefix, options);
  if (!tower.ok()) {
    return absl::Status(tower.status().code(),
                        absl::StrCat(weights.string(), ": ", tower.status().message()));
  }
  return tower;
}

}  // namespace modrwkv::encoders
