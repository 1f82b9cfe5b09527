#include "encoders/cuda/cuda_vision_stem.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "encoders/cuda/cuda_layer_stack.h"
#include "encoders/cuda/encoder_kernels.cuh"
#include "engine/base/status_macros.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/rwkv7_ops.cuh"

namespace modrwkv::encoders::cuda {

using modrwkv::cuda::LaunchLayerNorm;

absl::StatusOr<std::unique_ptr<CudaVisionStem>> CudaVisionStem::Create(
    const VisionStemWeights& stem, const VitConfig& config, int device, EncoderMath math) {
  const int d = config.hidden_size, p = config.patch_size;
  const size_t ud = d, clip = config.kind == VitKind::kClip ? ud : 0;
  if (stem.patch.rows != d || stem.patch.cols != config.num_channels * p * p ||
      stem.pos.size() != static_cast<size_t>(config.num_positions()) * d ||
      stem.class_emb.size() != clip || stem.pre_ln_w.size() != clip ||
      stem.pre_ln_b.size() != clip || (stem.patch_b.size() != ud && !stem.patch_b.empty())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vision stem: the weights do not match the config (width ", d, ", ", config.num_channels,
        " channels, patches of ", p, ", ", config.num_positions(), " positions)"));
  }
  std::unique_ptr<CudaVisionStem> s(new CudaVisionStem(config));
  MODRWKV_ASSIGN_OR_RETURN(s->dev_, EncoderDevice::Open(device, math, "the vision tower's stem"));
  const EncoderDevice& dev = *s->dev_;
  MODRWKV_ASSIGN_OR_RETURN(s->patch_, dev.Upload(stem.patch));
  // Vectors the tower's kind has not stay unallocated.
  for (auto [dst, src] : {std::pair{&s->patch_b_, &stem.patch_b},
                          {&s->class_, &stem.class_emb},
                          {&s->pos_, &stem.pos},
                          {&s->pre_ln_w_, &stem.pre_ln_w},
                          {&s->pre_ln_b_, &stem.pre_ln_b}}) {
    if (src->empty()) continue;
    MODRWKV_ASSIGN_OR_RETURN(*dst, dev.Upload(*src));
  }
  return s;
}

VisionStemFactory CudaVisionStem::Factory(int device, EncoderMath math) {
  return RunnerFactory<VisionStemRunner, CudaVisionStem>(device, math);
}

// vision_tower.cc's stem: patch rows, their product, [class token,] + bias + positions, [LN].
absl::Status CudaVisionStem::Compute(const float* pixels, int batch) const {
  if (batch <= 0) return absl::InvalidArgumentError(absl::StrCat("batch ", batch, " must be > 0"));
  MODRWKV_RETURN_IF_ERROR(dev_->Use());
  const EncoderDevice& dev = *dev_;
  cudaStream_t st = dev.stream();
  const VitConfig& c = config_;
  const int d = c.hidden_size, n = c.num_patches(), t = c.num_positions(), size = c.image_size;
  const int cpp = c.num_channels * c.patch_size * c.patch_size;
  const int first = t - n;  // CLIP's class token is row 0 of each image
  const size_t image = static_cast<size_t>(c.num_channels) * size * size;
  const size_t rows = static_cast<size_t>(batch) * t;
  MODRWKV_RETURN_IF_ERROR(s_.pixels.Reserve(batch * image));
  MODRWKV_RETURN_IF_ERROR(s_.cols.Reserve(static_cast<size_t>(batch) * n * cpp));
  MODRWKV_RETURN_IF_ERROR(s_.x.Reserve(rows * d));
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      s_.pixels.get(), pixels, batch * image * sizeof(float), cudaMemcpyHostToDevice, st));
  MODRWKV_RETURN_IF_ERROR(LaunchPatchify(st, s_.pixels.get(), batch, c.num_channels, size,
                                         c.patch_size, s_.cols.get()));
  float* xs = s_.x.get();
  if (first == 0) {  // the images' patch rows are contiguous: one product
    MODRWKV_RETURN_IF_ERROR(dev.Gemm(patch_.get(), d, cpp, s_.cols.get(), batch * n, xs, 0.0f));
  } else {
    for (int b = 0; b < batch; ++b) {
      float* xb = xs + static_cast<int64_t>(b) * t * d;
      MODRWKV_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(xb, class_.get(), d * sizeof(float), cudaMemcpyDeviceToDevice, st));
      MODRWKV_RETURN_IF_ERROR(dev.Gemm(patch_.get(), d, cpp,
                                       s_.cols.get() + static_cast<int64_t>(b) * n * cpp, n,
                                       xb + static_cast<int64_t>(first) * d, 0.0f));
    }
  }
  if (patch_b_) {
    MODRWKV_RETURN_IF_ERROR(
        LaunchBiasActivation(st, xs, rows, d, patch_b_.get(), BiasActivation::kNone));
  }
  MODRWKV_RETURN_IF_ERROR(LaunchAddPeriodic(st, xs, rows * d, pos_.get(), int64_t{t} * d));
  if (!pre_ln_w_) return absl::OkStatus();
  return LaunchLayerNorm(st, xs, nullptr, static_cast<int>(rows), d, pre_ln_w_.get(),
                         pre_ln_b_.get(), c.layer_norm_eps, xs);
}

absl::Status CudaVisionStem::Run(const float* pixels, int batch, float* x) const {
  std::lock_guard<std::mutex> lock(mu_);
  MODRWKV_RETURN_IF_ERROR(Compute(pixels, batch));
  const size_t floats = static_cast<size_t>(batch) * config_.num_positions() * config_.hidden_size;
  cudaStream_t st = dev_->stream();
  MODRWKV_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(x, s_.x.get(), floats * sizeof(float), cudaMemcpyDeviceToHost, st));
  return modrwkv::cuda::CudaStatus(cudaStreamSynchronize(st), "the vision tower's stem");
}

absl::Status CudaVisionStem::RunThrough(const float* pixels, int batch,
                                        const LayerStackRunner* layers, float* x) const {
  const CudaLayerStack* gpu = CudaLayerStack::OnDevice(layers, dev_->device());
  if (gpu == nullptr) return VisionStemRunner::RunThrough(pixels, batch, layers, x);
  std::lock_guard<std::mutex> lock(mu_);  // s_.x holds the rows until the layers have copied them
  MODRWKV_RETURN_IF_ERROR(Compute(pixels, batch));
  return gpu->RunFromDevice(s_.x.get(), dev_->stream(), batch, x);
}

}  // namespace modrwkv::encoders::cuda
