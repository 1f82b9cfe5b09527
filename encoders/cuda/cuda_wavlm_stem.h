// WavLM's stem (encoders/speech/wavlm_encoder.h: the convolutional feature encoder, the feature
// projection and the grouped positional convolution) on one GPU. The weights go up once as f32;
// each Run copies the clips up, runs every convolution there as cuBLAS products over its windows
// (EncoderDevice::Conv1d) with the norms and GELUs as kernels, and copies the rows back. f32
// throughout: the CPU's results up to the order of float sums. On a CPU the stem is a third of
// WavLM-base+'s arithmetic (49 of 148 GFLOP for 10 s); with only the layers on the GPU it was
// most of an encode. Runs are serialised; the scratch grows with the longest clip seen.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "encoders/cuda/encoder_device.h"
#include "encoders/speech/wavlm_encoder.h"
#include "engine/cuda/device_buffer.h"

namespace modrwkv::encoders::cuda {

class CudaWavlmStem final : public WavlmStemRunner {
 public:
  // FAILED_PRECONDITION without device `device` or cuBLAS; RESOURCE_EXHAUSTED when the weights
  // do not fit; INVALID_ARGUMENT when the weights do not have the config's sizes.
  static absl::StatusOr<std::unique_ptr<CudaWavlmStem>> Create(
      const WavlmStemWeights& stem, const WavlmConfig& config, int device,
      EncoderMath math = EncoderMath::kF32);
  static WavlmStemFactory Factory(int device, EncoderMath math = EncoderMath::kF32);
  // The device current while the buffers are freed.
  ~CudaWavlmStem() override {
    if (dev_) (void)dev_->Use();
  }

  absl::Status Run(const float* samples, int batch, int num_samples, float* x) const override;
  // A CudaWavlmLayers on the same device takes the rows there (RunFromDevice): one copy to the
  // host at the end instead of three.
  absl::Status RunThrough(const float* samples, int batch, int num_samples,
                          const WavlmLayerRunner* layers, int frames, const float* rel,
                          float* x) const override;

 private:
  using Buffer = modrwkv::cuda::DeviceBuffer<float>;
  struct Conv {
    int in = 0, out = 0, kernel = 0, stride = 0;
    Buffer w, bias, norm_w, norm_b;  // bias empty without conv_bias
  };

  explicit CudaWavlmStem(const WavlmConfig& config) : config_(config) {}
  // With mu_ held: the clips up and the stem's rows into s_.x (queued on the stream).
  absl::Status Compute(const float* samples, int batch, int num_samples) const;
  // One clip's samples (on the device) into its rows of x.
  absl::Status RunClip(const float* clip, int num_samples, float* x) const;

  const WavlmConfig config_;
  std::unique_ptr<EncoderDevice> dev_;
  std::vector<Conv> convs_;
  Buffer proj_ln_w_, proj_ln_b_, proj_, proj_b_, pos_b_;
  Buffer ln_w_, ln_b_;  // the encoder's LayerNorm, post-LN only (WavlmStemWeights::ln_w)
  Buffer pos_;          // [D][K * D/G]: group g's output channels from g * D/G

  mutable std::mutex mu_;  // one Run at a time: the stream and the scratch are shared
  mutable struct { DeviceScratch samples, a, b, x, pos, cols; } s_;
};

}  // namespace modrwkv::encoders::cuda
