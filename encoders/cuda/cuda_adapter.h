// An adapter chain (encoders/adapter/adapter_chain.h) on one GPU: the layers the official
// adapters use — conv1d, linear, ReLU, GELU, LayerNorm, y + LayerNorm(y) — with the weights up
// once as f32; each Run copies the encoder's rows up, runs every layer there (the products on
// cuBLAS, convolutions over their windows as EncoderDevice::Conv1d) and copies the prompt rows
// back. f32 throughout. With the encoders on the GPU the adapter was the largest part left on
// the CPU: generation A's vision adapter for a 1.5B model (768 -> 4096 -> 2048 over 576 rows) is
// 13 GFLOP, its speech adapter (a k3 s2 convolution to 4096, then 4096 -> 4096 -> 2048 over
// ~750 rows) ~50. A chain with a pixel shuffle or a transformer layer stays on the CPU (the
// factory declines). Runs are serialised; the scratch grows with the most rows seen.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "encoders/adapter/adapter_chain.h"
#include "encoders/cuda/encoder_device.h"
#include "engine/cuda/device_buffer.h"

namespace modrwkv::encoders::cuda {

class CudaAdapter final : public AdapterRunner {
 public:
  // Whether every layer of `chain` is one this runner runs.
  static bool Supports(const AdapterChain& chain);
  // FAILED_PRECONDITION without device `device` or cuBLAS; RESOURCE_EXHAUSTED when the weights
  // do not fit; UNIMPLEMENTED for a chain it does not support.
  static absl::StatusOr<std::unique_ptr<CudaAdapter>> Create(const AdapterChain& chain, int device,
                                                             EncoderMath math = EncoderMath::kF32);
  // Places supported chains on `device`; declines the others (they stay on the CPU).
  static AdapterFactory Factory(int device, EncoderMath math = EncoderMath::kF32);
  // The device current while the buffers are freed.
  ~CudaAdapter() override {
    if (dev_) (void)dev_->Use();
  }

  absl::Status Run(const float* in, int rows, int out_rows, float* out) const override;

 private:
  using Buffer = modrwkv::cuda::DeviceBuffer<float>;
  struct Layer {
    AdapterLayerSpec spec;
    int in_dim = 0, out_dim = 0;
    Buffer w, bias, gamma, beta;  // empty where the layer has none
  };

  CudaAdapter() = default;

  std::unique_ptr<EncoderDevice> dev_;
  std::vector<Layer> layers_;
  int input_dim_ = 0, output_dim_ = 0;

  mutable std::mutex mu_;  // one Run at a time: the stream and the scratch are shared
  mutable struct { DeviceScratch a, b, norm, cols; } s_;
};

}  // namespace modrwkv::encoders::cuda
