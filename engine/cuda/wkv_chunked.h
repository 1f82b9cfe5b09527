// The chunked form of the WKV7 recurrence: a long prompt's walk as small matrix products over
// chunks of 16 tokens, so that a chunk's tokens are computed in parallel and only the state passes
// from chunk to chunk. Written as the phases of one thread block, __host__ __device__: the kernel
// (wkv.cu, Wkv7ChunkedKernel) runs them with a barrier between phases, and EmulateChunkedHead
// below runs the same functions on the host thread by thread, so that the CPU build tests the
// kernel's own arithmetic and indexing against the token-by-token recurrence
// (tests/engine/cuda/wkv_chunked_test.cc).
//
// The math, for one head (state S: [64 value i][64 key j]) and a chunk's tokens t = 0..L-1, S the
// state before the chunk. Per token (engine/cpu/kernels.h, WkvHead):
//   sa_t = S_{t-1} (-kk_t);  S_t = S_{t-1} diag(w_t) + sa_t (kk_t * a_t)^T + v_t k_t^T;
//   y_t = S_t r_t.
// With the decays' running products G_t = w_0 * ... * w_{t-1} (G_0 = 1, element-wise) and
//   ad_t = -kk_t G_t,  rd_t = r_t G_{t+1},  bd_s = kk_s a_s / G_{s+1},  kd_s = k_s / G_{s+1}:
//   S_t   = S diag(G_{t+1}) + sum_{s<=t} (sa_s bd_s^T + v_s kd_s^T) diag(G_{t+1})
//   sa_t  = S ad_t + sum_{s<t} (A_ts sa_s + B_ts v_s),     A_ts = ad_t . bd_s,  B_ts = ad_t . kd_s
//   y_t   = S rd_t + sum_{s<=t} (Qb_ts sa_s + Qk_ts v_s),  Qb_ts = rd_t . bd_s, Qk_ts = rd_t . kd_s
//   S_L-1 = S diag(G_L) + sum_s (sa_s (bd_s G_L)^T + v_s (kd_s G_L)^T)
// The sa_t are a lower-triangular system, solved by forward substitution. Each term of a dot
// product above carries a ratio G_t / G_{s+1} <= 1 (t > s), so no term exceeds the recurrence's
// own; the ratios are formed from G and 1/G, which stay normal floats while every w >= 0.01
// (0.01^16 = 1e-32). The model's decay is >= 0.545 (rwkv7_math.h, Decay).
//
// Work division: a block owns kRows of a head's 64 state rows (64, 32 or 16: fewer rows, more
// blocks, for steps with few sequences) and runs kThreads threads; row i of the block is state row
// i0 + i. Per chunk: Prepare, Products, Solve, Finish, a barrier after each.
//
// The raw form (a prefill step's time-mixing inputs as the products leave them, kRawInputs) adds
// PrepareRaw before them: LaunchPrepareWkv's arithmetic on the staged rows (the decay, the ICLR's
// sigmoid, the key with it, the value residual, the key's normalisation), and writes the prepared
// key and value that GroupNorm + gate read after the recurrence. A block stages and prepares the
// value rows of its own state rows only (the only ones it reads), and the key norm's sum is taken
// by every thread over the staged row (a read-only phase after a barrier), so that the phases
// stay functions of the thread index that the host emulation runs.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>

#include "engine/cuda/rwkv7_math.h"  // MODRWKV_HD

// Unrolled in the device pass only (host compilers do not know the pragma).
#if defined(__CUDA_ARCH__)
#define MODRWKV_UNROLL _Pragma("unroll")
#else
#define MODRWKV_UNROLL
#endif

namespace modrwkv::cuda::wkv_chunked {

constexpr int kN = 64;         // head size
constexpr int kL = 16;         // tokens per chunk
constexpr int kThreads = 256;  // threads per block
static_assert(kThreads == kL * kL, "Products: a thread per (t, s) pair");
static_assert(kThreads == 4 * kN && kL % 4 == 0, "Prepare: 4 threads per column, kL/4 tokens each");

// A chunk's inputs as staged: [kInputs][kL][kN], each a token's row of head h. The raw form stages
// kRawInputs: r and the raw w, k, a, v, and (after the first layer) the value residual's v_first
// and gate, kKK being computed; its kVFirst buffer then holds the unnormalised kk (k * k_k).
enum Input { kR, kW, kK, kKK, kA, kV, kVFirst, kVGate };
constexpr int kInputs = kVFirst;
constexpr int kRawInputs = kVGate + 1;
// The inputs a block stages: kRawInputs in the raw form, else kInputs.
template <bool kRaw>
inline constexpr int kStagedInputs = kRaw ? kRawInputs : kInputs;

// A block's shared memory (dynamic: 85 KB at 64 rows, 101 KB in the raw form).
template <int kRows, int kIn = kInputs>
struct alignas(16) Shared {
  static_assert(kIn == kInputs || kIn == kRawInputs);
  static_assert(kRows == 64 || kRows == 32 || kRows == 16);
  // Double-buffered inputs; Prepare turns the current chunk's r, kk, a, k into rd, ad, bd, kd in
  // place, and Solve scales bd and kd by G_L.
  float in[2][kIn][kL][kN];
  float g[kL + 1][kN];                                   // G_t
  float am[kL][kL], bm[kL][kL], qb[kL][kL], qk[kL][kL];  // A, B (s < t), Qb, Qk (s <= t); else 0
  float xs[kL][kRows];                                   // S ad_t
  float ys[kL][kRows];                                   // S rd_t, then plus sum_{s<=t} Qk_ts v_s
  float u[kL][kRows];                                    // sa_t
  float s[kRows][kN + 1];  // the block's state rows, padded: row i, column j is bank (i + j) % 32
};

struct F4 {
  float x, y, z, w;
};

// Four consecutive floats of shared memory (16-byte aligned): one 16-byte load on the device.
MODRWKV_HD F4 Load4(const float* p) {
#if defined(__CUDA_ARCH__)
  const float4 v = *reinterpret_cast<const float4*>(p);
  return {v.x, v.y, v.z, v.w};
#else
  return {p[0], p[1], p[2], p[3]};
#endif
}

MODRWKV_HD float Dot4(float acc, const F4& a, const F4& b) {
  acc += a.x * b.x;
  acc += a.y * b.y;
  acc += a.z * b.z;
  acc += a.w * b.w;
  return acc;
}

// The raw form's per-channel parameters (the model's vectors at the thread's channel h*64 + j).
struct RawChannel {
  float w0, a0, k_k, k_a, v0;  // v0: 0 in the first layer
};

// Where the raw form writes the chunk's prepared rows (row t of the head at ptr + t * ld, column
// j): the key k' (the block of rows 0..kRows-1 writes it), the value v' of the block's own rows
// (may be the raw v's rows: a block reads only its own), and in the first layer v_first (its own
// rows).
struct RawOut {
  float* k;
  float* v;
  float* v_first;
  int64_t ld;
};

// Phase 0 (the raw form): the chunk's staged raw rows prepared in place (PrepareWkvKernel's
// arithmetic): w the decay, a the ICLR's sigmoid, k the key with it, v the value residual (own
// rows), kk unnormalised into the kVFirst buffer (Prepare normalises it); the prepared k and v
// written out. Thread: column j, the kL/4 tokens from t0, as Prepare.
template <int kRows>
MODRWKV_HD void PrepareRaw(int tid, int n, Shared<kRows, kRawInputs>& m, int buf, int i0,
                           bool first_layer, const RawChannel& p, const RawOut& out) {
  float(*x)[kL][kN] = m.in[buf];
  const int j = tid % kN;
  const int t0 = (tid / kN) * (kL / 4);
  const bool own = j >= i0 && j < i0 + kRows;
  MODRWKV_UNROLL
  for (int t = t0; t < t0 + kL / 4; ++t) {
    if (t >= n) break;
    const float av = math::Sigmoid(x[kA][t][j] + p.a0);
    const float k_raw = x[kK][t][j];
    x[kW][t][j] = math::Decay(x[kW][t][j] + p.w0);
    x[kA][t][j] = av;
    x[kK][t][j] = math::KeyWithIclr(k_raw, av, p.k_a);
    if (i0 == 0) out.k[t * out.ld + j] = x[kK][t][j];
    if (own) {
      const float v_raw = x[kV][t][j];
      if (first_layer) {
        out.v_first[t * out.ld + j] = v_raw;
      } else {
        x[kV][t][j] = math::ValueResidual(v_raw, x[kVFirst][t][j], x[kVGate][t][j] + p.v0);
      }
      out.v[t * out.ld + j] = x[kV][t][j];
    }
    x[kVFirst][t][j] = k_raw * p.k_k;  // read above (own rows) by this thread only
  }
}

// The normalised kk of column j of token t (t < n), in the raw form: the staged k * k_k over the
// row's L2 norm, the sum of squares in column order (every thread of the token takes the same).
MODRWKV_HD float NormalizedKey(const float (*x)[kL][kN], int t, int j) {
  float ss = 0.0f;
  MODRWKV_UNROLL
  for (int c = 0; c < kN; c += 4) {
    const F4 q = Load4(&x[kVFirst][t][c]);
    ss = Dot4(ss, q, q);
  }
  return x[kVFirst][t][j] * math::InvL2(ss);
}

// Phase 1: G, and rd, ad, bd, kd in place of r, kk, a, k. Tokens n..kL-1 (a short last chunk)
// become zeros with w = 1, which add nothing and leave the state as it is. Thread: column j, the
// kL/4 tokens from t0 (it forms the running product of the tokens before t0 itself).
template <int kRows, int kIn>
MODRWKV_HD void Prepare(int tid, int n, Shared<kRows, kIn>& m, int buf) {
  float(*x)[kL][kN] = m.in[buf];
  const int j = tid % kN;
  const int t0 = (tid / kN) * (kL / 4);
  float g = 1.0f;
  for (int t = 0; t < t0; ++t) g *= t < n ? x[kW][t][j] : 1.0f;
  if (t0 == 0) m.g[0][j] = 1.0f;
  MODRWKV_UNROLL
  for (int t = t0; t < t0 + kL / 4; ++t) {
    if (t < n) {
      const float g_before = g;
      g *= x[kW][t][j];
      const float inv = 1.0f / g;
      const float kk = kIn == kRawInputs ? NormalizedKey(x, t, j) : x[kKK][t][j];
      x[kR][t][j] *= g;
      x[kA][t][j] = kk * x[kA][t][j] * inv;
      x[kK][t][j] *= inv;
      x[kKK][t][j] = -kk * g_before;
    } else {
      x[kR][t][j] = 0.0f;
      x[kKK][t][j] = 0.0f;
      x[kA][t][j] = 0.0f;
      x[kK][t][j] = 0.0f;
      x[kV][t][j] = 0.0f;
    }
    m.g[t + 1][j] = g;
  }
}

// Phase 2: the four kL x kL matrices (thread: the pair t = tid / kL, s = tid % kL), and S ad_t,
// S rd_t for the block's rows (thread: row i, kL * kRows / kThreads consecutive tokens).
template <int kRows, int kIn>
MODRWKV_HD void Products(int tid, Shared<kRows, kIn>& m, int buf) {
  const float(*x)[kL][kN] = m.in[buf];
  {
    const int t = tid / kL, s = tid % kL;
    float am = 0.0f, bm = 0.0f, qb = 0.0f, qk = 0.0f;
    if (s <= t) {
      MODRWKV_UNROLL
      for (int c = 0; c < kN / 4; ++c) {
        // Each s starts at another 16-byte column: the 16 rows a warp reads hit distinct banks.
        const int j = 4 * ((c + s) % (kN / 4));
        const F4 ad = Load4(&x[kKK][t][j]), rd = Load4(&x[kR][t][j]);
        const F4 bd = Load4(&x[kA][s][j]), kd = Load4(&x[kK][s][j]);
        am = Dot4(am, ad, bd);
        bm = Dot4(bm, ad, kd);
        qb = Dot4(qb, rd, bd);
        qk = Dot4(qk, rd, kd);
      }
    }
    m.am[t][s] = s < t ? am : 0.0f;
    m.bm[t][s] = s < t ? bm : 0.0f;
    m.qb[t][s] = qb;
    m.qk[t][s] = qk;
  }
  {
    constexpr int kT = kL * kRows / kThreads;
    const int i = tid % kRows, t0 = (tid / kRows) * kT;
    float xs[kT], ys[kT];
    MODRWKV_UNROLL
    for (int u = 0; u < kT; ++u) xs[u] = ys[u] = 0.0f;
    MODRWKV_UNROLL
    for (int j = 0; j < kN; j += 4) {
      const F4 s4 = {m.s[i][j], m.s[i][j + 1], m.s[i][j + 2], m.s[i][j + 3]};
      MODRWKV_UNROLL
      for (int u = 0; u < kT; ++u) {
        xs[u] = Dot4(xs[u], s4, Load4(&x[kKK][t0 + u][j]));
        ys[u] = Dot4(ys[u], s4, Load4(&x[kR][t0 + u][j]));
      }
    }
    MODRWKV_UNROLL
    for (int u = 0; u < kT; ++u) {
      m.xs[t0 + u][i] = xs[u];
      m.ys[t0 + u][i] = ys[u];
    }
  }
}

// Phase 3: the sa_t of each of the block's rows by forward substitution (threads 0..kRows-1, one
// row each); meanwhile the other threads add sum_{s<=t} Qk_ts v_s to ys and scale bd, kd by G_L.
template <int kRows, int kIn>
MODRWKV_HD void Solve(int tid, Shared<kRows, kIn>& m, int buf, int i0) {
  float(*x)[kL][kN] = m.in[buf];
  if (tid < kRows) {
    const int i = tid;
    float acc[kL];
    MODRWKV_UNROLL
    for (int t = 0; t < kL; ++t) {
      float a = m.xs[t][i];
      for (int s = 0; s < t; ++s) a += m.bm[t][s] * x[kV][s][i0 + i];
      acc[t] = a;
    }
    // Each sa_s, once known, goes into the later tokens' sums: a chain of kL steps, not kL^2/2.
    MODRWKV_UNROLL
    for (int s = 0; s < kL; ++s) {
      const float sa = acc[s];
      m.u[s][i] = sa;
      MODRWKV_UNROLL
      for (int t = s + 1; t < kL; ++t) acc[t] += m.am[t][s] * sa;
    }
    return;
  }
  for (int e = tid - kRows; e < kL * kRows; e += kThreads - kRows) {
    const int t = e / kRows, i = e % kRows;
    float y = m.ys[t][i];
    for (int s = 0; s <= t; ++s) y += m.qk[t][s] * x[kV][s][i0 + i];
    m.ys[t][i] = y;
  }
  for (int e = tid - kRows; e < kL * kN; e += kThreads - kRows) {
    const int s = e / kN, j = e % kN;
    x[kA][s][j] *= m.g[kL][j];
    x[kK][s][j] *= m.g[kL][j];
  }
}

// Phase 4: the chunk's outputs y_t (t < n) into y (row t at y + t * ldy + i0 + i), and the state
// after the chunk (thread: column j, every fourth row).
template <int kRows, int kIn>
MODRWKV_HD void Finish(int tid, int n, Shared<kRows, kIn>& m, int buf, int i0, float* y,
                       int64_t ldy) {
  const float(*x)[kL][kN] = m.in[buf];
  {
    constexpr int kT = kL * kRows / kThreads;
    const int i = tid % kRows, t0 = (tid / kRows) * kT;
    MODRWKV_UNROLL
    for (int u = 0; u < kT; ++u) {
      const int t = t0 + u;
      if (t >= n) break;
      float out = m.ys[t][i];
      for (int s = 0; s <= t; ++s) out += m.qb[t][s] * m.u[s][i];
      y[t * ldy + i0 + i] = out;
    }
  }
  const int j = tid % kN;
  float bd[kL], kd[kL];
  MODRWKV_UNROLL
  for (int s = 0; s < kL; ++s) {
    bd[s] = x[kA][s][j];
    kd[s] = x[kK][s][j];
  }
  const float g_last = m.g[kL][j];
  for (int i = tid / kN; i < kRows; i += kThreads / kN) {
    float sv = m.s[i][j] * g_last;
    MODRWKV_UNROLL
    for (int s = 0; s < kL; ++s) {
      sv += m.u[s][i] * bd[s];
      sv += x[kV][s][i0 + i] * kd[s];
    }
    m.s[i][j] = sv;
  }
}

// Whether a block of the raw form (rows i0..i0+kRows-1) stages column j of input p: kk is
// computed, not staged; the value rows and the value residual's only where the block reads them
// (its own rows; the first layer has no v_first or gate to read).
MODRWKV_HD bool RawStaged(int p, int j, int i0, int rows, bool first_layer) {
  if (p == kKK) return false;
  const bool own = j >= i0 && j < i0 + rows;
  if (p == kV) return own;
  if (p == kVFirst || p == kVGate) return own && !first_layer;
  return true;
}

// ---- the host emulation (tests) ----

// The kernel's work for one head, on the host: each block of kRows rows in turn, each phase run
// for every thread before the next, as the kernel's barriers order them. state: [64][64], updated
// in place; src[p] the head's column 0 of input p's row 0 (row t at src[p] + t * ld); y likewise.
// Staging copies only a chunk's tokens (and the columns staged(p, j, i0) names), as the kernel's
// does, into shared memory that starts as NaN, so a phase that read what no one wrote would show.
// phase0(tid, n, m, buf, i0, tc) runs before Prepare (the raw form's PrepareRaw).
template <int kRows, int kIn, typename Staged, typename Phase0>
void EmulateBlocks(float* state, int T, const float* const* src, int64_t ld, float* y, int64_t ldy,
                   Staged staged, Phase0 phase0) {
  for (int i0 = 0; i0 < kN; i0 += kRows) {
    auto m = std::make_unique<Shared<kRows, kIn>>();
    std::fill_n(reinterpret_cast<float*>(m.get()), sizeof(Shared<kRows, kIn>) / sizeof(float),
                std::numeric_limits<float>::quiet_NaN());
    for (int i = 0; i < kRows; ++i) std::copy_n(state + (i0 + i) * kN, kN, m->s[i]);
    int buf = 0;
    for (int tc = 0; tc < T; tc += kL, buf ^= 1) {
      const int n = std::min(kL, T - tc);
      for (int p = 0; p < kIn; ++p) {
        for (int t = 0; t < n; ++t) {
          for (int j = 0; j < kN; ++j) {
            if (staged(p, j, i0)) m->in[buf][p][t][j] = src[p][(tc + t) * ld + j];
          }
        }
      }
      for (int tid = 0; tid < kThreads; ++tid) phase0(tid, n, *m, buf, i0, tc);
      for (int tid = 0; tid < kThreads; ++tid) Prepare(tid, n, *m, buf);
      for (int tid = 0; tid < kThreads; ++tid) Products(tid, *m, buf);
      for (int tid = 0; tid < kThreads; ++tid) Solve(tid, *m, buf, i0);
      for (int tid = 0; tid < kThreads; ++tid) Finish(tid, n, *m, buf, i0, y + tc * ldy, ldy);
    }
    for (int i = 0; i < kRows; ++i) std::copy_n(m->s[i], kN, state + (i0 + i) * kN);
  }
}

// The chunked kernel on prepared rows (LaunchWkv7's arguments for one head).
template <int kRows>
void EmulateChunkedHead(float* state, int T, const float* r, const float* w, const float* k,
                        const float* v, const float* kk, const float* a, int64_t ld, float* y,
                        int64_t ldy) {
  const float* src[kInputs] = {r, w, k, kk, a, v};
  EmulateBlocks<kRows, kInputs>(
      state, T, src, ld, y, ldy, [](int, int, int) { return true; },
      [](int, int, Shared<kRows>&, int, int, int) {});
}

// The raw form for one head: raw[p] as in Input (raw[kKK] unused; raw[kVFirst], raw[kVGate]
// unused in the first layer), channels[j] the head's parameters, out the prepared rows' outputs
// (row t of the head at out.k + t * out.ld, ...).
template <int kRows>
void EmulateChunkedHeadRaw(float* state, int T, const float* const* raw, int64_t ld,
                           bool first_layer, const RawChannel* channels, const RawOut& out,
                           float* y, int64_t ldy) {
  EmulateBlocks<kRows, kRawInputs>(
      state, T, raw, ld, y, ldy,
      [&](int p, int j, int i0) { return RawStaged(p, j, i0, kRows, first_layer); },
      [&](int tid, int n, Shared<kRows, kRawInputs>& m, int buf, int i0, int tc) {
        const RawOut at{out.k + tc * out.ld, out.v + tc * out.ld,
                        out.v_first == nullptr ? nullptr : out.v_first + tc * out.ld, out.ld};
        PrepareRaw(tid, n, m, buf, i0, first_layer, channels[tid % kN], at);
      });
}

}  // namespace modrwkv::cuda::wkv_chunked
