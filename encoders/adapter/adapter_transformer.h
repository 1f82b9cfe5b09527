// The adapter chain's transformer_encoder_layer: torch's nn.TransformerEncoderLayer over the rows
// of one sequence (batch 1, no mask, eval mode: dropout off), as the earlier official
// SpeechAdapter (conv -> TransformerEncoderLayer -> linear) runs it.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "encoders/adapter/adapter_chain.h"
#include "engine/base/tensor.h"
#include "engine/cpu/linear.h"
#include "engine/cpu/thread_pool.h"

namespace modrwkv::encoders {

// d = model width, ff = dim_feedforward; matrices packed for the CPU GEMM, vectors f32.
struct TransformerLayerWeights {
  int d = 0;
  int heads = 0;
  int ff = 0;
  cpu::Matrix in_proj;   // [3d][d]: the q, k, v projections stacked (torch's in_proj_weight)
  cpu::Matrix out_proj;  // [d][d]
  cpu::Matrix linear1;   // [ff][d]
  cpu::Matrix linear2;   // [d][ff]
  std::vector<float> in_proj_bias;                               // [3d]
  std::vector<float> out_proj_bias, linear1_bias, linear2_bias;  // [d], [ff], [d]
  std::vector<float> norm1_w, norm1_b, norm2_w, norm2_b;         // [d]
};

// Reads "<stem>.self_attn.in_proj_weight" [3d, d], "...in_proj_bias" [3d],
// "<stem>.self_attn.out_proj.{weight [d, d], bias [d]}", "<stem>.linear1.{weight [ff, d], bias
// [ff]}", "<stem>.linear2.{weight [d, ff], bias [d]}", "<stem>.norm{1,2}.{weight, bias} [d]".
// Errors start with `where` and name the tensor and the shape expected; `heads` must divide d.
absl::StatusOr<std::shared_ptr<const TransformerLayerWeights>> LoadTransformerLayer(
    const std::map<std::string, TensorView>& tensors, const std::string& stem, int heads,
    const std::string& where);

// x: [rows][w.d], replaced by the layer's output. Post-norm (torch's default):
//   x = norm1(x + SelfAttention(x));  x = norm2(x + linear2(act(linear1(x))))
// norm_first:  x += SelfAttention(norm1(x));  x += linear2(act(linear1(norm2(x)))).
// Attention runs per head over all rows (scores scaled by 1/sqrt(d/heads), max-subtracted softmax),
// spread over `pool` by (head, block of rows); the projections use `runner`'s GEMM.
void RunTransformerLayer(const TransformerLayerWeights& w, const AdapterLayerSpec& spec, int rows,
                         std::vector<float>* x, cpu::LinearRunner* runner, cpu::ThreadPool* pool);

}  // namespace modrwkv::encoders
