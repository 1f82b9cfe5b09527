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

using modrwkv::cuda::AllocDevice;
using modrwkv::cuda::CudaStatus;
using modrwkv::cuda::DeviceBuffer;

namespace {

absl::StatusOr<DeviceBuffer<float>> ToDevice(const std::vector<float>& host) {
  MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> d, AllocDevice<float>(host.size()));
  MODRWKV_CUDA_RETURN_IF_ERROR(
      cudaMemcpy(d.get(), host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice));
  return d;
}

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
    absl::Span<const EncoderLayerWeights> layers, const EncoderLayerShape& shape, int device) {
  if (shape.tokens <= 0 || shape.dim <= 0 || shape.ffn <= 0 || shape.heads <= 0 ||
      shape.dim % shape.heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("encoder layer shape: %d tokens, dim %d, ffn %d, %d heads", shape.tokens,
                        shape.dim, shape.ffn, shape.heads));
  }
  MODRWKV_ASSIGN_OR_RETURN(const int devices, modrwkv::cuda::CudaDeviceCount());
  if (device < 0 || device >= devices) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the encoder's layers go to CUDA device %d, and this machine has %d", device, devices));
  }
  std::unique_ptr<CudaLayerStack> s(new CudaLayerStack(shape, device));
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  MODRWKV_ASSIGN_OR_RETURN(s->blas_, modrwkv::cuda::Cublas());
  MODRWKV_ASSIGN_OR_RETURN(s->stream_, modrwkv::cuda::CreateStream());
  MODRWKV_RETURN_IF_ERROR(modrwkv::cuda::CublasStatus(s->blas_->Create(&s->handle_), "create"));
  MODRWKV_RETURN_IF_ERROR(
      modrwkv::cuda::CublasStatus(s->blas_->SetStream(s->handle_, s->stream_.get()), "stream"));
  MODRWKV_RETURN_IF_ERROR(s->Upload(layers));
  return s;
}

LayerStackFactory CudaLayerStack::Factory(int device) {
  return [device](
             absl::Span<const EncoderLayerWeights> layers,
             const EncoderLayerShape& shape) -> absl::StatusOr<std::unique_ptr<LayerStackRunner>> {
    MODRWKV_ASSIGN_OR_RETURN(std::unique_ptr<CudaLayerStack> s, Create(layers, shape, device));
    return std::unique_ptr<LayerStackRunner>(std::move(s));
  };
}

CudaLayerStack::~CudaLayerStack() {
  cudaSetDevice(device_);  // the buffers and the handle belong to it
  if (handle_ != nullptr) blas_->Destroy(handle_);
}

absl::Status CudaLayerStack::Upload(absl::Span<const EncoderLayerWeights> layers) {
  const int d = shape_.dim, f = shape_.ffn;
  for (const EncoderLayerWeights& w : layers) {
    if (w.qkv.rows != 3 * d || w.qkv.cols != d || w.out.rows != d || w.out.cols != d ||
        w.fc1.rows != f || w.fc1.cols != d || w.fc2.rows != d || w.fc2.cols != f) {
      return absl::InvalidArgumentError(absl::StrCat("encoder layer ", layers_.size(),
                                                     ": matrix shapes do not match dim ", d,
                                                     " and ffn ", f));
    }
    Layer l;
    MODRWKV_ASSIGN_OR_RETURN(l.ln1_w, ToDevice(w.ln1_w));
    MODRWKV_ASSIGN_OR_RETURN(l.ln1_b, ToDevice(w.ln1_b));
    MODRWKV_ASSIGN_OR_RETURN(l.ln2_w, ToDevice(w.ln2_w));
    MODRWKV_ASSIGN_OR_RETURN(l.ln2_b, ToDevice(w.ln2_b));
    MODRWKV_ASSIGN_OR_RETURN(l.qkv, ToDevice(cpu::UnpackMatrix(w.qkv)));
    MODRWKV_ASSIGN_OR_RETURN(l.qkv_b, ToDevice(w.qkv_b));
    MODRWKV_ASSIGN_OR_RETURN(l.out, ToDevice(cpu::UnpackMatrix(w.out)));
    MODRWKV_ASSIGN_OR_RETURN(l.out_b, ToDevice(w.out_b));
    MODRWKV_ASSIGN_OR_RETURN(l.fc1, ToDevice(cpu::UnpackMatrix(w.fc1)));
    MODRWKV_ASSIGN_OR_RETURN(l.fc1_b, ToDevice(w.fc1_b));
    MODRWKV_ASSIGN_OR_RETURN(l.fc2, ToDevice(cpu::UnpackMatrix(w.fc2)));
    MODRWKV_ASSIGN_OR_RETURN(l.fc2_b, ToDevice(w.fc2_b));
    layers_.push_back(std::move(l));
  }
  return absl::OkStatus();
}

absl::Status CudaLayerStack::EnsureScratch(int rows) const {
  if (rows <= rows_) return absl::OkStatus();
  const size_t r = static_cast<size_t>(rows), d = shape_.dim, f = shape_.ffn;
  rows_ = 0;  // until every buffer has its new size
  MODRWKV_ASSIGN_OR_RETURN(x_, AllocDevice<float>(r * d));
  MODRWKV_ASSIGN_OR_RETURN(h_, AllocDevice<float>(r * d));
  MODRWKV_ASSIGN_OR_RETURN(qkv_, AllocDevice<float>(r * 3 * d));
  MODRWKV_ASSIGN_OR_RETURN(attn_, AllocDevice<float>(r * d));
  MODRWKV_ASSIGN_OR_RETURN(mlp_, AllocDevice<float>(r * f));
  if (!scores_) {
    const size_t t = shape_.tokens;
    MODRWKV_ASSIGN_OR_RETURN(scores_,
                             AllocDevice<float>(static_cast<size_t>(shape_.heads) * t * t));
  }
  rows_ = rows;
  return absl::OkStatus();
}

absl::Status CudaLayerStack::Gemm(const float* w, int out, int in, const float* x, int rows,
                                  float* y, float beta) const {
  // Row-major y = x w^T is column-major y^T = w x^T: w read transposed from its [out][in] rows.
  const float one = 1.0f;
  return modrwkv::cuda::CublasStatus(blas_->Sgemm(handle_, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in,
                                                  &one, w, in, x, in, &beta, y, out),
                                     "Sgemm");
}

absl::Status CudaLayerStack::Attention(int b) const {
  const int t = shape_.tokens, d = shape_.dim, heads = shape_.heads, hd = shape_.head_dim();
  const int ld = 3 * d;
  const float* q = qkv_.get() + static_cast<int64_t>(b) * t * ld;
  const float* k = q + d;
  const float* v = q + 2 * d;
  const float one = 1.0f, zero = 0.0f;
  // Per head h, scores[h] = Q_h K_h^T, [t queries][t keys] row-major: column-major it is
  // K_h Q_h^T, with K_h and Q_h the head's columns of the qkv rows (a stride of hd between heads).
  MODRWKV_RETURN_IF_ERROR(modrwkv::cuda::CublasStatus(
      blas_->SgemmStridedBatched(handle_, CUBLAS_OP_T, CUBLAS_OP_N, t, t, hd, &one, k, ld, hd, q,
                                 ld, hd, &zero, scores_.get(), t, int64_t{t} * t, heads),
      "SgemmStridedBatched (scores)"));
  MODRWKV_RETURN_IF_ERROR(LaunchScaledSoftmax(stream_.get(), scores_.get(), int64_t{heads} * t, t,
                                              1.0f / std::sqrt(static_cast<float>(hd)),
                                              shape_.causal ? t : 0));
  // attn rows of b, head h's columns = P_h V_h: column-major V_h^T P_h^T.
  float* o = attn_.get() + static_cast<int64_t>(b) * t * d;
  return modrwkv::cuda::CublasStatus(
      blas_->SgemmStridedBatched(handle_, CUBLAS_OP_N, CUBLAS_OP_N, hd, t, t, &one, v, ld, hd,
                                 scores_.get(), t, int64_t{t} * t, &zero, o, d, hd, heads),
      "SgemmStridedBatched (values)");
}

absl::Status CudaLayerStack::RunLayer(const Layer& l, int batch) const {
  const int d = shape_.dim, f = shape_.ffn, rows = batch * shape_.tokens;
  cudaStream_t st = stream_.get();
  float* x = x_.get();
  // x += out(attention(LN1(x)))
  MODRWKV_RETURN_IF_ERROR(modrwkv::cuda::LaunchLayerNorm(st, x, nullptr, rows, d, l.ln1_w.get(),
                                                         l.ln1_b.get(), shape_.eps, h_.get()));
  MODRWKV_RETURN_IF_ERROR(Gemm(l.qkv.get(), 3 * d, d, h_.get(), rows, qkv_.get(), 0.0f));
  MODRWKV_RETURN_IF_ERROR(
      LaunchBiasActivation(st, qkv_.get(), rows, 3 * d, l.qkv_b.get(), BiasActivation::kNone));
  for (int b = 0; b < batch; ++b) MODRWKV_RETURN_IF_ERROR(Attention(b));
  MODRWKV_RETURN_IF_ERROR(Gemm(l.out.get(), d, d, attn_.get(), rows, x, 1.0f));
  MODRWKV_RETURN_IF_ERROR(
      LaunchBiasActivation(st, x, rows, d, l.out_b.get(), BiasActivation::kNone));
  // x += fc2(act(fc1(LN2(x))))
  MODRWKV_RETURN_IF_ERROR(modrwkv::cuda::LaunchLayerNorm(st, x, nullptr, rows, d, l.ln2_w.get(),
                                                         l.ln2_b.get(), shape_.eps, h_.get()));
  MODRWKV_RETURN_IF_ERROR(Gemm(l.fc1.get(), f, d, h_.get(), rows, mlp_.get(), 0.0f));
  MODRWKV_RETURN_IF_ERROR(
      LaunchBiasActivation(st, mlp_.get(), rows, f, l.fc1_b.get(), ToBiasActivation(shape_.act)));
  MODRWKV_RETURN_IF_ERROR(Gemm(l.fc2.get(), d, f, mlp_.get(), rows, x, 1.0f));
  return LaunchBiasActivation(st, x, rows, d, l.fc2_b.get(), BiasActivation::kNone);
}

absl::Status CudaLayerStack::Run(float* x, int batch) const {
  if (batch <= 0) return absl::InvalidArgumentError(absl::StrCat("batch ", batch, " must be > 0"));
  std::lock_guard<std::mutex> lock(mu_);
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));  // per host thread
  const int rows = batch * shape_.tokens;
  MODRWKV_RETURN_IF_ERROR(EnsureScratch(rows));
  const size_t bytes = static_cast<size_t>(rows) * shape_.dim * sizeof(float);
  MODRWKV_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(x_.get(), x, bytes, cudaMemcpyHostToDevice, stream_.get()));
  for (const Layer& l : layers_) MODRWKV_RETURN_IF_ERROR(RunLayer(l, batch));
  MODRWKV_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(x, x_.get(), bytes, cudaMemcpyDeviceToHost, stream_.get()));
  return CudaStatus(cudaStreamSynchronize(stream_.get()), "the encoder layers");
}

}  // namespace modrwkv::encoders::cuda
