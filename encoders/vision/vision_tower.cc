// VisionTower's forward pass. Rows of all images of a call go through each projection together;
// attention runs one task per (image, head) on the same panel GEMM.
#include "encoders/vision/vision_tower.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/cpu/kernels.h"

namespace modrwkv::encoders {

int VisionTower::layers_to_run() const {
  const int layers = config_.num_hidden_layers;
  if (config_.kind == VitKind::kSiglip || options_.feature_layer == -1) return layers;
  // hidden_states has layers + 1 entries; entry k is the output of k encoder layers.
  return options_.feature_layer >= 0 ? options_.feature_layer : layers + 1 + options_.feature_layer;
}

int VisionTower::output_rows() const {
  return config_.num_positions() - (options_.drop_class_token ? 1 : 0);
}

EncoderLayerShape VisionTower::layer_shape() const {
  EncoderLayerShape s;
  s.tokens = config_.num_positions();
  s.dim = config_.hidden_size;
  s.ffn = config_.intermediate_size;
  s.heads = config_.num_attention_heads;
  s.eps = config_.layer_norm_eps;
  // Validate() accepted the name.
  s.act = ActivationByName(config_.hidden_act).value_or(Activation::kGeluTanh);
  return s;
}

double VisionTower::FlopsPerImage() const {
  const double cpp = config_.num_channels * config_.patch_size * config_.patch_size;
  const double patch = 2.0 * config_.num_patches() * config_.hidden_size * cpp;
  return patch + layer_shape().Flops() * layers_to_run();
}

absl::Status VisionTower::UseLayerStack(const LayerStackFactory& factory) {
  MODRWKV_ASSIGN_OR_RETURN(layer_stack_, factory(layers_, layer_shape()));
  std::vector<EncoderLayerWeights>().swap(layers_);  // the runner holds its own copy
  return absl::OkStatus();
}

absl::Status VisionTower::UseStem(const VisionStemFactory& factory) {
  MODRWKV_ASSIGN_OR_RETURN(stem_runner_, factory(stem_, config_));
  stem_ = VisionStemWeights();  // the runner holds its own copy
  return absl::OkStatus();
}

absl::Status VisionTower::Forward(absl::Span<const float> pixels, int batch, absl::Span<float> out,
                                  cpu::ThreadPool* pool) const {
  const VitConfig& c = config_;
  if (batch <= 0) return absl::InvalidArgumentError(absl::StrCat("batch ", batch, " must be > 0"));
  const int64_t s = c.image_size, ch = c.num_channels;
  const int64_t image = ch * s * s;
  if (static_cast<int64_t>(pixels.size()) != batch * image) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pixels hold ", pixels.size(), " floats, expected [", batch, ",", ch, ",", s, ",", s,
        "] = ", batch * image, " (images must be resized to the tower's image_size)"));
  }
  const int d = c.hidden_size, t = c.num_positions();
  const int n = c.num_patches(), g = c.grid(), p = c.patch_size;
  const int rows_out = output_rows();
  if (static_cast<int64_t>(out.size()) != int64_t{batch} * rows_out * d) {
    return absl::InvalidArgumentError(absl::StrCat(
        "output holds ", out.size(), " floats, expected [", batch, ",", rows_out, ",", d, "]"));
  }
  const int rows = batch * t;
  const int64_t cpp = ch * p * p;

  // Scratch of this call only (thread-compatibility).
  const EncoderLayerShape shape = layer_shape();
  EncoderScratch scratch(shape, rows, pool->size());
  cpu::AlignedBuffer<float> x(static_cast<size_t>(rows) * d);
  cpu::LinearRunner lin(pool);

  if (stem_runner_) {  // and the layers, where they run elsewhere too
    MODRWKV_RETURN_IF_ERROR(
        stem_runner_->RunThrough(pixels.data(), batch, layer_stack_.get(), x.data()));
  } else {
    // Patch embedding as a GEMM over im2col rows [batch*n][C*p*p], in Conv2d's (c, ky, kx) order.
    cpu::AlignedBuffer<float> im2col(static_cast<size_t>(batch) * n * cpp);
    float* cols = im2col.data();
    pool->ParallelFor(int64_t{batch} * g, [&](int64_t task, int) {
      const int64_t b = task / g, gy = task % g;
      const float* img = pixels.data() + b * image;
      for (int gx = 0; gx < g; ++gx) {
        float* dst = cols + ((b * g + gy) * g + gx) * cpp;
        for (int64_t k = 0; k < ch; ++k) {
          for (int ky = 0; ky < p; ++ky) {
            std::memcpy(dst + (k * p + ky) * p, img + (k * s + gy * p + ky) * s + int64_t{gx} * p,
                        p * 4);
          }
        }
      }
    });
    float* h = scratch.h.data();  // [batch*n][D] patch rows, before the first layer uses it
    lin.Run(stem_.patch, cols, cpp, batch * n, h, d, /*accumulate=*/false);
    im2col.Resize(0);
    const int first = c.kind == VitKind::kClip ? 1 : 0;  // CLIP's class token is row 0
    pool->ParallelFor(batch, [&](int64_t b, int) {
      float* xb = x.data() + b * t * d;
      for (int r = 0; r < t; ++r) {
        float* row = xb + static_cast<int64_t>(r) * d;
        const float* pos = stem_.pos.data() + static_cast<int64_t>(r) * d;
        const float* src = r < first ? stem_.class_emb.data() : h + (b * n + r - first) * d;
        for (int i = 0; i < d; ++i) row[i] = src[i] + pos[i];
        if (!stem_.patch_b.empty()) {
          for (int i = 0; i < d; ++i) row[i] += stem_.patch_b[i];
        }
      }
    });
    if (c.kind == VitKind::kClip) {
      LayerNormRows(x.data(), x.data(), rows, d, stem_.pre_ln_w, stem_.pre_ln_b, c.layer_norm_eps,
                    pool);
    }
  }
  if (layer_stack_) {
    if (!stem_runner_) MODRWKV_RETURN_IF_ERROR(layer_stack_->Run(x.data(), batch));
  } else {
    for (const EncoderLayerWeights& l : layers_) {
      RunPreLnLayer(l, shape, batch, x.data(), &scratch, pool, &lin);
    }
  }
  const int skip = options_.drop_class_token ? 1 : 0;
  pool->ParallelFor(batch, [&](int64_t b, int) {
    const float* src = x.data() + (b * t + skip) * d;
    float* dst = out.data() + b * rows_out * d;
    if (c.kind == VitKind::kSiglip) {
      for (int r = 0; r < rows_out; ++r) {
        cpu::LayerNorm(src + int64_t{r} * d, post_ln_w_.data(), post_ln_b_.data(), d,
                       c.layer_norm_eps, dst + int64_t{r} * d);
      }
    } else {
      std::memcpy(dst, src, static_cast<size_t>(rows_out) * d * 4);
    }
  });
  return absl::OkStatus();
}

}  // namespace modrwkv::encoders
