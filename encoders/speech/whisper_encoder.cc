// WhisperEncoder's forward pass. Both convolutions are GEMMs over overlapping rows of a
// time-major, zero-padded copy of their input (the weights are reordered to (tap, channel) at
// load time, so the three taps of an output frame are three consecutive input rows); the clips of
// a call go through each convolution and projection together.
#include "encoders/speech/whisper_encoder.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"

namespace modrwkv::encoders {

absl::StatusOr<int> WhisperKeptFrames(int valid_mel_frames, int frames) {
  if (valid_mel_frames < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("valid mel frame count ", valid_mel_frames, " must be >= 0"));
  }
  return std::min(valid_mel_frames / 2 + 1, frames);
}

EncoderLayerShape WhisperEncoder::layer_shape() const {
  EncoderLayerShape s;
  s.tokens = config_.frames();
  s.dim = config_.d_model;
  s.ffn = config_.encoder_ffn_dim;
  s.heads = config_.encoder_attention_heads;
  s.eps = 1e-5f;  // nn.LayerNorm's default; WhisperConfig has no key for it
  // Validate() accepted the name.
  s.act = ActivationByName(config_.activation_function).value_or(Activation::kGeluErf);
  return s;
}

double WhisperEncoder::FlopsPerClip() const {
  const double t = mel_frames(), p = frames(), d = dim(), m = mel_bins();
  const double convs = 2.0 * t * d * 3 * m + 2.0 * p * d * 3 * d;
  return convs + layer_shape().Flops() * config_.encoder_layers;
}

absl::Status WhisperEncoder::UseLayerStack(const LayerStackFactory& factory) {
  MODRWKV_ASSIGN_OR_RETURN(layer_stack_, factory(layers_, layer_shape()));
  std::vector<EncoderLayerWeights>().swap(layers_);  // the runner holds its own copy
  return absl::OkStatus();
}

absl::Status WhisperEncoder::UseStem(const WhisperStemFactory& factory) {
  MODRWKV_ASSIGN_OR_RETURN(stem_runner_, factory(stem_, config_));
  stem_ = WhisperStemWeights();  // the runner holds its own copy
  return absl::OkStatus();
}

absl::Status WhisperEncoder::Forward(absl::Span<const float> mel, int batch, absl::Span<float> out,
                                     cpu::ThreadPool* pool) const {
  if (batch <= 0) return absl::InvalidArgumentError(absl::StrCat("batch ", batch, " must be > 0"));
  const int m = mel_bins(), t = mel_frames(), p = frames(), d = dim();
  const int64_t clip = int64_t{m} * t;
  if (static_cast<int64_t>(mel.size()) != batch * clip) {
    return absl::InvalidArgumentError(absl::StrCat(
        "log-mel input holds ", mel.size(), " floats, expected [", batch, ",", m, ",", t,
        "] = ", batch * clip, " (the front end pads or trims every clip to ", t, " frames)"));
  }
  if (static_cast<int64_t>(out.size()) != int64_t{batch} * p * d) {
    return absl::InvalidArgumentError(absl::StrCat(
        "output holds ", out.size(), " floats, expected [", batch, ",", p, ",", d, "]"));
  }
  const int rows = batch * p;
  const EncoderLayerShape shape = layer_shape();
  cpu::AlignedBuffer<float> x(static_cast<size_t>(rows) * d);  // the residual stream
  cpu::LinearRunner lin(pool);
  if (stem_runner_) {  // and the layers, where they run elsewhere too
    MODRWKV_RETURN_IF_ERROR(
        stem_runner_->RunThrough(mel.data(), batch, layer_stack_.get(), x.data()));
  } else {
    // Each clip is a block of t + 2 time-major rows: a zero row, its t frames, a zero row (the
    // convolutions' padding). Output r of a GEMM over all blocks reads rows r..r+2; the two
    // outputs per block that straddle a block boundary are computed and discarded.
    const int64_t block = t + 2;
    cpu::AlignedBuffer<float> mt(static_cast<size_t>(batch * block) * m);
    pool->ParallelFor(batch, [&](int64_t b, int) {
      float* dst = mt.data() + b * block * m;
      const float* src = mel.data() + b * clip;
      std::memset(dst, 0, static_cast<size_t>(m) * 4);
      std::memset(dst + (block - 1) * m, 0, static_cast<size_t>(m) * 4);
      for (int c = 0; c < m; ++c) {
        const float* row = src + int64_t{c} * t;
        for (int i = 0; i < t; ++i) dst[(i + 1) * int64_t{m} + c] = row[i];
      }
    });
    // conv1 (k3, s1, p1) + GELU into h1, laid out in the same blocks: row 0 and row t + 1 of each
    // block are the padding of conv2, so they are zeroed after the GEMM wrote junk there.
    cpu::AlignedBuffer<float> h1(static_cast<size_t>(batch * block) * d);
    const int rows1 = static_cast<int>(batch * block - 2);
    SetRows(h1.data() + d, rows1, d, stem_.conv1_b.data(), pool);
    lin.Run(stem_.conv1, mt.data(), m, rows1, h1.data() + d, d, /*accumulate=*/true);
    mt.Resize(0);
    // GELU in the erf form (nn.functional.gelu's default), whatever the config's
    // activation_function (that one is the MLP's).
    cpu::AlignedBuffer<float> act_tmp(static_cast<size_t>(pool->size()) * d);
    ActivationRows(Activation::kGeluErf, h1.data() + d, rows1, d, act_tmp.data(), d, pool);
    pool->ParallelFor(batch, [&](int64_t b, int) {
      std::memset(h1.data() + b * block * d, 0, static_cast<size_t>(d) * 4);
      std::memset(h1.data() + (b * block + block - 1) * d, 0, static_cast<size_t>(d) * 4);
    });
    // conv2 (k3, s2, p1): output j of a block reads block rows 2j..2j+2, so the GEMM's rows are
    // h1 rows with a stride of two; p + 1 outputs per block, the last one straddles.
    const int64_t block2 = block / 2;  // p + 1
    cpu::AlignedBuffer<float> h2(static_cast<size_t>(batch * block2) * d);
    const int rows2 = static_cast<int>(batch * block2 - 1);
    SetRows(h2.data(), rows2, d, stem_.conv2_b.data(), pool);
    lin.Run(stem_.conv2, h1.data(), 2 * int64_t{d}, rows2, h2.data(), d, /*accumulate=*/true);
    h1.Resize(0);
    ForRows(pool, rows, [&](int r0, int r1, int thread) {
      for (int r = r0; r < r1; ++r) {
        const int b = r / p, j = r % p;
        const float* src = h2.data() + (b * block2 + j) * d;
        float* dst = x.data() + int64_t{r} * d;
        std::memcpy(dst, src, static_cast<size_t>(d) * 4);
        ApplyActivation(Activation::kGeluErf, dst, d, act_tmp.data() + int64_t{thread} * d);
        const float* pos = stem_.pos.data() + int64_t{j} * d;
        for (int i = 0; i < d; ++i) dst[i] += pos[i];
      }
    });
  }
  if (layer_stack_) {
    if (!stem_runner_) MODRWKV_RETURN_IF_ERROR(layer_stack_->Run(x.data(), batch));
  } else {
    EncoderScratch scratch(shape, rows, pool->size());
    for (const EncoderLayerWeights& l : layers_) {
      RunPreLnLayer(l, shape, batch, x.data(), &scratch, pool, &lin);
    }
  }
  LayerNormRows(x.data(), out.data(), rows, d, ln_w_, ln_b_, shape.eps, pool);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<float>>> WhisperEncoder::Encode(
    absl::Span<const float> mel, absl::Span<const int> valid_mel_frames,
    cpu::ThreadPool* pool) const {
  const int batch = static_cast<int>(valid_mel_frames.size());
  std::vector<int> kept(valid_mel_frames.size());
  for (size_t i = 0; i < kept.size(); ++i) {
    auto k = WhisperKeptFrames(valid_mel_frames[i], frames());
    if (!k.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("clip ", i, ": ", k.status().message()));
    }
    kept[i] = *k;
  }
  const int64_t per_clip = int64_t{frames()} * dim();
  std::vector<float> all(static_cast<size_t>(batch * per_clip));
  MODRWKV_RETURN_IF_ERROR(Forward(mel, batch, absl::MakeSpan(all), pool));
  std::vector<std::vector<float>> res(kept.size());
  for (int b = 0; b < batch; ++b) {
    const float* src = all.data() + b * per_clip;
    res[b].assign(src, src + int64_t{kept[b]} * dim());
  }
  return res;
}

}  // namespace modrwkv::encoders
