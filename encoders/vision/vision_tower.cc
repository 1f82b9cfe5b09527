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
namespace {

constexpr int kRowsPerTask = 16;

// Runs fn(r0, r1, thread) over [0, rows) in chunks.
template <typename Fn>
void ForRows(cpu::ThreadPool* pool, int rows, Fn&& fn) {
  const int64_t tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  pool->ParallelFor(tasks, [&](int64_t t, int thread) {
    const int r0 = static_cast<int>(t) * kRowsPerTask;
    fn(r0, std::min(rows, r0 + kRowsPerTask), thread);
  });
}

void AddBias(float* y, int rows, int n, const float* bias, cpu::ThreadPool* pool) {
  ForRows(pool, rows, [&](int r0, int r1, int) {
    for (int r = r0; r < r1; ++r) {
      float* row = y + static_cast<int64_t>(r) * n;
      for (int i = 0; i < n; ++i) row[i] += bias[i];
    }
  });
}

void SetRows(float* y, int rows, int n, const float* bias, cpu::ThreadPool* pool) {
  ForRows(pool, rows, [&](int r0, int r1, int) {
    for (int r = r0; r < r1; ++r) std::memcpy(y + static_cast<int64_t>(r) * n, bias, n * 4);
  });
}

void LayerNormRows(const float* x, float* y, int rows, int n, const std::vector<float>& w,
                   const std::vector<float>& b, float eps, cpu::ThreadPool* pool) {
  ForRows(pool, rows, [&](int r0, int r1, int) {
    for (int r = r0; r < r1; ++r) {
      const int64_t o = static_cast<int64_t>(r) * n;
      cpu::LayerNorm(x + o, w.data(), b.data(), n, eps, y + o);
    }
  });
}

// In place over one row; tmp holds n floats.
void Activation(const std::string& act, float* x, int n, float* tmp) {
  if (act == "quick_gelu") {  // x * sigmoid(1.702 x)
    for (int i = 0; i < n; ++i) tmp[i] = 1.702f * x[i];
    cpu::VecSigmoid(tmp, n);
    for (int i = 0; i < n; ++i) x[i] *= tmp[i];
  } else if (act == "gelu") {  // erf form
    for (int i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752f));
  } else {  // tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    for (int i = 0; i < n; ++i) {
      const float v = x[i];
      tmp[i] = 0.7978845608028654f * (v + 0.044715f * v * v * v);
    }
    cpu::VecTanh(tmp, n);
    for (int i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + tmp[i]);
  }
}

// Softmax of one row in place, with max subtraction.
void Softmax(float* s, int n) {
  float m = s[0];
  for (int i = 1; i < n; ++i) m = std::max(m, s[i]);
  for (int i = 0; i < n; ++i) s[i] -= m;
  cpu::VecExp(s, n);
  float sum = 0;
  for (int i = 0; i < n; ++i) sum += s[i];
  const float inv = 1.0f / sum;
  for (int i = 0; i < n; ++i) s[i] *= inv;
}

// Floats of scratch per pool thread: attention scores [t][t] and packed rows t*max(t, hd), or
// the activation's temporary [f].
int64_t ScratchPerThread(const VitConfig& c) {
  const int64_t t = c.num_positions();
  return std::max<int64_t>(t * (t + std::max<int64_t>(t, c.head_dim())), c.intermediate_size);
}

}  // namespace

int VisionTower::layers_to_run() const {
  const int layers = config_.num_hidden_layers;
  if (config_.kind == VitKind::kSiglip || options_.feature_layer == -1) return layers;
  // hidden_states has layers + 1 entries; entry k is the output of k encoder layers.
  return options_.feature_layer >= 0 ? options_.feature_layer : layers + 1 + options_.feature_layer;
}

int VisionTower::output_rows() const {
  return config_.num_positions() - (options_.drop_class_token ? 1 : 0);
}

double VisionTower::FlopsPerImage() const {
  const double t = config_.num_positions(), d = config_.hidden_size, f = config_.intermediate_size;
  const double patch = 2.0 * config_.num_patches() * d * patch_.cols;
  const double layer = 2.0 * t * (4 * d * d + 2 * d * f) + 4.0 * t * t * d;
  return patch + layer * layers_to_run();
}

void VisionTower::RunLayer(const Layer& l, int rows, int batch, float* x, float* h, float* qkv,
                           float* attn, float* mlp, float* scores, cpu::ThreadPool* pool,
                           cpu::LinearRunner* lin) const {
  const int d = config_.hidden_size, f = config_.intermediate_size;
  const int t = config_.num_positions(), heads = config_.num_attention_heads;
  const int hd = config_.head_dim();
  const float eps = config_.layer_norm_eps;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

  LayerNormRows(x, h, rows, d, l.ln1_w, l.ln1_b, eps, pool);
  SetRows(qkv, rows, 3 * d, l.qkv_b.data(), pool);
  lin->Run(l.qkv, h, d, rows, qkv, 3 * d, /*accumulate=*/true);
  // One task per (image, head). K and V^T are packed per head as if they were weights, so both
  // products run on the engine's panel GEMM (faster here than single-threaded OpenBLAS, see
  // tests/bench/vision_tower_bench.cc, BM_AttentionHead*).
  pool->ParallelFor(int64_t{batch} * heads, [&](int64_t task, int thread) {
    const int b = static_cast<int>(task / heads), head = static_cast<int>(task % heads);
    const float* q = qkv + static_cast<int64_t>(b) * t * 3 * d + head * hd;
    float* s = scores + ScratchPerThread(config_) * thread;  // [t][t]
    float* xp = s + static_cast<int64_t>(t) * t;             // packed rows, t*max(t, hd) floats
    std::vector<float> kv(static_cast<size_t>(t) * hd);
    TensorView view{"", DType::kF32, {t, hd}, kv.data(), kv.size() * 4};
    auto gather = [&](const float* src) {  // head's [t][hd] slice of q/k/v, made contiguous
      for (int i = 0; i < t; ++i) {
        std::memcpy(kv.data() + static_cast<int64_t>(i) * hd, src + static_cast<int64_t>(i) * 3 * d,
                    hd * 4);
      }
    };
    gather(q + d);
    const cpu::Matrix km = cpu::MakeMatrix(view, false, cpu::WType::kF32, cpu::Layout::kPanels);
    cpu::PackRows(q, 3 * d, t, hd, xp);
    cpu::PanelGemm(cpu::WType::kF32, km.data(), nullptr, hd, t, 0, km.panels(), xp, t, s, t, false);
    for (int i = 0; i < t; ++i) {
      float* row = s + static_cast<int64_t>(i) * t;
      for (int j = 0; j < t; ++j) row[j] *= scale;
      Softmax(row, t);
    }
    gather(q + 2 * d);
    const cpu::Matrix vm = cpu::MakeMatrix(view, true, cpu::WType::kF32, cpu::Layout::kPanels);
    cpu::PackRows(s, t, t, t, xp);
    cpu::PanelGemm(cpu::WType::kF32, vm.data(), nullptr, t, hd, 0, vm.panels(), xp, t,
                   attn + static_cast<int64_t>(b) * t * d + head * hd, d, false);
  });
  AddBias(x, rows, d, l.out_b.data(), pool);
  lin->Run(l.out, attn, d, rows, x, d, /*accumulate=*/true);

  LayerNormRows(x, h, rows, d, l.ln2_w, l.ln2_b, eps, pool);
  SetRows(mlp, rows, f, l.fc1_b.data(), pool);
  lin->Run(l.fc1, h, d, rows, mlp, f, /*accumulate=*/true);
  // The activation's scratch reuses the attention scores (ScratchPerThread >= f floats each).
  ForRows(pool, rows, [&](int r0, int r1, int thread) {
    float* tmp = scores + static_cast<int64_t>(thread) * ScratchPerThread(config_);
    for (int r = r0; r < r1; ++r) {
      Activation(config_.hidden_act, mlp + static_cast<int64_t>(r) * f, f, tmp);
    }
  });
  AddBias(x, rows, d, l.fc2_b.data(), pool);
  lin->Run(l.fc2, mlp, f, rows, x, d, /*accumulate=*/true);
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
  const int d = c.hidden_size, f = c.intermediate_size, t = c.num_positions();
  const int n = c.num_patches(), g = c.grid(), p = c.patch_size;
  const int rows_out = output_rows();
  if (static_cast<int64_t>(out.size()) != int64_t{batch} * rows_out * d) {
    return absl::InvalidArgumentError(absl::StrCat(
        "output holds ", out.size(), " floats, expected [", batch, ",", rows_out, ",", d, "]"));
  }
  const int rows = batch * t;
  const int64_t cpp = ch * p * p;

  // Scratch of this call only (thread-compatibility).
  cpu::AlignedBuffer<float> x(static_cast<size_t>(rows) * d), h(static_cast<size_t>(rows) * d),
      qkv(static_cast<size_t>(rows) * 3 * d), attn(static_cast<size_t>(rows) * d),
      mlp(static_cast<size_t>(std::max<int64_t>(int64_t{rows} * f, int64_t{batch} * n * cpp))),
      scores(static_cast<size_t>(pool->size()) * ScratchPerThread(c));
  cpu::LinearRunner lin(pool);

  // Patch embedding as a GEMM over im2col rows [batch*n][C*p*p], in Conv2d's (c, ky, kx) order.
  float* cols = mlp.data();
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
  lin.Run(patch_, cols, cpp, batch * n, h.data(), d, /*accumulate=*/false);
  const int first = c.kind == VitKind::kClip ? 1 : 0;  // CLIP's class token is row 0
  pool->ParallelFor(batch, [&](int64_t b, int) {
    float* xb = x.data() + b * t * d;
    for (int r = 0; r < t; ++r) {
      float* row = xb + static_cast<int64_t>(r) * d;
      const float* pos = pos_.data() + static_cast<int64_t>(r) * d;
      const float* src = r < first ? class_.data() : h.data() + (b * n + r - first) * d;
      for (int i = 0; i < d; ++i) row[i] = src[i] + pos[i];
      if (!patch_b_.empty()) {
        for (int i = 0; i < d; ++i) row[i] += patch_b_[i];
      }
    }
  });
  if (c.kind == VitKind::kClip) {
    LayerNormRows(x.data(), x.data(), rows, d, pre_ln_w_, pre_ln_b_, c.layer_norm_eps, pool);
  }
  for (const Layer& l : layers_) {
    RunLayer(l, rows, batch, x.data(), h.data(), qkv.data(), attn.data(), mlp.data(), scores.data(),
             pool, &lin);
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
