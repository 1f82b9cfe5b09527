// A SigLIP or CLIP vision tower (transformers' SiglipVisionTransformer / CLIPVisionTransformer)
// on the CPU backend: every projection and both attention products run on the engine's panel
// GEMM inside the caller's thread pool.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "encoders/vision/transformer_ops.h"
#include "encoders/vision/vit_config.h"
#include "engine/base/status_macros.h"
#include "engine/base/tensor.h"
#include "engine/cpu/linear.h"
#include "engine/cpu/thread_pool.h"

namespace modrwkv::encoders {

struct VisionTowerOptions {
  // Which hidden state is the output. -1: last_hidden_state (SigLIP: after post_layernorm; CLIP:
  // the last encoder layer's output, which transformers does not normalise). CLIP also takes an
  // index into transformers' hidden_states (0 = embeddings after pre_layrnorm, i = output of
  // encoder layer i; negative counts from the end, so -2 is the penultimate layer). SigLIP: -1
  // only.
  int feature_layer = -1;
  // CLIP only: drop row 0 (the class token) from the output.
  bool drop_class_token = false;

  absl::Status Validate(const VitConfig& config) const;
};

// What comes before the transformer layers (the stem): the patch embedding (a Conv2d with
// stride = kernel = patch_size, as a product over each patch's pixels in (channel, ky, kx)
// order), CLIP's class token, the position embedding and CLIP's pre_layrnorm.
struct VisionStemWeights {
  cpu::Matrix patch;                      // [D, C*p*p]: Conv2d weight [D,C,p,p] flattened
  std::vector<float> patch_b;             // [D], SigLIP only
  std::vector<float> class_emb;           // [D], CLIP only
  std::vector<float> pos;                 // [num_positions][D]
  std::vector<float> pre_ln_w, pre_ln_b;  // [D], CLIP pre_layrnorm
};

// A tower's stem runs somewhere other than this CPU (a GPU: encoders/cuda). Thread-safe.
class VisionStemRunner {
 public:
  virtual ~VisionStemRunner() = default;
  // pixels: [batch][C][image_size][image_size] host floats (Forward's input); x:
  // [batch * num_positions][D] host rows, the first layer's input.
  virtual absl::Status Run(const float* pixels, int batch, float* x) const = 0;
  // Run, then `layers` (null: none) over x in place: what the tower does with the two. A runner
  // that can hand its rows to `layers` without copying them through the host (both on one GPU)
  // does so; x is the same either way.
  virtual absl::Status RunThrough(const float* pixels, int batch, const LayerStackRunner* layers,
                                  float* x) const {
    MODRWKV_RETURN_IF_ERROR(Run(pixels, batch, x));
    return layers == nullptr ? absl::OkStatus() : layers->Run(x, batch);
  }
};

using VisionStemFactory = std::function<absl::StatusOr<std::unique_ptr<VisionStemRunner>>(
    const VisionStemWeights& stem, const VitConfig& config)>;

class VisionTower {
 public:
  // Reads <hf_folder>/config.json and <hf_folder>/model.safetensors (else pytorch_model.bin).
  // Tensors are taken under "vision_model." when the file has any (SiglipVisionModel, SiglipModel,
  // CLIP*Model saves; other keys such as the text tower are ignored), otherwise bare.
  static absl::StatusOr<std::unique_ptr<VisionTower>> Load(const std::string& hf_folder,
                                                           const VisionTowerOptions& options);

  // Builds the tower from tensors named prefix + <SiglipVisionTransformer / CLIPVisionTransformer
  // key>, e.g. prefix "encoder.model." for a ModRWKV checkpoint that stores its encoder. Every
  // tensor is checked for presence and shape; f32, bf16 and f16 are converted to f32 (copied: the
  // tensors need not outlive the tower). The SigLIP pooling head is not used nor required.
  static absl::StatusOr<std::unique_ptr<VisionTower>> Create(
      const VitConfig& config, const std::map<std::string, TensorView>& tensors,
      const std::string& prefix, const VisionTowerOptions& options);

  // Rows per image of the output, and their width.
  int output_rows() const;
  int output_dim() const { return config_.hidden_size; }
  const VitConfig& config() const { return config_; }
  const VisionTowerOptions& options() const { return options_; }

  // pixels: [batch][num_channels][image_size][image_size] (already resized and normalised);
  // out: [batch][output_rows()][output_dim()]. All images go through each projection together.
  // Thread-compatible: weights are immutable and scratch is per call, so several threads may
  // call Forward at once, each with its own pool.
  absl::Status Forward(absl::Span<const float> pixels, int batch, absl::Span<float> out,
                       cpu::ThreadPool* pool) const;

  // Multiply-adds x 2 of one image's forward pass up to the output layer (projections and
  // attention products).
  double FlopsPerImage() const;

  // From now on the encoder layers run through `factory`'s runner (on a GPU: encoders/cuda);
  // the rest of Forward stays on the CPU (but for the stem: UseStem), and the CPU copy of the
  // layers is freed. Call before the encoder is shared between threads.
  absl::Status UseLayerStack(const LayerStackFactory& factory);
  // Whether the layers run through a runner (UseLayerStack), not on the CPU.
  bool layers_placed() const { return layer_stack_ != nullptr; }
  // The same for the stem (VisionStemWeights: everything before the layers): it runs through
  // `factory`'s runner and its CPU copy is freed. Call before the tower is shared.
  absl::Status UseStem(const VisionStemFactory& factory);
  bool stem_placed() const { return stem_runner_ != nullptr; }

 private:
  VisionTower(const VitConfig& config, const VisionTowerOptions& options)
      : config_(config), options_(options) {}
  // Encoder layers to run: up to the chosen feature layer.
  int layers_to_run() const;
  EncoderLayerShape layer_shape() const;

  VitConfig config_;
  VisionTowerOptions options_;
  VisionStemWeights stem_;
  std::vector<float> post_ln_w_, post_ln_b_;  // [D], SigLIP post_layernorm
  std::vector<EncoderLayerWeights> layers_;
  std::unique_ptr<LayerStackRunner> layer_stack_;  // UseLayerStack; null: the layers on the CPU
  std::unique_ptr<VisionStemRunner> stem_runner_;  // UseStem; null: the stem on the CPU
};

}  // namespace modrwkv::encoders
