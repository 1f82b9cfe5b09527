#include "encoders/cuda/cuda_layer_stack.h"

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

namespace {

BiasActivation ToBiasActivation(Activation act) {
  switch (act) {
    case Activation::kGeluErf:
      return BiasActivation::kGeluErf;
    case Activation::kGeluTanh:
      return BiasActivation::kGeluTanh;
    case Activation::kQuickGelu:
      return BiasActivation::kQuickGelu;
  }
  return BiasActivation::kNone;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CudaLayerStack>> CudaLayerStack::Create(
    absl::Span<const EncoderLayerWeights> layers, const EncoderLayerShape& shape, int device,
    EncoderMath math) {
  const int d = shape.dim, f = shape.ffn;
  if (shape.tokens <= 0 || d <= 0 || f <= 0 || shape.heads <= 0 || d % shape.heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("encoder layer shape: %d tokens, dim %d, ffn %d, %d heads", shape.tokens, d,
                        f, shape.heads));
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    if (!HasLayerShape(layers[i], d, f)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "encoder layer ", i, ": matrix shapes do not match dim ", d, " and ffn ", f));
    }
  }
  std::unique_ptr<CudaLayerStack> s(new CudaLayerStack(shape));
  MODRWKV_ASSIGN_OR_RETURN(s->dev_, EncoderDevice::Open(device, math, "the encoder's layers"));
  for (const EncoderLayerWeights& w : layers) {
    MODRWKV_ASSIGN_OR_RETURN(Layer l, UploadLayer(*s->dev_, w));
    s->layers_.push_back(std::move(l));
  }
  return s;
}

LayerStackFactory CudaLayerStack::Factory(int device, EncoderMath math) {
  return RunnerFactory<LayerStackRunner, CudaLayerStack>(device, math);
}

absl::Status CudaLayerStack::RunLayer(const Layer& l, int batch) const {
  const int d = shape_.dim, f = shape_.ffn, t = shape_.tokens, rows = batch * t;
  const int heads = shape_.heads, hd = shape_.head_dim();
  const EncoderDevice& dev = *dev_;
  cudaStream_t st = dev.stream();
  float* x = s_.x.get();
  // x += out(attention(LN1(x)))
  MODRWKV_RETURN_IF_ERROR(LaunchLayerNorm(st, x, nullptr, rows, d, l.ln1_w.get(), l.ln1_b.get(),
                                          shape_.eps, s_.h.get()));
  MODRWKV_RETURN_IF_ERROR(dev.Gemm(l.qkv.get(), 3 * d, d, s_.h.get(), rows, s_.qkv.get(), 0.0f));
  MODRWKV_RETURN_IF_ERROR(
      LaunchBiasActivation(st, s_.qkv.get(), rows, 3 * d, l.qkv_b.get(), BiasActivation::kNone));
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int b = 0; b < batch; ++b) {
    const float* qkv = s_.qkv.get() + static_cast<int64_t>(b) * t * 3 * d;
    MODRWKV_RETURN_IF_ERROR(dev.HeadScores(qkv, t, heads, hd, s_.scores.get()));
    MODRWKV_RETURN_IF_ERROR(LaunchScaledSoftmax(st, s_.scores.get(), int64_t{heads} * t, t, scale,
                                                shape_.causal ? t : 0));
    MODRWKV_RETURN_IF_ERROR(dev.HeadValues(qkv, s_.scores.get(), t, heads, hd,
                                           s_.attn.get() + static_cast<int64_t>(b) * t * d));
  }
  MODRWKV_RETURN_IF_ERROR(dev.Gemm(l.out.get(), d, d, s_.attn.get(), rows, x, 1.0f));
  MODRWKV_RETURN_IF_ERROR(
      LaunchBiasActivation(st, x, rows, d, l.out_b.get(), BiasActivation::kNone));
  // x += fc2(act(fc1(LN2(x))))
  MODRWKV_RETURN_IF_ERROR(LaunchLayerNorm(st, x, nullptr, rows, d, l.ln2_w.get(), l.ln2_b.get(),
                                          shape_.eps, s_.h.get()));
  MODRWKV_RETURN_IF_ERROR(dev.Gemm(l.fc1.get(), f, d, s_.h.get(), rows, s_.mlp.get(), 0.0f));
  MODRWKV_RETURN_IF_ERROR(
      LaunchBiasActivation(st, s_.mlp.get(), rows, f, l.fc1_b.get(), ToBiasActivation(shape_.act)));
  MODRWKV_RETURN_IF_ERROR(dev.Gemm(l.fc2.get(), d, f, s_.mlp.get(), rows, x, 1.0f));
  return LaunchBiasActivation(st, x, rows, d, l.fc2_b.get(), BiasActivation::kNone);
}

absl::Status CudaLayerStack::RunLocked(const float* rows_in, cudaMemcpyKind kind, int batch,
                                       float* x) const {
  if (batch <= 0) return absl::InvalidArgumentError(absl::StrCat("batch ", batch, " must be > 0"));
  MODRWKV_RETURN_IF_ERROR(dev_->Use());
  const size_t t = shape_.tokens, rows = static_cast<size_t>(batch) * t, d = shape_.dim;
  MODRWKV_RETURN_IF_ERROR(s_.Reserve(rows, d, shape_.ffn, shape_.heads, t));
  const size_t bytes = rows * d * sizeof(float);
  cudaStream_t st = dev_->stream();
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s_.x.get(), rows_in, bytes, kind, st));
  for (const Layer& l : layers_) MODRWKV_RETURN_IF_ERROR(RunLayer(l, batch));
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(x, s_.x.get(), bytes, cudaMemcpyDeviceToHost, st));
  return modrwkv::cuda::CudaStatus(cudaStreamSynchronize(st), "the encoder layers");
}

absl::Status CudaLayerStack::Run(float* x, int batch) const {
  std::lock_guard<std::mutex> lock(mu_);
  return RunLocked(x, cudaMemcpyHostToDevice, batch, x);
}

const CudaLayerStack* CudaLayerStack::OnDevice(const LayerStackRunner* layers, int device) {
  const auto* stack = dynamic_cast<const CudaLayerStack*>(layers);
  return stack != nullptr && stack->dev_->device() == device ? stack : nullptr;
}

absl::Status CudaLayerStack::RunFromDevice(const float* rows, cudaStream_t producer, int batch,
                                           float* x) const {
  MODRWKV_RETURN_IF_ERROR(modrwkv::cuda::CudaStatus(cudaStreamSynchronize(producer),
                                                    "the rows for the encoder layers"));
  std::lock_guard<std::mutex> lock(mu_);
  handoffs_.fetch_add(1, std::memory_order_relaxed);
  return RunLocked(rows, cudaMemcpyDeviceToDevice, batch, x);
}

}  // namespace modrwkv::encoders::cuda
