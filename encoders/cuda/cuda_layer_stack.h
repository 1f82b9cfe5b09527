// A tower's pre-LN transformer layers (SigLIP, CLIP, Whisper: transformer_ops.h's RunPreLnLayer)
// on one GPU. The weights go up once as f32; each Run copies the tower's rows up, runs every
// layer there — cuBLAS SGEMMs for the projections and, one strided batch per sequence, for the
// attention products over all heads; LayerNorm, bias, activation and softmax as kernels — and
// copies the rows back. f32 throughout (no TF32): the CPU's results up to the order of float
// sums. Runs are serialised (one stream, one scratch, grown to the largest batch seen); the
// patch embedding or convolutions, position embeddings and the final LayerNorm stay on the CPU.
#pragma once

#include <cublas_v2.h>

#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "encoders/vision/transformer_ops.h"
#include "engine/cuda/cublas_api.h"
#include "engine/cuda/device_buffer.h"

namespace modrwkv::encoders::cuda {

class CudaLayerStack final : public LayerStackRunner {
 public:
  // FAILED_PRECONDITION without device `device` or cuBLAS; RESOURCE_EXHAUSTED when the weights
  // do not fit.
  static absl::StatusOr<std::unique_ptr<CudaLayerStack>> Create(
      absl::Span<const EncoderLayerWeights> layers, const EncoderLayerShape& shape, int device);
  // Places every tower it is given on `device`.
  static LayerStackFactory Factory(int device);
  ~CudaLayerStack() override;

  absl::Status Run(float* x, int batch) const override;

 private:
  // One layer's weights on the device, f32: matrices [out][in] row-major.
  struct Layer {
    modrwkv::cuda::DeviceBuffer<float> ln1_w, ln1_b, ln2_w, ln2_b, qkv, qkv_b, out, out_b, fc1,
        fc1_b, fc2, fc2_b;
  };

  CudaLayerStack(const EncoderLayerShape& shape, int device) : shape_(shape), device_(device) {}
  absl::Status Upload(absl::Span<const EncoderLayerWeights> layers);
  // Scratch for `rows` rows (and one sequence's attention scores), grown, never shrunk.
  absl::Status EnsureScratch(int rows) const;
  absl::Status RunLayer(const Layer& l, int batch) const;
  // y[rows][out] = x[rows][in] * w^T + beta * y.
  absl::Status Gemm(const float* w, int out, int in, const float* x, int rows, float* y,
                    float beta) const;
  // One sequence's attention over every head: attn rows of sequence b from qkv rows of b.
  absl::Status Attention(int b) const;

  const EncoderLayerShape shape_;
  const int device_;
  std::vector<Layer> layers_;
  const modrwkv::cuda::CublasApi* blas_ = nullptr;
  cublasHandle_t handle_ = nullptr;
  modrwkv::cuda::CudaStream stream_;

  mutable std::mutex mu_;  // one Run at a time: the stream and the scratch are shared
  mutable int rows_ = 0;   // the scratch's capacity in rows
  mutable modrwkv::cuda::DeviceBuffer<float> x_, h_, qkv_, attn_, mlp_, scores_;
};

}  // namespace modrwkv::encoders::cuda
