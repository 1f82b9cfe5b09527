#include "encoders/cuda/cuda_timer.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "encoders/cuda/encoder_kernels.cuh"
#include "engine/base/status_macros.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/rwkv7_ops.cuh"

namespace modrwkv::encoders::cuda {
namespace {

using modrwkv::cuda::LaunchLayerNorm;

// The Timer's LayerNorms' eps (TimerModel's nn.LayerNorm default, as timer.cc).
constexpr float kEps = 1e-5f;

bool IsMatrix(const cpu::Matrix& m, int rows, int cols) { return m.rows == rows && m.cols == cols; }

// Whether the weights agree with each other (what Run relies on), naming what does not.
absl::Status CheckShapes(const TimerWeights& w) {
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("Timer on the GPU: ", what));
  };
  const int d = w.embed.rows, p = w.embed.cols;
  if (d <= 0 || p <= 0) return bad("no embedding");
  if (w.heads <= 0 || d % w.heads != 0 || (d / w.heads) % 2 != 0) {
    return bad(absl::StrCat(w.heads, " heads do not divide the width ", d, " into even heads"));
  }
  const size_t ud = d;
  if (w.inv_freq.size() != static_cast<size_t>(d / w.heads / 2)) return bad("rotary frequencies");
  if (w.norm_w.size() != ud || w.norm_b.size() != ud) return bad("the final LayerNorm");
  if (w.layers.empty()) return bad("no layers");
  const int f = w.layers[0].gate_up.rows / 2;
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const TimerLayerWeights& l = w.layers[i];
    if (f <= 0 || !IsMatrix(l.qkv, 3 * d, d) || l.qkv_b.size() != 3 * ud || !IsMatrix(l.o, d, d) ||
        !IsMatrix(l.gate_up, 2 * f, d) || !IsMatrix(l.down, d, f) || l.norm1_w.size() != ud ||
        l.norm1_b.size() != ud || l.norm2_w.size() != ud || l.norm2_b.size() != ud) {
      return bad(absl::StrCat("layer ", i, "'s weights do not have the width ", d,
                              " and the MLP width ", f, " of the others"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<CudaTimer>> CudaTimer::Create(const TimerWeights& w, int device,
                                                             EncoderMath math) {
  MODRWKV_RETURN_IF_ERROR(CheckShapes(w));
  std::unique_ptr<CudaTimer> t(
      new CudaTimer(w.embed.cols, w.embed.rows, w.layers[0].gate_up.rows / 2, w.heads));
  MODRWKV_ASSIGN_OR_RETURN(t->dev_, EncoderDevice::Open(device, math, "the Timer"));
  const EncoderDevice& dev = *t->dev_;
  MODRWKV_ASSIGN_OR_RETURN(t->embed_, dev.Upload(w.embed));
  MODRWKV_ASSIGN_OR_RETURN(t->norm_w_, dev.Upload(w.norm_w));
  MODRWKV_ASSIGN_OR_RETURN(t->norm_b_, dev.Upload(w.norm_b));
  MODRWKV_ASSIGN_OR_RETURN(t->inv_freq_, dev.Upload(w.inv_freq));
  for (const TimerLayerWeights& hl : w.layers) {
    Layer l;
    for (auto [dst, src] : {std::pair{&l.qkv, &hl.qkv},
                            {&l.o, &hl.o},
                            {&l.gate_up, &hl.gate_up},
                            {&l.down, &hl.down}}) {
      MODRWKV_ASSIGN_OR_RETURN(*dst, dev.Upload(*src));
    }
    for (auto [dst, src] : {std::pair{&l.qkv_b, &hl.qkv_b},
                            {&l.norm1_w, &hl.norm1_w},
                            {&l.norm1_b, &hl.norm1_b},
                            {&l.norm2_w, &hl.norm2_w},
                            {&l.norm2_b, &hl.norm2_b}}) {
      MODRWKV_ASSIGN_OR_RETURN(*dst, dev.Upload(*src));
    }
    t->layers_.push_back(std::move(l));
  }
  return t;
}

TimerFactory CudaTimer::Factory(int device, EncoderMath math) {
  return [device, math](const TimerWeights& w) -> absl::StatusOr<std::unique_ptr<TimerRunner>> {
    absl::StatusOr<std::unique_ptr<CudaTimer>> t = Create(w, device, math);
    if (!t.ok()) return t.status();
    return std::unique_ptr<TimerRunner>(*std::move(t));
  };
}

// timer.cc's Encode loop body, in its order.
absl::Status CudaTimer::RunLayer(const Layer& l, int R, int S) const {
  const int d = dim_, f = ffn_, hd = d / heads_, rows = R * S;
  const EncoderDevice& dev = *dev_;
  cudaStream_t st = dev.stream();
  float* x = s_.x.get();
  float* qkv = s_.qkv.get();
  MODRWKV_RETURN_IF_ERROR(dev.Gemm(l.qkv.get(), 3 * d, d, x, rows, qkv, 0.0f));
  MODRWKV_RETURN_IF_ERROR(
      LaunchBiasActivation(st, qkv, rows, 3 * d, l.qkv_b.get(), BiasActivation::kNone));
  MODRWKV_RETURN_IF_ERROR(LaunchRotary(st, qkv, rows, R, heads_, hd, inv_freq_.get()));
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int s = 0; s < S; ++s) {  // causal attention within each sequence
    const float* q = qkv + static_cast<int64_t>(s) * R * 3 * d;
    MODRWKV_RETURN_IF_ERROR(dev.HeadScores(q, R, heads_, hd, s_.scores.get()));
    MODRWKV_RETURN_IF_ERROR(
        LaunchScaledSoftmax(st, s_.scores.get(), int64_t{heads_} * R, R, scale, R));
    MODRWKV_RETURN_IF_ERROR(dev.HeadValues(q, s_.scores.get(), R, heads_, hd,
                                           s_.attn.get() + static_cast<int64_t>(s) * R * d));
  }
  // x = norm1(x + o_proj(attn)), x = norm2(x + down(silu(gate(x)) * up(x))).
  MODRWKV_RETURN_IF_ERROR(dev.Gemm(l.o.get(), d, d, s_.attn.get(), rows, x, 1.0f));
  MODRWKV_RETURN_IF_ERROR(
      LaunchLayerNorm(st, x, nullptr, rows, d, l.norm1_w.get(), l.norm1_b.get(), kEps, x));
  MODRWKV_RETURN_IF_ERROR(dev.Gemm(l.gate_up.get(), 2 * f, d, x, rows, s_.gu.get(), 0.0f));
  MODRWKV_RETURN_IF_ERROR(LaunchSiluGate(st, s_.gu.get(), rows, f, s_.act.get()));
  MODRWKV_RETURN_IF_ERROR(dev.Gemm(l.down.get(), d, f, s_.act.get(), rows, x, 1.0f));
  return LaunchLayerNorm(st, x, nullptr, rows, d, l.norm2_w.get(), l.norm2_b.get(), kEps, x);
}

absl::Status CudaTimer::Run(const float* patches, int R, int S, float* out) const {
  if (R <= 0 || S <= 0 || int64_t{R} * S > (1 << 24)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Timer on the GPU: ", S, " sequences of ", R, " patches"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  MODRWKV_RETURN_IF_ERROR(dev_->Use());
  const size_t rows = static_cast<size_t>(R) * S, d = dim_, f = ffn_;
  MODRWKV_RETURN_IF_ERROR(s_.patches.Reserve(rows * patch_));
  MODRWKV_RETURN_IF_ERROR(s_.x.Reserve(rows * d));
  MODRWKV_RETURN_IF_ERROR(s_.qkv.Reserve(rows * 3 * d));
  MODRWKV_RETURN_IF_ERROR(s_.attn.Reserve(rows * d));
  MODRWKV_RETURN_IF_ERROR(s_.gu.Reserve(rows * 2 * f));
  MODRWKV_RETURN_IF_ERROR(s_.act.Reserve(rows * f));
  MODRWKV_RETURN_IF_ERROR(s_.scores.Reserve(static_cast<size_t>(heads_) * R * R));
  cudaStream_t st = dev_->stream();
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      s_.patches.get(), patches, rows * patch_ * sizeof(float), cudaMemcpyHostToDevice, st));
  const int n = static_cast<int>(rows);
  MODRWKV_RETURN_IF_ERROR(
      dev_->Gemm(embed_.get(), dim_, patch_, s_.patches.get(), n, s_.x.get(), 0.0f));
  for (const Layer& l : layers_) MODRWKV_RETURN_IF_ERROR(RunLayer(l, R, S));
  MODRWKV_RETURN_IF_ERROR(LaunchLayerNorm(st, s_.x.get(), nullptr, n, dim_, norm_w_.get(),
                                          norm_b_.get(), kEps, s_.x.get()));
  MODRWKV_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(out, s_.x.get(), rows * d * sizeof(float), cudaMemcpyDeviceToHost, st));
  return modrwkv::cuda::CudaStatus(cudaStreamSynchronize(st), "the Timer");
}

}  // namespace modrwkv::encoders::cuda
