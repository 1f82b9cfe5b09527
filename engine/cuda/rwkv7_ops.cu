// The element-wise and per-head RWKV7 ops (see rwkv7_ops.cuh); arithmetic from rwkv7_math.h.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/cuda/block_sum.cuh"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/half_round.cuh"
#include "engine/cuda/launch.cuh"
#include "engine/cuda/rwkv7_math.h"
#include "engine/cuda/rwkv7_ops.cuh"
#include "engine/cuda/state_access.cuh"

namespace modrwkv::cuda {
namespace {

constexpr int kHeadSize = 64;
constexpr int kRowThreads = 256;  // threads of a block that walks one row of C channels

// Threads of a block that normalises one row (LayerNorm, NormShift): a channel per thread up to
// 1024, so that the row's reads are few memory round trips deep. With 256 threads, a decode
// step's LayerNorm of one 2048-wide row took as long as of 256 rows: bound by latency.
unsigned NormThreads(int C) { return static_cast<unsigned>(std::min(1024, (C + 31) / 32 * 32)); }

// LayerNorm's mean and 1 / std over the C values at v (global or shared memory), in every thread;
// each thread reads the channels c = threadIdx.x + k * blockDim.x.
__device__ float2 RowMoments(const float* v, int C, float eps, float* scratch) {
  float s = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) s += v[c];
  const float mean = BlockSum(s, scratch) / static_cast<float>(C);
  float ss = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float d = v[c] - mean;
    ss += d * d;
  }
  return make_float2(mean, math::InvStd(BlockSum(ss, scratch) / static_cast<float>(C), eps));
}

// Before its wait (launch.cuh), the first block of a row-per-block kernel starts the layer's
// parameter rows (C floats each; nullptr: none) on their way to L2, where the parameters of a
// decode step's small kernels would otherwise be one more round trip to memory after the wait.
__device__ __forceinline__ void PrefetchParams(int C, const float* p0, const float* p1,
                                               const float* rows = nullptr, int n_rows = 0) {
  if (blockIdx.x != 0) return;
  const int t = static_cast<int>(threadIdx.x);
  const auto bytes = static_cast<uint32_t>(C) * 4;
  if (t == 0 && p0 != nullptr) PrefetchToL2(p0, bytes);
  if (t == 1 && p1 != nullptr) PrefetchToL2(p1, bytes);
  if (t >= 2 && t < 2 + n_rows) PrefetchToL2(rows + static_cast<int64_t>(t - 2) * C, bytes);
}

// ---- many rows, four channels at a time ----
//
// A prefill step's LayerNorm and token shift walk thousands of rows: what they need is bytes in
// flight, not one row's latency (at a thread per channel, one 4-byte load in flight each and two
// 1024-thread blocks an SM, a 2048-row LayerNorm reached ~28% of an H200's copy bandwidth).
// Their kWidth = 4 forms take four channels per 16-byte access, with blocks of kRowThreads
// threads, each thread issuing its row's loads before it uses any. The launchers pick them where
// C is a multiple of 4 and every row, parameter vector and state slot is aligned for those
// accesses (the model's buffers always are); kWidth = 1 stays for other widths and layouts.

__device__ __forceinline__ float4 Load4(const float* p) {
  return *reinterpret_cast<const float4*>(p);
}

// float4s of a row a LayerNormKernel<4> thread holds in registers: C up to 4 * 4 * 256 = 4096.
constexpr int kVecPerThread = 4;
constexpr int kMaxVecC = 4 * kVecPerThread * kRowThreads;
// LayerNormKernel<4> from this many rows (fewer: the latency-tuned LayerNormKernel<1>).
constexpr int kManyRows = 16;

// LayerNorm(x) * w + b for one row, kRowThreads threads, four channels an access, into this
// thread's registers: n[k] holds channels 4 * (threadIdx.x + k * kRowThreads) + 0..3 for k below
// the count returned. The row is held in registers (loads all issued first), each thread's
// channels summed in that order, then across the block. Every kernel that normalises rows this
// way (LayerNormKernel<4>, NormShiftRowsKernel, NormStoreShiftKernel) gets the same bits.
__device__ __forceinline__ int NormalizedRow4(const float* x, int C, const float* __restrict__ w,
                                              const float* __restrict__ b, float eps,
                                              float* scratch, float4 (&n)[kVecPerThread]) {
  const int t = static_cast<int>(threadIdx.x);
  const int n4 = C / 4;
  const int held = t < n4 ? min(kVecPerThread, (n4 - t + kRowThreads - 1) / kRowThreads) : 0;
  float4 v[kVecPerThread];
#pragma unroll
  for (int k = 0; k < kVecPerThread; ++k) {
    if (k < held) v[k] = Load4(x + 4 * (t + k * kRowThreads));
  }
  float s = 0.0f;
#pragma unroll
  for (int k = 0; k < kVecPerThread; ++k) {
    if (k < held) {
      s += v[k].x;
      s += v[k].y;
      s += v[k].z;
      s += v[k].w;
    }
  }
  const float mean = BlockSum(s, scratch) / static_cast<float>(C);
  float ss = 0.0f;
#pragma unroll
  for (int k = 0; k < kVecPerThread; ++k) {
    if (k < held) {
      const float4 d = make_float4(v[k].x - mean, v[k].y - mean, v[k].z - mean, v[k].w - mean);
      ss += d.x * d.x;
      ss += d.y * d.y;
      ss += d.z * d.z;
      ss += d.w * d.w;
    }
  }
  const float inv = math::InvStd(BlockSum(ss, scratch) / static_cast<float>(C), eps);
#pragma unroll
  for (int k = 0; k < kVecPerThread; ++k) {
    if (k >= held) break;
    const int q = t + k * kRowThreads;
    const float4 wq = Load4(w + 4 * q), bq = Load4(b + 4 * q);
    n[k] = make_float4((v[k].x - mean) * inv * wq.x + bq.x, (v[k].y - mean) * inv * wq.y + bq.y,
                       (v[k].z - mean) * inv * wq.z + bq.z, (v[k].w - mean) * inv * wq.w + bq.w);
  }
  return held;
}

// NormalizedRow4 into the row y (which may be x).
__device__ __forceinline__ void NormalizeRow4(const float* x, int C, const float* __restrict__ w,
                                              const float* __restrict__ b, float eps,
                                              float* scratch, float* y) {
  float4 n[kVecPerThread];
  const int held = NormalizedRow4(x, C, w, b, eps, scratch, n);
#pragma unroll
  for (int k = 0; k < kVecPerThread; ++k) {
    if (k >= held) break;
    reinterpret_cast<float4*>(y)[threadIdx.x + k * kRowThreads] = n[k];
  }
}

// out row = LayerNorm(in row) * w + b. kWidth channels an access: 1 (blockDim.x threads up to
// 1024, RowMoments' order), or 4 (the many-rows form: NormalizeRow4). `in` may be `out` (ln0
// normalises in place), so neither is __restrict__; each thread writes only the channels it read.
template <int kWidth>
__global__ void __launch_bounds__(1024)
    LayerNormKernel(const float* in, const int32_t* __restrict__ rows, int C,
                    const float* __restrict__ w, const float* __restrict__ b, float eps,
                    float* out) {
  AllowSuccessor();
  PrefetchParams(C, w, b);
  WaitForPredecessor();
  __shared__ float scratch[32];
  const int64_t src = rows != nullptr ? rows[blockIdx.x] : blockIdx.x;
  const float* x = in + src * C;
  float* y = out + static_cast<int64_t>(blockIdx.x) * C;
  if constexpr (kWidth == 1) {
    const auto [mean, inv] = RowMoments(x, C, eps, scratch);
    for (int c = threadIdx.x; c < C; c += blockDim.x) y[c] = (x[c] - mean) * inv * w[c] + b[c];
  } else {
    NormalizeRow4(x, C, w, b, eps, scratch, y);
  }
}

// Row r's predecessor in x (prev[r] >= 0) or, for the first row of a sequence, the shift state of
// slot -prev[r] - 1 (f32 or f16). kWidth channels an access: 1, or 4 (the many-rows form above).
template <int kWidth, typename S, typename Out>
__global__ void __launch_bounds__(kRowThreads)
    TokenShiftKernel(const float* __restrict__ x, int R, int C, const int32_t* __restrict__ prev,
                     const S* __restrict__ shift_base, int64_t slot_stride,
                     const float* __restrict__ mix, int mixes,
                     typename Out::Elem* __restrict__ out) {
  AllowSuccessor();
  PrefetchParams(C, nullptr, nullptr, mix, mixes);
  WaitForPredecessor();
  const int64_t r = blockIdx.x;
  const float* xr = x + r * C;
  const int32_t p = prev[r];
  const float* px = p >= 0 ? x + static_cast<int64_t>(p) * C : nullptr;
  const S* ps = p < 0 ? shift_base + static_cast<int64_t>(-p - 1) * slot_stride : nullptr;
  const int64_t plane = static_cast<int64_t>(R) * C;
  for (int c = kWidth * static_cast<int>(threadIdx.x); c < C; c += kWidth * kRowThreads) {
    const int64_t at = r * C + c;
    if constexpr (kWidth == 4) {
      const float4 xc = Load4(xr + c), pc = px != nullptr ? Load4(px + c) : LoadState4(ps + c);
      for (int i = 0; i < mixes; ++i) {
        const float4 m = Load4(mix + static_cast<int64_t>(i) * C + c);
        Out::Store4(
            out, i * plane + at,
            make_float4(math::TokenShift(xc.x, pc.x, m.x), math::TokenShift(xc.y, pc.y, m.y),
                        math::TokenShift(xc.z, pc.z, m.z), math::TokenShift(xc.w, pc.w, m.w)));
      }
    } else {
      const float xc = xr[c], pc = px != nullptr ? px[c] : LoadState(ps + c);
      for (int i = 0; i < mixes; ++i) {
        Out::Store(out, i * plane + at, math::TokenShift(xc, pc, mix[i * C + c]));
      }
    }
  }
}

// A prefill step's LayerNorm and token shift in one kernel, kRowThreads threads a row, four
// channels an access: row r normalised, and its predecessor normalised again (prev[r] >= 0: the
// same sums, so the same bits as that row's own block computes) or read from the shift state of
// slot -prev[r] - 1; each mix out as TokenShiftKernel stores it. The normalised rows are not
// stored: NormStoreShiftKernel normalises the sequences' last rows again for the shift states.
template <typename S, typename Out>
__global__ void __launch_bounds__(kRowThreads)
    NormShiftRowsKernel(const float* __restrict__ x, int R, int C, const float* __restrict__ w,
                        const float* __restrict__ b, float eps, const int32_t* __restrict__ prev,
                        const S* __restrict__ shift_base, int64_t slot_stride,
                        const float* __restrict__ mix, int mixes,
                        typename Out::Elem* __restrict__ out) {
  AllowSuccessor();
  PrefetchParams(C, w, b, mix, mixes);
  WaitForPredecessor();
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const int32_t p = prev[r];
  float4 n[kVecPerThread], pn[kVecPerThread];
  const int held = NormalizedRow4(x + r * C, C, w, b, eps, scratch, n);
  if (p >= 0) {
    NormalizedRow4(x + static_cast<int64_t>(p) * C, C, w, b, eps, scratch, pn);
  } else {
    const S* ps = shift_base + static_cast<int64_t>(-p - 1) * slot_stride;
#pragma unroll
    for (int k = 0; k < kVecPerThread; ++k) {
      if (k < held) pn[k] = LoadState4(ps + 4 * (threadIdx.x + k * kRowThreads));
    }
  }
  const int64_t plane = static_cast<int64_t>(R) * C;
#pragma unroll
  for (int k = 0; k < kVecPerThread; ++k) {
    if (k >= held) break;
    const int c = 4 * (static_cast<int>(threadIdx.x) + k * kRowThreads);
    for (int i = 0; i < mixes; ++i) {
      const float4 m = Load4(mix + static_cast<int64_t>(i) * C + c);
      Out::Store4(out, i * plane + r * C + c,
                  make_float4(math::TokenShift(n[k].x, pn[k].x, m.x),
                              math::TokenShift(n[k].y, pn[k].y, m.y),
                              math::TokenShift(n[k].z, pn[k].z, m.z),
                              math::TokenShift(n[k].w, pn[k].w, m.w)));
    }
  }
}

// After NormShiftRowsKernel: slot slots[e] gets row last[e] of x normalised (NormalizedRow4: the
// bits the rows kernel used for it), rounded when the state is f16; a padding entry (slots[e] <
// 0) stores nothing.
template <typename S>
__global__ void __launch_bounds__(kRowThreads)
    NormStoreShiftKernel(const float* __restrict__ x, int C, const float* __restrict__ w,
                         const float* __restrict__ b, float eps, const int32_t* __restrict__ last,
                         const int32_t* __restrict__ slots, S* __restrict__ shift_base,
                         int64_t slot_stride) {
  AllowSuccessor();
  WaitForPredecessor();
  const int32_t slot = slots[blockIdx.x];
  if (slot < 0) return;  // the whole block
  __shared__ float scratch[32];
  float4 n[kVecPerThread];
  const int held =
      NormalizedRow4(x + static_cast<int64_t>(last[blockIdx.x]) * C, C, w, b, eps, scratch, n);
  S* dst = shift_base + static_cast<int64_t>(slot) * slot_stride;
#pragma unroll
  for (int k = 0; k < kVecPerThread; ++k) {
    if (k >= held) break;
    S* d = dst + 4 * (threadIdx.x + k * kRowThreads);
    StoreState(d + 0, n[k].x);
    StoreState(d + 1, n[k].y);
    StoreState(d + 2, n[k].z);
    StoreState(d + 3, n[k].w);
  }
}

template <typename S>
__global__ void StoreShiftKernel(const float* __restrict__ x, int C,
                                 const int32_t* __restrict__ last,
                                 const int32_t* __restrict__ slots, S* __restrict__ shift_base,
                                 int64_t slot_stride) {
  AllowSuccessor();
  WaitForPredecessor();
  if (slots[blockIdx.x] < 0) return;  // a padding sequence: no slot
  const float* src = x + static_cast<int64_t>(last[blockIdx.x]) * C;
  S* dst = shift_base + static_cast<int64_t>(slots[blockIdx.x]) * slot_stride;
  for (int c = threadIdx.x; c < C; c += blockDim.x) StoreState(dst + c, src[c]);
}

// One block per row, NormThreads(C) threads; the row in dynamic shared memory (C floats). The sums
// are LayerNormKernel's, in its order. Up to 1024 threads a block: the bound caps its registers at
// 64 (ptxas: 47-64, no spills), so a launch of 1024 can never run out of them (the values it
// preloads before its wait hold registers: a kernel without the bound may take more and fail only
// on a GPU).
template <typename S, typename Out>
__global__ void __launch_bounds__(1024)
    NormShiftKernel(const float* __restrict__ x, int R, int C, const float* __restrict__ w,
                    const float* __restrict__ b, float eps, const int32_t* __restrict__ slots,
                    S* __restrict__ shift_base, int64_t slot_stride, const float* __restrict__ mix,
                    int mixes, typename Out::Elem* __restrict__ out) {
  AllowSuccessor();
  PrefetchParams(C, w, b, mix, mixes);
  // The LayerNorm weight, bias and first kPreloadMixes mix vectors of this thread's first
  // kPreload channels are the model's: in registers before the wait, so that after the sums a
  // decode step's row has only its stores left (the L2 prefetch above serves the rest: channels
  // beyond 2 per thread, C > 2048, and more mixes).
  constexpr int kPreload = 2, kPreloadMixes = 6;
  float pw[kPreload], pb[kPreload], pm[kPreload][kPreloadMixes];
#pragma unroll
  for (int q = 0; q < kPreload; ++q) {
    const int c = threadIdx.x + q * blockDim.x;
    pw[q] = c < C ? w[c] : 0.0f;
    pb[q] = c < C ? b[c] : 0.0f;
#pragma unroll
    for (int i = 0; i < kPreloadMixes; ++i) pm[q][i] = c < C && i < mixes ? mix[i * C + c] : 0.0f;
  }
  WaitForPredecessor();
  float* row = DynamicShared<float>();
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const float* xr = x + r * C;
  const int32_t slot = slots[r];
  S* state = slot >= 0 ? shift_base + static_cast<int64_t>(slot) * slot_stride : nullptr;
  for (int c = threadIdx.x; c < C; c += blockDim.x) row[c] = xr[c];  // read back by this thread
  // The shift state of this thread's first kEarly channels is loaded with the row, before the
  // sums: one memory round trip instead of two in a decode step's chain (up to 4 channels per
  // thread covers C = 4096 with 1024 threads; wider rows load the rest in the loop).
  constexpr int kEarly = 4;
  float early[kEarly];
#pragma unroll
  for (int q = 0; q < kEarly; ++q) {
    const int c = threadIdx.x + q * blockDim.x;
    early[q] = state != nullptr && c < C ? LoadState(state + c) : 0.0f;
  }
  const float2 moments = RowMoments(row, C, eps, scratch);
  const float mean = moments.x,
              inv = moments.y;  // captured below: clang 14 cannot capture a binding
  const int64_t plane = static_cast<int64_t>(R) * C;
  // Channel c: its normalised value into every mix, token-shifted against the state (or itself
  // without one), then the state replaced by it. mix_at(i): mix vector i at c. Each thread reads
  // a channel's shift state before it writes it.
  auto emit = [&](int c, float state_c, float wc, float bc, auto mix_at) {
    const float n = (row[c] - mean) * inv * wc + bc;
    const float pc = state != nullptr ? state_c : n;
#pragma unroll
    for (int i = 0; i < kPreloadMixes; ++i) {
      if (i < mixes) Out::Store(out, i * plane + r * C + c, math::TokenShift(n, pc, mix_at(i)));
    }
    for (int i = kPreloadMixes; i < mixes; ++i)
      Out::Store(out, i * plane + r * C + c, math::TokenShift(n, pc, mix[i * C + c]));
    if (state != nullptr) StoreState(state + c, n);
  };
#pragma unroll
  for (int q = 0; q < kEarly; ++q) {
    const int c = threadIdx.x + q * blockDim.x;
    if (c >= C) continue;
    if (q < kPreload) {
      emit(c, early[q], pw[q], pb[q], [&](int i) { return pm[q][i]; });
    } else {
      emit(c, early[q], w[c], b[c], [&](int i) { return mix[i * C + c]; });
    }
  }
  for (int c = threadIdx.x + kEarly * blockDim.x; c < C; c += blockDim.x) {
    emit(c, state != nullptr ? LoadState(state + c) : 0.0f, w[c], b[c],
         [&](int i) { return mix[i * C + c]; });
  }
}

// `x` may be `out` (in place), so neither is __restrict__.
// f(v): the activations that products store (LoRA down-projections, the channel mix's key).
__device__ __forceinline__ float Activate(Activation f, float v) {
  return f == Activation::kTanh      ? tanhf(v)
         : f == Activation::kSigmoid ? math::Sigmoid(v)
                                     : math::ReluSquare(v);
}

template <typename Out>
__global__ void ActivationKernel(Activation f, const float* x, int64_t n, typename Out::Elem* out) {
  AllowSuccessor();
  WaitForPredecessor();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    Out::Store(out, i, Activate(f, x[i]));
  }
}

// In place on 16-bit values of type T, eight (16 bytes) per thread and step; the last n % 8 one
// by one.
template <HalfType T>
__global__ void HalfActivationKernel(Activation f, uint16_t* x, int64_t n) {
  AllowSuccessor();
  WaitForPredecessor();
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  uint4* x8 = reinterpret_cast<uint4*>(x);
  for (int64_t i = first; i < n / 8; i += stride) {
    const uint4 bits = x8[i];
    const uint32_t in[4] = {bits.x, bits.y, bits.z, bits.w};
    uint32_t out[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const float2 v = Widen2<T>(in[q]);
      out[q] = static_cast<uint32_t>(RoundToHalf<T>(Activate(f, v.x))) |
               static_cast<uint32_t>(RoundToHalf<T>(Activate(f, v.y))) << 16;
    }
    x8[i] = make_uint4(out[0], out[1], out[2], out[3]);
  }
  for (int64_t i = n / 8 * 8 + first; i < n; i += stride) {
    const float v = Widen2<T>(x[i]).x;  // the low half of the pair: x[i]
    x[i] = RoundToHalf<T>(Activate(f, v));
  }
}

// Grid (R, H), 64 threads: thread j owns channel h*64 + j of row r.
__global__ void PrepareWkvKernel(int C, float* w, const float* __restrict__ w0, float* a,
                                 const float* __restrict__ a0, float* k, float* kk,
                                 const float* __restrict__ k_k, const float* __restrict__ k_a,
                                 float* v, float* v_first, const float* __restrict__ v_gate,
                                 const float* __restrict__ v0, bool first_layer) {
  AllowSuccessor();
  __shared__ float scratch[32];
  const int c = blockIdx.y * kHeadSize + threadIdx.x;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * C + c;
  // The parameters are the model's: read before the wait (launch.cuh).
  const float w0c = w0[c], a0c = a0[c], k_kc = k_k[c], k_ac = k_a[c];
  const float v0c = first_layer ? 0.0f : v0[c];
  WaitForPredecessor();
  w[i] = math::Decay(w[i] + w0c);
  const float av = math::Sigmoid(a[i] + a0c);
  a[i] = av;
  const float kv = k[i];
  const float q = kv * k_kc;
  kk[i] = q * math::InvL2(BlockSum(q * q, scratch));
  k[i] = math::KeyWithIclr(kv, av, k_ac);
  if (first_layer) {
    v_first[i] = v[i];
  } else {
    v[i] = math::ValueResidual(v[i], v_first[i], v_gate[i] + v0c);
  }
}

// `y` may be `out` (in place), so neither is __restrict__.
template <typename Out>
__global__ void GroupNormGateKernel(int C, const float* y, const float* __restrict__ gn_w,
                                    const float* __restrict__ gn_b, const float* __restrict__ r,
                                    const float* __restrict__ k, const float* __restrict__ r_k,
                                    const float* __restrict__ v, const float* __restrict__ g,
                                    typename Out::Elem* out) {
  AllowSuccessor();
  __shared__ float scratch[32];
  const int c = blockIdx.y * kHeadSize + threadIdx.x;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * C + c;
  const float gn_wc = gn_w[c], gn_bc = gn_b[c], r_kc = r_k[c];  // the model's: before the wait
  WaitForPredecessor();
  const float x = y[i];
  const float mean = BlockSum(x, scratch) / kHeadSize;
  const float d = x - mean;
  const float inv = math::InvStd(BlockSum(d * d, scratch) / kHeadSize, math::kGroupNormEps);
  const float bonus = BlockSum(r[i] * k[i] * r_kc, scratch);
  Out::Store(out, i, math::GatedOutput(d * inv * gn_wc + gn_bc, bonus, v[i], g[i]));
}

// Whether every pointer is a multiple of `bytes` (null counts as aligned).
template <typename... P>
bool Aligned(size_t bytes, const P*... p) {
  return ((reinterpret_cast<uintptr_t>(p) % bytes == 0) && ...);
}

absl::Status CheckWidth(const char* op, int C) {
  if (C <= 0 || C % kHeadSize != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": C = ", C, ", expected a positive multiple of 64"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LaunchLayerNorm(cudaStream_t stream, const float* in, const int32_t* rows, int n,
                             int C, const float* w, const float* b, float eps, float* out) {
  if (n < 0 || C <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchLayerNorm: n = ", n, ", C = ", C));
  }
  if (n == 0) return absl::OkStatus();
  if (n >= kManyRows && C % 4 == 0 && C <= kMaxVecC && Aligned(16, in, out, w, b)) {
    return Launch("LayerNormKernel", LayerNormKernel<4>, dim3(n), dim3(kRowThreads), 0, stream, in,
                  rows, C, w, b, eps, out);
  }
  return Launch("LayerNormKernel", LayerNormKernel<1>, dim3(n), dim3(NormThreads(C)), 0, stream, in,
                rows, C, w, b, eps, out);
}

namespace {

template <typename S>
absl::Status TokenShift(cudaStream_t stream, const float* x, int R, int C, const int32_t* prev,
                        const S* shift_base, int64_t slot_stride, const float* mix, int mixes,
                        const ActivationsOut& out) {
  if (R < 0 || C <= 0 || mixes < 1 || !out.valid()) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchTokenShift: R = ", R, ", C = ", C,
                                                   ", mixes = ", mixes,
                                                   out.valid() ? "" : ", no out"));
  }
  if (R == 0) return absl::OkStatus();
  // Four channels at a time where every access of four is aligned: the rows, the slots' states
  // (16 bytes of f32, 8 of f16) and the output rows (16 bytes of f32, 8 of 16-bit).
  const bool by_four = C % 4 == 0 && slot_stride % 4 == 0 && Aligned(16, x, mix) &&
                       Aligned(4 * sizeof(S), shift_base) &&
                       (out.is_half() ? Aligned(8, out.half) : Aligned(16, out.f32));
  return ForActivationsOut(out, [&](auto o, auto* rows) {
    return Launch(
        "TokenShiftKernel",
        by_four ? TokenShiftKernel<4, S, decltype(o)> : TokenShiftKernel<1, S, decltype(o)>,
        dim3(R), dim3(kRowThreads), 0, stream, x, R, C, prev, shift_base, slot_stride, mix, mixes,
        rows);
  });
}

template <typename S>
absl::Status StoreShift(cudaStream_t stream, const float* x, int C, const int32_t* last,
                        const int32_t* slots, int E, S* shift_base, int64_t slot_stride) {
  if (E < 0 || C <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchStoreShift: E = ", E, ", C = ", C));
  }
  if (E == 0) return absl::OkStatus();
  return Launch("StoreShiftKernel", StoreShiftKernel<S>, dim3(E), dim3(kRowThreads), 0, stream, x,
                C, last, slots, shift_base, slot_stride);
}

template <typename S>
absl::Status NormShiftRows(cudaStream_t stream, const float* x, int R, int C, const float* w,
                           const float* b, float eps, const int32_t* prev, const int32_t* last,
                           const int32_t* slots, int E, S* shift_base, int64_t slot_stride,
                           const float* mix, int mixes, const ActivationsOut& out) {
  if (R < 0 || E < 0 || mixes < 1 || !out.valid() || C % 4 != 0 || C <= 0 || C > kMaxVecC) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LaunchNormShiftRows: R = ", R, ", E = ", E, ", C = ", C, ", mixes = ", mixes,
        out.valid() ? "" : ", no out", " (expected C a multiple of 4 up to ", kMaxVecC, ")"));
  }
  if (!Aligned(16, x, w, b, mix) || !Aligned(4 * sizeof(S), shift_base) || slot_stride % 4 != 0 ||
      !(out.is_half() ? Aligned(8, out.half) : Aligned(16, out.f32))) {
    return absl::InvalidArgumentError(
        "LaunchNormShiftRows: rows, parameters, states and out must be aligned for four channels "
        "an access");
  }
  if (R == 0) return absl::OkStatus();
  MODRWKV_RETURN_IF_ERROR(ForActivationsOut(out, [&](auto o, auto* rows) {
    return Launch("NormShiftRowsKernel", NormShiftRowsKernel<S, decltype(o)>, dim3(R),
                  dim3(kRowThreads), 0, stream, x, R, C, w, b, eps, prev, shift_base, slot_stride,
                  mix, mixes, rows);
  }));
  if (E == 0) return absl::OkStatus();
  return Launch("NormStoreShiftKernel", NormStoreShiftKernel<S>, dim3(E), dim3(kRowThreads), 0,
                stream, x, C, w, b, eps, last, slots, shift_base, slot_stride);
}

template <typename S>
absl::Status NormShift(cudaStream_t stream, const float* x, int R, int C, const float* w,
                       const float* b, float eps, const int32_t* slots, S* shift_base,
                       int64_t slot_stride, const float* mix, int mixes,
                       const ActivationsOut& out) {
  if (!out.valid()) return absl::InvalidArgumentError("LaunchNormShift: no out");
  // The row (dynamic) and the kernel's 32-float scratch (static) within a block's default 48 KB.
  constexpr int64_t kMaxC = (48 * 1024 - 32 * 4) / 4;
  if (R < 0 || C <= 0 || mixes < 1 || C > kMaxC) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchNormShift: R = ", R, ", C = ", C,
                                                   ", mixes = ", mixes, " (expected C in [1, ",
                                                   kMaxC, "], mixes >= 1)"));
  }
  if (R == 0) return absl::OkStatus();
  return ForActivationsOut(out, [&](auto o, auto* rows) {
    return Launch("NormShiftKernel", NormShiftKernel<S, decltype(o)>, dim3(R), dim3(NormThreads(C)),
                  static_cast<size_t>(C) * 4, stream, x, R, C, w, b, eps, slots, shift_base,
                  slot_stride, mix, mixes, rows);
  });
}

}  // namespace

absl::Status LaunchNormShift(cudaStream_t stream, const float* x, int R, int C, const float* w,
                             const float* b, float eps, const int32_t* slots, float* shift_base,
                             int64_t slot_stride, const float* mix, int mixes, ActivationsOut out) {
  return NormShift(stream, x, R, C, w, b, eps, slots, shift_base, slot_stride, mix, mixes, out);
}

absl::Status LaunchNormShift(cudaStream_t stream, const float* x, int R, int C, const float* w,
                             const float* b, float eps, const int32_t* slots, __half* shift_base,
                             int64_t slot_stride, const float* mix, int mixes, ActivationsOut out) {
  return NormShift(stream, x, R, C, w, b, eps, slots, shift_base, slot_stride, mix, mixes, out);
}

bool NormShiftRowsFits(int R, int C) { return R >= kManyRows && C % 4 == 0 && C <= kMaxVecC; }

absl::Status LaunchNormShiftRows(cudaStream_t stream, const float* x, int R, int C, const float* w,
                                 const float* b, float eps, const int32_t* prev,
                                 const int32_t* last, const int32_t* slots, int E,
                                 float* shift_base, int64_t slot_stride, const float* mix,
                                 int mixes, ActivationsOut out) {
  return NormShiftRows(stream, x, R, C, w, b, eps, prev, last, slots, E, shift_base, slot_stride,
                       mix, mixes, out);
}

absl::Status LaunchNormShiftRows(cudaStream_t stream, const float* x, int R, int C, const float* w,
                                 const float* b, float eps, const int32_t* prev,
                                 const int32_t* last, const int32_t* slots, int E,
                                 __half* shift_base, int64_t slot_stride, const float* mix,
                                 int mixes, ActivationsOut out) {
  return NormShiftRows(stream, x, R, C, w, b, eps, prev, last, slots, E, shift_base, slot_stride,
                       mix, mixes, out);
}

absl::Status LaunchTokenShift(cudaStream_t stream, const float* x, int R, int C,
                              const int32_t* prev, const float* shift_base, int64_t slot_stride,
                              const float* mix, int mixes, ActivationsOut out) {
  return TokenShift(stream, x, R, C, prev, shift_base, slot_stride, mix, mixes, out);
}

absl::Status LaunchTokenShift(cudaStream_t stream, const float* x, int R, int C,
                              const int32_t* prev, const __half* shift_base, int64_t slot_stride,
                              const float* mix, int mixes, ActivationsOut out) {
  return TokenShift(stream, x, R, C, prev, shift_base, slot_stride, mix, mixes, out);
}

absl::Status LaunchStoreShift(cudaStream_t stream, const float* x, int C, const int32_t* last,
                              const int32_t* slots, int E, float* shift_base, int64_t slot_stride) {
  return StoreShift(stream, x, C, last, slots, E, shift_base, slot_stride);
}

absl::Status LaunchStoreShift(cudaStream_t stream, const float* x, int C, const int32_t* last,
                              const int32_t* slots, int E, __half* shift_base,
                              int64_t slot_stride) {
  return StoreShift(stream, x, C, last, slots, E, shift_base, slot_stride);
}

absl::Status LaunchActivation(cudaStream_t stream, Activation f, float* x, int64_t n) {
  return LaunchActivation(stream, f, x, n, x);
}

absl::Status LaunchActivation(cudaStream_t stream, Activation f, const float* x, int64_t n,
                              ActivationsOut out) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("LaunchActivation: n = ", n));
  if (!out.valid()) return absl::InvalidArgumentError("LaunchActivation: no out");
  if (f != Activation::kTanh && f != Activation::kSigmoid && f != Activation::kReluSquare) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchActivation: unknown activation ", static_cast<int>(f)));
  }
  if (n == 0) return absl::OkStatus();
  const int64_t blocks = std::min<int64_t>((n + kRowThreads - 1) / kRowThreads, 65535);
  return ForActivationsOut(out, [&](auto o, auto* rows) {
    return Launch("ActivationKernel", ActivationKernel<decltype(o)>,
                  dim3(static_cast<unsigned>(blocks)), dim3(kRowThreads), 0, stream, f, x, n, rows);
  });
}

absl::Status LaunchActivation(cudaStream_t stream, Activation f, HalfType type, uint16_t* x,
                              int64_t n) {
  if (n < 0 || x == nullptr || reinterpret_cast<uintptr_t>(x) % 16 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchActivation: n = ", n, ", expected n >= 0 and x 16-byte aligned"));
  }
  if (f != Activation::kTanh && f != Activation::kSigmoid && f != Activation::kReluSquare) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchActivation: unknown activation ", static_cast<int>(f)));
  }
  if (n == 0) return absl::OkStatus();
  const int64_t blocks = std::min<int64_t>((n / 8 + kRowThreads) / kRowThreads, 65535);
  auto* kernel = type == HalfType::kBF16 ? HalfActivationKernel<HalfType::kBF16>
                                         : HalfActivationKernel<HalfType::kF16>;
  return Launch("HalfActivationKernel", kernel, dim3(static_cast<unsigned>(blocks)),
                dim3(kRowThreads), 0, stream, f, x, n);
}

absl::Status LaunchPrepareWkv(cudaStream_t stream, int R, int C, float* w, const float* w0,
                              float* a, const float* a0, float* k, float* kk, const float* k_k,
                              const float* k_a, float* v, float* v_first, const float* v_gate,
                              const float* v0, bool first_layer) {
  if (absl::Status s = CheckWidth("LaunchPrepareWkv", C); !s.ok()) return s;
  if (R < 0) return absl::InvalidArgumentError(absl::StrCat("LaunchPrepareWkv: R = ", R));
  if (!first_layer && (v_gate == nullptr || v0 == nullptr)) {
    return absl::InvalidArgumentError("LaunchPrepareWkv: a later layer needs v_gate and v0");
  }
  if (R == 0) return absl::OkStatus();
  const dim3 grid(static_cast<unsigned>(R), static_cast<unsigned>(C / kHeadSize));
  return Launch("PrepareWkvKernel", PrepareWkvKernel, grid, dim3(kHeadSize), 0, stream, C, w, w0, a,
                a0, k, kk, k_k, k_a, v, v_first, v_gate, v0, first_layer);
}

absl::Status LaunchGroupNormGate(cudaStream_t stream, int R, int C, float* y, const float* gn_w,
                                 const float* gn_b, const float* r, const float* k,
                                 const float* r_k, const float* v, const float* g) {
  return LaunchGroupNormGate(stream, R, C, static_cast<const float*>(y), gn_w, gn_b, r, k, r_k, v,
                             g, y);
}

absl::Status LaunchGroupNormGate(cudaStream_t stream, int R, int C, const float* y,
                                 const float* gn_w, const float* gn_b, const float* r,
                                 const float* k, const float* r_k, const float* v, const float* g,
                                 ActivationsOut out) {
  if (absl::Status s = CheckWidth("LaunchGroupNormGate", C); !s.ok()) return s;
  if (!out.valid()) return absl::InvalidArgumentError("LaunchGroupNormGate: no out");
  if (R < 0) return absl::InvalidArgumentError(absl::StrCat("LaunchGroupNormGate: R = ", R));
  if (R == 0) return absl::OkStatus();
  const dim3 grid(static_cast<unsigned>(R), static_cast<unsigned>(C / kHeadSize));
  return ForActivationsOut(out, [&](auto o, auto* rows) {
    return Launch("GroupNormGateKernel", GroupNormGateKernel<decltype(o)>, grid, dim3(kHeadSize), 0,
                  stream, C, y, gn_w, gn_b, r, k, r_k, v, g, rows);
  });
}

#ifndef MODRWKV_CUDA_EMULATION
namespace {
__device__ __forceinline__ uint64_t GlobalNanoseconds() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// plain launch: the op profile's device-side gate, queued before a step; it reads nothing.
__global__ void SpinKernel(uint64_t ns) {
  const uint64_t t0 = GlobalNanoseconds();
  while (GlobalNanoseconds() - t0 < ns) __nanosleep(1000);
}
}  // namespace
#endif

absl::Status LaunchSpin(cudaStream_t stream, int microseconds) {
  if (microseconds < 0) return absl::InvalidArgumentError("LaunchSpin: microseconds < 0");
#ifdef MODRWKV_CUDA_EMULATION
  // The emulator runs a stream's work in order when the host waits: there is nothing to gate.
  (void)stream;
  return absl::OkStatus();
#else
  // clang-format splits the launch's >>> inside this #else.
  // clang-format off
  SpinKernel<<<1, 1, 0, stream>>>(static_cast<uint64_t>(microseconds) * 1000);
  // clang-format on
  return CudaStatus(cudaGetLastError(), "SpinKernel launch");
#endif
}

}  // namespace modrwkv::cuda
