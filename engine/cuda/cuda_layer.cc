// One layer of CudaModel's forward pass (cuda_model.h): its products (Gemm, Products) and its
// kernels in order (RunLayer); the model's set-up, slots, steps and graphs are in cuda_model.cc.
#include <cuda_fp16.h>

#include <algorithm>
#include <optional>

#include "engine/base/status_macros.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/cuda_model.h"
#include "engine/cuda/gemv_half.cuh"
#include "engine/cuda/layer_layout.h"
#include "engine/cuda/rwkv7_math.h"
#include "engine/cuda/rwkv7_ops.cuh"
#include "engine/cuda/to_half.cuh"
#include "engine/cuda/wkv.cuh"
#include "engine/cuda/wkv_decode.cuh"
#include "engine/cuda/wkv_prefill.cuh"

namespace modrwkv::cuda {

OpCost CudaModel::ProductCost(const Matrix& m, int rows, bool half_input, bool accumulate,
                              bool half_output) const {
  const double r = rows, weights = static_cast<double>(m.out) * m.in * (half_ ? 2 : 4);
  double in = r * m.in * (half_input ? 2 : 4);
  // A tensor-core product of f32 rows converts them first: 16-bit rows written, then read.
  if (half_ && rows >= kTensorCoreRows && !half_input) in += r * m.in * 4;
  const double out = r * m.out * (half_output ? 2 : 4) * (accumulate ? 2 : 1);
  return OpCost{weights, weights + in + out, 2 * r * m.in * m.out};
}

absl::Status CudaModel::Gemm(const Matrix& m, const float* in, int rows, float* out,
                             bool accumulate, const uint16_t* in_half, uint16_t* out_half) {
  // Row-major out[rows][m.out] = in[rows][m.in] * W^T is, column-major, out^T = W^T' * in^T
  // with W ([out][in] row-major) read as the column-major [in][out] matrix, transposed.
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  if (out_half != nullptr &&
      (half_ != HalfType::kBF16 || rows < kTensorCoreRows || accumulate || m.input_major)) {
    return absl::InternalError("a 16-bit product output needs bf16 weights on tensor cores");
  }
  Mark(m.op, ProductCost(m, rows, in_half != nullptr, accumulate, out_half != nullptr));
  if (m.input_major && rows < kTensorCoreRows) {
    static_assert(kTensorCoreRows - 1 <= kSparseRowsMax);
    return LaunchSparseRowsHalf(stream_.get(), *half_, m.half.get(), m.out, m.in, in, rows, out,
                                accumulate, sparse_);
  }
  if (half_ && rows < kTensorCoreRows) {
    return LaunchGemvHalf(stream_.get(), *half_, m.half.get(), m.out, m.in, in, rows, out,
                          accumulate);
  }
  if (half_) {
    const cudaDataType type = *half_ == HalfType::kBF16 ? CUDA_R_16BF : CUDA_R_16F;
    if (in_half == nullptr) {
      MODRWKV_RETURN_IF_ERROR(LaunchF32ToHalf(stream_.get(), *half_, in,
                                              static_cast<int64_t>(rows) * m.in, s_.xb.get()));
      in_half = s_.xb.get();
    }
    // An input-major W ([in][out] row-major) is the column-major [out][in] matrix as it is.
    MODRWKV_CUBLAS_RETURN_IF_ERROR(blas_->GemmEx(
        cublas_, m.input_major ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, m.out, rows, m.in, &alpha,
        m.half.get(), type, m.input_major ? m.out : m.in, in_half, type, m.in, &beta,
        out_half != nullptr ? static_cast<void*>(out_half) : out,
        out_half != nullptr ? type : CUDA_R_32F, m.out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return absl::OkStatus();
  }
  MODRWKV_CUBLAS_RETURN_IF_ERROR(blas_->Sgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, m.out, rows, m.in,
                                              &alpha, m.data.get(), m.in, in, m.in, &beta, out,
                                              m.out));
  return absl::OkStatus();
}

absl::Status CudaModel::Products(absl::Span<const Product> products, int rows, const char* op) {
  for (const Product& p : products) {
    if (p.m->input_major) return absl::InternalError("an input-major matrix in a product group");
  }
  if (half_ && rows < kTensorCoreRows) {
    GemvJob jobs[kMaxGemvJobs];
    OpCost cost;
    if (products.size() > kMaxGemvJobs) return absl::InternalError("too many products in a group");
    for (size_t i = 0; i < products.size(); ++i) {
      const Product& p = products[i];
      jobs[i] = GemvJob{p.m->half.get(), p.m->out, p.m->in, p.in, p.out, p.epilogue};
      cost +=
          ProductCost(*p.m, rows, /*half_input=*/false, p.epilogue == GemvEpilogue::kAccumulate);
    }
    Mark(op != nullptr ? op : products.front().m->op, cost);
    return LaunchGemvHalfGroup(stream_.get(), *half_, absl::MakeConstSpan(jobs, products.size()),
                               rows);
  }
  for (const Product& p : products) {
    std::optional<Activation> f;
    if (p.epilogue == GemvEpilogue::kTanh) f = Activation::kTanh;
    if (p.epilogue == GemvEpilogue::kSigmoid) f = Activation::kSigmoid;
    if (p.epilogue == GemvEpilogue::kReluSquare) f = Activation::kReluSquare;
    const int64_t n = static_cast<int64_t>(rows) * p.m->out;
    if (f && p.out_half != nullptr && bf16_activation_rows_ && half_ == HalfType::kBF16 &&
        rows >= kTensorCoreRows) {
      // The product's rows in bf16, activated in place (Product::out_half).
      MODRWKV_RETURN_IF_ERROR(
          Gemm(*p.m, p.in, rows, nullptr, /*accumulate=*/false, p.in_half, p.out_half));
      Mark("activations", OpCost{0, n * 4.0, 0});
      MODRWKV_RETURN_IF_ERROR(LaunchActivation(stream_.get(), *f, *half_, p.out_half, n));
      continue;
    }
    MODRWKV_RETURN_IF_ERROR(
        Gemm(*p.m, p.in, rows, p.out, p.epilogue == GemvEpilogue::kAccumulate, p.in_half));
    if (f) {
      Mark("activations", OpCost{0, n * (4.0 + (p.out_half != nullptr ? 2 : 4)), 0});
      MODRWKV_RETURN_IF_ERROR(p.out_half != nullptr
                                  ? LaunchActivation(stream_.get(), *f, p.out, n,
                                                     ActivationsOut::Half(*half_, p.out_half))
                                  : LaunchActivation(stream_.get(), *f, p.out, n));
    }
  }
  return absl::OkStatus();
}

template <typename S>
absl::Status CudaModel::RunLayer(int li, int R, int E, const int32_t* prev, const int32_t* last,
                                 const int32_t* slots, const int32_t* offsets) {
  const ModelConfig& cfg = info_.config;
  const int C = cfg.n_embd, H = cfg.n_head;
  const Layer& L = layers_[li];
  const float* vec = L.vec.get();
  auto V = [&](Vec i) { return vec + static_cast<int64_t>(i) * C; };
  cudaStream_t st = stream_.get();
  const int64_t slot_stride = info_.config.StateFloats();
  S* base = SlotBase<S>(li);
  S* att_shift = base;
  S* wkv = base + C;
  S* ffn_shift = base + C + static_cast<int64_t>(H) * 64 * 64;
  const int64_t plane = static_cast<int64_t>(R) * C;
  float* mix = s_.mix.get();
  auto P = [&](Plane p) { return mix + p * plane; };
  // Tensor-core products (16-bit weights, 16 rows or more) read their inputs as the producers
  // write them, rounded (ActivationsOut): no conversion launch per product, half the bytes.
  const bool tc = half_.has_value() && R >= kTensorCoreRows;
  auto PH = [&](Plane p) -> const uint16_t* { return tc ? s_.mix_h.get() + p * plane : nullptr; };
  auto half_or = [&](uint16_t* h) -> uint16_t* { return tc ? h : nullptr; };
  const ActivationsOut mix_out = tc ? ActivationsOut::Half(*half_, s_.mix_h.get()) : mix;

  // The op profile's byte counts (OpCost): n rows of activations, f32 or as a tensor-core
  // product's input; E sequences' rows of state; vectors of parameters.
  const double act_out = tc ? 2 : 4;
  auto rows_of = [&](double n, double bytes) { return n * C * bytes; };
  auto f32_rows = [&](double n) { return rows_of(n, 4); };
  const double state_rows = rows_of(E, sizeof(S)),
               vec_bytes = f32_rows(1);                        // a [C] vector of parameters
  const double wkv_state = 2.0 * E * H * 64 * 64 * sizeof(S);  // read and written

  // LayerNorm, then the token shift against the slot's shift state, which the sequence's last
  // normalised row replaces: one kernel in decode steps (one row per sequence), two in prefill
  // steps (ModelOptions::cuda_fused_prefill), else three.
  auto norm_shift = [&](Vec ln_w, Vec ln_b, S* shift, Vec mix_vec, int mixes) -> absl::Status {
    if (R == E) {
      Mark("layer norm, token shift",
           OpCost{0, f32_rows(R) + 2 * state_rows + rows_of(R, act_out) * mixes +
                         vec_bytes * (2 + mixes)});
      return LaunchNormShift(st, s_.x.get(), R, C, V(ln_w), V(ln_b), math::kLnEps, slots, shift,
                             slot_stride, V(mix_vec), mixes, mix_out);
    }
    if (fused_prefill_ && NormShiftRowsFits(R, C)) {
      // Without the normalised rows in between: x read (a row's predecessor again, from L2),
      // the first rows' shift states, the mixes out; then the last rows read for the states.
      Mark("layer norm, token shift",
           OpCost{0, f32_rows(R) + state_rows + rows_of(R, act_out) * mixes +
                         vec_bytes * (2 + mixes) + f32_rows(E) + state_rows});
      return LaunchNormShiftRows(st, s_.x.get(), R, C, V(ln_w), V(ln_b), math::kLnEps, prev, last,
                                 slots, E, shift, slot_stride, V(mix_vec), mixes, mix_out);
    }
    Mark("layer norm", OpCost{0, 2 * f32_rows(R) + 2 * vec_bytes});
    MODRWKV_RETURN_IF_ERROR(LaunchLayerNorm(st, s_.x.get(), nullptr, R, C, V(ln_w), V(ln_b),
                                            math::kLnEps, s_.xn.get()));
    // The shift store reads the sequences' last rows and writes the states.
    Mark("token shift", OpCost{0, f32_rows(R) + state_rows + rows_of(R, act_out) * mixes +
                                      vec_bytes * mixes + f32_rows(E) + state_rows});
    MODRWKV_RETURN_IF_ERROR(LaunchTokenShift(st, s_.xn.get(), R, C, prev, shift, slot_stride,
                                             V(mix_vec), mixes, mix_out));
    return LaunchStoreShift(st, s_.xn.get(), C, last, slots, E, shift, slot_stride);
  };

  // ---- time mixing ----
  MODRWKV_RETURN_IF_ERROR(norm_shift(kLn1W, kLn1B, att_shift, kMixR, 6));
  const bool first = li == 0;
  // r, k, v and the LoRA down-projections (the value LoRA from layer 1 on), then the
  // up-projections: two launches on the few-row path.
  using Ep = GemvEpilogue;
  Product down[] = {{&L.wr, P(kXr), s_.r.get(), Ep::kStore, PH(kXr)},
                    {&L.wk, P(kXk), s_.k.get(), Ep::kStore, PH(kXk)},
                    {&L.wv, P(kXv), s_.v.get(), Ep::kStore, PH(kXv)},
                    {&L.w1, P(kXw), s_.hw.get(), Ep::kTanh, PH(kXw), half_or(s_.hw_h.get())},
                    {&L.a1, P(kXa), s_.ha.get(), Ep::kStore, PH(kXa)},
                    {&L.g1, P(kXg), s_.hg.get(), Ep::kSigmoid, PH(kXg), half_or(s_.hg_h.get())},
                    {&L.v1, P(kXv), s_.hv.get(), Ep::kStore, PH(kXv)}};
  // ha and hv come straight from cuBLAS in f32: converted (they are narrow).
  Product up[] = {{&L.w2, s_.hw.get(), s_.w.get(), Ep::kStore, half_or(s_.hw_h.get())},
                  {&L.a2, s_.ha.get(), s_.a.get()},
                  {&L.g2, s_.hg.get(), s_.g.get(), Ep::kStore, half_or(s_.hg_h.get())},
                  {&L.v2, s_.hv.get(), s_.v_gate.get()}};
  const size_t lora = first ? 3 : 4;  // layer 0 has no value LoRA
  MODRWKV_RETURN_IF_ERROR(Products(absl::MakeConstSpan(down, 3 + lora), R, "r, k, v, LoRA down"));
  // A decode step of few rows computes the up-projections in its fused kernel (LoraUp).
  const bool fuse_up = fused_lora_up_ && R == E && R < kTensorCoreRows;
  if (!fuse_up) {
    MODRWKV_RETURN_IF_ERROR(Products(absl::MakeConstSpan(up, lora), R, "LoRA up"));
  }
  const ActivationsOut y_out = tc ? ActivationsOut::Half(*half_, s_.y_h.get()) : s_.y.get();
  const TimeMixRows rows{s_.r.get(), s_.w.get(),       s_.a.get(),      s_.k.get(),
                         s_.v.get(), s_.v_first.get(), s_.v_gate.get(), s_.g.get()};
  const TimeMixParams params{V(kW0), V(kA0), V(kKK), V(kKA), V(kV0), V(kRK), V(kLnxW), V(kLnxB)};
  // A prefill step runs the three kernels of the last branch as one where it walks its tokens,
  // and as two (the recurrence preparing its raw rows, then GroupNorm + gate) where it runs them
  // in chunks.
  WkvForm prefill_form = WkvForm::kAuto;  // kAuto: not fused
  if (R != E && fused_prefill_) {
    MODRWKV_ASSIGN_OR_RETURN(prefill_form, ResolveWkvForm(wkv_form_, E, H, R));
  }
  if (R == E) {  // a decode step: the three kernels below as one (wkv_decode.cuh)
    // Rows r, k, v and y; v_first written by the first layer, read by the later ones.
    OpCost cost{0, f32_rows(E) * 4 + rows_of(E, act_out) + wkv_state + vec_bytes * 8, 0};
    std::optional<LoraUp> lora_up;
    if (fuse_up) {
      auto matrix = [](const Matrix& m, const float* hidden) {
        return LoraUpMatrix{m.half.get(), hidden, m.in};
      };
      lora_up = LoraUp{*half_, matrix(L.w2, s_.hw.get()), matrix(L.a2, s_.ha.get()),
                       matrix(L.g2, s_.hg.get()), matrix(L.v2, s_.hv.get())};
      const double hidden = L.w2.in + L.a2.in + L.g2.in + (first ? 0 : L.v2.in);
      cost.weight_bytes = 2.0 * C * hidden;
      cost.bytes += cost.weight_bytes + 4.0 * E * hidden;
      cost.flops = 2.0 * E * C * hidden;
      Mark("wkv (LoRA up, prepare, recurrence, group norm, gate)", cost);
    } else {
      cost.bytes += f32_rows(E) * (first ? 3 : 4);  // w, a, g and the value residual's gate
      Mark("wkv (prepare, recurrence, group norm, gate)", cost);
    }
    MODRWKV_RETURN_IF_ERROR(LaunchWkv7Decode(st, wkv, slots, E, H, slot_stride, 64 * 64, rows,
                                             params, first, y_out, lora_up ? &*lora_up : nullptr));
  } else if (prefill_form == WkvForm::kWalk) {
    // Rows r, w, a, k, v, g read; v_first written by the first layer, read with the value
    // residual's gate by the later ones; y written.
    Mark(
        "wkv (prepare, recurrence, group norm, gate)",
        OpCost{0, f32_rows(R) * (first ? 7 : 8) + rows_of(R, act_out) + wkv_state + vec_bytes * 8});
    MODRWKV_RETURN_IF_ERROR(LaunchWkv7Prefill(st, wkv, slots, E, H, offsets, slot_stride, 64 * 64,
                                              rows, params, first, y_out));
  } else if (prefill_form == WkvForm::kChunked) {
    // Rows r, w, a, k, v read (v_first and the gate after the first layer; v_first written by
    // the first); k' and v' written for GroupNorm (v' in place), y written.
    Mark("wkv (prepare, recurrence)",
         OpCost{0, f32_rows(R) * (first ? 9 : 10) + wkv_state + vec_bytes * 5});
    MODRWKV_RETURN_IF_ERROR(LaunchWkv7ChunkedPrefill(st, wkv, slots, E, H, offsets, slot_stride,
                                                     64 * 64, rows, params, first, s_.y.get(),
                                                     s_.kk.get(), s_.v.get()));
    Mark("group norm, gate", OpCost{0, f32_rows(R) * 5 + rows_of(R, act_out) + vec_bytes * 3});
    MODRWKV_RETURN_IF_ERROR(LaunchGroupNormGate(st, R, C, static_cast<const float*>(s_.y.get()),
                                                V(kLnxW), V(kLnxB), s_.r.get(), s_.kk.get(), V(kRK),
                                                s_.v.get(), s_.g.get(), y_out));
  } else {
    // In place on w, a, k, v; kk written; the value residual's rows (v_first written by the
    // first layer; v_first and the gate read by the later ones).
    Mark("prepare wkv", OpCost{0, f32_rows(R) * (4 + 5 + (first ? 1 : 2)) + vec_bytes * 5});
    MODRWKV_RETURN_IF_ERROR(LaunchPrepareWkv(st, R, C, s_.w.get(), V(kW0), s_.a.get(), V(kA0),
                                             s_.k.get(), s_.kk.get(), V(kKK), V(kKA), s_.v.get(),
                                             s_.v_first.get(), s_.v_gate.get(), V(kV0), first));
    Mark("wkv", OpCost{0, f32_rows(R) * 7 + wkv_state});  // r, w, k, v, kk, a in; y out
    MODRWKV_RETURN_IF_ERROR(LaunchWkv7(st, wkv, slots, E, H, offsets, R, wkv_form_, s_.r.get(),
                                       s_.w.get(), s_.k.get(), s_.v.get(), s_.kk.get(), s_.a.get(),
                                       C, s_.y.get(), C, slot_stride, 64 * 64));
    Mark("group norm, gate", OpCost{0, f32_rows(R) * 5 + rows_of(R, act_out) + vec_bytes * 3});
    MODRWKV_RETURN_IF_ERROR(LaunchGroupNormGate(st, R, C, static_cast<const float*>(s_.y.get()),
                                                V(kLnxW), V(kLnxB), s_.r.get(), s_.k.get(), V(kRK),
                                                s_.v.get(), s_.g.get(), y_out));
  }
  MODRWKV_RETURN_IF_ERROR(
      Gemm(L.wo, s_.y.get(), R, s_.x.get(), /*accumulate=*/true, half_or(s_.y_h.get())));

  // ---- channel mixing ----
  MODRWKV_RETURN_IF_ERROR(norm_shift(kLn2W, kLn2B, ffn_shift, kFfnMix, 1));
  MODRWKV_RETURN_IF_ERROR(Products(
      {{&L.ffn_key, mix, s_.hf.get(), Ep::kReluSquare, PH(kXr), half_or(s_.hf_h.get())}}, R));
  return Gemm(L.ffn_value, s_.hf.get(), R, s_.x.get(), /*accumulate=*/true, half_or(s_.hf_h.get()));
}

template absl::Status CudaModel::RunLayer<float>(int li, int R, int E, const int32_t* prev,
                                                 const int32_t* last, const int32_t* slots,
                                                 const int32_t* offsets);
template absl::Status CudaModel::RunLayer<__half>(int li, int R, int E, const int32_t* prev,
                                                  const int32_t* last, const int32_t* slots,
                                                  const int32_t* offsets);

}  // namespace modrwkv::cuda
