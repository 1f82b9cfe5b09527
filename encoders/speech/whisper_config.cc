#include "encoders/speech/whisper_config.h"

#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "encoders/vision/config_json.h"
#include "encoders/vision/transformer_ops.h"

namespace modrwkv::encoders {
namespace {

using nlohmann::json;

constexpr char kConfig[] = "whisper config";  // errors name it

}  // namespace

absl::Status WhisperConfig::Validate() const {
  for (auto [v, name] : {std::pair{num_mel_bins, "num_mel_bins"},
                         {d_model, "d_model"},
                         {encoder_layers, "encoder_layers"},
                         {encoder_attention_heads, "encoder_attention_heads"},
                         {encoder_ffn_dim, "encoder_ffn_dim"},
                         {max_source_positions, "max_source_positions"}}) {
    if (v <= 0 || v > (1 << 16)) {
      return absl::InvalidArgumentError(absl::StrCat("whisper config key \"", name, "\" is ", v,
                                                     ", expected a value in [1, 65536]"));
    }
  }
  if (d_model % encoder_attention_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "whisper config key \"d_model\" (", d_model,
        ") is not a multiple of \"encoder_attention_heads\" (", encoder_attention_heads, ")"));
  }
  if (!ActivationByName(activation_function)) {
    return absl::InvalidArgumentError(
        absl::StrCat("whisper config key \"activation_function\" is \"", activation_function,
                     "\"; expected gelu, gelu_new, gelu_pytorch_tanh or quick_gelu"));
  }
  return absl::OkStatus();
}

absl::StatusOr<WhisperConfig> ParseWhisperConfig(std::string_view config_json) {
  const json root = json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError("whisper config is not a JSON object");
  }
  std::string model_type;
  if (auto s = ReadConfigKey(root, kConfig, "model_type", &model_type); !s.ok()) return s;
  if (model_type != "whisper") {
    return absl::InvalidArgumentError(absl::StrCat("whisper config key \"model_type\" is \"",
                                                   model_type, "\"; expected \"whisper\""));
  }
  WhisperConfig c;
  for (auto [key, field] : {std::pair{"num_mel_bins", &c.num_mel_bins},
                            {"d_model", &c.d_model},
                            {"encoder_layers", &c.encoder_layers},
                            {"encoder_attention_heads", &c.encoder_attention_heads},
                            {"encoder_ffn_dim", &c.encoder_ffn_dim},
                            {"max_source_positions", &c.max_source_positions}}) {
    if (auto s = ReadConfigKey(root, kConfig, key, field); !s.ok()) return s;
  }
  if (auto s = ReadConfigKey(root, kConfig, "activation_function", &c.activation_function); !s.ok())
    return s;
  if (auto s = c.Validate(); !s.ok()) return s;
  return c;
}

WhisperConfig WhisperSmallConfig() {
  WhisperConfig c;
  c.d_model = 768;
  c.encoder_layers = 12;
  c.encoder_attention_heads = 12;
  c.encoder_ffn_dim = 3072;
  return c;
}

WhisperConfig WhisperMediumConfig() {
  WhisperConfig c;
  c.d_model = 1024;
  c.encoder_layers = 24;
  c.encoder_attention_heads = 16;
  c.encoder_ffn_dim = 4096;
  return c;
}

}  // namespace modrwkv::encoders
