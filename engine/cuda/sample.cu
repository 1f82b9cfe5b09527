// The device draw (see sample.cuh): one block of 1024 threads per row.
//
//   1. the row's edits, in place;
//   2. the argmax (NaN ignored, lowest id on ties): decides greedy, +inf and all--inf rows;
//      rows that report logprobs get them here (log Z and the top-n list, one block-wide best
//      per entry);
//   3. p = exp((v - max) / T), computed where it is read (RelativeProbs) rather than stored: the
//      logits stay as edited, so the chosen token's logprob is exact;
//   4. the kept set as a prefix of the "better" order (p descending, lower id first), held as a
//      threshold T and a tie count n: every token with p > T, and the first n (by id) with p == T.
//      top-k and then top-p find theirs by radix selection on the bits of p (p >= 0, so its bits
//      order like its values), 8 bits a pass, with a 256-bin histogram in shared memory (counts
//      for top-k, fixed-point masses for top-p; one atomic per distinct bin per warp); min-p
//      then drops p < min_p;
//   5. the draw in id order: pass A sums the kept mass of each chunk of 1024 ids (and counts the
//      ties before it, for the tie ranks), thread 0 finds the chunk holding u x total, pass B scans
//      that chunk for the token.
#include "absl/strings/str_cat.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/launch.cuh"
#include "engine/cuda/sample.cuh"

namespace modrwkv::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxChunks = kMaxDrawVocab / kThreads;
constexpr double kFixScale = 1099511627776.0;  // 2^40
constexpr double kTopPRelTolerance = 1e-6;     // as the Sampler's
constexpr unsigned kFull = 0xffffffffu;

using u64 = unsigned long long;

__device__ __forceinline__ u64 Fix(float p) {
  return static_cast<u64>(static_cast<double>(p) * kFixScale + 0.5);
}

// (value, index) a beats b: larger value, or equal and lower index (-1 = none).
__device__ __forceinline__ bool Beats(float av, int ai, float bv, int bi) {
  if (ai < 0) return false;
  if (bi < 0) return true;
  return av > bv || (av == bv && ai < bi);
}

// Inclusive scan over the block (blockDim.x == kThreads); *total gets the block's sum. Integer
// sums, so the result does not depend on the order of the additions. `warp_sums` holds kWarps
// values of shared memory; the call synchronises the block.
template <typename T>
__device__ T BlockInclusiveScan(T v, T* warp_sums, T* total) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int o = 1; o < 32; o <<= 1) {
    const T n = __shfl_up_sync(kFull, v, o);
    if (lane >= o) v += n;
  }
  __syncthreads();  // the previous call's readers are done with warp_sums
  if (lane == 31) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T w = warp_sums[lane];
    for (int o = 1; o < 32; o <<= 1) {
      const T n = __shfl_up_sync(kFull, w, o);
      if (lane >= o) w += n;
    }
    warp_sums[lane] = w;
  }
  __syncthreads();
  *total = warp_sums[kWarps - 1];
  return v + (warp > 0 ? warp_sums[warp - 1] : T(0));
}

struct Shared {
  u64 mass_hist[256];
  int count_hist[256];
  u64 chunk_mass[kMaxChunks];
  int chunk_ties_before[kMaxChunks];
  u64 scan_u64[kWarps];
  double scan_f64[kWarps];
  int scan_int[kWarps];
  float best_v[kWarps];
  int best_i[kWarps];
  // Broadcasts from thread 0.
  uint32_t bits;
  long long want;
  int chosen;
  int chunk;
  u64 target;
};

// Adds one to count_hist[key] (and `mass` to mass_hist[key] when with_mass) for every lane, one
// shared-memory atomic per distinct key in the warp: most probabilities share their top bits, and
// a plain atomic per element would serialise on a few bins. Key 256 adds nothing. All 32 lanes
// of the warp must call it together.
__device__ void WarpAggregatedAdd(unsigned key, u64 mass, bool with_mass, Shared& sh) {
  const unsigned peers = __match_any_sync(kFull, key);
  u64 sum = 0;
  if (with_mass) {
    for (unsigned m = peers; m != 0; m &= m - 1) sum += __shfl_sync(peers, mass, __ffs(m) - 1);
  }
  if (static_cast<int>(threadIdx.x % 32) == __ffs(peers) - 1 && key < 256) {
    if (with_mass) atomicAdd(&sh.mass_hist[key], sum);
    atomicAdd(&sh.count_hist[key], __popc(peers));
  }
}

// Step 3: a token's probability relative to the top one (which gets exactly 1; NaN and -inf get
// 0). The same expression at every read gives the same bits, so the passes below agree.
struct RelativeProbs {
  const float* logits;
  float max, scale;
  __device__ __forceinline__ float operator()(int i) const {
    const float v = logits[i];
    return v != v || v == -INFINITY ? 0.0f : expf(__fmul_rn(__fsub_rn(v, max), scale));
  }
};

// Step 4, top-k: the threshold and tie count of the first k tokens in "better" order.
__device__ void SelectTopK(const RelativeProbs& p, int V, int k, Shared& sh, uint32_t* thr,
                           int* ties) {
  uint32_t bits = 0, mask = 0;
  long long want = k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += kThreads) sh.count_hist[b] = 0;
    __syncthreads();
    for (int base = 0; base < V; base += kThreads) {  // every lane iterates alike
      const int i = base + static_cast<int>(threadIdx.x);
      const uint32_t x = i < V ? __float_as_uint(p(i)) : 0u;
      const unsigned key = i < V && (x & mask) == bits ? (x >> shift) & 255u : 256u;
      WarpAggregatedAdd(key, 0, false, sh);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      long long acc = 0;
      int bin = 0;
      for (int b = 255; b >= 0; --b) {
        if (acc + sh.count_hist[b] >= want) {
          bin = b;
          break;
        }
        acc += sh.count_hist[b];
      }
      sh.bits = bits | (static_cast<uint32_t>(bin) << shift);
      sh.want = want - acc;
    }
    __syncthreads();
    bits = sh.bits;
    want = sh.want;
    mask |= 255u << shift;
  }
  *thr = bits;
  *ties = static_cast<int>(want);
}

// Step 4, top-p: within the prefix (*thr, *ties), the shortest prefix whose mass reaches top_p of
// the prefix's mass (less the Sampler's tolerance); replaces (*thr, *ties).
__device__ void SelectTopP(const RelativeProbs& p, int V, float top_p, Shared& sh, uint32_t* thr,
                           int* ties) {
  const uint32_t thr0 = *thr;
  const int ties0 = *ties;
  const u64 tie_mass0 = static_cast<u64>(ties0) * Fix(__uint_as_float(thr0));
  u64 mine = 0;
  for (int i = threadIdx.x; i < V; i += kThreads) {
    const float v = p(i);
    if (__float_as_uint(v) > thr0) mine += Fix(v);
  }
  u64 total = 0;
  BlockInclusiveScan(mine, sh.scan_u64, &total);
  total += tie_mass0;
  const double need_d =
      static_cast<double>(top_p) * (1.0 - kTopPRelTolerance) * static_cast<double>(total);
  u64 need = need_d < 1.0 ? 1 : static_cast<u64>(need_d);
  uint32_t bits = 0, mask = 0;
  int count_at = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += kThreads) {
      sh.mass_hist[b] = 0;
      sh.count_hist[b] = 0;
    }
    __syncthreads();
    for (int base = 0; base < V; base += kThreads) {  // every lane iterates alike
      const int i = base + static_cast<int>(threadIdx.x);
      const float v = i < V ? p(i) : 0.0f;
      const uint32_t x = __float_as_uint(v);
      const bool in = i < V && x > thr0 && (x & mask) == bits;
      WarpAggregatedAdd(in ? (x >> shift) & 255u : 256u, in ? Fix(v) : 0, true, sh);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      if ((thr0 & mask) == bits && ties0 > 0) {  // the prefix's ties at thr0, all of one value
        const unsigned b = (thr0 >> shift) & 255u;
        sh.mass_hist[b] += tie_mass0;
        sh.count_hist[b] += ties0;
      }
      u64 acc = 0;
      int bin = -1;
      for (int b = 255; b >= 0; --b) {
        if (sh.count_hist[b] > 0 && acc + sh.mass_hist[b] >= need) {
          bin = b;
          break;
        }
        acc += sh.mass_hist[b];
      }
      sh.chosen = bin;
      if (bin >= 0) {
        sh.bits = bits | (static_cast<uint32_t>(bin) << shift);
        sh.target = need - acc;
        sh.want = sh.count_hist[bin];
      }
    }
    __syncthreads();
    if (sh.chosen < 0) return;  // rounding: the whole prefix is needed
    bits = sh.bits;
    need = sh.target;
    count_at = static_cast<int>(sh.want);
    mask |= 255u << shift;
    __syncthreads();  // everyone has read the broadcasts before thread 0 writes them again
  }
  const u64 unit = Fix(__uint_as_float(bits));
  long long n = unit > 0 ? static_cast<long long>((need + unit - 1) / unit) : count_at;
  n = n < 1 ? 1 : (n > count_at ? count_at : n);
  *thr = bits;
  *ties = static_cast<int>(n);
}

// The best (value, id) of the row — largest value, lowest id on ties; -inf and NaN never — among
// the tokens after (after_v, after_i) in that order (after_i < 0: all). (-inf, -1) if none. Every
// thread gets the answer.
__device__ void BlockBest(const float* p, int V, float after_v, int after_i, Shared& sh,
                          float* v_out, int* i_out) {
  float best = -INFINITY;
  int idx = -1;
  for (int i = threadIdx.x; i < V; i += kThreads) {  // increasing ids: strict > keeps the lowest
    const float v = p[i];
    if (after_i >= 0 && !(v < after_v || (v == after_v && i > after_i))) continue;
    if (v > best) {  // false for NaN and -inf
      best = v;
      idx = i;
    }
  }
  for (int s = 16; s > 0; s >>= 1) {
    const float ov = __shfl_xor_sync(kFull, best, s);
    const int oi = __shfl_xor_sync(kFull, idx, s);
    if (Beats(ov, oi, best, idx)) {
      best = ov;
      idx = oi;
    }
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // the previous call's readers are done with best_v / best_i
  if (lane == 0) {
    sh.best_v[warp] = best;
    sh.best_i[warp] = idx;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kWarps; ++w) {
      if (Beats(sh.best_v[w], sh.best_i[w], best, idx)) {
        best = sh.best_v[w];
        idx = sh.best_i[w];
      }
    }
    sh.best_v[0] = best;
    sh.best_i[0] = idx;
  }
  __syncthreads();
  *v_out = sh.best_v[0];
  *i_out = sh.best_i[0];
}

// The row's logprobs before step 3 (device_draw.h DeviceLogprobs; max is finite): the top_n
// list in *out, and log Z (the log-sum-exp of v - max), which every thread gets, for the chosen
// token's. Z is summed in double in a fixed order.
__device__ double RowLogprobs(const float* p, int V, float max, int top_n, Shared& sh,
                              DeviceLogprobs* out) {
  double z = 0;
  for (int i = threadIdx.x; i < V; i += kThreads) {
    const float v = p[i];
    if (v > -INFINITY) z += static_cast<double>(expf(v - max));
  }
  double total = 0;
  BlockInclusiveScan(z, sh.scan_f64, &total);
  const double log_z = log(total);
  float after_v = INFINITY;
  int after_i = -1, n = 0;
  for (; n < top_n; ++n) {
    float v;
    int i;
    BlockBest(p, V, after_v, after_i, sh, &v, &i);
    if (i < 0) break;
    if (threadIdx.x == 0) {
      out->ids[n] = i;
      out->values[n] = static_cast<float>(static_cast<double>(v) - max - log_z);
    }
    after_v = v;
    after_i = i;
  }
  if (threadIdx.x == 0) out->count = n;
  return log_z;
}

__global__ void __launch_bounds__(kThreads)
    DrawRowsKernel(float* logits, int V, const DeviceDraw* __restrict__ draws,
                   const int32_t* __restrict__ edit_offsets, const LogitEdit* __restrict__ edits,
                   int32_t* __restrict__ tokens, DeviceLogprobs* __restrict__ logprobs) {
  AllowSuccessor();
  WaitForPredecessor();
  __shared__ Shared sh;
  const int row = blockIdx.x;
  float* p = logits + static_cast<int64_t>(row) * V;
  const DeviceDraw d = draws[row];

  // 1. Edits (distinct tokens within a row).
  for (int e = edit_offsets[row] + threadIdx.x; e < edit_offsets[row + 1]; e += kThreads) {
    const LogitEdit x = edits[e];
    if (x.token < 0 || x.token >= V) continue;
    float v = p[x.token];
    if (x.banned) {
      v = -INFINITY;
    } else {
      // Explicitly rounded operations: a fused multiply-subtract would not be ApplyLogitEdits'.
      v = v > 0 ? __fdiv_rn(v, x.repetition) : __fmul_rn(v, x.repetition);
      v = __fsub_rn(v, x.subtract);
      v = __fadd_rn(v, x.add);
    }
    p[x.token] = v;
  }
  __syncthreads();

  // 2. Argmax (NaN ignored, lowest id on ties).
  float best;
  int idx;
  BlockBest(p, V, 0.0f, -1, sh, &best, &idx);

  // Logprobs: the list and log Z now; the chosen token's once it is known.
  DeviceLogprobs* lp = logprobs != nullptr && d.logprobs_top_n >= 0 ? &logprobs[row] : nullptr;
  double log_z = 0;
  if (lp != nullptr) {
    if (idx >= 0 && best < INFINITY) {
      log_z = RowLogprobs(p, V, best, min(d.logprobs_top_n, kMaxDeviceTopLogprobs), sh, lp);
    } else if (threadIdx.x == 0) {
      lp->count = 0;  // no distribution
    }
  }
  const float scale = 1.0f / d.temperature;  // +inf for a temperature too small to divide by
  if (idx < 0 || !(scale < INFINITY) || best == INFINITY) {
    if (threadIdx.x == 0) {
      tokens[row] = idx < 0 ? d.fallback : idx;
      if (lp != nullptr) {
        lp->logprob = idx < 0 ? -INFINITY : best == INFINITY ? 0.0f : static_cast<float>(-log_z);
      }
    }
    return;  // the whole block returns together
  }

  // 3. Relative probabilities, computed where read.
  const RelativeProbs probs{p, best, scale};

  // 4. The kept prefix: everything (threshold 0 with every zero a tie), then top-k, then top-p.
  uint32_t thr = 0;
  int ties = V;
  if (d.top_k > 0 && d.top_k < V) SelectTopK(probs, V, d.top_k, sh, &thr, &ties);
  if (d.top_p < 1.0f) SelectTopP(probs, V, d.top_p, sh, &thr, &ties);
  const float min_p = d.min_p;

  // 5. Pass A: each chunk's kept mass and the ties before it.
  const int chunks = (V + kThreads - 1) / kThreads;
  int ties_before = 0;
  for (int c = 0; c < chunks; ++c) {
    const int i = c * kThreads + threadIdx.x;
    const float v = i < V ? probs(i) : 0.0f;
    const uint32_t x = __float_as_uint(v);
    const int eq = i < V && x == thr ? 1 : 0;
    int eq_total = 0;
    const int rank = ties_before + BlockInclusiveScan(eq, sh.scan_int, &eq_total) - eq;
    const bool kept = i < V && (x > thr || (eq && rank < ties)) && v >= min_p;
    u64 mass_total = 0;
    BlockInclusiveScan(kept ? Fix(v) : u64{0}, sh.scan_u64, &mass_total);
    if (threadIdx.x == 0) {
      sh.chunk_mass[c] = mass_total;
      sh.chunk_ties_before[c] = ties_before;
    }
    ties_before += eq_total;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    u64 total = 0;
    for (int c = 0; c < chunks; ++c) total += sh.chunk_mass[c];
    tokens[row] = idx;  // overwritten below by exactly one thread, unless nothing is kept
    if (lp != nullptr) lp->logprob = static_cast<float>(-log_z);
    if (total == 0) {  // min_p above the top token's 1: the draw is the argmax
      sh.chunk = 0;
      sh.target = ~u64{0};  // passed by no running mass
    } else {
      u64 target = static_cast<u64>(d.u * static_cast<double>(total));
      if (target >= total) target = total - 1;
      int c = 0;
      while (target >= sh.chunk_mass[c]) target -= sh.chunk_mass[c++];
      sh.chunk = c;
      sh.target = target;
    }
  }
  __syncthreads();

  // Pass B: the token in the chosen chunk whose running mass passes the target.
  {
    const int c = sh.chunk;
    const u64 target = sh.target;
    const int i = c * kThreads + threadIdx.x;
    const float v = i < V ? probs(i) : 0.0f;
    const uint32_t x = __float_as_uint(v);
    const int eq = i < V && x == thr ? 1 : 0;
    int eq_total = 0;
    const int rank = sh.chunk_ties_before[c] + BlockInclusiveScan(eq, sh.scan_int, &eq_total) - eq;
    const bool kept = i < V && (x > thr || (eq && rank < ties)) && v >= min_p;
    const u64 m = kept ? Fix(v) : u64{0};
    u64 chunk_total = 0;
    const u64 incl = BlockInclusiveScan(m, sh.scan_u64, &chunk_total);
    if (m > 0 && incl - m <= target && target < incl) {  // exactly one thread
      tokens[row] = i;
      if (lp != nullptr) {
        lp->logprob = static_cast<float>(static_cast<double>(p[i]) - best - log_z);
      }
    }
  }
}

}  // namespace

absl::Status LaunchDrawRows(cudaStream_t stream, float* logits, int rows, int V,
                            const DeviceDraw* draws, const int32_t* edit_offsets,
                            const LogitEdit* edits, int32_t* tokens, DeviceLogprobs* logprobs) {
  if (rows < 0 || V <= 0 || V > kMaxDrawVocab) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchDrawRows: rows = ", rows, ", V = ", V,
                                                   " (expected 0 < V <= ", kMaxDrawVocab, ")"));
  }
  if (rows == 0) return absl::OkStatus();
  if (logits == nullptr || draws == nullptr || edit_offsets == nullptr || tokens == nullptr) {
    return absl::InvalidArgumentError("LaunchDrawRows: null device pointer");
  }
  return Launch("DrawRowsKernel", DrawRowsKernel, dim3(rows), dim3(kThreads), 0, stream, logits, V,
                draws, edit_offsets, edits, tokens, logprobs);
}

}  // namespace modrwkv::cuda
