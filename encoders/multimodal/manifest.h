// The model manifest (`modrwkv-model.json` in a model directory): what a checkpoint's keys cannot
// say — where the encoder folder and the vocabulary are, the prompt template, stop and ban tokens,
// adapter options. Format documented in docs/models.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "encoders/timeseries/timeseries_manifest.h"
#include "nlohmann/json_fwd.hpp"

namespace modrwkv::encoders {

inline constexpr char kManifestName[] = "modrwkv-model.json";

// How an image's rows enter the token sequence.
enum class SpliceMode {
  kPrepend,     // generation A: the rows stand on their own (a chat turn puts them first)
  kReplacePad,  // generation B/C: start token, the rows in place of the pad tokens, end token
};

struct VisionManifest {
  std::string encoder;  // Hugging Face folder (config.json, model.safetensors, preprocessor)
  std::optional<SpliceMode> splice;  // unset: from the checkpoint's generation
  std::string adapter_json;          // "" = inferred from the checkpoint's keys
  int feature_layer = -1;            // -1 = last_hidden_state
  bool drop_class_token = false;     // CLIP towers
  // Generation B/C marker tokens: a text the vocabulary names as one token, or an id (>= 0, which
  // wins over the text). "" and -1: none.
  std::string image_start = "<|vision_start|>";
  std::string image_end = "<|vision_end|>";
  int32_t image_start_id = -1;
  int32_t image_end_id = -1;
};

// An audio encoder (Whisper or WavLM, told by its config.json's model_type) and its adapter.
struct AudioManifest {
  std::string encoder;  // Hugging Face folder (config.json, weights, preprocessor_config.json)
  // "" = inferred from the checkpoint's keys (SpeechAdapterA with padding 2, or
  // SpeechAdapterATransformer(8) when the keys hold a transformer layer).
  std::string adapter_json;
};

struct ModelManifest {
  std::string dir;         // folder the manifest was read from; relative paths resolve here
  std::string checkpoint;  // absolute after Resolve
  std::string vocab;       // "" = next to the checkpoint, then the bundled World vocabulary
  // "{text}" marks the user's message, "{image}" (optional) where a turn's image rows go.
  std::string chat_template;  // "" = the server's default
  std::vector<int32_t> stop_tokens;
  std::vector<int32_t> ban_tokens;
  std::optional<VisionManifest> vision;
  std::optional<AudioManifest> audio;
  std::optional<TimeSeriesManifest> time_series;  // encoders/timeseries/timeseries_manifest.h
};

// The adapter a manifest names: a chain of layers (JSON array), or a preset's name — vision_a,
// vision_b, vision_b_conv, speech_a (padding 2), speech_a_pad0, speech_a_transformer (conv ->
// 8-head TransformerEncoderLayer -> linear), conv_projector_c, pixel_shuffle_c, conv_k3s2,
// conv_k4s3, conv_k5s4. Returns the chain as JSON text.
absl::StatusOr<std::string> ManifestAdapter(const nlohmann::json& value, absl::string_view key);

// Parses a manifest's JSON text. `dir` is where relative paths resolve. Errors name the key.
absl::StatusOr<ModelManifest> ParseManifest(std::string_view json_text, const std::string& dir);

// `path` is a model directory holding kManifestName, or a manifest file.
absl::StatusOr<ModelManifest> LoadManifest(const std::string& path);

}  // namespace modrwkv::encoders
