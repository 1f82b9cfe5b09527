// The sampler's O(vocab) passes over logits and relative probabilities (vector kernels, one
// version per CPU level, picked at load time) and the constants and scalar math they share.
// Internal to engine/sampling.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace modrwkv::sampling_internal {

inline constexpr float kInf = std::numeric_limits<float>::infinity();
inline constexpr size_t kBlock =
    256;  // tokens per block (a multiple of 8); lets the draw skip ahead
inline constexpr size_t kSkipChunk = 32;  // tokens per SkipNotAboveKernel step (4 vectors)
// Probability thresholds (relative to the most likely token) used to bound the top-p candidates.
inline constexpr float kNucleusThresholds[] = {0x1p-3f, 0x1p-6f, 0x1p-10f, 0x1p-14f, 0x1p-20f};
inline constexpr int kNumThresholds = sizeof(kNucleusThresholds) / sizeof(kNucleusThresholds[0]);
// How many logits are >= max - kTopKDeltas[j], for each j (CountAboveKernel).
inline constexpr float kTopKDeltas[] = {0.5f, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64};
inline constexpr int kNumTopKDeltas = sizeof(kTopKDeltas) / sizeof(kTopKDeltas[0]);

// 2^y for y <= 0: 2^round(y) times a degree-6 polynomial for 2^f, |f| <= 1/2 (Taylor; relative
// error below 2e-7, less than the rounding already in y = (logit - max) * scale); exactly 1 at 0,
// exactly 0 below -126 (float would go denormal), at -inf and for NaN. Exp2x8 (simd_kernels_inl.h)
// performs the same float operations lane by lane as the scalar Exp2NonPositive, so both give the
// same bits.
inline constexpr float kExp2Min = -126.0f;
inline constexpr float kExp2C[] = {1.5403530e-4f, 1.3333558e-3f, 9.6181291e-3f,
                                   5.5504109e-2f, 2.4022651e-1f, 6.9314718e-1f};
inline float Exp2NonPositive(float y) {
  const bool in_range = y >= kExp2Min;
  const float yc = in_range ? y : kExp2Min;
  const float n = (yc + 12582912.0f) - 12582912.0f;
  const float f = yc - n;
  float p = kExp2C[0];
  for (int k = 1; k < 6; ++k) p = p * f + kExp2C[k];
  p = p * f + 1.0f;
  return in_range ? p * std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23) : 0.0f;
}
// Scale that turns (logit - max) into a base-2 exponent at temperature 1 / inv_t, capped so that
// a tiny temperature cannot turn 0 * scale into NaN.
inline float Exp2Scale(double inv_t) {
  return static_cast<float>(
      std::min(inv_t * 1.4426950408889634, static_cast<double>(std::numeric_limits<float>::max())));
}

struct Cand {
  float v;  // a logit or a relative probability, depending on the stage
  int32_t id;
};
// Strict total order: larger value first, then lower id.
inline bool Better(const Cand& a, const Cand& b) {
  return a.v > b.v || (a.v == b.v && a.id < b.id);
}

struct ArgMax {
  float value = -kInf;
  int32_t index = -1;  // -1 when no entry is above -inf
};

// Largest entry and its lowest index; NaN entries are ignored.
ArgMax ArgMaxKernel(const float* l, size_t n);

// e[i] = 2^((l[i] - max) * scale) = exp((l[i] - max) / T); writes each block's sum
// ([ceil(n / kBlock)]) and returns the total.
double ExpKernel(const float* l, float* e, size_t n, float max, float scale, double* block_sum);

// mass[k] = sum and count[k] = number of the e[i] >= kNucleusThresholds[k] ([kNumThresholds]).
void ThresholdMassKernel(const float* e, size_t n, double* mass, int64_t* count);

// count[j] = number of l[i] >= max - kTopKDeltas[j] ([kNumTopKDeltas]).
void CountAboveKernel(const float* l, size_t n, float max, int64_t* count);

// Appends {l[i], i} for every l[i] >= threshold, in increasing id order.
void CollectAboveKernel(const float* l, size_t n, float threshold, std::vector<Cand>* out);

// Returns the start of the first kSkipChunk-token chunk at or after i with a value above t, or the
// start of the last, partial chunk.
size_t SkipNotAboveKernel(const float* l, size_t i, size_t n, float t);

// Keeps e[i] only where token i is in the nucleus (i.e. not worse than `cut`) and e[i] >= min_p;
// rewrites the block sums and returns the new total.
double MaskKernel(float* e, size_t n, Cand cut, float min_p, double* block_sum);

}  // namespace modrwkv::sampling_internal
