#include "encoders/cuda/cuda_whisper_stem.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "encoders/cuda/cuda_layer_stack.h"
#include "encoders/cuda/encoder_kernels.cuh"
#include "engine/base/status_macros.h"
#include "engine/cuda/cuda_check.h"

namespace modrwkv::encoders::cuda {

absl::StatusOr<std::unique_ptr<CudaWhisperStem>> CudaWhisperStem::Create(
    const WhisperStemWeights& stem, const WhisperConfig& config, int device, EncoderMath math) {
  const int d = config.d_model, m = config.num_mel_bins, p = config.frames();
  if (stem.conv1.rows != d || stem.conv1.cols != 3 * m || stem.conv1_b.size() != size_t(d) ||
      stem.conv2.rows != d || stem.conv2.cols != 3 * d || stem.conv2_b.size() != size_t(d) ||
      stem.pos.size() < static_cast<size_t>(p) * d) {
    return absl::InvalidArgumentError(
        absl::StrCat("Whisper stem: the weights do not match the config (", m, " mel bins, width ",
                     d, ", ", p, " positions)"));
  }
  std::unique_ptr<CudaWhisperStem> s(new CudaWhisperStem(config));
  MODRWKV_ASSIGN_OR_RETURN(s->dev_, EncoderDevice::Open(device, math, "Whisper's stem"));
  const EncoderDevice& dev = *s->dev_;
  MODRWKV_ASSIGN_OR_RETURN(s->conv1_, dev.Upload(stem.conv1));
  MODRWKV_ASSIGN_OR_RETURN(s->conv1_b_, dev.Upload(stem.conv1_b));
  MODRWKV_ASSIGN_OR_RETURN(s->conv2_, dev.Upload(stem.conv2));
  MODRWKV_ASSIGN_OR_RETURN(s->conv2_b_, dev.Upload(stem.conv2_b));
  MODRWKV_ASSIGN_OR_RETURN(s->pos_, dev.Upload(stem.pos));
  return s;
}

WhisperStemFactory CudaWhisperStem::Factory(int device, EncoderMath math) {
  return RunnerFactory<WhisperStemRunner, CudaWhisperStem>(device, math);
}

// whisper_encoder.cc's stem: conv1 (k3, s1, p1) + GELU, conv2 (k3, s2, p1) + GELU, + positions.
absl::Status CudaWhisperStem::Compute(const float* mel, int batch) const {
  if (batch <= 0) return absl::InvalidArgumentError(absl::StrCat("batch ", batch, " must be > 0"));
  MODRWKV_RETURN_IF_ERROR(dev_->Use());
  const EncoderDevice& dev = *dev_;
  cudaStream_t st = dev.stream();
  const int m = config_.num_mel_bins, t = config_.mel_frames(), p = config_.frames();
  const int d = config_.d_model;
  const size_t clip = static_cast<size_t>(m) * t, rows = static_cast<size_t>(batch) * p;
  MODRWKV_RETURN_IF_ERROR(s_.mel.Reserve(batch * clip));
  MODRWKV_RETURN_IF_ERROR(s_.h1.Reserve(static_cast<size_t>(t) * d));
  MODRWKV_RETURN_IF_ERROR(s_.x.Reserve(rows * d));
  MODRWKV_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(s_.mel.get(), mel, batch * clip * sizeof(float), cudaMemcpyHostToDevice, st));
  // conv1 reads the clip's mel bins, channel-major (t frames apart); conv2 conv1's rows.
  const ConvWindows w1{.in_frames = t,
                       .out_frames = t,
                       .kernel = 3,
                       .pad = 1,
                       .ld = 1,
                       .channels = m,
                       .channel_stride = t};
  const ConvWindows w2{
      .in_frames = t, .out_frames = p, .kernel = 3, .stride = 2, .pad = 1, .ld = d, .channels = d};
  for (int b = 0; b < batch; ++b) {
    float* xb = s_.x.get() + static_cast<int64_t>(b) * p * d;
    MODRWKV_RETURN_IF_ERROR(
        dev.Conv1d(conv1_.get(), d, w1, s_.mel.get() + b * clip, s_.h1.get(), d, &s_.cols));
    // GELU in the erf form whatever the config's activation_function (that one is the MLP's).
    MODRWKV_RETURN_IF_ERROR(
        LaunchBiasActivation(st, s_.h1.get(), t, d, conv1_b_.get(), BiasActivation::kGeluErf));
    MODRWKV_RETURN_IF_ERROR(dev.Conv1d(conv2_.get(), d, w2, s_.h1.get(), xb, d, &s_.cols));
  }
  MODRWKV_RETURN_IF_ERROR(
      LaunchBiasActivation(st, s_.x.get(), rows, d, conv2_b_.get(), BiasActivation::kGeluErf));
  return LaunchAddPeriodic(st, s_.x.get(), rows * d, pos_.get(), static_cast<int64_t>(p) * d);
}

absl::Status CudaWhisperStem::Run(const float* mel, int batch, float* x) const {
  std::lock_guard<std::mutex> lock(mu_);
  MODRWKV_RETURN_IF_ERROR(Compute(mel, batch));
  const size_t floats = static_cast<size_t>(batch) * config_.frames() * config_.d_model;
  cudaStream_t st = dev_->stream();
  MODRWKV_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(x, s_.x.get(), floats * sizeof(float), cudaMemcpyDeviceToHost, st));
  return modrwkv::cuda::CudaStatus(cudaStreamSynchronize(st), "Whisper's stem");
}

absl::Status CudaWhisperStem::RunThrough(const float* mel, int batch,
                                         const LayerStackRunner* layers, float* x) const {
  const CudaLayerStack* gpu = CudaLayerStack::OnDevice(layers, dev_->device());
  if (gpu == nullptr) return WhisperStemRunner::RunThrough(mel, batch, layers, x);
  std::lock_guard<std::mutex> lock(mu_);  // s_.x holds the rows until the layers have copied them
  MODRWKV_RETURN_IF_ERROR(Compute(mel, batch));
  return gpu->RunFromDevice(s_.x.get(), dev_->stream(), batch, x);
}

}  // namespace modrwkv::encoders::cuda
