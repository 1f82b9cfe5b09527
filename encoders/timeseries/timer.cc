// TimerEncoder: loading (shape checks against TimerModel's state dict) and the forward on the
// CPU backend's panel GEMM. Every projection runs over all patches of all channels at once; the
// causal attention is the ViT towers' SelfAttention (K and V^T packed per sequence and head, both
// products on the panel GEMM) with its causal mask.
#include "encoders/timeseries/timer.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "encoders/timeseries/encoder_weights.h"
#include "encoders/vision/transformer_ops.h"
#include "engine/base/status_macros.h"
#include "engine/cpu/kernels.h"

namespace modrwkv::encoders {
namespace {

using ts_weights::ReadF32;
using ts_weights::Stacked;

}  // namespace

absl::StatusOr<std::unique_ptr<TimerEncoder>> TimerEncoder::Load(
    const std::map<std::string, TensorView>& tensors, const std::string& prefix, int heads,
    float rope_theta) {
  std::set<std::string> used;
  MODRWKV_ASSIGN_OR_RETURN(const TensorView* emb,
                           ts_weights::Need(tensors, prefix + "embed_layer.emb.weight", &used));
  if (emb->shape.size() != 2 || emb->shape[0] < 1 || emb->shape[1] < 1 ||
      emb->shape[0] > (1 << 16) || emb->shape[1] > (1 << 16)) {
    return absl::InvalidArgumentError(absl::StrCat("time-series encoder: tensor ", emb->name,
                                                   " has shape ", emb->ShapeString(),
                                                   ", expected [hidden_size, input_token_len]"));
  }
  std::unique_ptr<TimerEncoder> e(new TimerEncoder());
  const int D = static_cast<int>(emb->shape[0]);
  e->dim_ = D;
  e->input_dim_ = static_cast<int>(emb->shape[1]);
  e->w_.heads = heads;
  if (heads < 1 || D % heads != 0 || (D / heads) % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("time-series encoder: time_series.heads is ",
                                                   heads, ": it must divide the ", "Timer's width ",
                                                   D, " into heads of an even width"));
  }
  if (!(rope_theta > 1) || !std::isfinite(rope_theta)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "time-series encoder: time_series.rope_theta is ", rope_theta, ", must be > 1"));
  }
  // inv_freq as the reference computes it in float32: 1 / theta ** (arange(0, hd, 2) / hd).
  const int hd = D / heads;
  for (int i = 0; i < hd / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(hd);
    e->w_.inv_freq.push_back(1.0f / std::pow(rope_theta, exponent));
  }
  e->w_.embed = ts_weights::Packed(ts_weights::ToF32(*emb), D, e->input_dim_, emb->name);

  const std::string lp = prefix + "layers.";
  MODRWKV_ASSIGN_OR_RETURN(const int n_layers, ts_weights::LayerCount(tensors, lp));
  if (n_layers < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("time-series encoder: no Timer layers (", lp, "0.* is missing)"));
  }
  MODRWKV_ASSIGN_OR_RETURN(const TensorView* gate,
                           ts_weights::Need(tensors, lp + "0.ffn_layer.gate_proj.weight", &used));
  if (gate->shape.size() != 2 || gate->shape[0] < 1 || gate->shape[0] > (1 << 18)) {
    return absl::InvalidArgumentError(absl::StrCat("time-series encoder: tensor ", gate->name,
                                                   " has shape ", gate->ShapeString(),
                                                   ", expected [intermediate_size, ", D, "]"));
  }
  const int F = static_cast<int>(gate->shape[0]);
  e->ffn_ = F;
  for (int i = 0; i < n_layers; ++i) {
    const std::string p = absl::StrCat(lp, i, ".");
    const std::string a = p + "self_attn.", f = p + "ffn_layer.";
    TimerLayerWeights l;
    MODRWKV_ASSIGN_OR_RETURN(
        l.qkv, Stacked(tensors, {a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"}, D,
                       D, &used));
    MODRWKV_ASSIGN_OR_RETURN(
        l.qkv_b, ts_weights::Concatenated(
                     tensors, {a + "q_proj.bias", a + "k_proj.bias", a + "v_proj.bias"}, D, &used));
    MODRWKV_ASSIGN_OR_RETURN(l.o, Stacked(tensors, {a + "o_proj.weight"}, D, D, &used));
    MODRWKV_ASSIGN_OR_RETURN(
        l.gate_up, Stacked(tensors, {f + "gate_proj.weight", f + "up_proj.weight"}, F, D, &used));
    MODRWKV_ASSIGN_OR_RETURN(l.down, Stacked(tensors, {f + "down_proj.weight"}, D, F, &used));
    MODRWKV_ASSIGN_OR_RETURN(l.norm1_w, ReadF32(tensors, p + "norm1.weight", {D}, &used));
    MODRWKV_ASSIGN_OR_RETURN(l.norm1_b, ReadF32(tensors, p + "norm1.bias", {D}, &used));
    MODRWKV_ASSIGN_OR_RETURN(l.norm2_w, ReadF32(tensors, p + "norm2.weight", {D}, &used));
    MODRWKV_ASSIGN_OR_RETURN(l.norm2_b, ReadF32(tensors, p + "norm2.bias", {D}, &used));
    e->w_.layers.push_back(std::move(l));
  }
  MODRWKV_ASSIGN_OR_RETURN(e->w_.norm_w, ReadF32(tensors, prefix + "norm.weight", {D}, &used));
  MODRWKV_ASSIGN_OR_RETURN(e->w_.norm_b, ReadF32(tensors, prefix + "norm.bias", {D}, &used));
  MODRWKV_RETURN_IF_ERROR(ts_weights::NothingElse(
      tensors, prefix, used,
      "the Timer format has embed_layer, layers.{i}.{self_attn,ffn_layer,norm1,norm2} and norm "
      "only"));
  e->layers_ = n_layers;
  return e;
}

absl::Status TimerEncoder::UseRunner(const TimerFactory& factory) {
  MODRWKV_ASSIGN_OR_RETURN(std::unique_ptr<TimerRunner> runner, factory(w_));
  if (runner == nullptr) return absl::OkStatus();  // declined: the CPU keeps it
  runner_ = std::move(runner);
  const int heads = w_.heads;
  w_ = TimerWeights();  // the runner holds its own copy
  w_.heads = heads;
  return absl::OkStatus();
}

void TimerEncoder::Rotate(float* qkv, int R, int S) const {
  const int D = dim_, heads = w_.heads, hd = D / heads, half = hd / 2;
  std::vector<float> cos(half), sin(half);
  for (int r = 0; r < R; ++r) {
    for (int i = 0; i < half; ++i) {
      // The reference rounds the angle t * inv_freq to float32, then takes cos / sin of it.
      const float angle = static_cast<float>(r) * w_.inv_freq[i];
      cos[i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin[i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
    for (int which = 0; which < 2 * S; ++which) {  // q, then k, of each sequence
      float* row = qkv + (static_cast<int64_t>(which / 2) * R + r) * 3 * D + (which % 2) * D;
      for (int h = 0; h < heads; ++h) {
        float* x = row + h * hd;
        for (int i = 0; i < half; ++i) {
          const float x1 = x[i], x2 = x[i + half];
          x[i] = x1 * cos[i] - x2 * sin[i];
          x[i + half] = x2 * cos[i] + x1 * sin[i];
        }
      }
    }
  }
}

void TimerEncoder::Attend(const float* qkv, int R, int S, float* out, cpu::ThreadPool* pool) const {
  EncoderLayerShape shape;  // only what SelfAttention reads
  shape.tokens = R;
  shape.dim = dim_;
  shape.heads = w_.heads;
  shape.causal = true;
  const int64_t per_thread = LayerScratchPerThread(shape);
  std::vector<float> scores(static_cast<size_t>(per_thread) * pool->size());
  SelfAttention(shape, S, qkv, out, scores.data(), per_thread, pool);
}

absl::StatusOr<std::vector<float>> TimerEncoder::Encode(absl::Span<const float> patches, int R,
                                                        cpu::ThreadPool* pool, int S) const {
  if (R < 1 || S < 1 || patches.size() != static_cast<size_t>(R) * S * input_dim_) {
    return absl::InvalidArgumentError(
        absl::StrCat("time-series encoder: ", patches.size(), " input values for ", S, " x ", R,
                     " patches of ", input_dim_, " (expected at least one patch)"));
  }
  const int rows = R * S;  // every row of every sequence goes through each projection
  if (runner_) {
    std::vector<float> out(static_cast<size_t>(rows) * dim_);
    MODRWKV_RETURN_IF_ERROR(runner_->Run(patches.data(), R, S, out.data()));
    return out;
  }
  std::optional<cpu::ThreadPool> local;
  if (pool == nullptr) pool = &local.emplace(1);
  cpu::LinearRunner runner(pool);  // per call: its packing scratch is not shared
  const int D = dim_, F = ffn_;
  std::vector<float> x(static_cast<size_t>(rows) * D, 0.0f), qkv(static_cast<size_t>(rows) * 3 * D),
      attn(static_cast<size_t>(rows) * D), gu(static_cast<size_t>(rows) * 2 * F),
      act(static_cast<size_t>(rows) * F);
  runner.Run(w_.embed, patches.data(), input_dim_, rows, x.data(), D, /*accumulate=*/true);
  for (const TimerLayerWeights& l : w_.layers) {
    SetRows(qkv.data(), rows, 3 * D, l.qkv_b.data(), pool);
    runner.Run(l.qkv, x.data(), D, rows, qkv.data(), 3 * D, /*accumulate=*/true);
    Rotate(qkv.data(), R, S);
    Attend(qkv.data(), R, S, attn.data(), pool);
    // x = norm1(x + o_proj(attn)): accumulate the projection into the residual.
    runner.Run(l.o, attn.data(), D, rows, x.data(), D, /*accumulate=*/true);
    LayerNormRows(x.data(), x.data(), rows, D, l.norm1_w, l.norm1_b, 1e-5f, pool);
    runner.Run(l.gate_up, x.data(), D, rows, gu.data(), 2 * F, /*accumulate=*/false);
    ForRows(pool, rows, [&](int r0, int r1, int) {
      for (int r = r0; r < r1; ++r) {  // silu(gate) * up = gate * sigmoid(gate) * up
        const float* g = gu.data() + static_cast<int64_t>(r) * 2 * F;
        float* a = act.data() + static_cast<int64_t>(r) * F;
        std::copy(g, g + F, a);
        cpu::VecSigmoid(a, F);
        for (int i = 0; i < F; ++i) a[i] = g[i] * a[i] * g[F + i];
      }
    });
    runner.Run(l.down, act.data(), F, rows, x.data(), D, /*accumulate=*/true);
    LayerNormRows(x.data(), x.data(), rows, D, l.norm2_w, l.norm2_b, 1e-5f, pool);
  }
  LayerNormRows(x.data(), x.data(), rows, D, w_.norm_w, w_.norm_b, 1e-5f, pool);
  return x;
}

}  // namespace modrwkv::encoders
