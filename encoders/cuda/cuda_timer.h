// The Timer time-series encoder (encoders/timeseries/timer.h: a decoder-only, post-LayerNorm
// transformer over patches with a rotary position embedding and a SiLU-gated MLP) on one GPU,
// whole: the weights up once as f32 (336 MB for timer-base-84m); each Run copies the patches up,
// runs the embedding, every layer and the final LayerNorm there — cuBLAS SGEMMs for the
// projections over all rows of all sequences, the causal attention as two strided-batched
// products per sequence around the towers' softmax kernel, the rotary embedding and the gated
// activation as kernels — and copies the last hidden state back. f32 throughout (TF32 products
// only with EncoderMath::kTf32): the CPU's results up to the order of float sums. On a CPU a short
// series is bound by reading the weights (45 ms for 512 steps on one thread), a long one by its
// products and the attention's square. Runs are serialised; the scratch grows with the largest call
// seen.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "encoders/cuda/encoder_device.h"
#include "encoders/timeseries/timer.h"
#include "engine/cuda/device_buffer.h"

namespace modrwkv::encoders::cuda {

class CudaTimer final : public TimerRunner {
 public:
  // FAILED_PRECONDITION without device `device` or cuBLAS; RESOURCE_EXHAUSTED when the weights
  // do not fit; INVALID_ARGUMENT when the weights' sizes do not agree with each other.
  static absl::StatusOr<std::unique_ptr<CudaTimer>> Create(const TimerWeights& weights, int device,
                                                           EncoderMath math = EncoderMath::kF32);
  static TimerFactory Factory(int device, EncoderMath math = EncoderMath::kF32);
  // The device current while the buffers are freed.
  ~CudaTimer() override {
    if (dev_) (void)dev_->Use();
  }

  absl::Status Run(const float* patches, int R, int S, float* out) const override;

 private:
  using Buffer = modrwkv::cuda::DeviceBuffer<float>;
  struct Layer {
    Buffer qkv, qkv_b, o, gate_up, down, norm1_w, norm1_b, norm2_w, norm2_b;
  };

  CudaTimer(int patch, int dim, int ffn, int heads)
      : patch_(patch), dim_(dim), ffn_(ffn), heads_(heads) {}
  // One layer over s_.x ([S][R][D] on the device).
  absl::Status RunLayer(const Layer& l, int R, int S) const;

  const int patch_, dim_, ffn_, heads_;
  std::unique_ptr<EncoderDevice> dev_;
  Buffer embed_, norm_w_, norm_b_, inv_freq_;
  std::vector<Layer> layers_;

  mutable std::mutex mu_;  // one Run at a time: the stream and the scratch are shared
  mutable struct { DeviceScratch patches, x, qkv, attn, gu, act, scores; } s_;
};

}  // namespace modrwkv::encoders::cuda
