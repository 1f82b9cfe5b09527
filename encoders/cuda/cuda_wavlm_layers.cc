#include "encoders/cuda/cuda_wavlm_layers.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "encoders/cuda/encoder_kernels.cuh"
#include "engine/base/status_macros.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/rwkv7_ops.cuh"

namespace modrwkv::encoders::cuda {

using modrwkv::cuda::LaunchLayerNorm;

absl::StatusOr<std::unique_ptr<CudaWavlmLayers>> CudaWavlmLayers::Create(
    absl::Span<const WavlmLayerWeights> layers, const WavlmConfig& config, int device,
    EncoderMath math) {
  const int d = config.hidden_size, f = config.intermediate_size;
  const int heads = config.num_attention_heads;
  if (d <= 0 || f <= 0 || heads <= 0 || d % heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("WavLM layer shape: hidden %d, intermediate %d, %d heads", d, f, heads));
  }
  const size_t hd = config.head_dim();
  for (size_t i = 0; i < layers.size(); ++i) {
    const WavlmLayerWeights& w = layers[i];
    if (!HasLayerShape(w, d, f) || w.gate_w.size() != 8 * hd || w.gate_b.size() != 8 ||
        w.gate_const.size() != static_cast<size_t>(heads)) {
      return absl::InvalidArgumentError(
          absl::StrCat("WavLM layer ", i, ": weight shapes do not match the config"));
    }
  }
  std::unique_ptr<CudaWavlmLayers> s(new CudaWavlmLayers(config));
  MODRWKV_ASSIGN_OR_RETURN(s->dev_, EncoderDevice::Open(device, math, "WavLM's layers"));
  const EncoderDevice& dev = *s->dev_;
  for (const WavlmLayerWeights& w : layers) {
    Layer l;
    MODRWKV_ASSIGN_OR_RETURN(l.w, UploadLayer(dev, w));
    MODRWKV_ASSIGN_OR_RETURN(l.gate_w, dev.Upload(w.gate_w));
    MODRWKV_ASSIGN_OR_RETURN(l.gate_b, dev.Upload(w.gate_b));
    MODRWKV_ASSIGN_OR_RETURN(l.gate_const, dev.Upload(w.gate_const));
    s->layers_.push_back(std::move(l));
  }
  return s;
}

WavlmLayerFactory CudaWavlmLayers::Factory(int device, EncoderMath math) {
  return RunnerFactory<WavlmLayerRunner, CudaWavlmLayers>(device, math);
}

// wavlm_encoder.cc's RunLayer and Attention, in their order.
absl::Status CudaWavlmLayers::RunLayer(const Layer& l, int batch, int frames) const {
  const int d = config_.hidden_size, f = config_.intermediate_size, t = frames;
  const int heads = config_.num_attention_heads, hd = config_.head_dim(), rows = batch * t;
  const float eps = config_.layer_norm_eps;
  const bool pre_ln = config_.do_stable_layer_norm;
  const EncoderDevice& dev = *dev_;
  cudaStream_t st = dev.stream();
  float* x = s_.x.get();
  // The attention's input: LN1(x) before it (stable layer norm), else x itself.
  const float* in = x;
  if (pre_ln) {
    MODRWKV_RETURN_IF_ERROR(LaunchLayerNorm(st, x, nullptr, rows, d, l.w.ln1_w.get(),
                                            l.w.ln1_b.get(), eps, s_.h.get()));
    in = s_.h.get();
  }
  MODRWKV_RETURN_IF_ERROR(LaunchWavlmGate(st, in, rows, t, heads, hd, l.gate_w.get(),
                                          l.gate_b.get(), l.gate_const.get(), s_.gate.get()));
  MODRWKV_RETURN_IF_ERROR(dev.Gemm(l.w.qkv.get(), 3 * d, d, in, rows, s_.qkv.get(), 0.0f));
  MODRWKV_RETURN_IF_ERROR(
      LaunchBiasActivation(st, s_.qkv.get(), rows, 3 * d, l.w.qkv_b.get(), BiasActivation::kNone));
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int b = 0; b < batch; ++b) {
    const float* qkv = s_.qkv.get() + static_cast<int64_t>(b) * t * 3 * d;
    MODRWKV_RETURN_IF_ERROR(dev.HeadScores(qkv, t, heads, hd, s_.scores.get()));
    MODRWKV_RETURN_IF_ERROR(LaunchBiasedSoftmax(st, s_.scores.get(), heads, t, scale,
                                                s_.gate.get() + static_cast<int64_t>(b) * heads * t,
                                                s_.rel.get()));
    MODRWKV_RETURN_IF_ERROR(dev.HeadValues(qkv, s_.scores.get(), t, heads, hd,
                                           s_.attn.get() + static_cast<int64_t>(b) * t * d));
  }
  MODRWKV_RETURN_IF_ERROR(dev.Gemm(l.w.out.get(), d, d, s_.attn.get(), rows, x, 1.0f));
  MODRWKV_RETURN_IF_ERROR(
      LaunchBiasActivation(st, x, rows, d, l.w.out_b.get(), BiasActivation::kNone));
  // The feed-forward's input: LN2(x) (stable), else x = LN1(x) in place.
  const float* ff_in = x;
  if (pre_ln) {
    MODRWKV_RETURN_IF_ERROR(LaunchLayerNorm(st, x, nullptr, rows, d, l.w.ln2_w.get(),
                                            l.w.ln2_b.get(), eps, s_.h.get()));
    ff_in = s_.h.get();
  } else {
    MODRWKV_RETURN_IF_ERROR(
        LaunchLayerNorm(st, x, nullptr, rows, d, l.w.ln1_w.get(), l.w.ln1_b.get(), eps, x));
  }
  MODRWKV_RETURN_IF_ERROR(dev.Gemm(l.w.fc1.get(), f, d, ff_in, rows, s_.mlp.get(), 0.0f));
  MODRWKV_RETURN_IF_ERROR(
      LaunchBiasActivation(st, s_.mlp.get(), rows, f, l.w.fc1_b.get(), BiasActivation::kGeluErf));
  MODRWKV_RETURN_IF_ERROR(dev.Gemm(l.w.fc2.get(), d, f, s_.mlp.get(), rows, x, 1.0f));
  MODRWKV_RETURN_IF_ERROR(
      LaunchBiasActivation(st, x, rows, d, l.w.fc2_b.get(), BiasActivation::kNone));
  if (pre_ln) return absl::OkStatus();
  return LaunchLayerNorm(st, x, nullptr, rows, d, l.w.ln2_w.get(), l.w.ln2_b.get(), eps, x);
}

absl::Status CudaWavlmLayers::RunLocked(const float* rows_in, cudaMemcpyKind kind, int batch,
                                        int frames, const float* rel, float* x) const {
  if (batch <= 0 || frames <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch ", batch, " and frames ", frames, " must be > 0"));
  }
  MODRWKV_RETURN_IF_ERROR(dev_->Use());
  const size_t t = frames, rows = static_cast<size_t>(batch) * t, d = config_.hidden_size;
  const size_t heads = config_.num_attention_heads;
  MODRWKV_RETURN_IF_ERROR(s_.Reserve(rows, d, config_.intermediate_size, heads, t));
  MODRWKV_RETURN_IF_ERROR(s_.gate.Reserve(rows * heads));
  MODRWKV_RETURN_IF_ERROR(s_.rel.Reserve(heads * (2 * t - 1)));
  cudaStream_t st = dev_->stream();
  const size_t bytes = rows * d * sizeof(float);
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s_.x.get(), rows_in, bytes, kind, st));
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      s_.rel.get(), rel, heads * (2 * t - 1) * sizeof(float), cudaMemcpyHostToDevice, st));
  for (const Layer& l : layers_) MODRWKV_RETURN_IF_ERROR(RunLayer(l, batch, frames));
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(x, s_.x.get(), bytes, cudaMemcpyDeviceToHost, st));
  return modrwkv::cuda::CudaStatus(cudaStreamSynchronize(st), "WavLM's layers");
}

absl::Status CudaWavlmLayers::Run(float* x, int batch, int frames, const float* rel) const {
  std::lock_guard<std::mutex> lock(mu_);
  return RunLocked(x, cudaMemcpyHostToDevice, batch, frames, rel, x);
}

const CudaWavlmLayers* CudaWavlmLayers::OnDevice(const WavlmLayerRunner* layers, int device) {
  const auto* runner = dynamic_cast<const CudaWavlmLayers*>(layers);
  return runner != nullptr && runner->dev_->device() == device ? runner : nullptr;
}

absl::Status CudaWavlmLayers::RunFromDevice(const float* rows, cudaStream_t producer, int batch,
                                            int frames, const float* rel, float* x) const {
  MODRWKV_RETURN_IF_ERROR(
      modrwkv::cuda::CudaStatus(cudaStreamSynchronize(producer), "the rows for WavLM's layers"));
  std::lock_guard<std::mutex> lock(mu_);
  handoffs_.fetch_add(1, std::memory_order_relaxed);
  return RunLocked(rows, cudaMemcpyDeviceToDevice, batch, frames, rel, x);
}

}  // namespace modrwkv::encoders::cuda
