// The shape of a ViT vision tower (SigLIP or CLIP) as read from a Hugging Face config.json, with
// the defaults transformers fills in for keys the file omits.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace modrwkv::encoders {

enum class VitKind { kSiglip, kClip };

struct VitConfig {
  VitKind kind = VitKind::kSiglip;
  int image_size = 224;
  int patch_size = 16;
  int num_channels = 3;
  int hidden_size = 768;
  int intermediate_size = 3072;
  int num_hidden_layers = 12;
  int num_attention_heads = 12;
  float layer_norm_eps = 1e-6f;
  // "gelu_pytorch_tanh", "quick_gelu" or "gelu" (erf).
  std::string hidden_act = "gelu_pytorch_tanh";

  int grid() const { return image_size / patch_size; }
  int num_patches() const { return grid() * grid(); }
  // Token rows of the encoder: the patches, plus CLIP's class token.
  int num_positions() const { return num_patches() + (kind == VitKind::kClip ? 1 : 0); }
  int head_dim() const { return hidden_size / num_attention_heads; }

  absl::Status Validate() const;
};

// transformers' defaults of SiglipVisionConfig / CLIPVisionConfig.
VitConfig DefaultVitConfig(VitKind kind);

// Accepts "siglip" / "clip" (a full model config; its "vision_config" object is read) and
// "siglip_vision_model" / "clip_vision_model" (a vision-only config). The result is validated.
absl::StatusOr<VitConfig> ParseVitConfig(std::string_view config_json);

}  // namespace modrwkv::encoders
