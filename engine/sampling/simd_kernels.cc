// The sampler's vector kernels: branch-free O(vocab) passes, each compiled for AVX2 and for the
// baseline and picked at load time (see simd_kernels_inl.h).
#include "engine/sampling/simd_kernels.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/sampling/simd_kernels_inl.h"

namespace modrwkv::sampling_internal {

// Four independent chains of 8 lanes, each lane keeping its first maximum.
MODRWKV_VECTOR_CLONES ArgMax ArgMaxKernel(const float* l, size_t n) {
  constexpr size_t kChains = 4;
  F8 best[kChains];
  I8 idx[kChains];
  for (size_t c = 0; c < kChains; ++c) {
    best[c] = Splat(-kInf);
    idx[c] = I8{} - 1;
  }
  I8 at = I8{0, 1, 2, 3, 4, 5, 6, 7};
  size_t i = 0;
  for (; i + kChains * kW <= n; i += kChains * kW) {
    for (size_t c = 0; c < kChains; ++c) {
      const F8 v = Load8(l + i + c * kW);
      const I8 gt = v > best[c];
      best[c] = Select8(gt, v, best[c]);
      idx[c] = (gt & (at + static_cast<int32_t>(c * kW))) | (~gt & idx[c]);
    }
    at += static_cast<int32_t>(kChains * kW);
  }
  ArgMax r;
  for (size_t c = 0; c < kChains; ++c) {
    for (size_t j = 0; j < kW; ++j) {
      if (idx[c][j] < 0) continue;
      if (best[c][j] > r.value || (best[c][j] == r.value && idx[c][j] < r.index)) {
        r = {best[c][j], idx[c][j]};
      }
    }
  }
  for (; i < n; ++i) {  // the tail holds the highest indices: strict > keeps ties on the left
    if (l[i] > r.value) r = {l[i], static_cast<int32_t>(i)};
  }
  return r;
}

// Two accumulators hide the vector add's latency.
MODRWKV_VECTOR_CLONES double ExpKernel(const float* l, float* e, size_t n, float max, float scale,
                                       double* block_sum) {
  double total = 0;
  for (size_t b = 0; b * kBlock < n; ++b) {
    const size_t end = std::min(n, (b + 1) * kBlock);
    F8 acc0{};
    F8 acc1{};
    size_t i = b * kBlock;
    for (; i + 2 * kW <= end; i += 2 * kW) {
      const F8 v0 = Exp2x8((Load8(l + i) - max) * scale);
      const F8 v1 = Exp2x8((Load8(l + i + kW) - max) * scale);
      Store8(e + i, v0);
      Store8(e + i + kW, v1);
      acc0 += v0;
      acc1 += v1;
    }
    double sum = 0;
    for (size_t j = 0; j < kW; ++j) sum += static_cast<double>(acc0[j]) + acc1[j];
    for (; i < end; ++i) {
      e[i] = Exp2NonPositive((l[i] - max) * scale);
      sum += e[i];
    }
    block_sum[b] = sum;
    total += sum;
  }
  return total;
}

MODRWKV_VECTOR_CLONES void ThresholdMassKernel(const float* e, size_t n, double* mass,
                                               int64_t* count) {
  F8 acc[kNumThresholds] = {};
  I8 cnt[kNumThresholds] = {};
  size_t i = 0;
  for (; i + kW <= n; i += kW) {
    const F8 v = Load8(e + i);
    for (int k = 0; k < kNumThresholds; ++k) {
      const I8 hit = v >= kNucleusThresholds[k];
      acc[k] += reinterpret_cast<F8>(reinterpret_cast<I8>(v) & hit);
      cnt[k] -= hit;
    }
  }
  for (int k = 0; k < kNumThresholds; ++k) {
    double s = 0;
    int64_t c = 0;
    for (size_t j = 0; j < kW; ++j) {
      s += acc[k][j];
      c += cnt[k][j];
    }
    for (size_t t = i; t < n; ++t) {
      if (e[t] >= kNucleusThresholds[k]) {
        s += e[t];
        ++c;
      }
    }
    mass[k] = s;
    count[k] = c;
  }
}

MODRWKV_VECTOR_CLONES void CountAboveKernel(const float* l, size_t n, float max, int64_t* count) {
  I8 acc[kNumTopKDeltas] = {};
  size_t i = 0;
  for (; i + kW <= n; i += kW) {
    const F8 v = Load8(l + i);
    for (int j = 0; j < kNumTopKDeltas; ++j) acc[j] -= v >= (max - kTopKDeltas[j]);  // -1 = hit
  }
  for (int j = 0; j < kNumTopKDeltas; ++j) {
    int64_t c = 0;
    for (size_t t = 0; t < kW; ++t) c += acc[j][t];
    for (size_t t = i; t < n; ++t) c += l[t] >= max - kTopKDeltas[j];
    count[j] = c;
  }
}

// Skips 32-token chunks with no hit.
MODRWKV_VECTOR_CLONES void CollectAboveKernel(const float* l, size_t n, float threshold,
                                              std::vector<Cand>* out) {
  constexpr size_t kChunk = 4 * kW;
  const F8 t = Splat(threshold);
  size_t i = 0;
  for (; i + kChunk <= n; i += kChunk) {
    if (!AnyLane((Load8(l + i) >= t) | (Load8(l + i + kW) >= t) | (Load8(l + i + 2 * kW) >= t) |
                 (Load8(l + i + 3 * kW) >= t))) {
      continue;
    }
    for (size_t j = i; j < i + kChunk; ++j) {
      if (l[j] >= threshold) out->push_back({l[j], static_cast<int32_t>(j)});
    }
  }
  for (; i < n; ++i) {
    if (l[i] >= threshold) out->push_back({l[i], static_cast<int32_t>(i)});
  }
}

MODRWKV_VECTOR_CLONES size_t SkipNotAboveKernel(const float* l, size_t i, size_t n, float t) {
  const F8 tv = Splat(t);
  for (; i + kSkipChunk <= n; i += kSkipChunk) {
    if (AnyLane((Load8(l + i) > tv) | (Load8(l + i + kW) > tv) | (Load8(l + i + 2 * kW) > tv) |
                (Load8(l + i + 3 * kW) > tv))) {
      break;
    }
  }
  return i;
}

MODRWKV_VECTOR_CLONES double MaskKernel(float* e, size_t n, Cand cut, float min_p,
                                        double* block_sum) {
  double total = 0;
  const F8 cut_v = Splat(cut.v);
  for (size_t b = 0; b * kBlock < n; ++b) {
    const size_t end = std::min(n, (b + 1) * kBlock);
    F8 acc{};
    size_t i = b * kBlock;
    I8 ids = I8{0, 1, 2, 3, 4, 5, 6, 7} + static_cast<int32_t>(i);
    for (; i + kW <= end; i += kW, ids += static_cast<int32_t>(kW)) {
      const F8 v = Load8(e + i);
      const I8 keep = ((v > cut_v) | ((v == cut_v) & (ids <= cut.id))) & (v >= min_p);
      const F8 kept = reinterpret_cast<F8>(reinterpret_cast<I8>(v) & keep);
      Store8(e + i, kept);
      acc += kept;
    }
    double sum = 0;
    for (size_t j = 0; j < kW; ++j) sum += acc[j];
    for (; i < end; ++i) {
      const bool keep = !Better(cut, {e[i], static_cast<int32_t>(i)}) && e[i] >= min_p;
      e[i] = keep ? e[i] : 0.0f;
      sum += e[i];
    }
    block_sum[b] = sum;
    total += sum;
  }
  return total;
}

}  // namespace modrwkv::sampling_internal
