// WavLM (transformers' WavLMModel, output last_hidden_state) on the CPU backend: the
// convolutional feature encoder, the feature projection, the grouped positional convolution and
// the transformer with WavLM's gated relative position bias. Every projection and every
// convolution runs on the engine's panel GEMM inside the caller's thread pool.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "encoders/speech/wavlm_config.h"
#include "engine/base/status_macros.h"
#include "engine/base/tensor.h"
#include "engine/cpu/linear.h"
#include "engine/cpu/thread_pool.h"

namespace modrwkv::encoders {

// The relative position bucket of transformers' WavLMAttention._relative_positions_bucket for
// relative = key position - query position, computed in float32 as PyTorch does.
int WavlmRelativeBucket(int relative, int num_buckets, int max_distance);

// One transformer layer of WavLM (post-LN, or pre-LN with do_stable_layer_norm), with the
// gated relative position bias of its attention.
struct WavlmLayerWeights {
  std::vector<float> ln1_w, ln1_b, ln2_w, ln2_b;  // [D]: layer_norm, final_layer_norm
  cpu::Matrix qkv;                                // [3D, D]: q, k, v projections stacked
  std::vector<float> qkv_b;                       // [3D]
  cpu::Matrix out;                                // [D, D]
  std::vector<float> out_b;                       // [D]
  std::vector<float> gate_w;                      // [8][hd]: gru_rel_pos_linear
  std::vector<float> gate_b;                      // [8]
  std::vector<float> gate_const;                  // [heads]: gru_rel_pos_const
  cpu::Matrix fc1;                                // [F, D]: intermediate_dense
  std::vector<float> fc1_b;                       // [F]
  cpu::Matrix fc2;                                // [D, F]: output_dense
  std::vector<float> fc2_b;                       // [D]
};

// WavLM's transformer layers run somewhere other than this CPU (a GPU: encoders/cuda), in place
// of the encoder's own loop. Thread-safe: encoder workers call Run concurrently.
class WavlmLayerRunner {
 public:
  virtual ~WavlmLayerRunner() = default;
  // x: [batch * frames][D] host rows, in place, through every layer the runner was built with;
  // rel: [heads][2 * frames - 1], the relative position bias every layer adds (gated), entry
  // j - i + frames - 1 for query i and key j.
  virtual absl::Status Run(float* x, int batch, int frames, const float* rel) const = 0;
};

// Builds a runner for `layers` (in order) of a model of `config`; an error when they cannot be
// placed (no device, out of memory).
using WavlmLayerFactory = std::function<absl::StatusOr<std::unique_ptr<WavlmLayerRunner>>(
    absl::Span<const WavlmLayerWeights> layers, const WavlmConfig& config)>;

// What comes before the transformer layers (the stem): the convolutional feature encoder, the
// feature projection and the grouped positional convolution. Convolutions are Conv1d weights
// reordered to [out, kernel * in] in (tap, channel) order, so that output t of a time-major input
// ([frames][channels]) is the product of one window of kernel * in floats.
struct WavlmConv {
  int in = 0, out = 0, kernel = 0, stride = 0;
  cpu::Matrix w;                      // [out, kernel*in]
  std::vector<float> bias;            // [out] when conv_bias
  std::vector<float> norm_w, norm_b;  // [out]: GroupNorm (conv 0, "group") or LayerNorm
};
struct WavlmStemWeights {
  std::vector<WavlmConv> convs;
  std::vector<float> proj_ln_w, proj_ln_b;  // [C_last]: feature_projection.layer_norm
  cpu::Matrix proj;                         // [D, C_last]
  std::vector<float> proj_b;                // [D]
  std::vector<cpu::Matrix> pos;             // per group g: [D/G, K*D/G], (tap, channel) order
  std::vector<float> pos_b;                 // [D]
  // encoder.layer_norm where it comes between the stem and the layers (the post-LN layout, not
  // do_stable_layer_norm: base, base+); empty in the pre-LN layout, where it follows the layers.
  std::vector<float> ln_w, ln_b;  // [D]
};

// Eps of the feature encoder's GroupNorm / LayerNorm (PyTorch's default; not layer_norm_eps).
inline constexpr float kWavlmConvNormEps = 1e-5f;

// WavLM's stem runs somewhere other than this CPU (a GPU: encoders/cuda). Thread-safe.
class WavlmStemRunner {
 public:
  virtual ~WavlmStemRunner() = default;
  // samples: [batch][num_samples] host floats (normalised clips); x: [batch * frames][D] host
  // rows, frames = config.OutputFrames(num_samples) >= 1: the layers' input, per clip the feature
  // encoder, the projection, x += GELU(positional convolution(x) + bias) and, post-LN, the
  // encoder's LayerNorm (WavlmStemWeights::ln_w).
  virtual absl::Status Run(const float* samples, int batch, int num_samples, float* x) const = 0;
  // Run, then `layers` (null: none) over x in place with the relative bias `rel` for `frames`
  // (= config.OutputFrames(num_samples)) frames a clip, as WavlmLayerRunner::Run takes them: what
  // the encoder does with the two. A runner that can hand its rows to `layers` without copying
  // them through the host (both on one GPU) does so; x is the same either way.
  virtual absl::Status RunThrough(const float* samples, int batch, int num_samples,
                                  const WavlmLayerRunner* layers, int frames, const float* rel,
                                  float* x) const {
    MODRWKV_RETURN_IF_ERROR(Run(samples, batch, num_samples, x));
    return layers == nullptr ? absl::OkStatus() : layers->Run(x, batch, frames, rel);
  }
};

using WavlmStemFactory = std::function<absl::StatusOr<std::unique_ptr<WavlmStemRunner>>(
    const WavlmStemWeights& stem, const WavlmConfig& config)>;

class WavlmEncoder {
 public:
  // Reads <hf_folder>/config.json and <hf_folder>/model.safetensors (else pytorch_model.bin, the
  // only file of microsoft/wavlm-base-plus). Tensors are taken under "wavlm." or "model." when
  // the file has any (task heads such as WavLMForCTC save "wavlm."), otherwise bare.
  static absl::StatusOr<std::unique_ptr<WavlmEncoder>> Load(const std::string& hf_folder);

  // Builds the encoder from tensors named prefix + <WavLMModel key>, e.g. prefix
  // "encoder.model." for a ModRWKV checkpoint that stores its encoder. The positional
  // convolution's weight norm is read as weight_g / weight_v (torch < 2.1) or
  // parametrizations.weight.original0 / original1 (torch >= 2.1). Every tensor is checked for
  // presence and shape; f32, bf16 and f16 are converted to f32 (copied: the tensors need not
  // outlive the encoder). masked_spec_embed and task heads are ignored.
  static absl::StatusOr<std::unique_ptr<WavlmEncoder>> Create(
      const WavlmConfig& config, const std::map<std::string, TensorView>& tensors,
      const std::string& prefix);

  const WavlmConfig& config() const { return config_; }
  int output_dim() const { return config_.hidden_size; }
  // Frames of output for clips of `samples` samples (about samples / 320; 0 if too short).
  int OutputFrames(int samples) const { return config_.OutputFrames(samples); }

  // samples: [batch][num_samples] 16 kHz mono, already normalised as the model expects (WavLM's
  // feature extractor: zero mean, unit variance per clip); all clips of a call have the same
  // length (there is no padding mask: encode clips of different lengths in separate calls).
  // out: [batch][OutputFrames(num_samples)][output_dim()]. The clips share each transformer
  // projection; convolutions and attention run clip by clip.
  // Thread-compatible: weights are immutable and scratch is per call, so several threads may
  // call Forward at once, each with its own pool.
  absl::Status Forward(absl::Span<const float> samples, int batch, int num_samples,
                       absl::Span<float> out, cpu::ThreadPool* pool) const;

  // Multiply-adds x 2 of one clip of `num_samples` samples (convolutions, projections,
  // attention products).
  double FlopsPerClip(int num_samples) const;

  // From now on the transformer layers run through `factory`'s runner (on a GPU:
  // encoders/cuda); the rest of Forward stays on the CPU (but for the stem: UseStem), and the
  // CPU copy of the layers is freed. Call before the encoder is shared between threads.
  absl::Status UseLayerStack(const WavlmLayerFactory& factory);
  // Whether the layers run through a runner (UseLayerStack), not on the CPU.
  bool layers_placed() const { return layer_stack_ != nullptr; }
  // The same for the stem (WavlmStemWeights: everything before the layers): it runs through
  // `factory`'s runner and its CPU copy is freed. Call before the encoder is shared.
  absl::Status UseStem(const WavlmStemFactory& factory);
  bool stem_placed() const { return stem_runner_ != nullptr; }

 private:
  using Layer = WavlmLayerWeights;
  struct Scratch;

  explicit WavlmEncoder(const WavlmConfig& config) : config_(config) {}
  // Feature encoder + projection of one clip into x [frames][D].
  void Features(const float* clip, int num_samples, float* x, Scratch* s,
                cpu::ThreadPool* pool) const;
  // x[b] += GELU(pos_conv(x[b])) for each clip.
  void AddPositions(float* x, int batch, int frames, Scratch* s, cpu::ThreadPool* pool) const;
  // Self-attention with the gated relative bias: attn = Attention(h), h the attention input.
  void Attention(const Layer& l, const float* h, int batch, int frames, const float* rel,
                 float* attn, Scratch* s, cpu::ThreadPool* pool) const;
  void RunLayer(const Layer& l, float* x, int batch, int frames, const float* rel, Scratch* s,
                cpu::ThreadPool* pool) const;

  WavlmConfig config_;
  WavlmStemWeights stem_;
  std::vector<float> final_ln_w_, final_ln_b_;  // [D]: encoder.layer_norm after the layers (pre-LN)
  std::vector<float> rel_embed_;                // [num_buckets][heads]: layer 0's rel_attn_embed
  std::vector<Layer> layers_;
  std::unique_ptr<WavlmLayerRunner> layer_stack_;  // UseLayerStack; null: the layers on the CPU
  std::unique_ptr<WavlmStemRunner> stem_runner_;   // UseStem; null: the stem on the CPU
};

}  // namespace modrwkv::encoders
