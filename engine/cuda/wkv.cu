// WKV7 recurrence kernel and its launcher (see wkv.cuh).
#include <array>
#include <atomic>
#include <climits>
#include <cstdint>
#include <type_traits>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/launch.cuh"
#include "engine/cuda/state_access.cuh"
#include "engine/cuda/wkv.cuh"
#include "engine/cuda/wkv_chunked.h"
#include "engine/cuda/wkv_prefill.cuh"
#include "engine/cuda/wkv_token.cuh"

namespace modrwkv::cuda {

// ---- kernels ----

// Tokens whose inputs are staged in shared memory at a time: a chunk's loads are in flight while
// the previous chunk is computed, so a long prompt's walk is bound by the recurrence's arithmetic
// rather than by one memory round trip per token. A decode step (a token per sequence) stages
// one: its blocks then need as little shared memory as the state's tile, and as many fit on an SM
// as before staging (the step streams every sequence's state: resident blocks are its bandwidth).
constexpr int kWkvChunk = 8;

// One block per (sequence, head), N threads; thread i owns state row i (value dim) in registers
// and walks the sequence's tokens in order. Each token's r, w, k, kk, a rows are shared by all
// threads: they are staged in shared memory kChunk tokens at a time (thread i copies element i
// of each: coalesced), double-buffered, and read back four at a time (16-byte shared loads).
template <int N, typename S, int kChunk>
static __global__ void __launch_bounds__(N)
    Wkv7Kernel(S* __restrict__ state_pool, const int32_t* __restrict__ slot_of_seq, int H,
               const int32_t* __restrict__ seq_offsets, const float* __restrict__ r,
               const float* __restrict__ w, const float* __restrict__ k,
               const float* __restrict__ v, const float* __restrict__ kk,
               const float* __restrict__ a, int64_t ld, float* __restrict__ y, int64_t ldy,
               int64_t slot_stride, int64_t head_stride) {
  AllowSuccessor();
  WaitForPredecessor();
  const int b = blockIdx.x / H;
  const int h = blockIdx.x % H;
  const int i = threadIdx.x;
  const int64_t t0 = seq_offsets[b];
  const int64_t t1 = seq_offsets[b + 1];
  const int64_t col = static_cast<int64_t>(h) * N + i;
  if (slot_of_seq[b] < 0) {  // a padding sequence (cuda_model.cc): no state; defined zeros out
    for (int64_t t = t0; t < t1; ++t) y[t * ldy + col] = 0.0f;
    return;  // the whole block returns together
  }

  __shared__ __align__(16) float stage[2][kChunk][kStaged][N];
  // Thread i's copies of element i of tokens [tc, tc + kChunk) into stage[buf].
  auto issue = [&](int buf, int64_t tc) {
    const int n = static_cast<int>(min(static_cast<int64_t>(kChunk), t1 - tc));
    for (int u = 0; u < n; ++u) {
      const int64_t off = (tc + u) * ld + col;
      float* st = stage[buf][u][0];
      CpAsync4(st + 0 * N + i, r + off);
      CpAsync4(st + 1 * N + i, w + off);
      CpAsync4(st + 2 * N + i, k + off);
      CpAsync4(st + 3 * N + i, kk + off);
      CpAsync4(st + 4 * N + i, a + off);
      CpAsync4(st + 5 * N + i, v + off);
    }
  };
  if (t0 < t1) issue(0, t0);  // in flight while the state comes in

  S* head = state_pool + static_cast<int64_t>(slot_of_seq[b]) * slot_stride +
            static_cast<int64_t>(h) * head_stride;
  __shared__ float tile[kTileFloats<N>];
  float s[N];
  LoadTile(head, tile, s);

  int buf = 0;
  for (int64_t tc = t0; tc < t1; tc += kChunk, buf ^= 1) {
    // This thread's copies of the chunk are done; the barrier makes every thread's visible, and
    // every thread is past the previous chunk, whose buffer the next chunk's copies reuse.
    CpAsyncWaitAll();
    __syncthreads();
    if (tc + kChunk < t1) issue(buf ^ 1, tc + kChunk);
    const int n = static_cast<int>(min(static_cast<int64_t>(kChunk), t1 - tc));
    for (int u = 0; u < n; ++u) {
      const float* st = stage[buf][u][0];
      y[(tc + u) * ldy + col] = WkvToken(s, st, st[5 * N + i]);
    }
  }

  StoreTile(head, tile, s);
}

// The chunked form's inputs (wkv_chunked.h): in[p] the step's rows of input p (Input's order;
// row t, head h at in[p] + t * ld + h * 64); in the raw form (a prefill step's raw rows, prepared
// per chunk) in[kKK] is unused, and `raw` says where the prepared rows go and with what.
struct ChunkedRows {
  const float* in[wkv_chunked::kRawInputs];
  int64_t ld;
  float* y;  // row t, head h at y + t * ldy + h * 64
  int64_t ldy;
};
struct ChunkedRaw {
  const float *w0, *a0, *k_k, *k_a, *v0;  // [C]; v0 unused in the first layer
  float* k_out;                           // the prepared key, rows as in ChunkedRows::in
  float* v_out;                           // the prepared value (may be in[kV])
  float* v_first;                         // written by the first layer
  bool first_layer;
};

// The chunked form (wkv_chunked.h): one block per (sequence, head, group of kRows state rows),
// wkv_chunked::kThreads threads walking the sequence kL tokens at a time. A chunk's inputs are
// staged with cp.async while the previous chunk is computed (as in Wkv7Kernel); the state rows
// stay in shared memory from the first chunk to the last. kRaw: the inputs are raw rows, prepared
// per chunk (PrepareRaw) before the four phases.
template <int kRows, typename S, bool kRaw>
static __global__ void __launch_bounds__(wkv_chunked::kThreads)
    Wkv7ChunkedKernel(S* __restrict__ state_pool, const int32_t* __restrict__ slot_of_seq, int H,
                      const int32_t* __restrict__ seq_offsets, ChunkedRows rows, ChunkedRaw raw,
                      int64_t slot_stride, int64_t head_stride) {
  using namespace wkv_chunked;
  constexpr int kIn = kStagedInputs<kRaw>;
  AllowSuccessor();
  constexpr int kGroups = kN / kRows;
  const int b = blockIdx.x / (H * kGroups);
  const int h = (blockIdx.x / kGroups) % H;
  const int i0 = (blockIdx.x % kGroups) * kRows;
  const int tid = threadIdx.x;
  RawChannel channel{};
  if constexpr (kRaw) {  // the model's parameters: read before the wait (launch.cuh)
    const int c = h * kN + tid % kN;
    channel = {raw.w0[c], raw.a0[c], raw.k_k[c], raw.k_a[c], raw.first_layer ? 0.0f : raw.v0[c]};
  }
  WaitForPredecessor();
  const int64_t t0 = seq_offsets[b];
  const int64_t t1 = seq_offsets[b + 1];
  const int64_t ld = rows.ld, ldy = rows.ldy;
  float* y = rows.y;
  if (slot_of_seq[b] < 0) {  // a padding sequence: no state; defined zeros out
    for (int64_t e = tid; e < (t1 - t0) * kRows; e += kThreads) {
      y[(t0 + e / kRows) * ldy + h * kN + i0 + e % kRows] = 0.0f;
    }
    return;
  }
  if (t0 == t1) return;  // an empty sequence: its state stays as it is

  Shared<kRows, kIn>& m = *DynamicShared<Shared<kRows, kIn>>();
  // The tokens [tc, tc + kL) (or to the end) into m.in[buf]: element j of a token's row of each
  // input, a thread per (token, j), coalesced.
  auto issue = [&](int buf, int64_t tc) {
    const int n = static_cast<int>(min(static_cast<int64_t>(kL), t1 - tc));
    for (int e = tid; e < n * kN; e += kThreads) {
      const int t = e / kN, j = e % kN;
      const int64_t off = (tc + t) * ld + h * kN + j;
#pragma unroll
      for (int p = 0; p < kIn; ++p) {
        if (kRaw ? RawStaged(p, j, i0, kRows, raw.first_layer) : true) {
          CpAsync4(&m.in[buf][p][t][j], rows.in[p] + off);
        }
      }
    }
  };
  issue(0, t0);  // in flight while the state comes in

  // The block's state rows i0..i0+kRows-1: contiguous in the pool, 16 bytes per access.
  constexpr int V = kRowVector<S>;
  S* state = state_pool + static_cast<int64_t>(slot_of_seq[b]) * slot_stride +
             static_cast<int64_t>(h) * head_stride + i0 * kN;
  for (int e = tid * V; e < kRows * kN; e += kThreads * V) {
    float x[V];
    LoadRow(state + e, x);
#pragma unroll
    for (int q = 0; q < V; ++q) m.s[e / kN][e % kN + q] = x[q];
  }

  int buf = 0;
  for (int64_t tc = t0; tc < t1; tc += kL, buf ^= 1) {
    // As in Wkv7Kernel: this chunk's copies are done and visible, every thread is past the
    // previous chunk (whose buffer the next copies reuse), and the state rows are in.
    CpAsyncWaitAll();
    __syncthreads();
    if (tc + kL < t1) issue(buf ^ 1, tc + kL);
    const int n = static_cast<int>(min(static_cast<int64_t>(kL), t1 - tc));
    if constexpr (kRaw) {
      const int64_t at = tc * ld + h * kN;
      PrepareRaw(
          tid, n, m, buf, i0, raw.first_layer, channel,
          RawOut{raw.k_out + at, raw.v_out + at, raw.first_layer ? raw.v_first + at : nullptr, ld});
      __syncthreads();
    }
    Prepare(tid, n, m, buf);
    __syncthreads();
    Products(tid, m, buf);
    __syncthreads();
    Solve(tid, m, buf, i0);
    __syncthreads();
    Finish(tid, n, m, buf, i0, y + tc * ldy + h * kN, ldy);
  }

  __syncthreads();
  for (int e = tid * V; e < kRows * kN; e += kThreads * V) {
    float x[V];
#pragma unroll
    for (int q = 0; q < V; ++q) x[q] = m.s[e / kN][e % kN + q];
    StoreRow(state + e, x);
  }
}

// ---- launchers ----

namespace {

// The chunked kernel with kRows state rows per block: the fewest blocks that still give every SM
// one (a long prompt of one sequence has only H blocks of 64 rows).
template <int kRows, bool kRaw, typename S>
absl::Status LaunchChunked(cudaStream_t stream, S* state_pool, const int32_t* slot_of_seq, int B,
                           int H, const int32_t* seq_offsets, const ChunkedRows& rows,
                           const ChunkedRaw& raw, int64_t slot_stride, int64_t head_stride) {
  constexpr int kGroups = wkv_chunked::kN / kRows;
  const int64_t blocks = static_cast<int64_t>(B) * H * kGroups;
  if (blocks > INT_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchWkv7: B*H*", kGroups, " = ", blocks, " blocks, expected <= ", INT_MAX));
  }
  constexpr size_t kShared = sizeof(wkv_chunked::Shared<kRows, wkv_chunked::kStagedInputs<kRaw>>);
  auto* kernel = Wkv7ChunkedKernel<kRows, S, kRaw>;
  MODRWKV_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kShared));
  return Launch("Wkv7ChunkedKernel", kernel, dim3(static_cast<unsigned>(blocks)),
                dim3(wkv_chunked::kThreads), kShared, stream, state_pool, slot_of_seq, H,
                seq_offsets, rows, raw, slot_stride, head_stride);
}

// The current device's streaming multiprocessors. A device's count does not change: the driver
// is asked once per device, not at every prefill layer (the model resolves the form per layer,
// the launcher again for the chunked form's block size).
absl::StatusOr<int> SmCount() {
  constexpr int kCachedDevices = 64;
  static std::array<std::atomic<int>, kCachedDevices> known{};  // 0: not asked yet
  int device = 0, sms = 0;
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  const bool cached = device >= 0 && device < kCachedDevices;
  if (cached && (sms = known[device].load(std::memory_order_relaxed)) > 0) return sms;
  MODRWKV_CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  if (cached) known[device].store(sms, std::memory_order_relaxed);
  return sms;
}

template <bool kRaw, typename S>
absl::Status Wkv7Chunked(cudaStream_t stream, S* state_pool, const int32_t* slot_of_seq, int B,
                         int H, const int32_t* seq_offsets, const ChunkedRows& rows,
                         const ChunkedRaw& raw, int64_t slot_stride, int64_t head_stride) {
  MODRWKV_ASSIGN_OR_RETURN(const int sms, SmCount());  // sizes the blocks
  const int64_t heads = static_cast<int64_t>(B) * H;
  auto launch = [&](auto rows_per_block) {
    return LaunchChunked<decltype(rows_per_block)::value, kRaw>(
        stream, state_pool, slot_of_seq, B, H, seq_offsets, rows, raw, slot_stride, head_stride);
  };
  if (heads >= sms) return launch(std::integral_constant<int, 64>());
  if (2 * heads >= sms) return launch(std::integral_constant<int, 32>());
  return launch(std::integral_constant<int, 16>());
}

template <typename S>
absl::Status Wkv7(cudaStream_t stream, S* state_pool, const int32_t* slot_of_seq, int B, int H,
                  const int32_t* seq_offsets, int64_t rows, WkvForm form, const float* r,
                  const float* w, const float* k, const float* v, const float* kk, const float* a,
                  int64_t ld, float* y, int64_t ldy, int64_t slot_stride_floats,
                  int64_t head_stride_floats) {
  constexpr int N = kHeadSize;
  if (B < 0 || H <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchWkv7: B=", B, " H=", H, ", expected B >= 0 and H > 0"));
  }
  if (B == 0) return absl::OkStatus();
  if (static_cast<int64_t>(B) * H > INT_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LaunchWkv7: B*H = ", static_cast<int64_t>(B) * H, " blocks, expected <= ", INT_MAX));
  }
  if (ld < static_cast<int64_t>(H) * N || ldy < static_cast<int64_t>(H) * N) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchWkv7: ld=", ld, " ldy=", ldy, ", expected both >= H*64 = ", H * N));
  }
  if (head_stride_floats < N * N ||
      slot_stride_floats < static_cast<int64_t>(H) * head_stride_floats) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LaunchWkv7: head_stride_floats=", head_stride_floats,
        " slot_stride_floats=", slot_stride_floats, ", expected head stride >= 4096 and slot ",
        "stride >= H*head stride = ", static_cast<int64_t>(H) * head_stride_floats));
  }
  constexpr int kVec = kRowVector<S>;
  if (reinterpret_cast<uintptr_t>(state_pool) % 16 != 0 || head_stride_floats % kVec != 0 ||
      slot_stride_floats % kVec != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchWkv7: the state pool must be 16-byte aligned and its strides multiples "
                     "of ",
                     kVec, " elements (head stride ", head_stride_floats, ", slot stride ",
                     slot_stride_floats, ")"));
  }
  if (state_pool == nullptr || slot_of_seq == nullptr || seq_offsets == nullptr || r == nullptr ||
      w == nullptr || k == nullptr || v == nullptr || kk == nullptr || a == nullptr ||
      y == nullptr) {
    return absl::InvalidArgumentError("LaunchWkv7: null device pointer");
  }
  MODRWKV_ASSIGN_OR_RETURN(const WkvForm resolved, ResolveWkvForm(form, B, H, rows));
  if (resolved == WkvForm::kChunked) {
    using wkv_chunked::Input;
    ChunkedRows chunked{{}, ld, y, ldy};
    chunked.in[Input::kR] = r;
    chunked.in[Input::kW] = w;
    chunked.in[Input::kK] = k;
    chunked.in[Input::kKK] = kk;
    chunked.in[Input::kA] = a;
    chunked.in[Input::kV] = v;
    return Wkv7Chunked</*kRaw=*/false>(stream, state_pool, slot_of_seq, B, H, seq_offsets, chunked,
                                       ChunkedRaw{}, slot_stride_floats, head_stride_floats);
  }
  const dim3 grid(static_cast<unsigned>(B) * static_cast<unsigned>(H));
  return Launch("Wkv7Kernel", rows == B ? Wkv7Kernel<N, S, 1> : Wkv7Kernel<N, S, kWkvChunk>, grid,
                dim3(N), 0, stream, state_pool, slot_of_seq, H, seq_offsets, r, w, k, v, kk, a, ld,
                y, ldy, slot_stride_floats, head_stride_floats);
}

template <typename S>
absl::Status Wkv7ChunkedPrefill(cudaStream_t stream, S* state_pool, const int32_t* slot_of_seq,
                                int B, int H, const int32_t* seq_offsets, int64_t slot_stride,
                                int64_t head_stride, const TimeMixRows& rows,
                                const TimeMixParams& params, bool first_layer, float* y,
                                float* k_out, float* v_out) {
  constexpr const char* kOp = "LaunchWkv7ChunkedPrefill";
  MODRWKV_RETURN_IF_ERROR(CheckTimeMixArgs(kOp, state_pool, sizeof(S), slot_of_seq, B, H,
                                           slot_stride, head_stride, rows, params, first_layer, y,
                                           /*lora_up=*/false));
  if (seq_offsets == nullptr || k_out == nullptr || v_out == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": null seq_offsets, k_out or v_out device pointer"));
  }
  if (B == 0) return absl::OkStatus();
  using wkv_chunked::Input;
  const int64_t C = static_cast<int64_t>(H) * kHeadSize;
  ChunkedRows chunked{{}, C, y, C};
  chunked.in[Input::kR] = rows.r;
  chunked.in[Input::kW] = rows.w;
  chunked.in[Input::kK] = rows.k;
  chunked.in[Input::kA] = rows.a;
  chunked.in[Input::kV] = rows.v;
  chunked.in[Input::kVFirst] = rows.v_first;
  chunked.in[Input::kVGate] = rows.v_gate;
  const ChunkedRaw raw{params.w0, params.a0, params.k_k,   params.k_a, params.v0,
                       k_out,     v_out,     rows.v_first, first_layer};
  return Wkv7Chunked</*kRaw=*/true>(stream, state_pool, slot_of_seq, B, H, seq_offsets, chunked,
                                    raw, slot_stride, head_stride);
}

}  // namespace

absl::StatusOr<WkvForm> ResolveWkvForm(WkvForm form, int B, int H, int64_t rows) {
  if (form != WkvForm::kAuto) return form;
  if (rows < static_cast<int64_t>(kChunkedMinTokens) * B) return WkvForm::kWalk;
  MODRWKV_ASSIGN_OR_RETURN(const int sms, SmCount());
  return static_cast<int64_t>(B) * H <= static_cast<int64_t>(kChunkedMaxHeadsPerSm) * sms
             ? WkvForm::kChunked
             : WkvForm::kWalk;
}

absl::Status LaunchWkv7(cudaStream_t stream, float* state_pool, const int32_t* slot_of_seq, int B,
                        int H, const int32_t* seq_offsets, int64_t rows, WkvForm form,
                        const float* r, const float* w, const float* k, const float* v,
                        const float* kk, const float* a, int64_t ld, float* y, int64_t ldy,
                        int64_t slot_stride_floats, int64_t head_stride_floats) {
  return Wkv7(stream, state_pool, slot_of_seq, B, H, seq_offsets, rows, form, r, w, k, v, kk, a, ld,
              y, ldy, slot_stride_floats, head_stride_floats);
}

absl::Status LaunchWkv7(cudaStream_t stream, __half* state_pool, const int32_t* slot_of_seq, int B,
                        int H, const int32_t* seq_offsets, int64_t rows, WkvForm form,
                        const float* r, const float* w, const float* k, const float* v,
                        const float* kk, const float* a, int64_t ld, float* y, int64_t ldy,
                        int64_t slot_stride_floats, int64_t head_stride_floats) {
  return Wkv7(stream, state_pool, slot_of_seq, B, H, seq_offsets, rows, form, r, w, k, v, kk, a, ld,
              y, ldy, slot_stride_floats, head_stride_floats);
}

absl::Status LaunchWkv7ChunkedPrefill(cudaStream_t stream, float* state_pool,
                                      const int32_t* slot_of_seq, int B, int H,
                                      const int32_t* seq_offsets, int64_t slot_stride,
                                      int64_t head_stride, const TimeMixRows& rows,
                                      const TimeMixParams& params, bool first_layer, float* y,
                                      float* k_out, float* v_out) {
  return Wkv7ChunkedPrefill(stream, state_pool, slot_of_seq, B, H, seq_offsets, slot_stride,
                            head_stride, rows, params, first_layer, y, k_out, v_out);
}

absl::Status LaunchWkv7ChunkedPrefill(cudaStream_t stream, __half* state_pool,
                                      const int32_t* slot_of_seq, int B, int H,
                                      const int32_t* seq_offsets, int64_t slot_stride,
                                      int64_t head_stride, const TimeMixRows& rows,
                                      const TimeMixParams& params, bool first_layer, float* y,
                                      float* k_out, float* v_out) {
  return Wkv7ChunkedPrefill(stream, state_pool, slot_of_seq, B, H, seq_offsets, slot_stride,
                            head_stride, rows, params, first_layer, y, k_out, v_out);
}

}  // namespace modrwkv::cuda
