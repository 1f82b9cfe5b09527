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

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/base/tensor.h"
#include "engine/cpu/linear.h"
#include "engine/cpu/thread_pool.h"

namespace modrwkv::encoders {

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
  int layers() const { return static_cast<int>(layers_.size()); }
  int heads() const { return heads_; }

  // patches [S][R][P] of S sequences (channels) of R patches each -> the last hidden state
  // [S][R][D]; each sequence attends only to itself, and all S * R rows go through every
  // projection together (the weights are read once for all channels). R, S >= 1. Thread-safe
  // (const, scratch per call); `pool` is the caller's own pool, or null to run on the calling
  // thread.
  absl::StatusOr<std::vector<float>> Encode(absl::Span<const float> patches, int R,
                                            cpu::ThreadPool* pool, int S = 1) const;

 private:
  struct Layer {
    cpu::Matrix qkv;  // [3D][D]: q, k, v stacked
    std::vector<float> qkv_b;
    cpu::Matrix o;        // [D][D]
    cpu::Matrix gate_up;  // [2F][D]: gate rows, then up rows
    cpu::Matrix down;     // [D][F]
    std::vector<float> norm1_w, norm1_b, norm2_w, norm2_b;
  };

  TimerEncoder() = default;
  // Rotary embedding in place on q and k of rows [S][R][3D] (q | k | v per row; positions
  // 0..R-1 in each sequence).
  void Rotate(float* qkv, int R, int S) const;
  // Causal multi-head attention within each sequence (SelfAttention with its causal mask):
  // qkv [S][R][3D] -> out [S][R][D].
  void Attend(const float* qkv, int R, int S, float* out, cpu::ThreadPool* pool) const;

  int input_dim_ = 0, dim_ = 0, ffn_ = 0, heads_ = 0;
  std::vector<float> inv_freq_;  // [head_dim / 2], as the reference rounds it (float32)
  cpu::Matrix embed_;            // [D][P]
  std::vector<Layer> layers_;
  std::vector<float> norm_w_, norm_b_;
};

}  // namespace modrwkv::encoders
