// The Whisper encoder (transformers' WhisperEncoder) on the CPU backend: both convolutions, every
// projection and both attention products run on the engine's panel GEMM inside the caller's
// thread pool, with the pre-LN layer shared with the vision towers
// (encoders/vision/transformer_ops).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "encoders/speech/whisper_config.h"
#include "encoders/vision/transformer_ops.h"
#include "engine/base/status_macros.h"
#include "engine/base/tensor.h"
#include "engine/cpu/linear.h"
#include "engine/cpu/thread_pool.h"

namespace modrwkv::encoders {

// Encoder rows that ModRWKV keeps for a clip of which the front end marked `valid_mel_frames`
// frames valid (the attention mask's sum: ceil(samples / 160), capped at 3000): the first
// valid_mel_frames / 2 + 1, at most `frames` (all 1500 for 30 s or more). Larger counts are
// capped like the mask; negative ones are an error.
absl::StatusOr<int> WhisperKeptFrames(int valid_mel_frames, int frames);

// What comes before the transformer layers (the stem): both convolutions (GELU after each) and
// the position embedding. Conv1d weights reordered to [D, 3 * in] in (tap, channel) order.
struct WhisperStemWeights {
  cpu::Matrix conv1;           // [D, 3*M]: k3, s1, p1 over the mel bins
  std::vector<float> conv1_b;  // [D]
  cpu::Matrix conv2;           // [D, 3*D]: k3, s2, p1
  std::vector<float> conv2_b;  // [D]
  std::vector<float> pos;      // [max_source_positions][D], embed_positions.weight
};

// Whisper's stem runs somewhere other than this CPU (a GPU: encoders/cuda). Thread-safe.
class WhisperStemRunner {
 public:
  virtual ~WhisperStemRunner() = default;
  // mel: [batch][num_mel_bins][mel_frames] host floats (Forward's input); x: [batch * frames][D]
  // host rows = GELU(conv2(GELU(conv1(mel)))) + the position embedding, per clip.
  virtual absl::Status Run(const float* mel, int batch, float* x) const = 0;
  // Run, then `layers` (null: none) over x in place: what the encoder does with the two. A runner
  // that can hand its rows to `layers` without copying them through the host (both on one GPU)
  // does so; x is the same either way.
  virtual absl::Status RunThrough(const float* mel, int batch, const LayerStackRunner* layers,
                                  float* x) const {
    MODRWKV_RETURN_IF_ERROR(Run(mel, batch, x));
    return layers == nullptr ? absl::OkStatus() : layers->Run(x, batch);
  }
};

using WhisperStemFactory = std::function<absl::StatusOr<std::unique_ptr<WhisperStemRunner>>(
    const WhisperStemWeights& stem, const WhisperConfig& config)>;

class WhisperEncoder {
 public:
  // Reads <hf_folder>/config.json and <hf_folder>/model.safetensors (else pytorch_model.bin).
  // Tensors are taken under "model.encoder." (WhisperForConditionalGeneration) when the file has
  // any, else under "encoder." (WhisperModel), else bare (WhisperEncoder saved alone); decoder
  // keys are ignored.
  static absl::StatusOr<std::unique_ptr<WhisperEncoder>> Load(const std::string& hf_folder);

  // Builds the encoder from tensors named prefix + <WhisperEncoder key>, e.g. "conv1.weight",
  // "layers.3.self_attn.k_proj.weight". Every tensor is checked for presence and shape; f32, bf16
  // and f16 are converted to f32 (copied: the tensors need not outlive the encoder).
  static absl::StatusOr<std::unique_ptr<WhisperEncoder>> Create(
      const WhisperConfig& config, const std::map<std::string, TensorView>& tensors,
      const std::string& prefix);

  const WhisperConfig& config() const { return config_; }
  int mel_bins() const { return config_.num_mel_bins; }
  int mel_frames() const { return config_.mel_frames(); }  // 3000
  int frames() const { return config_.frames(); }          // 1500 output rows per clip
  int dim() const { return config_.d_model; }

  // mel: [batch][num_mel_bins][mel_frames()] log-mel (the front end's output, padded to 30 s);
  // out: [batch][frames()][d_model] = last_hidden_state. All clips go through each convolution
  // and projection together. Thread-compatible: weights are immutable and scratch is per call,
  // so several threads may call Forward at once, each with its own pool.
  absl::Status Forward(absl::Span<const float> mel, int batch, absl::Span<float> out,
                       cpu::ThreadPool* pool) const;

  // Forward, then clip i keeps its first WhisperKeptFrames(valid_mel_frames[i]) rows, as the
  // official ModRWKV code does: one [kept_i][d_model] vector per clip.
  absl::StatusOr<std::vector<std::vector<float>>> Encode(absl::Span<const float> mel,
                                                         absl::Span<const int> valid_mel_frames,
                                                         cpu::ThreadPool* pool) const;

  // Multiply-adds x 2 of one clip's forward pass (convolutions, projections, attention products).
  double FlopsPerClip() const;

  // From now on the encoder layers run through `factory`'s runner (on a GPU: encoders/cuda);
  // the rest of Forward stays on the CPU (but for the stem: UseStem), and the CPU copy of the
  // layers is freed. Call before the encoder is shared between threads.
  absl::Status UseLayerStack(const LayerStackFactory& factory);
  // Whether the layers run through a runner (UseLayerStack), not on the CPU.
  bool layers_placed() const { return layer_stack_ != nullptr; }
  // The same for the stem (WhisperStemWeights: the convolutions and position embedding): it runs
  // through `factory`'s runner and its CPU copy is freed. Call before the encoder is shared.
  absl::Status UseStem(const WhisperStemFactory& factory);
  bool stem_placed() const { return stem_runner_ != nullptr; }

 private:
  explicit WhisperEncoder(const WhisperConfig& config) : config_(config) {}
  EncoderLayerShape layer_shape() const;

  WhisperConfig config_;
  WhisperStemWeights stem_;
  std::vector<float> ln_w_, ln_b_;  // [D], the final layer_norm
  std::vector<EncoderLayerWeights> layers_;
  std::unique_ptr<LayerStackRunner> layer_stack_;   // UseLayerStack; null: the layers on the CPU
  std::unique_ptr<WhisperStemRunner> stem_runner_;  // UseStem; null: the stem on the CPU
};

}  // namespace modrwkv::encoders
