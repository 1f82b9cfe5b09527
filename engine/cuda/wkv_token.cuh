// Device-side pieces of the WKV7 kernels that walk tokens one by one (wkv.cu's Wkv7Kernel and
// wkv_decode.cu's fused decode kernel): a head's state between the pool and the threads'
// registers, cp.async staging, and one token of the recurrence for one state row.
#pragma once

#include <cstdint>

#include "engine/cuda/async_copy.cuh"
#include "engine/cuda/state_access.cuh"

namespace modrwkv::cuda {

constexpr int kHeadSize = 64;
// A staged token's inputs, each kHeadSize floats, in this order: r, w, k, kk, a, v.
constexpr int kStaged = 6;

// A head's N x N state moved between the pool and the threads' registers (thread i: row i)
// through shared memory, so that the block's global accesses are contiguous 16-byte pieces, each
// next to its neighbour's, rather than one 256-byte row per thread (a strided pattern that
// reached under half of the memory bandwidth in a batch-256 decode). The tile's rows are padded
// by one float: thread i reading element j of its row hits bank (i + j) % 32, no conflicts.
template <int N>
constexpr int kTileFloats = N*(N + 1);

// LoadTile in its two halves, for a kernel with more to do between them: the head's state into
// the tile, then (after a barrier the caller places) each thread's row out of it.
template <int N, typename S>
__device__ __forceinline__ void StateToTile(const S* head, float* tile) {
  constexpr int V = kRowVector<S>;
#pragma unroll
  for (int k = 0; k < N / V; ++k) {
    const int e = (k * N + static_cast<int>(threadIdx.x)) * V;
    float v[V];
    LoadRow(head + e, v);
#pragma unroll
    for (int q = 0; q < V; ++q) tile[(e / N) * (N + 1) + e % N + q] = v[q];
  }
}

template <int N>
__device__ __forceinline__ void TileToRow(const float* tile, float (&s)[N]) {
#pragma unroll
  for (int j = 0; j < N; ++j) s[j] = tile[threadIdx.x * (N + 1) + j];
}

template <int N, typename S>
__device__ __forceinline__ void LoadTile(const S* head, float* tile, float (&s)[N]) {
  StateToTile<N>(head, tile);
  __syncthreads();
  TileToRow<N>(tile, s);
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

// One token of the recurrence for state row i, held in this thread's registers s: the token's r,
// w, k, kk, a rows at st + q * N (q in that order; shared memory, 16-byte aligned, read back four
// at a time) and v_i. Updates s and returns y_i.
//   sa = sum_j s[j] * (-kk_j);  s[j] = s[j] * w_j + sa * kk_j * a_j + v_i * k_j;
//   y_i = sum_j s[j] * r_j.
template <int N>
__device__ __forceinline__ float WkvToken(float (&s)[N], const float* st, float vi) {
  const float4* r_s = reinterpret_cast<const float4*>(st + 0 * N);
  const float4* w_s = reinterpret_cast<const float4*>(st + 1 * N);
  const float4* k_s = reinterpret_cast<const float4*>(st + 2 * N);
  const float4* kk_s = reinterpret_cast<const float4*>(st + 3 * N);
  const float4* a_s = reinterpret_cast<const float4*>(st + 4 * N);
  // The two 64-term dot products in four interleaved partial sums each (partial q takes the
  // terms j % 4 == q): a single chain of 64 dependent FMAs is what bounds a token's latency when
  // one sequence walks a long prompt.
  float sa4[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int j = 0; j < N; j += 4) {
    const float4 q = kk_s[j / 4];
    sa4[0] -= s[j] * q.x;
    sa4[1] -= s[j + 1] * q.y;
    sa4[2] -= s[j + 2] * q.z;
    sa4[3] -= s[j + 3] * q.w;
  }
  const float sa = (sa4[0] + sa4[1]) + (sa4[2] + sa4[3]);
  float acc4[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int j = 0; j < N; j += 4) {
    const float4 wq = w_s[j / 4], kkq = kk_s[j / 4], aq = a_s[j / 4], kq = k_s[j / 4],
                 rq = r_s[j / 4];
    const float wv[4] = {wq.x, wq.y, wq.z, wq.w}, kkv[4] = {kkq.x, kkq.y, kkq.z, kkq.w},
                av[4] = {aq.x, aq.y, aq.z, aq.w}, kv[4] = {kq.x, kq.y, kq.z, kq.w},
                rv[4] = {rq.x, rq.y, rq.z, rq.w};
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      s[j + q] = s[j + q] * wv[q] + sa * (kkv[q] * av[q]) + vi * kv[q];
      acc4[q] += s[j + q] * rv[q];
    }
  }
  return (acc4[0] + acc4[1]) + (acc4[2] + acc4[3]);
}

}  // namespace modrwkv::cuda
