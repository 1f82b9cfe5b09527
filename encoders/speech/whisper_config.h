// The shape of a Whisper encoder as read from a Hugging Face config.json (model_type "whisper"),
// with the defaults of transformers' WhisperConfig for keys the file omits.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace modrwkv::encoders {

// Only the encoder's keys are read; the decoder's are ignored.
struct WhisperConfig {
  int num_mel_bins = 80;  // 128 for large-v3
  int d_model = 384;
  int encoder_layers = 4;
  int encoder_attention_heads = 6;
  int encoder_ffn_dim = 1536;
  int max_source_positions = 1500;  // encoder frames; the input holds twice as many mel frames
  // "gelu" (erf, every released checkpoint), "gelu_new" / "gelu_pytorch_tanh" or "quick_gelu".
  std::string activation_function = "gelu";

  int head_dim() const { return d_model / encoder_attention_heads; }
  // Mel frames of one input window (3000 = 30 s at hop 160), as WhisperEncoder requires.
  int mel_frames() const { return 2 * max_source_positions; }
  // Encoder output rows of one window (1500).
  int frames() const { return max_source_positions; }

  absl::Status Validate() const;
};

// Errors name the offending key. The result is validated.
absl::StatusOr<WhisperConfig> ParseWhisperConfig(std::string_view config_json);

// The released checkpoints' encoder shapes (openai/whisper-*; large-v3 has 128 mel bins).
WhisperConfig WhisperSmallConfig();   // 768 / 12 layers / 12 heads / 3072
WhisperConfig WhisperMediumConfig();  // 1024 / 24 / 16 / 4096

}  // namespace modrwkv::encoders
