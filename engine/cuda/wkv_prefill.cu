// The fused time-mixing core of a prefill step and its launcher (see wkv_prefill.cuh).
#include <climits>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/cuda/async_copy.cuh"
#include "engine/cuda/block_sum.cuh"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/half_round.cuh"
#include "engine/cuda/launch.cuh"
#include "engine/cuda/rwkv7_math.h"
#include "engine/cuda/wkv_prefill.cuh"
#include "engine/cuda/wkv_token.cuh"

namespace modrwkv::cuda {

// ---- kernel ----

// Tokens a block takes at a time: their raw rows are staged while the previous chunk is
// computed (as Wkv7Kernel's), and their sums (the key norms, the GroupNorms, the bonuses) are
// taken together, a few barriers per chunk rather than per token.
constexpr int kPrefillChunk = 8;

// The raw rows staged per token, in this order; the first layer stages the first six.
enum RawRow { kRawR, kRawW, kRawA, kRawK, kRawV, kRawG, kRawVFirst, kRawVGate, kRawRows };

// The kernel's shared memory, in floats: the raw rows double-buffered, the prepared rows of a
// chunk (r, w, k, kk, a, v as WkvToken reads them), the chunk's outputs and the sums' scratch.
// The state's tile (kTileFloats) is needed only before the first chunk and after the last, while
// the second raw buffer and the prepared rows are idle: it lies over them.
template <int N, int kChunk>
struct PrefillShared {
  static constexpr int kRaw = kChunk * kRawRows * N;  // one buffer
  static constexpr int kPrepared = kChunk * kStaged * N;
  static constexpr int kOut = kChunk * N;
  static constexpr int kScratch = 2 * kChunk * 32;  // BlockSums<2 kChunk>
  static constexpr int kFloats = 2 * kRaw + kPrepared + kOut + kScratch;
  static_assert(kTileFloats<N> <= kRaw + kPrepared, "the tile lies over raw[1] and prepared");
  static_assert(kFloats * sizeof(float) <= 48 * 1024, "static shared memory");
};

// One block per (sequence, head), N threads: thread t prepares channel h*N + t of each token
// (PrepareWkvKernel's arithmetic), owns state row t through the tokens (Wkv7Kernel's), and
// finishes output channel h*N + t (GroupNormGateKernel's, its sums in their order). A thread
// stages and prepares only its own channel of the raw rows: they need no barrier, the prepared
// rows (read by every thread) one per chunk.
template <int N, typename S, typename Out, int kChunk>
static __global__ void __launch_bounds__(N)
    Wkv7PrefillKernel(S* __restrict__ state_pool, const int32_t* __restrict__ slot_of_seq, int H,
                      const int32_t* __restrict__ seq_offsets, int64_t slot_stride,
                      int64_t head_stride, TimeMixRows rows, TimeMixParams p, bool first_layer,
                      typename Out::Elem* __restrict__ y) {
  using Shared = PrefillShared<N, kChunk>;
  AllowSuccessor();
  const int b = blockIdx.x / H, h = blockIdx.x % H, t = threadIdx.x;
  const int c = h * N + t;
  const int64_t C = static_cast<int64_t>(H) * N;
  // The parameters are the model's: read before the wait (launch.cuh).
  const float w0 = p.w0[c], a0 = p.a0[c], k_k = p.k_k[c], k_a = p.k_a[c];
  const float v0 = first_layer ? 0.0f : p.v0[c];
  const float r_k = p.r_k[c], gn_w = p.gn_w[c], gn_b = p.gn_b[c];
  WaitForPredecessor();
  const int64_t t0 = seq_offsets[b], t1 = seq_offsets[b + 1];
  const int32_t slot = slot_of_seq[b];
  if (slot < 0) {  // a padding sequence: no state; defined zeros out
    for (int64_t u = t0; u < t1; ++u) Out::Store(y, u * C + c, 0.0f);
    return;  // the whole block returns together
  }
  if (t0 == t1) return;  // an empty sequence: its state stays as it is

  __shared__ __align__(16) float smem[Shared::kFloats];
  float(*raw)[kChunk][kRawRows][N] = reinterpret_cast<float(*)[kChunk][kRawRows][N]>(smem);
  float(*prepared)[kStaged][N] = reinterpret_cast<float(*)[kStaged][N]>(smem + 2 * Shared::kRaw);
  float(*outs)[N] = reinterpret_cast<float(*)[N]>(smem + 2 * Shared::kRaw + Shared::kPrepared);
  float* scratch = smem + 2 * Shared::kRaw + Shared::kPrepared + Shared::kOut;
  float* tile = smem + Shared::kRaw;

  const float* src[kRawRows] = {rows.r, rows.w, rows.a,       rows.k,
                                rows.v, rows.g, rows.v_first, rows.v_gate};
  const int inputs = first_layer ? kRawVFirst : kRawRows;
  // This thread's channel of tokens [tc, tc + kChunk) (or to the end) into raw[buf].
  auto issue = [&](int buf, int64_t tc) {
    const int n = static_cast<int>(min(static_cast<int64_t>(kChunk), t1 - tc));
    for (int u = 0; u < n; ++u) {
      const int64_t off = (tc + u) * C + c;
#pragma unroll
      for (int q = 0; q < kRawRows; ++q) {
        if (q < inputs) CpAsync4(&raw[buf][u][q][t], src[q] + off);
      }
    }
  };
  issue(0, t0);  // in flight while the state comes in

  S* head =
      state_pool + static_cast<int64_t>(slot) * slot_stride + static_cast<int64_t>(h) * head_stride;
  float s[N];
  LoadTile(head, tile, s);

  int buf = 0;
  for (int64_t tc = t0; tc < t1; tc += kChunk, buf ^= 1) {
    // This thread's copies of the chunk are done (it reads only its own); the barrier is the
    // tile's (LoadTile) before the second raw buffer is reused, and the previous chunk's sums
    // ended with one: every thread is past its walk over the prepared rows.
    CpAsyncWaitAll();
    if (tc == t0) __syncthreads();
    if (tc + kChunk < t1) issue(buf ^ 1, tc + kChunk);
    const int n = static_cast<int>(min(static_cast<int64_t>(kChunk), t1 - tc));

    // Prepare: the key norms of the chunk's tokens summed together.
    float q[kChunk], sum_q2[kChunk];
#pragma unroll
    for (int u = 0; u < kChunk; ++u) {
      q[u] = u < n ? raw[buf][u][kRawK][t] * k_k : 0.0f;
      sum_q2[u] = q[u] * q[u];
    }
    BlockSums(sum_q2, scratch);
#pragma unroll
    for (int u = 0; u < kChunk; ++u) {
      if (u >= n) break;
      const float* in = &raw[buf][u][0][0];
      const float av = math::Sigmoid(in[kRawA * N + t] + a0);
      const float v_raw = in[kRawV * N + t];
      float vv = v_raw;
      if (first_layer) {
        rows.v_first[(tc + u) * C + c] = v_raw;
      } else {
        vv = math::ValueResidual(v_raw, in[kRawVFirst * N + t], in[kRawVGate * N + t] + v0);
      }
      prepared[u][0][t] = in[kRawR * N + t];
      prepared[u][1][t] = math::Decay(in[kRawW * N + t] + w0);
      prepared[u][2][t] = math::KeyWithIclr(in[kRawK * N + t], av, k_a);
      prepared[u][3][t] = q[u] * math::InvL2(sum_q2[u]);
      prepared[u][4][t] = av;
      prepared[u][5][t] = vv;
    }
    __syncthreads();

    // The recurrence, token by token: state row t, output channel t.
    for (int u = 0; u < n; ++u) outs[u][t] = WkvToken(s, prepared[u][0], prepared[u][5][t]);

    // GroupNorm + bonus + gate, the chunk's sums together: the means with the bonuses, then the
    // variances.
    float sums[2 * kChunk], var[kChunk];
#pragma unroll
    for (int u = 0; u < kChunk; ++u) {
      sums[u] = u < n ? outs[u][t] : 0.0f;
      sums[kChunk + u] = u < n ? prepared[u][0][t] * prepared[u][2][t] * r_k : 0.0f;
    }
    BlockSums(sums, scratch);
#pragma unroll
    for (int u = 0; u < kChunk; ++u) {
      const float d = (u < n ? outs[u][t] : 0.0f) - sums[u] / N;
      var[u] = d * d;
    }
    BlockSums(var, scratch);
#pragma unroll
    for (int u = 0; u < kChunk; ++u) {
      if (u >= n) break;
      const float d = outs[u][t] - sums[u] / N;
      const float inv = math::InvStd(var[u] / N, math::kGroupNormEps);
      Out::Store(y, (tc + u) * C + c,
                 math::GatedOutput(d * inv * gn_w + gn_b, sums[kChunk + u], prepared[u][5][t],
                                   raw[buf][u][kRawG][t]));
    }
  }

  StoreTile(head, tile, s);
}

// ---- launchers ----

namespace {

template <typename S>
absl::Status Wkv7Prefill(cudaStream_t stream, S* state_pool, const int32_t* slot_of_seq, int B,
                         int H, const int32_t* seq_offsets, int64_t slot_stride,
                         int64_t head_stride, const TimeMixRows& rows, const TimeMixParams& params,
                         bool first_layer, const ActivationsOut& y) {
  MODRWKV_RETURN_IF_ERROR(CheckTimeMixArgs("LaunchWkv7Prefill", state_pool, sizeof(S), slot_of_seq,
                                           B, H, slot_stride, head_stride, rows, params,
                                           first_layer, y, /*lora_up=*/false));
  if (seq_offsets == nullptr) {
    return absl::InvalidArgumentError("LaunchWkv7Prefill: null seq_offsets");
  }
  if (B == 0) return absl::OkStatus();
  constexpr int N = kHeadSize;
  return ForActivationsOut(y, [&](auto o, auto* y_rows) {
    return Launch("Wkv7PrefillKernel", Wkv7PrefillKernel<N, S, decltype(o), kPrefillChunk>,
                  dim3(static_cast<unsigned>(B * H)), dim3(N), 0, stream, state_pool, slot_of_seq,
                  H, seq_offsets, slot_stride, head_stride, rows, params, first_layer, y_rows);
  });
}

}  // namespace

absl::Status LaunchWkv7Prefill(cudaStream_t stream, float* state_pool, const int32_t* slot_of_seq,
                               int B, int H, const int32_t* seq_offsets, int64_t slot_stride,
                               int64_t head_stride, const TimeMixRows& rows,
                               const TimeMixParams& params, bool first_layer, ActivationsOut y) {
  return Wkv7Prefill(stream, state_pool, slot_of_seq, B, H, seq_offsets, slot_stride, head_stride,
                     rows, params, first_layer, y);
}

absl::Status LaunchWkv7Prefill(cudaStream_t stream, __half* state_pool, const int32_t* slot_of_seq,
                               int B, int H, const int32_t* seq_offsets, int64_t slot_stride,
                               int64_t head_stride, const TimeMixRows& rows,
                               const TimeMixParams& params, bool first_layer, ActivationsOut y) {
  return Wkv7Prefill(stream, state_pool, slot_of_seq, B, H, seq_offsets, slot_stride, head_stride,
                     rows, params, first_layer, y);
}

}  // namespace modrwkv::cuda
