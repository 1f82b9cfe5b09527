// The adapter between a modality encoder and the LLM, as data: a list of layer specs (conv1d,
// linear, activations, layer norms, pixel shuffle, a transformer encoder layer) run over rows of
// features [T, D] -> [T', C].
// Every official ModRWKV adapter is a preset of this one chain (see the presets below).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/base/tensor.h"
#include "engine/cpu/linear.h"
#include "engine/cpu/thread_pool.h"
#include "nlohmann/json_fwd.hpp"

namespace modrwkv::encoders {

struct TransformerLayerWeights;  // adapter_transformer.h

enum class AdapterOp {
  kConv1d,                   // PyTorch Conv1d over rows: weight [out, in, k], bias [out]
  kLinear,                   // weight [out, in], bias [out]
  kRelu,                     //
  kGelu,                     // tanh approximation or exact (erf)
  kLayerNorm,                // weight [D], bias [D] over each row
  kResidualLayerNorm,        // y + LayerNorm(y)
  kPixelShuffle,             // rows on a sqrt(T) x sqrt(T) grid, factor x factor blocks merged
  kTransformerEncoderLayer,  // torch nn.TransformerEncoderLayer over all rows (no mask), weights
                             // <stem>.self_attn.{in_proj_*,out_proj.*}, .linear1/2.*, .norm1/2.*
};

// "conv1d", "linear", ...; the names of the JSON form.
const char* AdapterOpName(AdapterOp op);

struct AdapterLayerSpec {
  AdapterOp op = AdapterOp::kLinear;
  // Tensor name stem relative to the chain's prefix ("proj.0" reads "<prefix>proj.0.weight");
  // empty for layers without weights.
  std::string weights;
  bool bias = true;        // conv1d, linear: "<weights>.bias" is required (true) or absent (false)
  int kernel = 0;          // conv1d: 0 = from the weight's shape, else checked against it
  int stride = 1;          // conv1d
  int padding = 0;         // conv1d: zeros on both ends of the row axis
  bool gelu_tanh = false;  // gelu: tanh approximation (true) or erf (false, torch's default)
  float eps = 1e-5f;       // layernorm, residual_layernorm, transformer (torch's default)
  int factor = 0;          // pixel_shuffle
  // transformer_encoder_layer: the head count (required: the weights' shapes do not tell it), the
  // feed-forward activation (ReLU, torch's default, or exact GELU) and pre-norm (norm_first) vs
  // torch's default post-norm.
  int heads = 0;
  bool ffn_gelu = false;
  bool norm_first = false;

  bool has_weights() const;
};

struct AdapterSpec {
  std::vector<AdapterLayerSpec> layers;

  // Structural checks that need no tensors: stems present where needed, positive strides, ...
  absl::Status Validate() const;
};

// JSON form, for the model manifest: a list of objects with "op" and, as the op needs them,
// "weights", "bias", "kernel", "stride", "padding", "approximate" ("tanh" | "none"), "eps",
// "factor", "heads", "activation" ("relu" | "gelu"), "norm_first". Unknown ops or keys are errors
// naming the layer.
absl::StatusOr<AdapterSpec> ParseAdapterSpec(const nlohmann::json& json);
absl::StatusOr<AdapterSpec> ParseAdapterSpec(const std::string& json_text);
std::string AdapterSpecToJson(const AdapterSpec& spec);

// Presets: the official adapters as data. Stems are relative to the adapter's own prefix.
// Generation A vision (siglip/clip VisualAdapter): proj.0 -> ReLU -> proj.2, then y + pre_norm(y).
AdapterSpec VisionAdapterA();
// Generation B VisualAdapter: [conv k3 s2, no bias] -> mlp.0 -> ReLU -> mlp.2 -> y + pre_norm(y).
AdapterSpec VisionAdapterB(bool conv);
// Generation A SpeechAdapter (WavLM and Whisper): conv k3 s2 (bias, `conv_padding` zeros each
// side; 2 in the current code, 0 in earlier checkpoints) -> proj.0 -> ReLU -> proj.2; no norm.
AdapterSpec SpeechAdapterA(int conv_padding);
// The earlier generation A SpeechAdapter (JL-er/WorldRWKV 6c39cdb): conv k3 s2 (bias, no
// padding) -> torch TransformerEncoderLayer "transformer" (`heads` heads, 8 in the official code;
// post-norm, ReLU) -> linear.
AdapterSpec SpeechAdapterATransformer(int heads);
// Generation C VlProj ("auto_siglip2"): conv k6 s5, no bias -> mlp.0 -> GELU (erf) -> mlp.2. Its
// pre_norm is constructed but never applied, so it is not in the chain.
AdapterSpec ConvProjectorC();
// Generation C ModalityProjector ("siglip2"): 4x4 pixel shuffle -> proj (Linear, no bias).
AdapterSpec PixelShuffleProjectorC();
// The paper's 1D-conv compression ablation, (kernel, stride) in {(3,2), (4,3), (5,4)}: the
// generation B VisualAdapter with the conv's kernel and stride changed.
AdapterSpec ConvCompressionAdapter(int kernel, int stride);

class AdapterChain;

// An adapter chain run somewhere other than this CPU (a GPU: encoders/cuda). Thread-safe.
class AdapterRunner {
 public:
  virtual ~AdapterRunner() = default;
  // in: [rows][input_dim] host rows -> out: [out_rows][output_dim] host rows, out_rows being
  // AdapterChain::OutputRows(rows) >= 1.
  virtual absl::Status Run(const float* in, int rows, int out_rows, float* out) const = 0;
};

// Builds a runner for a chain, or declines (a null runner: the chain stays on the CPU) when it
// has a layer the runner does not run.
using AdapterFactory =
    std::function<absl::StatusOr<std::unique_ptr<AdapterRunner>>(const AdapterChain& chain)>;

// An adapter chain bound to its weights (converted to f32 and packed at Create). Immutable after
// Create; Run is const and keeps its scratch per call, so concurrent Runs from different threads,
// each with its own ThreadPool, are safe.
class AdapterChain {
 public:
  // Reads "<prefix><stem>.weight" / ".bias" from `tensors` for each layer with weights (a
  // transformer layer: the tensors listed in adapter_transformer.h). Widths come from the shapes;
  // a width that does not chain with its neighbour is an error naming the tensor and both widths.
  static absl::StatusOr<std::unique_ptr<AdapterChain>> Create(
      const AdapterSpec& spec, const std::map<std::string, TensorView>& tensors,
      const std::string& prefix);

  int input_dim() const { return input_dim_; }
  int output_dim() const { return output_dim_; }
  // Rows out for `input_rows` rows in; 0 when the chain cannot take that many (Run says why).
  int OutputRows(int input_rows) const;

  // in: [rows][input_dim] -> out: [OutputRows(rows)][output_dim]. `pool` may be null (runs on
  // the calling thread).
  absl::Status Run(absl::Span<const float> in, int rows, std::vector<float>* out,
                   cpu::ThreadPool* pool) const;

  // From now on Run goes through `factory`'s runner, unless it declines. Call before the chain
  // is shared between threads. The CPU weights stay (the runner reads them when it is built).
  absl::Status UseRunner(const AdapterFactory& factory);
  // Whether Run goes through a runner (UseRunner), not the CPU.
  bool placed() const { return runner_ != nullptr; }

  struct Layer {
    AdapterLayerSpec spec;
    int in_dim = 0;
    int out_dim = 0;
    cpu::Matrix w;             // conv1d: [out][k * in] (tap-major, matching the im2col rows)
    std::vector<float> bias;   // [out] or empty
    std::vector<float> gamma;  // [D] layer norms
    std::vector<float> beta;   // [D]
    // transformer_encoder_layer's tensors (shared, immutable: layers are moved, never mutated).
    std::shared_ptr<const TransformerLayerWeights> transformer;
  };
  const std::vector<Layer>& layers() const { return layers_; }
  // Rows out of a layer for `rows` in; -1 with *why set when impossible.
  static int LayerRows(const AdapterLayerSpec& spec, int rows, std::string* why);

 private:
  AdapterChain() = default;
  // OutputRows, or the error naming the first layer that cannot take its rows.
  absl::StatusOr<int> CheckedOutputRows(int input_rows) const;

  std::vector<Layer> layers_;
  std::unique_ptr<AdapterRunner> runner_;  // UseRunner; null: on the CPU
  int input_dim_ = 0;
  int output_dim_ = 0;
};

}  // namespace modrwkv::encoders
