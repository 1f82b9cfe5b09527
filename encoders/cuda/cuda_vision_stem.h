// A SigLIP or CLIP tower's stem (encoders/vision/vision_tower.h: the patch embedding, CLIP's
// class token, the position embedding and CLIP's pre_layrnorm) on one GPU: the weights up once
// as f32; each Run copies the images up, cuts them into patch rows (a kernel), runs the patch
// embedding as one cuBLAS product, assembles the first layer's rows there and copies them back.
// f32 throughout. Small next to the layers (0.7 of SigLIP2-base/16@384's 110.8 GFLOP), but
// several milliseconds on the CPU thread that would otherwise run it, against the layers' few on
// the GPU. Runs are serialised; the scratch grows with the largest batch seen.
#pragma once

#include <memory>
#include <mutex>

#include "absl/status/statusor.h"
#include "encoders/cuda/encoder_device.h"
#include "encoders/vision/vision_tower.h"
#include "engine/cuda/device_buffer.h"

namespace modrwkv::encoders::cuda {

class CudaVisionStem final : public VisionStemRunner {
 public:
  // FAILED_PRECONDITION without device `device` or cuBLAS; RESOURCE_EXHAUSTED when the weights
  // do not fit; INVALID_ARGUMENT when the weights do not have the config's sizes.
  static absl::StatusOr<std::unique_ptr<CudaVisionStem>> Create(
      const VisionStemWeights& stem, const VitConfig& config, int device,
      EncoderMath math = EncoderMath::kF32);
  static VisionStemFactory Factory(int device, EncoderMath math = EncoderMath::kF32);
  // The device current while the buffers are freed.
  ~CudaVisionStem() override {
    if (dev_) (void)dev_->Use();
  }

  absl::Status Run(const float* pixels, int batch, float* x) const override;
  // A CudaLayerStack on the same device takes the rows there (RunFromDevice): one copy to the
  // host instead of three through it.
  absl::Status RunThrough(const float* pixels, int batch, const LayerStackRunner* layers,
                          float* x) const override;

 private:
  using Buffer = modrwkv::cuda::DeviceBuffer<float>;

  explicit CudaVisionStem(const VitConfig& config) : config_(config) {}
  // With mu_ held: the first layer's rows into s_.x ([batch * positions][D]), queued on the
  // stream.
  absl::Status Compute(const float* pixels, int batch) const;

  const VitConfig config_;
  std::unique_ptr<EncoderDevice> dev_;
  Buffer patch_, patch_b_, class_, pos_, pre_ln_w_, pre_ln_b_;  // empty where the kind has none

  mutable std::mutex mu_;  // one Run at a time: the stream and the scratch are shared
  mutable struct { DeviceScratch pixels, cols, x; } s_;
};

}  // namespace modrwkv::encoders::cuda
