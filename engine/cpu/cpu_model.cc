#include "engine/cpu/cpu_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "engine/cpu/kernels.h"

namespace modrwkv::cpu {
namespace {

constexpr float kLnEps = 1e-5f;
constexpr float kGroupNormEps = 64e-5f;
constexpr float kNormEps = 1e-12f;
constexpr float kDecayScale = -0.606531f;  // -exp(-0.5)

std::vector<float> ToF32(const WeightRef& ref) {
  if (!ref.present()) return {};
  std::vector<float> v(static_cast<size_t>(ref.view->numel()));
  ConvertToF32(ref.view->dtype, ref.view->data, v.size(), v.data());
  return v;
}

}  // namespace

CpuModel::CpuModel(const ModelOptions& options, std::unique_ptr<ThreadPool> pool)
    : num_slots_(options.num_slots), pool_(std::move(pool)), linear_(pool_.get()) {}

absl::StatusOr<std::unique_ptr<CpuModel>> CpuModel::Create(
    const std::map<std::string, TensorView>& tensors, const ModelOptions& options) {
  MODRWKV_RETURN_IF_ERROR(options.Validate());
  if (options.state_type != ModelOptions::StateType::kF32) {
    return absl::UnimplementedError(
        "state dtype f16 is built for the CUDA backend only (--device cuda); the CPU backend "
        "keeps f32 states");
  }
  if (options.weight_type == ModelOptions::WeightType::kF16) {
    return absl::UnimplementedError(
        "dtype f16 is built for the CUDA backend only (--device cuda); the CPU backend keeps "
        "f32, bf16, int8 or int4 weights");
  }
  MODRWKV_ASSIGN_OR_RETURN(Rwkv7Refs refs, ResolveRwkv7(tensors));
  WType wt;
  switch (options.weight_type) {
    case ModelOptions::WeightType::kF32:
      wt = WType::kF32;
      break;
    case ModelOptions::WeightType::kBF16:
      wt = WType::kBF16;
      break;
    case ModelOptions::WeightType::kI8:
      wt = WType::kI8;
      break;
    case ModelOptions::WeightType::kI4:
      wt = WType::kI4;
      break;
    default:
      wt = refs.matrix_dtype == DType::kF32 ? WType::kF32 : WType::kBF16;
  }
  ModelOptions opts = options;
  MODRWKV_ASSIGN_OR_RETURN(opts.num_slots, options.SlotsFor(refs.config.StateBytes()));
  const int64_t state_floats = refs.config.StateFloats() * opts.num_slots;
  if (state_floats > (int64_t{1} << 36)) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("num_slots %d needs %d bytes of state", opts.num_slots, state_floats * 4));
  }
  std::unique_ptr<CpuModel> m(new CpuModel(opts, std::make_unique<ThreadPool>(opts.threads)));
  m->info_.config = refs.config;
  m->info_.backend = "cpu";
  m->info_.weight_dtype = wt == WType::kF32    ? "f32"
                          : wt == WType::kBF16 ? "bf16"
                          : wt == WType::kI8   ? "int8"
                                               : "int4";
  m->info_.parameter_count = refs.parameter_count;
  m->info_.fingerprint = FingerprintRwkv7(refs);
  MODRWKV_RETURN_IF_ERROR(m->LoadWeights(refs, wt, options.sparse_ffn));
  m->state_.Resize(static_cast<size_t>(state_floats));
  std::memset(m->state_.data(), 0, static_cast<size_t>(state_floats) * 4);
  return m;
}

ModelCounters CpuModel::counters() const {
  // The runner's only products that may skip zeros are the value products (RunSkippingZeros).
  const LinearRunner::SparseCounts& c = linear_.sparse_counts();
  return {c.inputs, c.read};
}

absl::Status CpuModel::LoadWeights(const Rwkv7Refs& refs, WType wt, bool sparse_ffn) {
  // int4 is for the large projections (`big`); the LoRA matrices and the head, which the output
  // depends on most directly, stay int8 (ModelOptions::WeightType::kI4).
  const WType small = wt == WType::kI4 ? WType::kI8 : wt;
  auto mat = [small](const WeightRef& ref, Layout layout = Layout::kPanels) {
    return ref.present() ? MakeMatrix(*ref.view, ref.transposed, small, layout) : Matrix{};
  };
  auto big = [wt](const WeightRef& ref, Layout layout = Layout::kPanels) {
    return ref.present() ? MakeMatrix(*ref.view, ref.transposed, wt, layout) : Matrix{};
  };
  // The embedding table is a row gather, not a product: int8 would save no reads per token.
  const bool quantised = wt == WType::kI8 || wt == WType::kI4;
  emb_ =
      MakeMatrix(*refs.emb.view, refs.emb.transposed, quantised ? WType::kBF16 : wt, Layout::kRows);
  // An int4 model's head: int8 weights, but integer products on x rounded to int8 as the int4
  // products (twice int8-times-f32's speed at a decode step's few rows).
  head_ = mat(refs.head, wt == WType::kI4 ? Layout::kDotChunks : Layout::kPanels);
  ln0_w_ = ToF32(refs.ln0_w);
  ln0_b_ = ToF32(refs.ln0_b);
  ln_out_w_ = ToF32(refs.ln_out_w);
  ln_out_b_ = ToF32(refs.ln_out_b);
  int64_t decode_bytes = head_.bytes() + 4LL * refs.config.n_embd;
  int64_t copies_bytes = 0;  // the value matrices' input-major copies (sparse_ffn)
  layers_.resize(refs.layers.size());
  for (size_t i = 0; i < refs.layers.size(); ++i) {
    const Rwkv7LayerRefs& r = refs.layers[i];
    Layer& l = layers_[i];
    l.ln1_w = ToF32(r.ln1_w), l.ln1_b = ToF32(r.ln1_b);
    l.ln2_w = ToF32(r.ln2_w), l.ln2_b = ToF32(r.ln2_b);
    l.x_r = ToF32(r.x_r), l.x_w = ToF32(r.x_w), l.x_k = ToF32(r.x_k);
    l.x_v = ToF32(r.x_v), l.x_a = ToF32(r.x_a), l.x_g = ToF32(r.x_g);
    l.w0 = ToF32(r.w0), l.a0 = ToF32(r.a0), l.v0 = ToF32(r.v0);
    l.k_k = ToF32(r.k_k), l.k_a = ToF32(r.k_a), l.r_k = ToF32(r.r_k);
    l.lnx_w = ToF32(r.lnx_w), l.lnx_b = ToF32(r.lnx_b), l.ffn_x_k = ToF32(r.ffn_x_k);
    const Layout lora = wt == WType::kI4 ? Layout::kDotChunks : Layout::kPanels;
    l.w1 = mat(r.w1, lora), l.w2 = mat(r.w2, lora), l.a1 = mat(r.a1, lora), l.a2 = mat(r.a2, lora);
    l.v1 = mat(r.v1, lora), l.v2 = mat(r.v2, lora), l.g1 = mat(r.g1, lora), l.g2 = mat(r.g2, lora);
    l.wr = big(r.wr), l.wk = big(r.wk), l.wv = big(r.wv), l.wo = big(r.wo);
    l.ffn_key = big(r.ffn_key), l.ffn_value = big(r.ffn_value);
    if (sparse_ffn) l.ffn_value_rows = big(r.ffn_value, Layout::kInputRows);
    for (const Matrix* m : {&l.w1, &l.w2, &l.a1, &l.a2, &l.v1, &l.v2, &l.g1, &l.g2, &l.wr, &l.wk,
                            &l.wv, &l.wo, &l.ffn_key, &l.ffn_value}) {
      decode_bytes += m->bytes();
    }
    decode_bytes += 4LL * refs.config.n_embd * 19;  // vectors
    copies_bytes += l.ffn_value_rows.bytes();
  }
  info_.decode_bytes_per_token = decode_bytes;
  info_.weight_bytes = decode_bytes + copies_bytes + emb_.bytes();
  return absl::OkStatus();
}

absl::Status CpuModel::CheckSlot(int slot, const char* what) const {
  return CheckSlotIndex(slot, num_slots_, what);
}

absl::Status CpuModel::ResetSlot(int slot) {
  MODRWKV_RETURN_IF_ERROR(CheckSlot(slot, "reset"));
  std::memset(SlotState(slot, 0), 0, info_.config.StateBytes());
  return absl::OkStatus();
}

absl::Status CpuModel::CopySlot(int src, int dst) {
  MODRWKV_RETURN_IF_ERROR(CheckSlot(src, "copy source"));
  MODRWKV_RETURN_IF_ERROR(CheckSlot(dst, "copy destination"));
  if (src != dst) std::memcpy(SlotState(dst, 0), SlotState(src, 0), info_.config.StateBytes());
  return absl::OkStatus();
}

absl::Status CpuModel::ReadSlot(int slot, absl::Span<float> out) const {
  MODRWKV_RETURN_IF_ERROR(CheckSlot(slot, "read"));
  MODRWKV_RETURN_IF_ERROR(CheckStateBuffer(out.size(), info_.config));
  std::memcpy(out.data(), state_.data() + slot * info_.config.StateFloats(),
              info_.config.StateBytes());
  return absl::OkStatus();
}

absl::Status CpuModel::WriteSlot(int slot, absl::Span<const float> in) {
  MODRWKV_RETURN_IF_ERROR(CheckSlot(slot, "write"));
  MODRWKV_RETURN_IF_ERROR(CheckStateBuffer(in.size(), info_.config));
  std::memcpy(SlotState(slot, 0), in.data(), info_.config.StateBytes());
  return absl::OkStatus();
}

void CpuModel::EnsureScratch(int rows, int out_rows, int logit_rows) {
  const ModelConfig& c = info_.config;
  if (rows > s_.rows) {
    const size_t rc = static_cast<size_t>(rows) * c.n_embd;
    for (AlignedBuffer<float>* b :
         {&s_.x, &s_.xn, &s_.xr, &s_.xw, &s_.xk, &s_.xv, &s_.xa, &s_.xg, &s_.r, &s_.k, &s_.v, &s_.w,
          &s_.a, &s_.g, &s_.kk, &s_.y, &s_.vfirst, &s_.vgate}) {
      b->Resize(rc);
    }
    s_.hw.Resize(static_cast<size_t>(rows) * c.d_decay);
    s_.ha.Resize(static_cast<size_t>(rows) * c.d_aaa);
    s_.hv.Resize(static_cast<size_t>(rows) * std::max(c.d_mv, 1));
    s_.hg.Resize(static_cast<size_t>(rows) * c.d_gate);
    s_.hf.Resize(static_cast<size_t>(rows) * c.ffn_size);
    s_.rows = rows;
  }
  const size_t oo = static_cast<size_t>(std::max(out_rows, 1));
  const size_t lo = static_cast<size_t>(std::max(logit_rows, 1));
  if (s_.xo.size() < oo * c.n_embd) s_.xo.Resize(oo * c.n_embd);
  if (s_.logits.size() < lo * c.vocab_size) s_.logits.Resize(lo * c.vocab_size);
}

void CpuModel::Embed(absl::Span<const StepEntry> entries) {
  const int C = info_.config.n_embd;
  float* x = s_.x.data();
  pool_->ParallelFor(static_cast<int64_t>(entries.size()), [&](int64_t e, int) {
    float* row = x + static_cast<int64_t>(entry_offset_[e]) * C;
    for (const InputRowsView& seg : entries[e].inputs) {
      for (int32_t t : seg.tokens) {
        const size_t off = static_cast<size_t>(t) * C;
        if (emb_.type == WType::kF32) {
          std::memcpy(row, emb_.f32.data() + off, 4 * C);
        } else {
          ConvertToF32(DType::kBF16, emb_.bf16.data() + off, C, row);
        }
        row += C;
      }
      if (!seg.embeddings.empty()) {  // memcpy from an empty span's nullptr is UB
        std::memcpy(row, seg.embeddings.data(), seg.embeddings.size() * 4);
        row += seg.embeddings.size();
      }
    }
  });
  // ln0 over every input row, token or embedding alike.
  const int rows = step_rows_;
  pool_->ParallelFor(rows, [&](int64_t r, int) {
    LayerNorm(x + r * C, ln0_w_.data(), ln0_b_.data(), C, kLnEps, x + r * C);
  });
}

void CpuModel::RunLayer(int li, absl::Span<const StepEntry> entries) {
  const ModelConfig& cfg = info_.config;
  const int C = cfg.n_embd, H = cfg.n_head, N = cfg.head_size;
  const int R = step_rows_;
  const int64_t E = static_cast<int64_t>(entries.size());
  const Layer& L = layers_[li];
  Scratch& s = s_;
  const int64_t kAttOff = 0, kWkvOff = C, kFfnOff = C + static_cast<int64_t>(H) * N * N;

  // Row r's predecessor for the token shift: the previous row of the same sequence, or the
  // shift state stored in the sequence's slot.
  auto prev_row = [&](const float* rows, int64_t e, int j, int64_t state_off) -> const float* {
    return j == 0 ? SlotState(entries[e].slot, li) + state_off
                  : rows + (static_cast<int64_t>(entry_offset_[e]) + j - 1) * C;
  };

  // ---- time mixing ----
  pool_->ParallelFor(R, [&](int64_t r, int) {
    LayerNorm(s.x.data() + r * C, L.ln1_w.data(), L.ln1_b.data(), C, kLnEps, s.xn.data() + r * C);
  });
  pool_->ParallelFor(E, [&](int64_t e, int) {
    for (int j = 0; j < entry_rows_[e]; ++j) {
      const int64_t r = entry_offset_[e] + j;
      const float* x = s.xn.data() + r * C;
      const float* p = prev_row(s.xn.data(), e, j, kAttOff);
      float *xr = s.xr.data() + r * C, *xw = s.xw.data() + r * C, *xk = s.xk.data() + r * C;
      float *xv = s.xv.data() + r * C, *xa = s.xa.data() + r * C, *xg = s.xg.data() + r * C;
      for (int c = 0; c < C; ++c) {
        const float d = p[c] - x[c];
        xr[c] = x[c] + d * L.x_r[c];
        xw[c] = x[c] + d * L.x_w[c];
        xk[c] = x[c] + d * L.x_k[c];
        xv[c] = x[c] + d * L.x_v[c];
        xa[c] = x[c] + d * L.x_a[c];
        xg[c] = x[c] + d * L.x_g[c];
      }
    }
    const int64_t last = entry_offset_[e] + entry_rows_[e] - 1;
    std::memcpy(SlotState(entries[e].slot, li) + kAttOff, s.xn.data() + last * C, 4 * C);
  });

  LinearRunner& lin = linear_;
  lin.Run(L.wr, s.xr.data(), C, R, s.r.data(), C, false);
  lin.Run(L.wk, s.xk.data(), C, R, s.k.data(), C, false);
  lin.Run(L.wv, s.xv.data(), C, R, s.v.data(), C, false);
  lin.Run(L.w1, s.xw.data(), C, R, s.hw.data(), cfg.d_decay, false);
  VecTanh(s.hw.data(), static_cast<int64_t>(R) * cfg.d_decay);
  lin.Run(L.w2, s.hw.data(), cfg.d_decay, R, s.w.data(), C, false);
  lin.Run(L.a1, s.xa.data(), C, R, s.ha.data(), cfg.d_aaa, false);
  lin.Run(L.a2, s.ha.data(), cfg.d_aaa, R, s.a.data(), C, false);
  lin.Run(L.g1, s.xg.data(), C, R, s.hg.data(), cfg.d_gate, false);
  VecSigmoid(s.hg.data(), static_cast<int64_t>(R) * cfg.d_gate);
  lin.Run(L.g2, s.hg.data(), cfg.d_gate, R, s.g.data(), C, false);
  const bool first = li == 0;
  if (!first) {
    lin.Run(L.v1, s.xv.data(), C, R, s.hv.data(), cfg.d_mv, false);
    lin.Run(L.v2, s.hv.data(), cfg.d_mv, R, s.vgate.data(), C, false);
  }

  pool_->ParallelFor(R, [&](int64_t r, int) {
    float* w = s.w.data() + r * C;
    float* a = s.a.data() + r * C;
    float* k = s.k.data() + r * C;
    float* v = s.v.data() + r * C;
    float* kk = s.kk.data() + r * C;
    for (int c = 0; c < C; ++c) w[c] += L.w0[c];
    VecSigmoid(w, C);
    for (int c = 0; c < C; ++c) w[c] *= kDecayScale;
    VecExp(w, C);  // w = exp(-e^-0.5 * sigmoid(w0 + lora)) in (0.545, 1)
    for (int c = 0; c < C; ++c) a[c] += L.a0[c];
    VecSigmoid(a, C);
    for (int c = 0; c < C; ++c) kk[c] = k[c] * L.k_k[c];
    for (int h = 0; h < H; ++h) {  // L2-normalise each head of kk
      float* q = kk + h * N;
      float ss = 0;
      for (int j = 0; j < N; ++j) ss += q[j] * q[j];
      const float inv = 1.0f / std::max(std::sqrt(ss), kNormEps);
      for (int j = 0; j < N; ++j) q[j] *= inv;
    }
    for (int c = 0; c < C; ++c) k[c] *= 1.0f + (a[c] - 1.0f) * L.k_a[c];
    float* vf = s.vfirst.data() + r * C;
    if (first) {
      std::memcpy(vf, v, 4 * C);
    } else {
      float* vg = s.vgate.data() + r * C;
      for (int c = 0; c < C; ++c) vg[c] += L.v0[c];
      VecSigmoid(vg, C);
      for (int c = 0; c < C; ++c) v[c] += (vf[c] - v[c]) * vg[c];
    }
  });

  // The recurrence: sequential in time within a sequence, independent across sequences and heads.
  pool_->ParallelFor(E * H, [&](int64_t task, int) {
    const int64_t e = task / H;
    const int h = static_cast<int>(task % H);
    const int64_t off = static_cast<int64_t>(entry_offset_[e]) * C + h * N;
    float* st = SlotState(entries[e].slot, li) + kWkvOff + static_cast<int64_t>(h) * N * N;
    WkvHead(st, entry_rows_[e], s.r.data() + off, s.w.data() + off, s.k.data() + off,
            s.v.data() + off, s.kk.data() + off, s.a.data() + off, C, s.y.data() + off, C);
  });

  pool_->ParallelFor(R, [&](int64_t r, int) {
    float* y = s.y.data() + r * C;
    const float* rr = s.r.data() + r * C;
    const float* k = s.k.data() + r * C;
    const float* v = s.v.data() + r * C;
    const float* g = s.g.data() + r * C;
    for (int h = 0; h < H; ++h) {
      const int o = h * N;
      // GroupNorm with one group per head, then the per-head bonus term.
      LayerNorm(y + o, L.lnx_w.data() + o, L.lnx_b.data() + o, N, kGroupNormEps, y + o);
      float bonus = 0;
      for (int j = 0; j < N; ++j) bonus += rr[o + j] * k[o + j] * L.r_k[o + j];
      for (int j = 0; j < N; ++j) y[o + j] = (y[o + j] + bonus * v[o + j]) * g[o + j];
    }
  });
  lin.Run(L.wo, s.y.data(), C, R, s.x.data(), C, /*accumulate=*/true);

  // ---- channel mixing ----
  pool_->ParallelFor(R, [&](int64_t r, int) {
    LayerNorm(s.x.data() + r * C, L.ln2_w.data(), L.ln2_b.data(), C, kLnEps, s.xn.data() + r * C);
  });
  pool_->ParallelFor(E, [&](int64_t e, int) {
    for (int j = 0; j < entry_rows_[e]; ++j) {
      const int64_t r = entry_offset_[e] + j;
      const float* x = s.xn.data() + r * C;
      const float* p = prev_row(s.xn.data(), e, j, kFfnOff);
      float* xk = s.xk.data() + r * C;
      for (int c = 0; c < C; ++c) xk[c] = x[c] + (p[c] - x[c]) * L.ffn_x_k[c];
    }
    const int64_t last = entry_offset_[e] + entry_rows_[e] - 1;
    std::memcpy(SlotState(entries[e].slot, li) + kFfnOff, s.xn.data() + last * C, 4 * C);
  });
  const int F = cfg.ffn_size;
  lin.Run(L.ffn_key, s.xk.data(), C, R, s.hf.data(), F, false);
  pool_->ParallelFor(R, [&](int64_t r, int) { VecReluSquare(s.hf.data() + r * F, F); });
  // A few rows' relu^2 activations are mostly zero: the input-major copy reads the weights of
  // the nonzero ones only, when there are few enough (the same results).
  if (L.ffn_value_rows.rows > 0) {
    lin.RunSkippingZeros(L.ffn_value, L.ffn_value_rows, s.hf.data(), F, R, s.x.data(), C,
                         /*accumulate=*/true);
  } else {
    lin.Run(L.ffn_value, s.hf.data(), F, R, s.x.data(), C, /*accumulate=*/true);
  }
}

absl::Status CpuModel::Step(absl::Span<const StepEntry> entries, std::vector<StepResult>* results) {
  results->assign(entries.size(), StepResult{});
  if (entries.empty()) return absl::OkStatus();
  int rows = 0;
  MODRWKV_RETURN_IF_ERROR(ValidateStepEntries(entries, info_.config, num_slots_, &rows));
  const ModelConfig& cfg = info_.config;
  const int C = cfg.n_embd, V = cfg.vocab_size;

  entry_offset_.resize(entries.size());
  entry_rows_.resize(entries.size());
  std::vector<int> logit_entries;
  int off = 0;
  for (size_t e = 0; e < entries.size(); ++e) {
    const int n = static_cast<int>(EntryRows(entries[e], C));
    entry_offset_[e] = off;
    entry_rows_[e] = n;
    off += n;
    if (entries[e].output == StepOutput::kLogits || entries[e].output == StepOutput::kSample) {
      logit_entries.push_back(static_cast<int>(e));
    }
  }
  // The rows of ln_out: the logit entries first (the head GEMM runs over those rows only), then
  // the entries that want the hidden state alone.
  const int n_logits = static_cast<int>(logit_entries.size());
  std::vector<int> out_entries = logit_entries;
  for (size_t e = 0; e < entries.size(); ++e) {
    if (entries[e].output == StepOutput::kHidden) out_entries.push_back(static_cast<int>(e));
  }
  const int n_out = static_cast<int>(out_entries.size());
  step_rows_ = rows;
  EnsureScratch(rows, n_out, n_logits);

  Embed(entries);
  for (int li = 0; li < cfg.n_layer; ++li) RunLayer(li, entries);
  if (n_out == 0) return absl::OkStatus();

  // ln_out and the head only for the last row of the entries that want them.
  pool_->ParallelFor(n_out, [&](int64_t i, int) {
    const int e = out_entries[i];
    const int64_t last = entry_offset_[e] + entry_rows_[e] - 1;
    LayerNorm(s_.x.data() + last * C, ln_out_w_.data(), ln_out_b_.data(), C, kLnEps,
              s_.xo.data() + i * C);
  });
  for (int i = n_logits; i < n_out; ++i) {
    (*results)[out_entries[i]].hidden =
        absl::Span<const float>(s_.xo.data() + static_cast<int64_t>(i) * C, C);
  }
  if (n_logits == 0) return absl::OkStatus();
  linear_.Run(head_, s_.xo.data(), C, n_logits, s_.logits.data(), V, false);

  std::vector<int> sample_rows;
  for (int i = 0; i < n_logits; ++i) {
    const int e = logit_entries[i];
    (*results)[e].logits =
        absl::Span<const float>(s_.logits.data() + static_cast<int64_t>(i) * V, V);
    if (entries[e].output == StepOutput::kSample) sample_rows.push_back(i);
  }
  // Samplers belong to distinct sequences, so they can run in parallel.
  pool_->ParallelFor(static_cast<int64_t>(sample_rows.size()), [&](int64_t j, int) {
    const int i = sample_rows[j];
    const int e = logit_entries[i];
    StepResult& res = (*results)[e];
    res.token = entries[e].sampler->Sample(
        absl::Span<float>(s_.logits.data() + static_cast<int64_t>(i) * V, V), &res.sample);
  });
  return absl::OkStatus();
}

}  // namespace modrwkv::cpu
