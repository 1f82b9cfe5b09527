// The time-series encoder: a WaveNet over patch rows (docs/models.md, "Time series", step 3;
// reference tools/train/timeseries_model.py WaveNetEncoder), on the CPU backend's packed GEMM.
//
//   h = embed(row)                                               [R, d]
//   per layer i (dilation dil_i):
//     z = conv(h)    kernel 2, causal: z[r] = W[:,:,0] h[r - dil] + W[:,:,1] h[r] + b
//                    (rows before the first are zeros)           [R, 2d]
//     g = tanh(z[:, :d]) * sigmoid(z[:, d:])                      [R, d]
//     h += res(g);  skip_sum += skip(g)
//   out = out(relu(skip_sum))                                     [R, d]
// Every row sees only itself and earlier rows, and the cost is linear in R.
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

class WaveNetEncoder {
 public:
  // Reads, under `prefix` ("modality.ts_encoder."):
  //   embed.{weight,bias}                 [d, in], [d]
  //   layers.{i}.conv.{weight,bias}       [2d, d, 2], [2d]
  //   layers.{i}.res.{weight,bias}        [d, d], [d]
  //   layers.{i}.skip.{weight,bias}       [d, d], [d]
  //   out.{weight,bias}                   [d, d], [d]
  // (any dtype, converted to f32). The checkpoint's layer count must equal dilations.size(), and
  // no other tensor may sit under `prefix` (as PyTorch's strict load). Errors name the tensor.
  static absl::StatusOr<std::unique_ptr<WaveNetEncoder>> Load(
      const std::map<std::string, TensorView>& tensors, const std::string& prefix,
      absl::Span<const int> dilations);

  int input_dim() const { return input_dim_; }  // P * c
  int dim() const { return dim_; }              // d
  int layers() const { return static_cast<int>(layers_.size()); }

  // rows [R][input_dim] -> [R][dim]. R >= 1. Thread-safe (const, scratch per call); `pool` is
  // the caller's own pool, or null to run on the calling thread.
  absl::StatusOr<std::vector<float>> Encode(absl::Span<const float> rows, int R,
                                            cpu::ThreadPool* pool) const;

 private:
  struct Layer {
    int dilation = 1;
    cpu::Matrix tap0;               // [2d][d]: conv weight[:, :, 0], reads row r - dilation
    cpu::Matrix tap1;               // [2d][d]: conv weight[:, :, 1], reads row r
    std::vector<float> conv_b;      // [2d]
    cpu::Matrix res_skip;           // [2d][d]: res.weight rows, then skip.weight rows
    std::vector<float> res_skip_b;  // [2d]
  };

  WaveNetEncoder() = default;

  int input_dim_ = 0;
  int dim_ = 0;
  cpu::Matrix embed_;  // [d][in]
  std::vector<float> embed_b_;
  std::vector<Layer> layers_;
  cpu::Matrix out_;  // [d][d]
  std::vector<float> out_b_;
};

}  // namespace modrwkv::encoders
