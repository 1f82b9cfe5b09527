// The Whisper log-mel front end, equal to transformers' WhisperFeatureExtractor (4.44, the torch
// path the official ModRWKV code takes): 16 kHz mono samples -> [n_mels][3000] features.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace modrwkv::encoders {

// The keys of a Whisper folder's preprocessor_config.json that shape the features; absent keys
// keep transformers' defaults. (Saved "mel_filters", "n_samples" and "nb_max_frames" are ignored:
// transformers recomputes them from these, and so do we.)
struct WhisperFeatureConfig {
  int feature_size = 80;  // mel bins: 80, or 128 for large-v3
  int sampling_rate = 16000;
  int hop_length = 160;
  int chunk_length = 30;  // seconds; every clip is padded or trimmed to this
  int n_fft = 400;
  float padding_value = 0.0f;

  int n_samples() const { return chunk_length * sampling_rate; }
  int num_frames() const { return n_samples() / hop_length; }  // 3000
  absl::Status Validate() const;

  static absl::StatusOr<WhisperFeatureConfig> FromJson(absl::string_view json);
  // Reads `<dir>/preprocessor_config.json`; a folder without one gets the defaults.
  static absl::StatusOr<WhisperFeatureConfig> FromFolder(const std::string& dir);
};

struct WhisperFeatures {
  int num_mels = 0;
  int num_frames = 0;         // always config.num_frames(): the encoder needs the full 30 s
  int valid_frames = 0;       // the attention mask's ones: ceil(samples / hop), at most num_frames
  std::vector<float> values;  // [num_mels][num_frames]
};

// Thread-safe after construction: Compute() may run on many threads at once (FFTW plans are
// created once, under a process-wide lock, and executed on per-call arrays).
class WhisperFrontEnd {
 public:
  static absl::StatusOr<std::unique_ptr<WhisperFrontEnd>> Create(
      const WhisperFeatureConfig& config);
  ~WhisperFrontEnd();
  WhisperFrontEnd(const WhisperFrontEnd&) = delete;
  WhisperFrontEnd& operator=(const WhisperFrontEnd&) = delete;

  // Pads (with padding_value) or trims `samples` (mono, at config.sampling_rate) to
  // chunk_length seconds; centred STFT (reflect padding, periodic Hann window of n_fft, hop),
  // last frame dropped, power spectrum, Slaney mel bank (0..8000 Hz), log10(max(x, 1e-10)),
  // clamp to (max - 8), (x + 4) / 4.
  WhisperFeatures Compute(absl::Span<const float> samples) const;

  const WhisperFeatureConfig& config() const { return config_; }
  // [n_fft / 2 + 1][feature_size], transformers' mel_filter_bank(norm="slaney",
  // mel_scale="slaney") rounded to float32 as the torch path uses it.
  const std::vector<float>& mel_filters() const { return mel_filters_; }

 private:
  WhisperFrontEnd() = default;

  WhisperFeatureConfig config_;
  std::vector<float> window_;       // [n_fft]
  std::vector<float> mel_filters_;  // [n_freq][n_mels]
  // Per mel bin, the range of frequency bins where its filter is non-zero: [begin, end).
  std::vector<int> mel_begin_, mel_end_;
  void* plan_ = nullptr;  // fftwf_plan (r2c, n_fft), kept opaque to keep fftw3.h out of the header
};

}  // namespace modrwkv::encoders
