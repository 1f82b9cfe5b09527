// The Timer time-series encoder (thuml/timer-base-84m's TimerModel: docs/models.md, "Time
// series", encoder "timer"), the alternative to the WaveNet. A decoder-only transformer over
// patches of one channel, post-LayerNorm:
//
//   x = embed_layer.emb(patch)                                     [R, D]  (no bias)
//   per layer:
//     q, k, v = q_proj(x), k_proj(x), v_proj(x)                     (with bias)
//     rotary position embedding on q and k per head (positions 0..R-1, inv_freq_i =
//       1 / theta^(2i / head_dim), rotate_half: the second half of the head negated in front)
//     a = softmax(q k^T / sqrt(head_dim) + causal mask) v           per head
//     x = norm1(x + o_proj(a))                                      (o_proj without bias)
//     x = norm2(x + down_proj(silu(gate_proj(x)) * up_proj(x)))     (no biases)
//   out = norm(x)                                                   [R, D]: the last hidden state
//
// Each output row sees only its own and earlier patches. Reference: sktime.libs.timer (the model
// code published with the checkpoint), tests/golden/timeseries_timer.
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

namespace modrwkv::encoders {

// One Timer layer's weights (f32, packed for the panel GEMM; cpu::UnpackMatrix gives them back).
struct TimerLayerWeights {
  cpu::Matrix qkv;  // [3D][D]: q, k, v stacked
  std::vector<float> qkv_b;
  cpu::Matrix o;        // [D][D]
  cpu::Matrix gate_up;  // [2F][D]: gate rows, then up rows
  cpu::Matrix down;     // [D][F]
  std::vector<float> norm1_w, norm1_b, norm2_w, norm2_b;
};

// The whole Timer as TimerEncoder holds it, for a runner elsewhere (TimerRunner).
struct TimerWeights {
  cpu::Matrix embed;  // [D][P]
  std::vector<TimerLayerWeights> layers;
  std::vector<float> norm_w, norm_b;  // [D]
  int heads = 0;
  std::vector<float> inv_freq;  // [head_dim / 2]: the rotary frequencies, as the reference rounds
};

// The Timer run somewhere other than this CPU (a GPU: encoders/cuda), all of it: embedding,
// layers, final norm. Thread-safe: encoder workers call Run concurrently.
class TimerRunner {
 public:
  virtual ~TimerRunner() = default;
  // patches: [S][R][P] host floats; out: [S][R][D], what TimerEncoder::Encode returns.
  virtual absl::Status Run(const float* patches, int R, int S, float* out) const = 0;
};

// Builds a runner for the weights; an error when they cannot be placed (no device, out of memory);
// a null runner declines (the encoder stays on the CPU).
using TimerFactory =
    std::function<absl::StatusOr<std::unique_ptr<TimerRunner>>(const TimerWeights& weights)>;

class TimerEncoder {
 public:
  // Reads, under `prefix` ("modality.ts_encoder."), TimerModel's state dict:
  //   embed_layer.emb.weight                                  [D, P]
  //   layers.{i}.self_attn.{q,k,v}_proj.{weight,bias}         [D, D], [D]
  //   layers.{i}.self_attn.o_proj.weight                      [D, D]
  //   layers.{i}.ffn_layer.{gate,up}_proj.weight              [F, D]
  //   layers.{i}.ffn_layer.down_proj.weight                   [D, F]
  //   layers.{i}.norm{1,2}.{weight,bias}, norm.{weight,bias}  [D]
  // (any dtype, converted to f32); no other tensor under `prefix`. `heads` must divide D into
  // even head widths. Errors name the tensor or the setting.
  static absl::StatusOr<std::unique_ptr<TimerEncoder>> Load(
      const std::map<std::string, TensorView>& tensors, const std::string& prefix, int heads,
      float rope_theta);

  int input_dim() const { return input_dim_; }  // P, steps per patch (input_token_len)
  int dim() const { return dim_; }              // D, hidden_size
  int layers() const { return layers_; }
  int heads() const { return w_.heads; }

  // patches [S][R][P] of S sequences (channels) of R patches each -> the last hidden state
  // [S][R][D]; each sequence attends only to itself, and all S * R rows go through every
  // projection together (the weights are read once for all channels). R, S >= 1. Thread-safe
  // (const, scratch per call); `pool` is the caller's own pool, or null to run on the calling
  // thread (neither is used when the encoder runs through a runner: UseRunner).
  absl::StatusOr<std::vector<float>> Encode(absl::Span<const float> patches, int R,
                                            cpu::ThreadPool* pool, int S = 1) const;

  // From now on Encode runs through `factory`'s runner (on a GPU: encoders/cuda), unless it
  // declines, and the CPU copy of the weights is freed. Call before the encoder is shared
  // between threads.
  absl::Status UseRunner(const TimerFactory& factory);
  bool placed() const { return runner_ != nullptr; }

 private:
  TimerEncoder() = default;
  // Rotary embedding in place on q and k of rows [S][R][3D] (q | k | v per row; positions
  // 0..R-1 in each sequence).
  void Rotate(float* qkv, int R, int S) const;
  // Causal multi-head attention within each sequence (SelfAttention with its causal mask):
  // qkv [S][R][3D] -> out [S][R][D].
  void Attend(const float* qkv, int R, int S, float* out, cpu::ThreadPool* pool) const;

  int input_dim_ = 0, dim_ = 0, ffn_ = 0, layers_ = 0;
  TimerWeights w_;
  std::unique_ptr<TimerRunner> runner_;  // UseRunner; null: on the CPU
};

}  // namespace modrwkv::encoders
