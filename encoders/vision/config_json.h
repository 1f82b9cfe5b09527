// Reading a Hugging Face config.json's keys, as the encoders' config parsers do
// (vit_config.cc, whisper_config.cc, wavlm_config.cc).
#pragma once

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace modrwkv::encoders {

// *out = j[key] when the key is present and not null; absent or null, *out keeps its value
// (transformers' default). A value of another type is INVALID_ARGUMENT naming the config (e.g.
// "whisper config") and the key.
template <typename T>
absl::Status ReadConfigKey(const nlohmann::json& j, const char* config, const char* key, T* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  try {
    *out = it->get<T>();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(config, " key \"", key, "\" has the wrong type: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace modrwkv::encoders
