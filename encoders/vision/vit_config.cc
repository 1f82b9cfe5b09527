#include "encoders/vision/vit_config.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "encoders/vision/config_json.h"

namespace modrwkv::encoders {
namespace {

using nlohmann::json;

constexpr char kConfig[] = "vision config";  // errors name it

}  // namespace

VitConfig DefaultVitConfig(VitKind kind) {
  VitConfig c;
  c.kind = kind;
  if (kind == VitKind::kClip) {
    c.patch_size = 32;
    c.layer_norm_eps = 1e-5f;
    c.hidden_act = "quick_gelu";
  }
  return c;
}

absl::Status VitConfig::Validate() const {
  auto positive = [](int v, const char* name) -> absl::Status {
    if (v <= 0 || v > (1 << 16)) {
      return absl::InvalidArgumentError(
          absl::StrCat("vision config: ", name, " is ", v, ", expected a value in [1, 65536]"));
    }
    return absl::OkStatus();
  };
  for (auto [v, name] : {std::pair{image_size, "image_size"},
                         {patch_size, "patch_size"},
                         {num_channels, "num_channels"},
                         {hidden_size, "hidden_size"},
                         {intermediate_size, "intermediate_size"},
                         {num_hidden_layers, "num_hidden_layers"},
                         {num_attention_heads, "num_attention_heads"}}) {
    if (auto s = positive(v, name); !s.ok()) return s;
  }
  if (image_size % patch_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vision config: image_size ", image_size, " is not a multiple of patch_size ", patch_size));
  }
  if (hidden_size % num_attention_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("vision config: hidden_size ", hidden_size,
                                                   " is not a multiple of num_attention_heads ",
                                                   num_attention_heads));
  }
  if (!(layer_norm_eps > 0)) {
    return absl::InvalidArgumentError("vision config: layer_norm_eps must be > 0");
  }
  if (hidden_act != "gelu_pytorch_tanh" && hidden_act != "quick_gelu" && hidden_act != "gelu" &&
      hidden_act != "gelu_new") {
    return absl::InvalidArgumentError(
        absl::StrCat("vision config: hidden_act \"", hidden_act,
                     "\" is not supported; expected gelu_pytorch_tanh, gelu_new, quick_gelu or "
                     "gelu"));
  }
  return absl::OkStatus();
}

absl::StatusOr<VitConfig> ParseVitConfig(std::string_view config_json) {
  json root = json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError("vision config is not a JSON object");
  }
  std::string model_type;
  if (auto it = root.find("model_type"); it != root.end() && it->is_string()) {
    model_type = it->get<std::string>();
  }
  VitKind kind;
  const json* vision = &root;
  static const json kEmpty = json::object();
  if (model_type == "siglip" || model_type == "clip") {
    kind = model_type == "siglip" ? VitKind::kSiglip : VitKind::kClip;
    // transformers builds the vision config from {} when the key is missing.
    auto it = root.find("vision_config");
    if (it == root.end() || it->is_null()) {
      vision = &kEmpty;
    } else if (!it->is_object()) {
      return absl::InvalidArgumentError("vision config: \"vision_config\" is not an object");
    } else {
      vision = &*it;
    }
  } else if (model_type == "siglip_vision_model" || model_type == "clip_vision_model") {
    kind = model_type == "siglip_vision_model" ? VitKind::kSiglip : VitKind::kClip;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("vision config: model_type \"", model_type,
                     "\" is not supported; expected siglip, siglip_vision_model, clip or "
                     "clip_vision_model"));
  }
  VitConfig c = DefaultVitConfig(kind);
  const json& v = *vision;
  for (auto [key, field] : {std::pair{"image_size", &c.image_size},
                            {"patch_size", &c.patch_size},
                            {"num_channels", &c.num_channels},
                            {"hidden_size", &c.hidden_size},
                            {"intermediate_size", &c.intermediate_size},
                            {"num_hidden_layers", &c.num_hidden_layers},
                            {"num_attention_heads", &c.num_attention_heads}}) {
    if (auto s = ReadConfigKey(v, kConfig, key, field); !s.ok()) return s;
  }
  if (auto s = ReadConfigKey(v, kConfig, "layer_norm_eps", &c.layer_norm_eps); !s.ok()) return s;
  if (auto s = ReadConfigKey(v, kConfig, "hidden_act", &c.hidden_act); !s.ok()) return s;
  if (auto s = c.Validate(); !s.ok()) return s;
  return c;
}

}  // namespace modrwkv::encoders
