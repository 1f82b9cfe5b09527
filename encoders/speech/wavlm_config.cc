#include "encoders/speech/wavlm_config.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "encoders/vision/config_json.h"

namespace modrwkv::encoders {
namespace {

using nlohmann::json;

constexpr char kConfig[] = "wavlm config";  // errors name it

}  // namespace

int WavlmConfig::OutputFrames(int samples) const {
  int64_t n = samples;
  for (int i = 0; i < conv_layers(); ++i) {
    if (n < conv_kernel[i]) return 0;
    n = (n - conv_kernel[i]) / conv_stride[i] + 1;
  }
  return static_cast<int>(n);
}

int WavlmConfig::SamplesPerFrame() const {
  int s = 1;
  for (int v : conv_stride) s *= v;
  return s;
}

absl::Status WavlmConfig::Validate() const {
  auto bad = [](const char* key, auto v, const char* expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("wavlm config key \"", key, "\" is ", v, ", expected ", expected));
  };
  for (auto [v, key] : {std::pair{hidden_size, "hidden_size"},
                        {num_hidden_layers, "num_hidden_layers"},
                        {num_attention_heads, "num_attention_heads"},
                        {intermediate_size, "intermediate_size"},
                        {num_conv_pos_embeddings, "num_conv_pos_embeddings"},
                        {num_conv_pos_embedding_groups, "num_conv_pos_embedding_groups"},
                        {num_buckets, "num_buckets"},
                        {max_bucket_distance, "max_bucket_distance"}}) {
    if (v <= 0 || v > (1 << 16)) return bad(key, v, "a value in [1, 65536]");
  }
  if (hidden_size % num_attention_heads != 0) {
    return bad("num_attention_heads", num_attention_heads, "a divisor of hidden_size");
  }
  if (hidden_size % num_conv_pos_embedding_groups != 0) {
    return bad("num_conv_pos_embedding_groups", num_conv_pos_embedding_groups,
               "a divisor of hidden_size");
  }
  // max_exact = num_buckets / 4 must be >= 1 and below max_bucket_distance for the log buckets.
  if (num_buckets < 4) return bad("num_buckets", num_buckets, "at least 4");
  if (max_bucket_distance <= num_buckets / 4) {
    return bad("max_bucket_distance", max_bucket_distance, "more than num_buckets / 4");
  }
  if (conv_dim.empty()) return bad("conv_dim", "[]", "a non-empty list");
  if (conv_kernel.size() != conv_dim.size()) {
    return bad("conv_kernel", absl::StrCat("[", absl::StrJoin(conv_kernel, ","), "]"),
               "as many entries as conv_dim");
  }
  if (conv_stride.size() != conv_dim.size()) {
    return bad("conv_stride", absl::StrCat("[", absl::StrJoin(conv_stride, ","), "]"),
               "as many entries as conv_dim");
  }
  for (size_t i = 0; i < conv_dim.size(); ++i) {
    if (conv_dim[i] <= 0 || conv_dim[i] > (1 << 16)) {
      return bad("conv_dim", conv_dim[i], "entries in [1, 65536]");
    }
    if (conv_kernel[i] <= 0 || conv_kernel[i] > 1024) {
      return bad("conv_kernel", conv_kernel[i], "entries in [1, 1024]");
    }
    if (conv_stride[i] <= 0 || conv_stride[i] > 1024) {
      return bad("conv_stride", conv_stride[i], "entries in [1, 1024]");
    }
  }
  if (feat_extract_norm != "group" && feat_extract_norm != "layer") {
    return bad("feat_extract_norm", absl::StrCat("\"", feat_extract_norm, "\""),
               "\"group\" or \"layer\"");
  }
  if (!(layer_norm_eps > 0)) return bad("layer_norm_eps", layer_norm_eps, "a value > 0");
  if (hidden_act != "gelu")
    return bad("hidden_act", absl::StrCat("\"", hidden_act, "\""), "\"gelu\"");
  if (feat_extract_activation != "gelu") {
    return bad("feat_extract_activation", absl::StrCat("\"", feat_extract_activation, "\""),
               "\"gelu\"");
  }
  return absl::OkStatus();
}

absl::StatusOr<WavlmConfig> ParseWavlmConfig(std::string_view config_json) {
  json root = json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError("wavlm config is not a JSON object");
  }
  std::string model_type;
  if (auto it = root.find("model_type"); it != root.end() && it->is_string()) {
    model_type = it->get<std::string>();
  }
  if (model_type != "wavlm") {
    return absl::InvalidArgumentError(absl::StrCat("wavlm config key \"model_type\" is \"",
                                                   model_type, "\", expected \"wavlm\""));
  }
  WavlmConfig c;
  for (auto [key, field] : {std::pair{"hidden_size", &c.hidden_size},
                            {"num_hidden_layers", &c.num_hidden_layers},
                            {"num_attention_heads", &c.num_attention_heads},
                            {"intermediate_size", &c.intermediate_size},
                            {"num_conv_pos_embeddings", &c.num_conv_pos_embeddings},
                            {"num_conv_pos_embedding_groups", &c.num_conv_pos_embedding_groups},
                            {"num_buckets", &c.num_buckets},
                            {"max_bucket_distance", &c.max_bucket_distance}}) {
    if (auto s = ReadConfigKey(root, kConfig, key, field); !s.ok()) return s;
  }
  for (auto [key, field] : {std::pair{"conv_dim", &c.conv_dim},
                            {"conv_kernel", &c.conv_kernel},
                            {"conv_stride", &c.conv_stride}}) {
    if (auto s = ReadConfigKey(root, kConfig, key, field); !s.ok()) return s;
  }
  for (auto [key, field] :
       {std::pair{"conv_bias", &c.conv_bias}, {"do_stable_layer_norm", &c.do_stable_layer_norm}}) {
    if (auto s = ReadConfigKey(root, kConfig, key, field); !s.ok()) return s;
  }
  for (auto [key, field] : {std::pair{"feat_extract_norm", &c.feat_extract_norm},
                            {"hidden_act", &c.hidden_act},
                            {"feat_extract_activation", &c.feat_extract_activation}}) {
    if (auto s = ReadConfigKey(root, kConfig, key, field); !s.ok()) return s;
  }
  if (auto s = ReadConfigKey(root, kConfig, "layer_norm_eps", &c.layer_norm_eps); !s.ok()) return s;
  if (auto s = c.Validate(); !s.ok()) return s;
  return c;
}

}  // namespace modrwkv::encoders
