#include "encoders/cuda/cuda_wavlm_stem.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "encoders/cuda/cuda_wavlm_layers.h"
#include "encoders/cuda/encoder_kernels.cuh"
#include "engine/base/status_macros.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/rwkv7_ops.cuh"

namespace modrwkv::encoders::cuda {

using modrwkv::cuda::LaunchLayerNorm;

namespace {

bool IsMatrix(const cpu::Matrix& m, int rows, int cols) { return m.rows == rows && m.cols == cols; }

// Whether the stem's weights have the config's sizes (what Run relies on).
absl::Status CheckShapes(const WavlmStemWeights& s, const WavlmConfig& c) {
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrCat("WavLM stem: ", what, " does not match the config"));
  };
  if (static_cast<int>(s.convs.size()) != c.conv_layers() || c.conv_layers() == 0) {
    return bad("the number of convolutions");
  }
  const bool group = c.feat_extract_norm == "group";
  int in = 1;
  for (int i = 0; i < c.conv_layers(); ++i) {
    const WavlmConv& cv = s.convs[i];
    const size_t out = c.conv_dim[i];
    const size_t norm = !group || i == 0 ? out : 0, bias = c.conv_bias ? out : 0;
    if (cv.in != in || cv.out != c.conv_dim[i] || cv.kernel != c.conv_kernel[i] ||
        cv.stride != c.conv_stride[i] || !IsMatrix(cv.w, cv.out, cv.kernel * in) ||
        cv.bias.size() != bias || cv.norm_w.size() != norm || cv.norm_b.size() != norm) {
      return bad(absl::StrCat("convolution ", i));
    }
    in = cv.out;
  }
  const int d = c.hidden_size, groups = c.num_conv_pos_embedding_groups;
  const int cg = d / groups, k = c.num_conv_pos_embeddings;
  const size_t ud = d;
  if (s.proj_ln_w.size() != static_cast<size_t>(in) || s.proj_ln_b.size() != s.proj_ln_w.size() ||
      !IsMatrix(s.proj, d, in) || s.proj_b.size() != ud) {
    return bad("the feature projection");
  }
  if (static_cast<int>(s.pos.size()) != groups || s.pos_b.size() != ud ||
      !std::all_of(s.pos.begin(), s.pos.end(),
                   [&](const cpu::Matrix& m) { return IsMatrix(m, cg, k * cg); })) {
    return bad("the positional convolution");
  }
  // The encoder's LayerNorm is the stem's last step in the post-LN layout only.
  const size_t ln = c.do_stable_layer_norm ? 0 : ud;
  if (s.ln_w.size() != ln || s.ln_b.size() != ln) return bad("the encoder's LayerNorm");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<CudaWavlmStem>> CudaWavlmStem::Create(const WavlmStemWeights& stem,
                                                                     const WavlmConfig& config,
                                                                     int device, EncoderMath math) {
  MODRWKV_RETURN_IF_ERROR(CheckShapes(stem, config));
  std::unique_ptr<CudaWavlmStem> s(new CudaWavlmStem(config));
  MODRWKV_ASSIGN_OR_RETURN(s->dev_, EncoderDevice::Open(device, math, "WavLM's stem"));
  const EncoderDevice& dev = *s->dev_;
  // Vectors that may be empty (no bias, no norm) stay unallocated.
  auto upload = [&](const std::vector<float>& v, Buffer* dst) -> absl::Status {
    if (v.empty()) return absl::OkStatus();
    MODRWKV_ASSIGN_OR_RETURN(*dst, dev.Upload(v));
    return absl::OkStatus();
  };
  for (const WavlmConv& cv : stem.convs) {
    Conv c;
    c.in = cv.in;
    c.out = cv.out;
    c.kernel = cv.kernel;
    c.stride = cv.stride;
    MODRWKV_ASSIGN_OR_RETURN(c.w, dev.Upload(cv.w));
    MODRWKV_RETURN_IF_ERROR(upload(cv.bias, &c.bias));
    MODRWKV_RETURN_IF_ERROR(upload(cv.norm_w, &c.norm_w));
    MODRWKV_RETURN_IF_ERROR(upload(cv.norm_b, &c.norm_b));
    s->convs_.push_back(std::move(c));
  }
  MODRWKV_RETURN_IF_ERROR(upload(stem.proj_ln_w, &s->proj_ln_w_));
  MODRWKV_RETURN_IF_ERROR(upload(stem.proj_ln_b, &s->proj_ln_b_));
  MODRWKV_ASSIGN_OR_RETURN(s->proj_, dev.Upload(stem.proj));
  MODRWKV_RETURN_IF_ERROR(upload(stem.proj_b, &s->proj_b_));
  // The groups' matrices one after another: output channel o's row at o * K * D/G, as the
  // grouped Conv1d reads them.
  std::vector<float> pos;
  for (const cpu::Matrix& m : stem.pos) {
    const std::vector<float> rows = cpu::UnpackMatrix(m);
    pos.insert(pos.end(), rows.begin(), rows.end());
  }
  MODRWKV_ASSIGN_OR_RETURN(s->pos_, dev.Upload(pos));
  MODRWKV_RETURN_IF_ERROR(upload(stem.pos_b, &s->pos_b_));
  MODRWKV_RETURN_IF_ERROR(upload(stem.ln_w, &s->ln_w_));
  MODRWKV_RETURN_IF_ERROR(upload(stem.ln_b, &s->ln_b_));
  return s;
}

WavlmStemFactory CudaWavlmStem::Factory(int device, EncoderMath math) {
  return RunnerFactory<WavlmStemRunner, CudaWavlmStem>(device, math);
}

// wavlm_encoder.cc's Features and AddPositions for one clip, in their order.
absl::Status CudaWavlmStem::RunClip(const float* clip, int num_samples, float* x) const {
  const WavlmConfig& c = config_;
  const EncoderDevice& dev = *dev_;
  cudaStream_t st = dev.stream();
  const bool group = c.feat_extract_norm == "group";
  const float* src = clip;
  int frames = num_samples;
  float* bufs[2] = {s_.a.get(), s_.b.get()};
  for (size_t i = 0; i < convs_.size(); ++i) {
    const Conv& cv = convs_[i];
    const int rows = (frames - cv.kernel) / cv.stride + 1;
    const ConvWindows w{.in_frames = frames,
                        .out_frames = rows,
                        .kernel = cv.kernel,
                        .stride = cv.stride,
                        .ld = cv.in,
                        .channels = cv.in};
    float* dst = bufs[i % 2];
    MODRWKV_RETURN_IF_ERROR(dev.Conv1d(cv.w.get(), cv.out, w, src, dst, cv.out, &s_.cols));
    if (group && i == 0) {
      if (cv.bias) {
        MODRWKV_RETURN_IF_ERROR(
            LaunchBiasActivation(st, dst, rows, cv.out, cv.bias.get(), BiasActivation::kNone));
      }
      MODRWKV_RETURN_IF_ERROR(LaunchChannelNormGelu(st, dst, rows, cv.out, cv.norm_w.get(),
                                                    cv.norm_b.get(), kWavlmConvNormEps));
    } else if (group) {
      MODRWKV_RETURN_IF_ERROR(
          LaunchBiasActivation(st, dst, rows, cv.out, cv.bias.get(), BiasActivation::kGeluErf));
    } else {
      if (cv.bias) {
        MODRWKV_RETURN_IF_ERROR(
            LaunchBiasActivation(st, dst, rows, cv.out, cv.bias.get(), BiasActivation::kNone));
      }
      MODRWKV_RETURN_IF_ERROR(LaunchLayerNorm(st, dst, nullptr, rows, cv.out, cv.norm_w.get(),
                                              cv.norm_b.get(), kWavlmConvNormEps, dst));
      MODRWKV_RETURN_IF_ERROR(
          LaunchBiasActivation(st, dst, rows, cv.out, nullptr, BiasActivation::kGeluErf));
    }
    src = dst;
    frames = rows;
  }
  // Feature projection: LayerNorm in place, then the product into x.
  float* feat = bufs[(convs_.size() - 1) % 2];
  const int cl = convs_.back().out, d = c.hidden_size;
  MODRWKV_RETURN_IF_ERROR(LaunchLayerNorm(st, feat, nullptr, frames, cl, proj_ln_w_.get(),
                                          proj_ln_b_.get(), c.layer_norm_eps, feat));
  MODRWKV_RETURN_IF_ERROR(dev.Gemm(proj_.get(), d, cl, feat, frames, x, 0.0f));
  MODRWKV_RETURN_IF_ERROR(
      LaunchBiasActivation(st, x, frames, d, proj_b_.get(), BiasActivation::kNone));
  // x += GELU(pos_conv(x) + bias): group g reads and writes its D/G columns; output t reads
  // input rows t - K/2 .. t - K/2 + K - 1 (PyTorch's extra output of an even kernel dropped).
  // Every group in one batched product.
  const int groups = c.num_conv_pos_embedding_groups;
  const ConvWindows w{.in_frames = frames,
                      .out_frames = frames,
                      .kernel = c.num_conv_pos_embeddings,
                      .pad = c.num_conv_pos_embeddings / 2,
                      .ld = d,
                      .channels = d / groups,
                      .groups = groups};
  float* pos = s_.pos.get();
  MODRWKV_RETURN_IF_ERROR(dev.Conv1d(pos_.get(), d, w, x, pos, d, &s_.cols));
  MODRWKV_RETURN_IF_ERROR(
      LaunchBiasActivation(st, pos, frames, d, pos_b_.get(), BiasActivation::kGeluErf));
  return LaunchAddPeriodic(st, x, int64_t{frames} * d, pos, int64_t{frames} * d);
}

absl::Status CudaWavlmStem::Compute(const float* samples, int batch, int num_samples) const {
  const int frames = config_.OutputFrames(num_samples);
  if (batch <= 0 || frames <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("batch ", batch, " of clips of ", num_samples,
                                                   " samples (", frames, " frames)"));
  }
  MODRWKV_RETURN_IF_ERROR(dev_->Use());
  const size_t d = config_.hidden_size, rows = static_cast<size_t>(batch) * frames;
  size_t feat = 0;
  for (int64_t n = num_samples; const Conv& cv : convs_) {
    n = (n - cv.kernel) / cv.stride + 1;
    feat = std::max(feat, static_cast<size_t>(n) * cv.out);
  }
  const size_t all = static_cast<size_t>(batch) * num_samples;
  MODRWKV_RETURN_IF_ERROR(s_.samples.Reserve(all));
  MODRWKV_RETURN_IF_ERROR(s_.a.Reserve(feat));
  MODRWKV_RETURN_IF_ERROR(s_.b.Reserve(feat));
  MODRWKV_RETURN_IF_ERROR(s_.x.Reserve(rows * d));
  MODRWKV_RETURN_IF_ERROR(s_.pos.Reserve(static_cast<size_t>(frames) * d));
  cudaStream_t st = dev_->stream();
  MODRWKV_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(s_.samples.get(), samples, all * sizeof(float), cudaMemcpyHostToDevice, st));
  for (int b = 0; b < batch; ++b) {
    MODRWKV_RETURN_IF_ERROR(RunClip(s_.samples.get() + static_cast<int64_t>(b) * num_samples,
                                    num_samples,
                                    s_.x.get() + static_cast<int64_t>(b) * frames * d));
  }
  if (!ln_w_) return absl::OkStatus();
  return LaunchLayerNorm(st, s_.x.get(), nullptr, static_cast<int>(rows), static_cast<int>(d),
                         ln_w_.get(), ln_b_.get(), config_.layer_norm_eps, s_.x.get());
}

absl::Status CudaWavlmStem::Run(const float* samples, int batch, int num_samples, float* x) const {
  std::lock_guard<std::mutex> lock(mu_);
  MODRWKV_RETURN_IF_ERROR(Compute(samples, batch, num_samples));
  const size_t floats =
      static_cast<size_t>(batch) * config_.OutputFrames(num_samples) * config_.hidden_size;
  cudaStream_t st = dev_->stream();
  MODRWKV_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(x, s_.x.get(), floats * sizeof(float), cudaMemcpyDeviceToHost, st));
  return modrwkv::cuda::CudaStatus(cudaStreamSynchronize(st), "WavLM's stem");
}

absl::Status CudaWavlmStem::RunThrough(const float* samples, int batch, int num_samples,
                                       const WavlmLayerRunner* layers, int frames, const float* rel,
                                       float* x) const {
  const CudaWavlmLayers* gpu = CudaWavlmLayers::OnDevice(layers, dev_->device());
  if (gpu == nullptr) {
    return WavlmStemRunner::RunThrough(samples, batch, num_samples, layers, frames, rel, x);
  }
  std::lock_guard<std::mutex> lock(mu_);  // s_.x holds the rows until the layers have copied them
  MODRWKV_RETURN_IF_ERROR(Compute(samples, batch, num_samples));
  return gpu->RunFromDevice(s_.x.get(), dev_->stream(), batch, frames, rel, x);
}

}  // namespace modrwkv::encoders::cuda
