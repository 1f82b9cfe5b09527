#include "encoders/cuda/encoder_device.h"

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "engine/cuda/cuda_check.h"

namespace modrwkv::encoders::cuda {

using modrwkv::cuda::AllocDevice;
using modrwkv::cuda::CublasStatus;
using modrwkv::cuda::DeviceBuffer;

absl::StatusOr<std::unique_ptr<EncoderDevice>> EncoderDevice::Open(int device, EncoderMath math,
                                                                   const char* what) {
  MODRWKV_ASSIGN_OR_RETURN(const int devices, modrwkv::cuda::CudaDeviceCount());
  if (device < 0 || device >= devices) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s go to CUDA device %d, and this machine has %d", what, device, devices));
  }
  std::unique_ptr<EncoderDevice> d(new EncoderDevice(device));
  MODRWKV_RETURN_IF_ERROR(d->Use());
  MODRWKV_ASSIGN_OR_RETURN(d->blas_, modrwkv::cuda::Cublas());
  MODRWKV_ASSIGN_OR_RETURN(d->stream_, modrwkv::cuda::CreateStream());
  MODRWKV_RETURN_IF_ERROR(CublasStatus(d->blas_->Create(&d->handle_), "cublasCreate"));
  MODRWKV_RETURN_IF_ERROR(
      CublasStatus(d->blas_->SetStream(d->handle_, d->stream_.get()), "cublasSetStream"));
  // Default math never uses TF32 for f32 products unless NVIDIA_TF32_OVERRIDE says so.
  const cublasMath_t mode =
      math == EncoderMath::kTf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH;
  MODRWKV_RETURN_IF_ERROR(
      CublasStatus(d->blas_->SetMathMode(d->handle_, mode), "cublasSetMathMode"));
  return d;
}

EncoderDevice::~EncoderDevice() {
  cudaSetDevice(device_);  // the handle and the stream belong to it
  if (handle_ != nullptr) blas_->Destroy(handle_);
}

absl::Status EncoderDevice::Use() const {
  return modrwkv::cuda::CudaStatus(cudaSetDevice(device_), "cudaSetDevice");
}

absl::StatusOr<DeviceBuffer<float>> EncoderDevice::Upload(const std::vector<float>& host) const {
  MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> d, AllocDevice<float>(host.size()));
  // On our stream, then waited for: a plain cudaMemcpy from pageable memory goes on the legacy
  // stream and may return before its DMA lands, and the non-blocking stream the layers run on
  // does not wait for the legacy stream (a Run right after Create could read half a weight).
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(d.get(), host.data(), host.size() * sizeof(float),
                                               cudaMemcpyHostToDevice, stream_.get()));
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_.get()));
  return d;
}

absl::StatusOr<DeviceBuffer<float>> EncoderDevice::Upload(const cpu::Matrix& m) const {
  return Upload(cpu::UnpackMatrix(m));
}

absl::Status EncoderDevice::Gemm(const float* w, int out, int in, const float* x, int64_t ldx,
                                 int rows, float* y, int64_t ldy, float beta) const {
  if (ldx < in || ldy < out || ldx > INT32_MAX || ldy > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Gemm: rows of x %d floats apart for %d inputs, of y %d apart for %d outputs", ldx, in, ldy,
        out));
  }
  // Row-major y = x w^T is column-major y^T = w x^T: w read transposed from its [out][in] rows.
  const float one = 1.0f;
  return CublasStatus(blas_->Sgemm(handle_, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &one, w, in, x,
                                   static_cast<int>(ldx), &beta, y, static_cast<int>(ldy)),
                      "Sgemm");
}

absl::Status EncoderDevice::Conv1d(const float* w, int out, const ConvWindows& windows,
                                   const float* x, float* y, int64_t ldy, DeviceScratch* cols,
                                   int64_t slice_floats) const {
  const ConvWindows& c = windows;
  const int width = c.kernel * c.channels;
  if (c.groups <= 0 || out % c.groups != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("Conv1d: %d outputs in %d groups", out, c.groups));
  }
  if (c.groups == 1 && c.pad == 0 && c.stride >= c.kernel && c.ld == c.channels &&
      c.channel_stride == 1) {
    // Window t is the kernel rows from row t * stride, contiguous: the product reads them in place.
    return Gemm(w, out, width, x, int64_t{c.stride} * c.channels, c.out_frames, y, ldy, 0.0f);
  }
  const int64_t group_floats = int64_t{c.groups} * width;  // one output row's windows
  const int slice = static_cast<int>(
      std::clamp<int64_t>(slice_floats / group_floats, 1, std::max(c.out_frames, 1)));
  MODRWKV_RETURN_IF_ERROR(cols->Reserve(static_cast<size_t>(slice) * group_floats));
  const int per_group = out / c.groups;
  const float one = 1.0f, zero = 0.0f;
  if (c.groups > 1 && ldy > INT32_MAX) {
    return absl::InvalidArgumentError("Conv1d: output rows too far apart");
  }
  for (int t0 = 0; t0 < c.out_frames; t0 += slice) {
    const int rows = std::min(slice, c.out_frames - t0);
    MODRWKV_RETURN_IF_ERROR(LaunchIm2Col(stream(), x, c, t0, rows, cols->get()));
    if (c.groups == 1) {
      MODRWKV_RETURN_IF_ERROR(
          Gemm(w, out, width, cols->get(), width, rows, y + t0 * ldy, ldy, 0.0f));
      continue;
    }
    // Group g: its rows of w, its block of windows, its columns of y (column-major as in Gemm).
    MODRWKV_RETURN_IF_ERROR(CublasStatus(
        blas_->SgemmStridedBatched(handle_, CUBLAS_OP_T, CUBLAS_OP_N, per_group, rows, width, &one,
                                   w, width, int64_t{per_group} * width, cols->get(), width,
                                   int64_t{rows} * width, &zero, y + t0 * ldy,
                                   static_cast<int>(ldy), per_group, c.groups),
        "SgemmStridedBatched (grouped convolution)"));
  }
  return absl::OkStatus();
}

absl::Status EncoderDevice::HeadScores(const float* qkv, int t, int heads, int hd,
                                       float* scores) const {
  // scores[h], [t queries][t keys] row-major, is column-major K_h Q_h^T: K_h and Q_h are the
  // head's columns of the qkv rows, one head to the next hd floats along them.
  const int d = heads * hd, ld = 3 * d;
  const float one = 1.0f, zero = 0.0f;
  return CublasStatus(
      blas_->SgemmStridedBatched(handle_, CUBLAS_OP_T, CUBLAS_OP_N, t, t, hd, &one, qkv + d, ld, hd,
                                 qkv, ld, hd, &zero, scores, t, int64_t{t} * t, heads),
      "SgemmStridedBatched (attention scores)");
}

absl::Status EncoderDevice::HeadValues(const float* qkv, const float* probs, int t, int heads,
                                       int hd, float* out) const {
  // Head h's columns of the out rows = P_h V_h: column-major V_h^T P_h^T.
  const int d = heads * hd, ld = 3 * d;
  const float one = 1.0f, zero = 0.0f;
  return CublasStatus(
      blas_->SgemmStridedBatched(handle_, CUBLAS_OP_N, CUBLAS_OP_N, hd, t, t, &one, qkv + 2 * d, ld,
                                 hd, probs, t, int64_t{t} * t, &zero, out, d, hd, heads),
      "SgemmStridedBatched (attention values)");
}

absl::Status DeviceScratch::Reserve(size_t count) {
  if (count <= capacity_) return absl::OkStatus();
  buf_.reset();  // free first: the old contents are not kept
  capacity_ = 0;
  MODRWKV_ASSIGN_OR_RETURN(buf_, AllocDevice<float>(count));
  capacity_ = count;
  return absl::OkStatus();
}

absl::Status LayerScratch::Reserve(size_t rows, size_t d, size_t f, size_t heads, size_t t) {
  MODRWKV_RETURN_IF_ERROR(x.Reserve(rows * d));
  MODRWKV_RETURN_IF_ERROR(h.Reserve(rows * d));
  MODRWKV_RETURN_IF_ERROR(qkv.Reserve(rows * 3 * d));
  MODRWKV_RETURN_IF_ERROR(attn.Reserve(rows * d));
  MODRWKV_RETURN_IF_ERROR(mlp.Reserve(rows * f));
  return scores.Reserve(heads * t * t);
}

}  // namespace modrwkv::encoders::cuda
