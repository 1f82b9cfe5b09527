// The shape of a WavLM model (transformers' WavLMConfig, model_type "wavlm") as read from a
// Hugging Face config.json, with the defaults transformers fills in for keys the file omits.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace modrwkv::encoders {

struct WavlmConfig {
  int hidden_size = 768;
  int num_hidden_layers = 12;
  int num_attention_heads = 12;
  int intermediate_size = 3072;
  // The convolutional feature encoder: one entry per conv layer.
  std::vector<int> conv_dim = {512, 512, 512, 512, 512, 512, 512};
  std::vector<int> conv_kernel = {10, 3, 3, 3, 3, 2, 2};
  std::vector<int> conv_stride = {5, 2, 2, 2, 2, 2, 2};
  bool conv_bias = false;
  // "group": GroupNorm (one group per channel) after conv 0 only (base, base+);
  // "layer": LayerNorm over channels after every conv (large).
  std::string feat_extract_norm = "group";
  // false: post-LN blocks, LayerNorm after adding positions (base+); true: pre-LN blocks with a
  // final LayerNorm (large).
  bool do_stable_layer_norm = false;
  int num_conv_pos_embeddings = 128;
  int num_conv_pos_embedding_groups = 16;
  int num_buckets = 320;
  int max_bucket_distance = 800;
  float layer_norm_eps = 1e-5f;
  // Activation of the feed-forward blocks and of the convolutions: "gelu" (erf form) only.
  std::string hidden_act = "gelu";
  std::string feat_extract_activation = "gelu";

  int head_dim() const { return hidden_size / num_attention_heads; }
  int conv_layers() const { return static_cast<int>(conv_dim.size()); }
  // Frames out of the feature encoder for `samples` input samples (0 when too short).
  int OutputFrames(int samples) const;
  // Input samples per output frame (320 for the default convs: 20 ms at 16 kHz).
  int SamplesPerFrame() const;

  absl::Status Validate() const;
};

// Accepts model_type "wavlm" (WavLMModel and the task heads' configs; the heads are ignored).
// The result is validated. Errors name the offending key.
absl::StatusOr<WavlmConfig> ParseWavlmConfig(std::string_view config_json);

}  // namespace modrwkv::encoders
