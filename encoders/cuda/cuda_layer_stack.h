// A tower's pre-LN transformer layers (SigLIP, CLIP, Whisper: transformer_ops.h's RunPreLnLayer)
// on one GPU. The weights go up once as f32; each Run copies the tower's rows up, runs every
// layer there — cuBLAS SGEMMs for the projections and, one strided batch per sequence, for the
// attention products over all heads; LayerNorm, bias, activation and softmax as kernels — and
// copies the rows back. f32 throughout (TF32 products only with EncoderMath::kTf32): the CPU's
// results up to the order of float sums. Runs are serialised (one stream, one scratch, grown to the
// largest batch seen). What comes before the layers is the stem runners' (cuda_vision_stem.h,
// cuda_whisper_stem.h: on the same device they hand their rows over there, RunFromDevice) or the
// CPU's; the final LayerNorm stays on the CPU.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "encoders/cuda/encoder_device.h"
#include "encoders/vision/transformer_ops.h"
#include "engine/cuda/device_buffer.h"

namespace modrwkv::encoders::cuda {

class CudaLayerStack final : public LayerStackRunner {
 public:
  // FAILED_PRECONDITION without device `device` or cuBLAS; RESOURCE_EXHAUSTED when the weights
  // do not fit; INVALID_ARGUMENT when the layers do not have the shape's sizes.
  static absl::StatusOr<std::unique_ptr<CudaLayerStack>> Create(
      absl::Span<const EncoderLayerWeights> layers, const EncoderLayerShape& shape, int device,
      EncoderMath math = EncoderMath::kF32);
  // Places every tower it is given on `device`.
  static LayerStackFactory Factory(int device, EncoderMath math = EncoderMath::kF32);
  // The device current while the buffers are freed.
  ~CudaLayerStack() override {
    if (dev_) (void)dev_->Use();
  }

  absl::Status Run(float* x, int batch) const override;
  // The stack behind `layers` when it is a CudaLayerStack on `device` (so it can take rows there:
  // RunFromDevice), else null.
  static const CudaLayerStack* OnDevice(const LayerStackRunner* layers, int device);
  // Run on rows already on this stack's device (`rows`: [batch * tokens][dim], written by work
  // queued on `producer`, a stream of that device, e.g. a stem runner's), without their copy from
  // the host: waits for the producer's work, then x gets the result.
  absl::Status RunFromDevice(const float* rows, cudaStream_t producer, int batch, float* x) const;
  // Runs that took their rows on the device (RunFromDevice), for tests and the curious.
  int64_t device_handoffs() const { return handoffs_.load(std::memory_order_relaxed); }

 private:
  using Layer = DeviceLayerWeights;

  explicit CudaLayerStack(const EncoderLayerShape& shape) : shape_(shape) {}
  absl::Status RunLayer(const Layer& l, int batch) const;
  // With mu_ held: copies the rows in (host or device, `kind`), runs the layers, copies them to x.
  absl::Status RunLocked(const float* rows, cudaMemcpyKind kind, int batch, float* x) const;

  const EncoderLayerShape shape_;
  std::unique_ptr<EncoderDevice> dev_;
  std::vector<Layer> layers_;

  mutable std::mutex mu_;  // one Run at a time: the stream and the scratch are shared
  mutable LayerScratch s_;
  mutable std::atomic<int64_t> handoffs_{0};
};

}  // namespace modrwkv::encoders::cuda
