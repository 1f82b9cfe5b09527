// The audio path of a ModRWKV model as an ItemEncoder for the encoder pool: FFmpeg decode to
// 16 kHz mono, the encoder's front end (Whisper log-mel padded to 30 s, or WavLM's per-clip
// normalisation), the encoder (Whisper's rows truncated to the clip as the official code does;
// WavLM's last_hidden_state), then the adapter chain (the speech adapter: conv k3 s2, linear,
// relu, linear).
//
// Long clips: the official pipeline silently keeps the first 30 s for Whisper and refuses WavLM
// outputs over 1023 rows; here a clip longer than the encoder's window is refused with the limit
// named (max-audio-seconds is capped at the window), never cut without a word.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "encoders/adapter/adapter_chain.h"
#include "encoders/audio/audio_decode.h"
#include "encoders/audio/whisper_features.h"
#include "encoders/pool/item_encoder.h"
#include "encoders/speech/wavlm_encoder.h"
#include "encoders/speech/whisper_encoder.h"

namespace modrwkv::encoders {

class AudioPipeline : public ItemEncoder {
 public:
  // Exactly one of `whisper` and `wavlm`. `decode.limits.max_seconds` is lowered to the
  // encoder's window. `id` names the encoder and adapter weights (part of the cache key).
  static absl::StatusOr<std::unique_ptr<AudioPipeline>> Create(
      std::unique_ptr<WhisperEncoder> whisper, std::unique_ptr<WhisperFrontEnd> front_end,
      std::unique_ptr<WavlmEncoder> wavlm, std::unique_ptr<AdapterChain> adapter,
      const AudioDecodeOptions& decode, std::string id);

  // Where parts of the encoders run instead of the CPU (a GPU): each factory set places its part.
  struct Placement {
    LayerStackFactory whisper_layers;
    WhisperStemFactory whisper_stem;  // the convolutions and the position embedding
    WavlmLayerFactory wavlm_layers;
    WavlmStemFactory wavlm_stem;  // the feature encoder, projection and positional convolution
  };
  // Loads the encoder folder: config.json's model_type says whisper or wavlm; `placement` says
  // which of its parts run through runners.
  static absl::StatusOr<std::unique_ptr<AudioPipeline>> Load(const std::string& folder,
                                                             std::unique_ptr<AdapterChain> adapter,
                                                             const AudioDecodeOptions& decode,
                                                             std::string id,
                                                             const Placement& placement = {});

  const char* encoder_kind() const { return whisper_ ? "whisper" : "wavlm"; }
  // Whether the encoder's transformer layers run through a runner (on a GPU), not on the CPU.
  bool layers_placed() const {
    return whisper_ ? whisper_->layers_placed() : wavlm_->layers_placed();
  }
  // The same for the encoder's stem (its convolutions: everything before the layers).
  bool stem_placed() const { return whisper_ ? whisper_->stem_placed() : wavlm_->stem_placed(); }
  int dim() const { return adapter_->output_dim(); }
  // Whether the adapter runs through a runner (on a GPU), not on the CPU.
  bool adapter_placed() const { return adapter_->placed(); }
  double max_seconds() const { return decode_.limits.max_seconds; }
  // Prompt rows per second of audio after the adapter (for GetModelInfo).
  double rows_per_second() const;

  std::string id() const override { return id_; }
  absl::StatusOr<std::shared_ptr<const PreparedItem>> Prepare(const MediaItem& item,
                                                              cpu::ThreadPool* pool) const override;
  absl::Status EncodeBatch(absl::Span<const PreparedItem* const> items,
                           std::vector<EmbeddingRows>* out, cpu::ThreadPool* pool) const override;

  // One clip, synchronously (CLI, tests).
  absl::StatusOr<EmbeddingRows> EncodeClip(absl::Span<const uint8_t> bytes, absl::string_view field,
                                           cpu::ThreadPool* pool) const;

 private:
  AudioPipeline() = default;
  absl::Status AdapterRows(const std::vector<float>& features, int rows, EmbeddingRows* out,
                           cpu::ThreadPool* pool) const;

  std::unique_ptr<WhisperEncoder> whisper_;
  std::unique_ptr<WhisperFrontEnd> front_end_;
  std::unique_ptr<WavlmEncoder> wavlm_;
  std::unique_ptr<AdapterChain> adapter_;
  AudioDecodeOptions decode_;
  std::string id_;
};

}  // namespace modrwkv::encoders
