// The fused time-mixing core of a decode step and its launcher (see wkv_decode.cuh).
#include <climits>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/cuda/block_sum.cuh"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/half_round.cuh"
#include "engine/cuda/launch.cuh"
#include "engine/cuda/rwkv7_math.h"
#include "engine/cuda/wkv_decode.cuh"
#include "engine/cuda/wkv_token.cuh"

namespace modrwkv::cuda {

// ---- kernels ----

// Where the kernel's w, a, g and v_gate come from: the rows the up-projections wrote
// (FromRows), or its own up-projections of 16-bit weights of type T (FromLoraUp<T>, LoraUp).
struct FromRows {
  static constexpr bool kFused = false;
};
template <HalfType T>
struct FromLoraUp {
  static constexpr bool kFused = true;
  static constexpr HalfType kType = T;
};

// Row c of an up-projection's weights times the hidden row h (shared memory, 16-byte aligned):
// eight partial sums, one per position in a 16-byte chunk of weights, added pairwise at the end.
template <HalfType T>
__device__ __forceinline__ float LoraUpDot(const LoraUpMatrix& m, int c, const float* h) {
  const uint4* w = reinterpret_cast<const uint4*>(m.weights + static_cast<int64_t>(c) * m.dim);
  const float4* h4 = reinterpret_cast<const float4*>(h);
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll 4
  for (int q = 0; q < m.dim / 8; ++q) {
    const uint4 bits = __ldg(w + q);
    const float2 w01 = Widen2<T>(bits.x), w23 = Widen2<T>(bits.y), w45 = Widen2<T>(bits.z),
                 w67 = Widen2<T>(bits.w);
    const float4 lo = h4[2 * q], hi = h4[2 * q + 1];
    acc[0] = fmaf(w01.x, lo.x, acc[0]);
    acc[1] = fmaf(w01.y, lo.y, acc[1]);
    acc[2] = fmaf(w23.x, lo.z, acc[2]);
    acc[3] = fmaf(w23.y, lo.w, acc[3]);
    acc[4] = fmaf(w45.x, hi.x, acc[4]);
    acc[5] = fmaf(w45.y, hi.y, acc[5]);
    acc[6] = fmaf(w67.x, hi.z, acc[6]);
    acc[7] = fmaf(w67.y, hi.w, acc[7]);
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// Sends head h's N rows of m's weights to L2.
template <int N>
__device__ __forceinline__ void PrefetchHeadRows(const LoraUpMatrix& m, int h) {
  PrefetchToL2(m.weights + static_cast<int64_t>(h) * N * m.dim,
               static_cast<uint32_t>(N * m.dim * sizeof(uint16_t)));
}

// Sequence b's hidden row of m into shared memory at dst, by the block's N threads.
template <int N>
__device__ __forceinline__ void StageHidden(const LoraUpMatrix& m, int b, float* dst) {
  const float* src = m.hidden + static_cast<int64_t>(b) * m.dim;
  for (int j = static_cast<int>(threadIdx.x); j < m.dim; j += N) dst[j] = src[j];
}

// One block per (sequence, head), N threads: thread t prepares channel h*N + t of the sequence's
// row (PrepareWkvKernel's arithmetic), owns state row t through the token (Wkv7Kernel's), and
// finishes output channel h*N + t (GroupNormGateKernel's, with its sums in their order). With
// FromLoraUp it first computes the channel's four up-projections (LoraUp).
template <int N, typename S, typename Out, typename Src>
static __global__ void __launch_bounds__(N)
    Wkv7DecodeKernel(S* __restrict__ state_pool, const int32_t* __restrict__ slot_of_seq, int H,
                     int64_t slot_stride, int64_t head_stride, TimeMixRows rows, TimeMixParams p,
                     LoraUp up, bool first_layer, typename Out::Elem* __restrict__ y) {
  AllowSuccessor();
  const int b = blockIdx.x / H, h = blockIdx.x % H, t = threadIdx.x;
  const int c = h * N + t;
  const int64_t i = static_cast<int64_t>(b) * H * N + c;
  // The parameters and the up-projections' weights are the model's: read before the wait
  // (launch.cuh), the weights of this head's rows sent to L2, one matrix per thread.
  const float w0 = p.w0[c], a0 = p.a0[c], k_k = p.k_k[c], k_a = p.k_a[c];
  const float v0 = first_layer ? 0.0f : p.v0[c];
  const float r_k = p.r_k[c], gn_w = p.gn_w[c], gn_b = p.gn_b[c];
  if constexpr (Src::kFused) {
    if (t == 0) PrefetchHeadRows<N>(up.w, h);
    if (t == 1) PrefetchHeadRows<N>(up.a, h);
    if (t == 2) PrefetchHeadRows<N>(up.g, h);
    if (t == 3 && !first_layer) PrefetchHeadRows<N>(up.v, h);
  }
  WaitForPredecessor();
  const int32_t slot = slot_of_seq[b];
  if (slot < 0) {  // a padding sequence (cuda_model.cc): no state; defined zeros out
    Out::Store(y, i, 0.0f);
    return;  // the whole block returns together
  }
  __shared__ __align__(16) float staged[kStaged][N];  // r, w, k, kk, a, v of the head
  __shared__ float tile[kTileFloats<N>];
  __shared__ float scratch[32];

  // The row's loads first, then the state's (into the tile), all in flight before the barrier
  // that ends them.
  const float rv = rows.r[i], k_raw = rows.k[i], v_raw = rows.v[i];
  const float v_first = first_layer ? 0.0f : rows.v_first[i];
  S* head =
      state_pool + static_cast<int64_t>(slot) * slot_stride + static_cast<int64_t>(h) * head_stride;
  float s[N];
  float w_pre, a_pre, g, v_gate = 0.0f;
  if constexpr (Src::kFused) {
    // The hidden rows in shared memory (each dim a multiple of 8: every row 16-byte aligned).
    float* hidden = DynamicShared<float>();
    float* hw = hidden;
    float* ha = hw + up.w.dim;
    float* hg = ha + up.a.dim;
    float* hv = hg + up.g.dim;
    StageHidden<N>(up.w, b, hw);
    StageHidden<N>(up.a, b, ha);
    StageHidden<N>(up.g, b, hg);
    if (!first_layer) StageHidden<N>(up.v, b, hv);
    StateToTile<N>(head, tile);
    __syncthreads();
    constexpr HalfType T = Src::kType;
    w_pre = LoraUpDot<T>(up.w, c, hw);
    a_pre = LoraUpDot<T>(up.a, c, ha);
    g = LoraUpDot<T>(up.g, c, hg);
    if (!first_layer) v_gate = LoraUpDot<T>(up.v, c, hv);
    TileToRow<N>(tile, s);
  } else {
    w_pre = rows.w[i];
    a_pre = rows.a[i];
    g = rows.g[i];
    if (!first_layer) v_gate = rows.v_gate[i];
    LoadTile(head, tile, s);
  }

  const float wv = math::Decay(w_pre + w0);
  const float av = math::Sigmoid(a_pre + a0);
  const float q = k_raw * k_k;
  const float kk = q * math::InvL2(BlockSum(q * q, scratch));
  const float kv = math::KeyWithIclr(k_raw, av, k_a);
  float vv = v_raw;
  if (first_layer) {
    rows.v_first[i] = v_raw;
  } else {
    vv = math::ValueResidual(v_raw, v_first, v_gate + v0);
  }
  staged[0][t] = rv;
  staged[1][t] = wv;
  staged[2][t] = kv;
  staged[3][t] = kk;
  staged[4][t] = av;
  staged[5][t] = vv;
  __syncthreads();
  const float out = WkvToken(s, &staged[0][0], vv);
  StoreTile(head, tile, s);

  const float mean = BlockSum(out, scratch) / N;
  const float d = out - mean;
  const float inv = math::InvStd(BlockSum(d * d, scratch) / N, math::kGroupNormEps);
  const float bonus = BlockSum(rv * kv * r_k, scratch);
  Out::Store(y, i, math::GatedOutput(d * inv * gn_w + gn_b, bonus, vv, g));
}

// ---- launchers ----

constexpr const char* kLoraUpNames[4] = {"w", "a", "g", "v"};

absl::Status CheckLoraUpDims(const int (&dims)[4], bool first_layer, int* hidden_floats) {
  *hidden_floats = 0;
  for (int q = 0; q < (first_layer ? 3 : 4); ++q) {
    if (dims[q] <= 0 || dims[q] % 8 != 0) {
      return absl::InvalidArgumentError(absl::StrCat("LoraUp.", kLoraUpNames[q], ".dim=", dims[q],
                                                     ", expected a positive multiple of 8"));
    }
    *hidden_floats += dims[q];
  }
  if (*hidden_floats > kMaxLoraUpHidden) {
    return absl::InvalidArgumentError(
        absl::StrCat("LoraUp's dims sum to ", *hidden_floats, ", at most ", kMaxLoraUpHidden));
  }
  return absl::OkStatus();
}

absl::Status CheckTimeMixArgs(const char* op, const void* state_pool, int state_bytes,
                              const int32_t* slot_of_seq, int B, int H, int64_t slot_stride,
                              int64_t head_stride, const TimeMixRows& rows,
                              const TimeMixParams& params, bool first_layer,
                              const ActivationsOut& y, bool lora_up) {
  constexpr int N = kHeadSize;
  if (B < 0 || H <= 0 || static_cast<int64_t>(B) * H > INT_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": B=", B, " H=", H, ", expected B >= 0, H > 0, B*H <= ", INT_MAX));
  }
  if (head_stride < N * N || slot_stride < static_cast<int64_t>(H) * head_stride) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": head_stride=", head_stride, " slot_stride=", slot_stride,
                     ", expected head stride >= 4096 and slot stride >= H*head stride"));
  }
  const int vec = 16 / state_bytes;  // kRowVector: the elements of a 16-byte access
  if (reinterpret_cast<uintptr_t>(state_pool) % 16 != 0 || head_stride % vec != 0 ||
      slot_stride % vec != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": the state pool must be 16-byte aligned and its strides multiples of ",
                     vec, " elements"));
  }
  const bool later_inputs =
      first_layer || (params.v0 != nullptr && (lora_up || rows.v_gate != nullptr));
  if (state_pool == nullptr || slot_of_seq == nullptr || !y.valid() || rows.r == nullptr ||
      rows.k == nullptr || rows.v == nullptr || rows.v_first == nullptr ||
      (!lora_up && (rows.w == nullptr || rows.a == nullptr || rows.g == nullptr)) ||
      params.w0 == nullptr || params.a0 == nullptr || params.k_k == nullptr ||
      params.k_a == nullptr || params.r_k == nullptr || params.gn_w == nullptr ||
      params.gn_b == nullptr || !later_inputs) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": null device pointer (a later layer needs v_gate and v0)"));
  }
  return absl::OkStatus();
}

namespace {

// InvalidArgument unless `up` is complete for the layer (v only after the first) and its hidden
// rows fit the kernel's shared memory; their floats in *hidden_floats.
absl::Status CheckLoraUp(const LoraUp& up, bool first_layer, int* hidden_floats) {
  const LoraUpMatrix* m[4] = {&up.w, &up.a, &up.g, &up.v};
  for (int q = 0; q < (first_layer ? 3 : 4); ++q) {
    if (m[q]->weights == nullptr || m[q]->hidden == nullptr ||
        reinterpret_cast<uintptr_t>(m[q]->weights) % 16 != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("LaunchWkv7Decode: LoraUp.", kLoraUpNames[q],
                       ": a null pointer or weights not 16-byte aligned"));
    }
  }
  const absl::Status dims =
      CheckLoraUpDims({up.w.dim, up.a.dim, up.g.dim, up.v.dim}, first_layer, hidden_floats);
  if (dims.ok()) return dims;
  return absl::InvalidArgumentError(absl::StrCat("LaunchWkv7Decode: ", dims.message()));
}

template <typename S>
absl::Status Wkv7Decode(cudaStream_t stream, S* state_pool, const int32_t* slot_of_seq, int B,
                        int H, int64_t slot_stride, int64_t head_stride, const TimeMixRows& rows,
                        const TimeMixParams& params, bool first_layer, const ActivationsOut& y,
                        const LoraUp* up) {
  constexpr int N = kHeadSize;
  // w, a, g and v_gate are read from rows unless the up-projections are computed here.
  const bool from_rows = up == nullptr;
  MODRWKV_RETURN_IF_ERROR(CheckTimeMixArgs("LaunchWkv7Decode", state_pool, sizeof(S), slot_of_seq,
                                           B, H, slot_stride, head_stride, rows, params,
                                           first_layer, y, /*lora_up=*/!from_rows));
  if (B == 0) return absl::OkStatus();
  int hidden_floats = 0;
  if (!from_rows) MODRWKV_RETURN_IF_ERROR(CheckLoraUp(*up, first_layer, &hidden_floats));
  const size_t shared_bytes = static_cast<size_t>(hidden_floats) * sizeof(float);
  return ForActivationsOut(y, [&](auto o, auto* y_rows) {
    auto launch = [&](auto src) {
      return Launch("Wkv7DecodeKernel", Wkv7DecodeKernel<N, S, decltype(o), decltype(src)>,
                    dim3(static_cast<unsigned>(B * H)), dim3(N), shared_bytes, stream, state_pool,
                    slot_of_seq, H, slot_stride, head_stride, rows, params,
                    from_rows ? LoraUp{} : *up, first_layer, y_rows);
    };
    if (from_rows) return launch(FromRows{});
    if (up->type == HalfType::kBF16) return launch(FromLoraUp<HalfType::kBF16>{});
    return launch(FromLoraUp<HalfType::kF16>{});
  });
}

}  // namespace

absl::Status LaunchWkv7Decode(cudaStream_t stream, float* state_pool, const int32_t* slot_of_seq,
                              int B, int H, int64_t slot_stride, int64_t head_stride,
                              const TimeMixRows& rows, const TimeMixParams& params,
                              bool first_layer, ActivationsOut y, const LoraUp* up) {
  return Wkv7Decode(stream, state_pool, slot_of_seq, B, H, slot_stride, head_stride, rows, params,
                    first_layer, y, up);
}

absl::Status LaunchWkv7Decode(cudaStream_t stream, __half* state_pool, const int32_t* slot_of_seq,
                              int B, int H, int64_t slot_stride, int64_t head_stride,
                              const TimeMixRows& rows, const TimeMixParams& params,
                              bool first_layer, ActivationsOut y, const LoraUp* up) {
  return Wkv7Decode(stream, state_pool, slot_of_seq, B, H, slot_stride, head_stride, rows, params,
                    first_layer, y, up);
}

}  // namespace modrwkv::cuda
