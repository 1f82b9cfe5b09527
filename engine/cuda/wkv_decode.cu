// The fused time-mixing core of a decode step and its launcher (see wkv_decode.cuh).
#include <climits>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "engine/cuda/block_sum.cuh"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/half_round.cuh"
#include "engine/cuda/launch.cuh"
#include "engine/cuda/rwkv7_math.h"
#include "engine/cuda/wkv_decode.cuh"
#include "engine/cuda/wkv_token.cuh"

namespace modrwkv::cuda {

// ---- kernels ----

// One block per (sequence, head), N threads: thread t prepares channel h*N + t of the sequence's
// row (PrepareWkvKernel's arithmetic), owns state row t through the token (Wkv7Kernel's), and
// finishes output channel h*N + t (GroupNormGateKernel's, with its sums in their order).
template <int N, typename S, typename Out>
static __global__ void __launch_bounds__(N)
    Wkv7DecodeKernel(S* __restrict__ state_pool, const int32_t* __restrict__ slot_of_seq, int H,
                     int64_t slot_stride, int64_t head_stride, TimeMixRows rows, TimeMixParams p,
                     bool first_layer, typename Out::Elem* __restrict__ y) {
  AllowSuccessor();
  const int b = blockIdx.x / H, h = blockIdx.x % H, t = threadIdx.x;
  const int c = h * N + t;
  const int64_t i = static_cast<int64_t>(b) * H * N + c;
  // The parameters are the model's: read before the wait (launch.cuh).
  const float w0 = p.w0[c], a0 = p.a0[c], k_k = p.k_k[c], k_a = p.k_a[c];
  const float v0 = first_layer ? 0.0f : p.v0[c];
  const float r_k = p.r_k[c], gn_w = p.gn_w[c], gn_b = p.gn_b[c];
  WaitForPredecessor();
  const int32_t slot = slot_of_seq[b];
  if (slot < 0) {  // a padding sequence (cuda_model.cc): no state; defined zeros out
    Out::Store(y, i, 0.0f);
    return;  // the whole block returns together
  }
  __shared__ __align__(16) float staged[kStaged][N];  // r, w, k, kk, a, v of the head
  __shared__ float tile[kTileFloats<N>];
  __shared__ float scratch[32];

  // The row's loads first, then the state's (LoadTile waits for those alone), all in flight.
  const float rv = rows.r[i], w_pre = rows.w[i], a_pre = rows.a[i], k_raw = rows.k[i];
  const float v_raw = rows.v[i], g = rows.g[i];
  const float v_first = first_layer ? 0.0f : rows.v_first[i];
  const float v_gate = first_layer ? 0.0f : rows.v_gate[i];
  S* head =
      state_pool + static_cast<int64_t>(slot) * slot_stride + static_cast<int64_t>(h) * head_stride;
  float s[N];
  LoadTile(head, tile, s);

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

namespace {

template <typename S>
absl::Status Wkv7Decode(cudaStream_t stream, S* state_pool, const int32_t* slot_of_seq, int B,
                        int H, int64_t slot_stride, int64_t head_stride, const TimeMixRows& rows,
                        const TimeMixParams& params, bool first_layer, const ActivationsOut& y) {
  constexpr int N = kHeadSize;
  if (B < 0 || H <= 0 || static_cast<int64_t>(B) * H > INT_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchWkv7Decode: B=", B, " H=", H,
                                                   ", expected B >= 0, H > 0, B*H <= ", INT_MAX));
  }
  if (B == 0) return absl::OkStatus();
  if (head_stride < N * N || slot_stride < static_cast<int64_t>(H) * head_stride) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchWkv7Decode: head_stride=", head_stride, " slot_stride=", slot_stride,
                     ", expected head stride >= 4096 and slot stride >= H*head stride"));
  }
  constexpr int kVec = kRowVector<S>;
  if (reinterpret_cast<uintptr_t>(state_pool) % 16 != 0 || head_stride % kVec != 0 ||
      slot_stride % kVec != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchWkv7Decode: the state pool must be 16-byte aligned and its strides "
                     "multiples of ",
                     kVec, " elements"));
  }
  const bool later_inputs = first_layer || (rows.v_gate != nullptr && params.v0 != nullptr);
  if (state_pool == nullptr || slot_of_seq == nullptr || !y.valid() || rows.r == nullptr ||
      rows.w == nullptr || rows.a == nullptr || rows.k == nullptr || rows.v == nullptr ||
      rows.v_first == nullptr || rows.g == nullptr || params.w0 == nullptr ||
      params.a0 == nullptr || params.k_k == nullptr || params.k_a == nullptr ||
      params.r_k == nullptr || params.gn_w == nullptr || params.gn_b == nullptr || !later_inputs) {
    return absl::InvalidArgumentError(
        "LaunchWkv7Decode: null device pointer (a later layer needs v_gate and v0)");
  }
  return ForActivationsOut(y, [&](auto o, auto* y_rows) {
    return Launch("Wkv7DecodeKernel", Wkv7DecodeKernel<N, S, decltype(o)>,
                  dim3(static_cast<unsigned>(B * H)), dim3(N), 0, stream, state_pool, slot_of_seq,
                  H, slot_stride, head_stride, rows, params, first_layer, y_rows);
  });
}

}  // namespace

absl::Status LaunchWkv7Decode(cudaStream_t stream, float* state_pool, const int32_t* slot_of_seq,
                              int B, int H, int64_t slot_stride, int64_t head_stride,
                              const TimeMixRows& rows, const TimeMixParams& params,
                              bool first_layer, ActivationsOut y) {
  return Wkv7Decode(stream, state_pool, slot_of_seq, B, H, slot_stride, head_stride, rows, params,
                    first_layer, y);
}

absl::Status LaunchWkv7Decode(cudaStream_t stream, __half* state_pool, const int32_t* slot_of_seq,
                              int B, int H, int64_t slot_stride, int64_t head_stride,
                              const TimeMixRows& rows, const TimeMixParams& params,
                              bool first_layer, ActivationsOut y) {
  return Wkv7Decode(stream, state_pool, slot_of_seq, B, H, slot_stride, head_stride, rows, params,
                    first_layer, y);
}

}  // namespace modrwkv::cuda
