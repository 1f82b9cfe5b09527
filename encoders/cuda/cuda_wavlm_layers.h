// WavLM's transformer layers (encoders/speech/wavlm_encoder.h: post-LN, or pre-LN with
// do_stable_layer_norm, and the gated relative position bias) on one GPU, as CudaLayerStack runs
// the pre-LN towers': weights up once as f32, each Run copies the rows and the relative bias up
// and the rows back, f32 cuBLAS products, the gate and the biased softmax as kernels. Runs are
// serialised; the scratch grows with the longest clip and largest batch seen.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "encoders/cuda/encoder_device.h"
#include "encoders/speech/wavlm_encoder.h"
#include "engine/cuda/device_buffer.h"

namespace modrwkv::encoders::cuda {

class CudaWavlmLayers final : public WavlmLayerRunner {
 public:
  // FAILED_PRECONDITION without device `device` or cuBLAS; RESOURCE_EXHAUSTED when the weights
  // do not fit; INVALID_ARGUMENT when the layers do not have the config's sizes.
  static absl::StatusOr<std::unique_ptr<CudaWavlmLayers>> Create(
      absl::Span<const WavlmLayerWeights> layers, const WavlmConfig& config, int device,
      EncoderMath math = EncoderMath::kF32);
  static WavlmLayerFactory Factory(int device, EncoderMath math = EncoderMath::kF32);
  // The device current while the buffers are freed.
  ~CudaWavlmLayers() override {
    if (dev_) (void)dev_->Use();
  }

  absl::Status Run(float* x, int batch, int frames, const float* rel) const override;
  // The runner behind `layers` when it is a CudaWavlmLayers on `device` (so it can take rows
  // there: RunFromDevice), else null.
  static const CudaWavlmLayers* OnDevice(const WavlmLayerRunner* layers, int device);
  // Run on rows already on this runner's device (`rows`: [batch * frames][D], written by work
  // queued on `producer`, a stream of that device: the stem's), without their copy from the
  // host: waits for the producer's work, then x gets the result.
  absl::Status RunFromDevice(const float* rows, cudaStream_t producer, int batch, int frames,
                             const float* rel, float* x) const;
  // Runs that took their rows on the device (RunFromDevice), for tests and the curious.
  int64_t device_handoffs() const { return handoffs_.load(std::memory_order_relaxed); }

 private:
  struct Layer {
    DeviceLayerWeights w;
    modrwkv::cuda::DeviceBuffer<float> gate_w, gate_b, gate_const;
  };

  explicit CudaWavlmLayers(const WavlmConfig& config) : config_(config) {}
  absl::Status RunLayer(const Layer& l, int batch, int frames) const;
  // With mu_ held: copies the rows in (host or device, `kind`) and the bias up, runs the layers,
  // copies the rows to x.
  absl::Status RunLocked(const float* rows, cudaMemcpyKind kind, int batch, int frames,
                         const float* rel, float* x) const;

  const WavlmConfig config_;
  std::unique_ptr<EncoderDevice> dev_;
  std::vector<Layer> layers_;

  mutable std::mutex mu_;  // one Run at a time: the stream and the scratch are shared
  struct Scratch : LayerScratch {
    DeviceScratch gate;  // [batch][heads][t]
    DeviceScratch rel;   // [heads][2t - 1]
  };
  mutable Scratch s_;
  mutable std::atomic<int64_t> handoffs_{0};
};

}  // namespace modrwkv::encoders::cuda
