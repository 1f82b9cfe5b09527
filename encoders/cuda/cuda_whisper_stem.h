// Whisper's stem (encoders/speech/whisper_encoder.h: both convolutions with their GELUs and the
// position embedding) on one GPU: the weights up once as f32; each Run copies the log-mel clips up
// as they are (channel-major: the first convolution gathers its windows across the mel bins),
// runs both convolutions as cuBLAS products over their windows (EncoderDevice::Conv1d), and copies
// the rows back. f32 throughout. On a CPU the stem is ~6.4 GFLOP of Whisper-small's 344 but, with
// the layers on the GPU, most of an encode's time on a few CPU threads. Runs are serialised; the
// scratch grows with the largest batch seen.
#pragma once

#include <memory>
#include <mutex>

#include "absl/status/statusor.h"
#include "encoders/cuda/encoder_device.h"
#include "encoders/speech/whisper_encoder.h"
#include "engine/cuda/device_buffer.h"

namespace modrwkv::encoders::cuda {

class CudaWhisperStem final : public WhisperStemRunner {
 public:
  // FAILED_PRECONDITION without device `device` or cuBLAS; RESOURCE_EXHAUSTED when the weights
  // do not fit; INVALID_ARGUMENT when the weights do not have the config's sizes.
  static absl::StatusOr<std::unique_ptr<CudaWhisperStem>> Create(
      const WhisperStemWeights& stem, const WhisperConfig& config, int device,
      EncoderMath math = EncoderMath::kF32);
  static WhisperStemFactory Factory(int device, EncoderMath math = EncoderMath::kF32);
  // The device current while the buffers are freed.
  ~CudaWhisperStem() override {
    if (dev_) (void)dev_->Use();
  }

  absl::Status Run(const float* mel, int batch, float* x) const override;
  // A CudaLayerStack on the same device takes the rows there (RunFromDevice): one copy to the
  // host instead of three through it.
  absl::Status RunThrough(const float* mel, int batch, const LayerStackRunner* layers,
                          float* x) const override;

 private:
  using Buffer = modrwkv::cuda::DeviceBuffer<float>;

  explicit CudaWhisperStem(const WhisperConfig& config) : config_(config) {}
  // With mu_ held: the stem's rows into s_.x ([batch * frames][D]), queued on the stream.
  absl::Status Compute(const float* mel, int batch) const;

  const WhisperConfig config_;
  std::unique_ptr<EncoderDevice> dev_;
  Buffer conv1_, conv1_b_, conv2_, conv2_b_, pos_;

  mutable std::mutex mu_;  // one Run at a time: the stream and the scratch are shared
  mutable struct { DeviceScratch mel, h1, x, cols; } s_;
};

}  // namespace modrwkv::encoders::cuda
