// WKV7 recurrence kernel and its launcher (see wkv.cuh).
#include <climits>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/state_access.cuh"
#include "engine/cuda/wkv.cuh"

namespace modrwkv::cuda {

constexpr int kHeadSize = 64;

// ---- kernels ----

// A head's N x N state moved between the pool and the threads' registers (thread i: row i)
// through shared memory, so that the block's global accesses are contiguous 16-byte pieces, each
// next to its neighbour's, rather than one 256-byte row per thread (a strided pattern that
// reached under half of the memory bandwidth in a batch-256 decode). The tile's rows are padded
// by one float: thread i reading element j of its row hits bank (i + j) % 32, no conflicts.
template <int N>
constexpr int kTileFloats = N*(N + 1);

template <int N, typename S>
__device__ __forceinline__ void LoadTile(const S* head, float* tile, float (&s)[N]) {
  constexpr int V = kRowVector<S>;
#pragma unroll
  for (int k = 0; k < N / V; ++k) {
    const int e = (k * N + static_cast<int>(threadIdx.x)) * V;
    float v[V];
    LoadRow(head + e, v);
#pragma unroll
    for (int q = 0; q < V; ++q) tile[(e / N) * (N + 1) + e % N + q] = v[q];
  }
  __syncthreads();
#pragma unroll
  for (int j = 0; j < N; ++j) s[j] = tile[threadIdx.x * (N + 1) + j];
}

template <int N, typename S>
__device__ __forceinline__ void StoreTile(S* head, float* tile, const float (&s)[N]) {
  __syncthreads();  // every thread is done reading the tile (LoadTile)
#pragma unroll
  for (int j = 0; j < N; ++j) tile[threadIdx.x * (N + 1) + j] = s[j];
  __syncthreads();
  constexpr int V = kRowVector<S>;
#pragma unroll
  for (int k = 0; k < N / V; ++k) {
    const int e = (k * N + static_cast<int>(threadIdx.x)) * V;
    float v[V];
#pragma unroll
    for (int q = 0; q < V; ++q) v[q] = tile[(e / N) * (N + 1) + e % N + q];
    StoreRow(head + e, v);
  }
}

// One block per (sequence, head), N threads; thread i owns state row i (value dim) in registers
// and walks the sequence's tokens in order. Each token's r, w, k, kk, a rows are shared by all
// threads, so they are staged in shared memory (thread i loads element i: coalesced).
template <int N, typename S>
static __global__ void __launch_bounds__(N)
    Wkv7Kernel(S* __restrict__ state_pool, const int32_t* __restrict__ slot_of_seq, int H,
               const int32_t* __restrict__ seq_offsets, const float* __restrict__ r,
               const float* __restrict__ w, const float* __restrict__ k,
               const float* __restrict__ v, const float* __restrict__ kk,
               const float* __restrict__ a, int64_t ld, float* __restrict__ y, int64_t ldy,
               int64_t slot_stride, int64_t head_stride) {
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

  S* head = state_pool + static_cast<int64_t>(slot_of_seq[b]) * slot_stride +
            static_cast<int64_t>(h) * head_stride;
  __shared__ float tile[kTileFloats<N>];
  float s[N];
  LoadTile(head, tile, s);

  // The token's r, w, k, kk, a rows, double-buffered: the next token's values are loaded into
  // registers while this one is computed (its loads' latency hidden behind the 64-wide update),
  // and one barrier per token suffices (a buffer is rewritten two tokens after it was read, and
  // every thread has passed the barrier in between).
  __shared__ float stage[2][5][N];
  float nr = 0.f, nw = 0.f, nk = 0.f, nkk = 0.f, na = 0.f, nv = 0.f;
  auto load = [&](int64_t t) {
    const int64_t off = t * ld + col;
    nr = r[off];
    nw = w[off];
    nk = k[off];
    nkk = kk[off];
    na = a[off];
    nv = v[off];
  };
  if (t0 < t1) load(t0);
  int cur = 0;
  for (int64_t t = t0; t < t1; ++t, cur ^= 1) {
    float* r_s = stage[cur][0];
    float* w_s = stage[cur][1];
    float* k_s = stage[cur][2];
    float* kk_s = stage[cur][3];
    float* a_s = stage[cur][4];
    r_s[i] = nr;
    w_s[i] = nw;
    k_s[i] = nk;
    kk_s[i] = nkk;
    a_s[i] = na;
    const float vi = nv;
    __syncthreads();
    if (t + 1 < t1) load(t + 1);

    // The two 64-term dot products in four interleaved partial sums each: a single chain of 64
    // dependent FMAs is what bounds a token's latency when one sequence walks a long prompt.
    float sa4[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int j = 0; j < N; ++j) sa4[j % 4] -= s[j] * kk_s[j];
    const float sa = (sa4[0] + sa4[1]) + (sa4[2] + sa4[3]);
    float acc4[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int j = 0; j < N; ++j) {
      s[j] = s[j] * w_s[j] + sa * (kk_s[j] * a_s[j]) + vi * k_s[j];
      acc4[j % 4] += s[j] * r_s[j];
    }
    y[t * ldy + col] = (acc4[0] + acc4[1]) + (acc4[2] + acc4[3]);
  }

  StoreTile(head, tile, s);
}

// ---- launchers ----

namespace {

template <typename S>
absl::Status Wkv7(cudaStream_t stream, S* state_pool, const int32_t* slot_of_seq, int B, int H,
                  const int32_t* seq_offsets, const float* r, const float* w, const float* k,
                  const float* v, const float* kk, const float* a, int64_t ld, float* y,
                  int64_t ldy, int64_t slot_stride_floats, int64_t head_stride_floats) {
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
  const dim3 grid(static_cast<unsigned>(B) * static_cast<unsigned>(H));
  Wkv7Kernel<N, S><<<grid, N, 0, stream>>>(state_pool, slot_of_seq, H, seq_offsets, r, w, k, v, kk,
                                           a, ld, y, ldy, slot_stride_floats, head_stride_floats);
  return CudaStatus(cudaGetLastError(), "Wkv7Kernel launch");
}

}  // namespace

absl::Status LaunchWkv7(cudaStream_t stream, float* state_pool, const int32_t* slot_of_seq, int B,
                        int H, const int32_t* seq_offsets, const float* r, const float* w,
                        const float* k, const float* v, const float* kk, const float* a, int64_t ld,
                        float* y, int64_t ldy, int64_t slot_stride_floats,
                        int64_t head_stride_floats) {
  return Wkv7(stream, state_pool, slot_of_seq, B, H, seq_offsets, r, w, k, v, kk, a, ld, y, ldy,
              slot_stride_floats, head_stride_floats);
}

absl::Status LaunchWkv7(cudaStream_t stream, __half* state_pool, const int32_t* slot_of_seq, int B,
                        int H, const int32_t* seq_offsets, const float* r, const float* w,
                        const float* k, const float* v, const float* kk, const float* a, int64_t ld,
                        float* y, int64_t ldy, int64_t slot_stride_floats,
                        int64_t head_stride_floats) {
  return Wkv7(stream, state_pool, slot_of_seq, B, H, seq_offsets, r, w, k, v, kk, a, ld, y, ldy,
              slot_stride_floats, head_stride_floats);
}

}  // namespace modrwkv::cuda
