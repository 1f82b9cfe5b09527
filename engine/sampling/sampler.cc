// Token sampler. Never sorts the vocabulary: every O(vocab) pass is a branch-free loop that the
// compiler vectorises, and sorting is confined to the few candidates that can matter.
#include "engine/sampling/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>

#include "absl/strings/str_format.h"
#include "engine/base/errors.h"
#include "engine/base/status_macros.h"

namespace modrwkv {
namespace {

// The O(vocab) kernels use GCC/Clang vector extensions (8 floats; two SSE registers or one AVX
// register) and, on x86-64 Linux, are compiled twice, for AVX2 and for the baseline, and picked
// at load time (function multi-versioning). No FMA in either: both versions round identically,
// so the tokens of a seeded run do not depend on which version the CPU gets.
#if defined(__x86_64__) && defined(__linux__) && defined(__clang__)
// Clang (used for the fuzz builds) refuses 32-byte vector arguments in the baseline clone even
// for always-inline helpers, so its builds take the AVX2 version only and need an AVX2 CPU.
#define MODRWKV_VECTOR_CLONES __attribute__((target("avx2")))
#elif defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && \
    !defined(__SANITIZE_THREAD__)
// (Not under ThreadSanitizer: target_clones resolves through an ifunc that runs before the TSan
// runtime is up and crashes the process at load.)
#define MODRWKV_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MODRWKV_VECTOR_CLONES
#endif
#if defined(__x86_64__) && defined(__linux__) && defined(__clang__)
#define MODRWKV_ALWAYS_INLINE inline __attribute__((always_inline, target("avx2")))
#else
#define MODRWKV_ALWAYS_INLINE inline __attribute__((always_inline))
#endif
#if defined(__GNUC__) && !defined(__clang__)
// The 32-byte vector helpers are always inlined, so no vector is ever passed by value across a
// call and GCC's "AVX vector return without AVX changes the ABI" note does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

using F8 = float __attribute__((vector_size(32)));
using I8 = int32_t __attribute__((vector_size(32)));
constexpr size_t kW = 8;  // floats per F8

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr size_t kBlock = 256;  // tokens per block (a multiple of kW); lets the draw skip ahead
// A nucleus whose mass equals top_p up to float rounding is not extended by one more token.
constexpr double kTopPRelTolerance = 1e-6;
// top_k above this collects candidates above a counted threshold instead of using a heap.
constexpr int kHeapTopKLimit = 64;
// A nucleus with at most this many candidates is drawn from the list, else from the masked buffer.
constexpr size_t kMaxListDraw = 4096;
// Probability thresholds (relative to the most likely token) used to bound the top-p candidates.
constexpr float kNucleusThresholds[] = {0x1p-3f, 0x1p-6f, 0x1p-10f, 0x1p-14f, 0x1p-20f};
constexpr int kNumThresholds = sizeof(kNucleusThresholds) / sizeof(kNucleusThresholds[0]);

MODRWKV_ALWAYS_INLINE F8 Load8(const float* p) {
  F8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
MODRWKV_ALWAYS_INLINE void Store8(float* p, F8 v) { std::memcpy(p, &v, sizeof(v)); }
MODRWKV_ALWAYS_INLINE F8 Splat(float x) { return F8{} + x; }
MODRWKV_ALWAYS_INLINE F8 Select8(I8 mask, F8 a, F8 b) {
  return reinterpret_cast<F8>((reinterpret_cast<I8>(a) & mask) | (reinterpret_cast<I8>(b) & ~mask));
}
MODRWKV_ALWAYS_INLINE bool AnyLane(I8 mask) {
  uint64_t w[4];
  std::memcpy(w, &mask, sizeof(w));
  return (w[0] | w[1] | w[2] | w[3]) != 0;
}

// 2^y for y <= 0: 2^round(y) times a degree-6 polynomial for 2^f, |f| <= 1/2 (Taylor; relative
// error below 2e-7, less than the rounding already in y = (logit - max) * scale); exactly 1 at 0,
// exactly 0 below -126 (float would go denormal), at -inf and for NaN. Exp2x8 performs the same
// float operations lane by lane as the scalar Exp2NonPositive, so both give the same bits.
constexpr float kExp2Min = -126.0f;
constexpr float kExp2C[] = {1.5403530e-4f, 1.3333558e-3f, 9.6181291e-3f,
                            5.5504109e-2f, 2.4022651e-1f, 6.9314718e-1f};
MODRWKV_ALWAYS_INLINE F8 Exp2x8(F8 y) {
  const I8 in_range = y >= Splat(kExp2Min);  // false for NaN
  const F8 yc = Select8(in_range, y, Splat(kExp2Min));
  const F8 n = (yc + 12582912.0f) - 12582912.0f;  // round to nearest integer
  const F8 f = yc - n;
  F8 p = Splat(kExp2C[0]);
  for (int k = 1; k < 6; ++k) p = p * f + kExp2C[k];
  p = p * f + 1.0f;
  const F8 scale = reinterpret_cast<F8>((__builtin_convertvector(n, I8) + 127) << 23);  // 2^n
  return Select8(in_range, p * scale, F8{});
}
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

struct ArgMax {
  float value = -kInf;
  int32_t index = -1;  // -1 when no entry is above -inf
};

// Largest entry and its lowest index; NaN entries are ignored. Four independent chains of
// 8 lanes, each lane keeping its first maximum.
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

// e[i] = 2^((l[i] - max) * scale) = exp((l[i] - max) / T); writes each block's sum
// ([ceil(n / kBlock)]) and returns the total. Two accumulators hide the vector add's latency.
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

// mass[k] = sum and count[k] = number of the e[i] >= kNucleusThresholds[k].
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

struct Cand {
  float v;  // a logit or a relative probability, depending on the stage
  int32_t id;
};
// Strict total order: larger value first, then lower id.
inline bool Better(const Cand& a, const Cand& b) {
  return a.v > b.v || (a.v == b.v && a.id < b.id);
}

// How many logits are >= max - kTopKDeltas[j], for each j.
constexpr float kTopKDeltas[] = {0.5f, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64};
constexpr int kNumTopKDeltas = sizeof(kTopKDeltas) / sizeof(kTopKDeltas[0]);

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

// Appends {l[i], i} for every l[i] >= threshold, skipping 32-token chunks with none.
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

// Returns the start of the first 32-token chunk at or after i with a value above t, or the start
// of the last, partial chunk.
constexpr size_t kSkipChunk = 4 * kW;
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

// The k best logits (finite or +inf; -inf and NaN skipped), sorted Better-first. `max` is the
// largest logit.
void TopK(const float* l, size_t n, size_t k, float max, std::vector<Cand>* out) {
  out->clear();
  if (k == 0) return;
  if (k > static_cast<size_t>(kHeapTopKLimit)) {
    // Collect everything above the highest threshold that still lets k tokens through.
    int64_t count[kNumTopKDeltas];
    CountAboveKernel(l, n, max, count);
    float threshold = std::numeric_limits<float>::lowest();
    for (int j = 0; j < kNumTopKDeltas; ++j) {
      if (count[j] >= static_cast<int64_t>(k)) {
        threshold = max - kTopKDeltas[j];
        break;
      }
    }
    CollectAboveKernel(l, n, threshold, out);
    if (out->size() > k) {
      std::nth_element(out->begin(), out->begin() + static_cast<ptrdiff_t>(k - 1), out->end(),
                       Better);
      out->resize(k);
    }
    std::sort(out->begin(), out->end(), Better);
    return;
  }
  // Min-heap under Better: the front is the worst kept candidate. Scanning ids upwards, a later
  // value equal to the front's is worse than it (higher id), so only strictly larger ones enter.
  std::vector<Cand>& heap = *out;
  size_t i = 0;
  for (; i < n && heap.size() < k; ++i) {
    if (!(l[i] > -kInf)) continue;
    heap.push_back({l[i], static_cast<int32_t>(i)});
    std::push_heap(heap.begin(), heap.end(), Better);
  }
  while (i < n) {
    i = SkipNotAboveKernel(l, i, n, heap.front().v);
    const size_t end = std::min(n, i + kSkipChunk);
    for (; i < end; ++i) {
      if (l[i] > heap.front().v) {
        std::pop_heap(heap.begin(), heap.end(), Better);
        heap.back() = {l[i], static_cast<int32_t>(i)};
        std::push_heap(heap.begin(), heap.end(), Better);
      }
    }
  }
  std::sort_heap(heap.begin(), heap.end(), Better);
}

// Radix digits of a positive float, most significant first: the exponent, then the mantissa.
constexpr int kDigitShifts[] = {23, 15, 7, 0};
inline uint32_t Digit(float v, int round) {
  return (std::bit_cast<uint32_t>(v) >> kDigitShifts[round]) & 0xFF;
}

// The digit where the cut falls: walking down from the largest, the first digit whose mass brings
// the running total to `need` (the lowest non-empty one if the total falls short). Subtracts the
// mass of the digits above it from *need.
uint32_t CutDigit(const double* mass, double* need) {
  uint32_t cut = 0;
  double above = 0;
  for (int d = 255; d >= 0; --d) {
    if (mass[d] == 0) continue;
    cut = static_cast<uint32_t>(d);
    if (above + mass[d] >= *need) break;
    above += mass[d];
  }
  *need -= above;
  return cut;
}

// The last token of the nucleus: of the candidates in *band (relative probabilities > 0 that
// agree on the radix digits before `first_round`, in increasing id order; overwritten), the last
// element of the smallest Better-first prefix whose mass reaches `need` (the worst one if the
// total falls short). Each radix round adds up the mass of the digits above the cut and keeps,
// in order, only the candidates on the cut digit; a short sorted band, or an exact tie settled by
// the lowest ids, ends it.
Cand FindNucleusCut(std::vector<Cand>* band, double need, int first_round) {
  constexpr size_t kSmall = 64;
  for (int round = first_round; round < 4 && band->size() > kSmall; ++round) {
    double mass[256] = {};
    for (const Cand& x : *band) mass[Digit(x.v, round)] += x.v;
    const uint32_t cut = CutDigit(mass, &need);
    if (std::count_if(mass, mass + 256, [](double m) { return m > 0; }) == 1) continue;
    band->erase(std::remove_if(band->begin(), band->end(),
                               [&](const Cand& x) { return Digit(x.v, round) != cut; }),
                band->end());
  }
  if (band->empty()) return {0.0f, 0};
  if (band->size() > kSmall) {
    // Every digit agreed: the band holds one value, and the cut takes its lowest ids.
    const double v = (*band)[0].v;
    const size_t m = std::clamp<size_t>(static_cast<size_t>(std::ceil(need / v)), 1, band->size());
    return (*band)[m - 1];
  }
  std::sort(band->begin(), band->end(), Better);
  for (const Cand& x : *band) {
    need -= x.v;
    if (need <= 0) return x;
  }
  return band->back();
}

// FindNucleusCut over a whole buffer of relative probabilities: the first (exponent) round runs
// on the buffer itself, then only the tokens of the cut exponent are copied out.
Cand FindNucleusCutInBuffer(const float* e, size_t n, double need, std::vector<Cand>* band) {
  // Four interleaved histograms, so that runs of one exponent do not serialise on one counter.
  double mass4[4][256] = {};
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (size_t j = 0; j < 4; ++j) mass4[j][Digit(e[i + j], 0)] += e[i + j];
  }
  for (; i < n; ++i) mass4[0][Digit(e[i], 0)] += e[i];
  double mass[256];
  for (int d = 0; d < 256; ++d) mass[d] = (mass4[0][d] + mass4[1][d]) + (mass4[2][d] + mass4[3][d]);
  const uint32_t cut = CutDigit(mass, &need);
  band->resize(n);
  size_t k = 0;
  for (i = 0; i < n; ++i) {  // branch-free compaction
    (*band)[k] = {e[i], static_cast<int32_t>(i)};
    k += Digit(e[i], 0) == cut && e[i] > 0;
  }
  band->resize(k);
  return FindNucleusCut(band, need, 1);
}

// Keeps e[i] only where token i is in the nucleus (i.e. not worse than `cut`) and e[i] >= min_p;
// rewrites the block sums and returns the new total.
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

// Draws token i with probability e[i] / total, where block_sum[b] = sum of e over block b.
int32_t DrawFromBlocks(const float* e, size_t n, const double* block_sum, double total, double u) {
  const size_t blocks = (n + kBlock - 1) / kBlock;
  const double target = u * total;
  double cum = 0;
  size_t b = 0;
  while (b + 1 < blocks && cum + block_sum[b] <= target) cum += block_sum[b++];
  const size_t end = std::min(n, (b + 1) * kBlock);
  for (size_t i = b * kBlock; i < end; ++i) {
    cum += e[i];
    if (cum > target) return static_cast<int32_t>(i);
  }
  for (size_t i = end; i-- > 0;) {  // rounding left target just past the block's end
    if (e[i] > 0) return static_cast<int32_t>(i);
  }
  return 0;  // unreachable: the max token has e = 1
}

// Draws from candidates weighted by v (the max token, v = 1, is always among them).
int32_t DrawFromCands(const std::vector<Cand>& c, size_t count, double u) {
  double total = 0;
  for (size_t t = 0; t < count; ++t) total += c[t].v;
  const double target = u * total;
  double cum = 0;
  for (size_t t = 0; t < count; ++t) {
    cum += c[t].v;
    if (cum > target) return c[t].id;
  }
  for (size_t t = count; t-- > 0;) {  // rounding left target just past the end
    if (c[t].v > 0) return c[t].id;
  }
  return c.empty() ? 0 : c[0].id;
}

// Per-thread O(vocab) workspace shared by every sampler that thread drives.
struct Scratch {
  std::vector<float> e;           // [vocab] relative probabilities exp((logit - max) / T)
  std::vector<double> block_sum;  // [ceil(vocab / kBlock)]
  std::vector<Cand> cands;
  std::vector<Cand> band;

  static Scratch& ForThisThread(size_t n) {
    thread_local Scratch s;
    if (s.e.size() < n) {
      s.e.resize(n);
      s.block_sum.resize((n + kBlock - 1) / kBlock);
    }
    return s;
  }
};

absl::Status OutOfRange(absl::string_view field, double got, absl::string_view range) {
  return InvalidFieldError(field, absl::StrFormat("%s must be in %s, got %g", field, range, got));
}

}  // namespace

absl::Status SamplerConfig::Validate(int vocab_size) const {
  if (vocab_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("vocab_size must be positive, got %d", vocab_size));
  }
  // Written as !(in range) so that NaN fails too.
  if (!(temperature >= 0 && temperature < kInf)) {
    return OutOfRange("temperature", temperature, "[0, inf) (0 = greedy)");
  }
  if (top_k < 0) {
    return InvalidFieldError("top_k",
                             absl::StrFormat("top_k must be >= 0 (0 = off), got %d", top_k));
  }
  if (!(top_p > 0 && top_p <= 1)) return OutOfRange("top_p", top_p, "(0, 1]");
  if (!(min_p >= 0 && min_p <= 1)) return OutOfRange("min_p", min_p, "[0, 1]");
  if (!(repetition_penalty > 0 && repetition_penalty <= 100)) {
    return OutOfRange("repetition_penalty", repetition_penalty, "(0, 100] (1 = off)");
  }
  if (!(presence_penalty >= -100 && presence_penalty <= 100)) {
    return OutOfRange("presence_penalty", presence_penalty, "[-100, 100]");
  }
  if (!(frequency_penalty >= -100 && frequency_penalty <= 100)) {
    return OutOfRange("frequency_penalty", frequency_penalty, "[-100, 100]");
  }
  if (!(penalty_decay >= 0 && penalty_decay <= 1)) {
    return OutOfRange("penalty_decay", penalty_decay, "[0, 1]");
  }
  if (logit_bias.size() > static_cast<size_t>(kMaxLogitBias)) {
    return InvalidFieldError("logit_bias",
                             absl::StrFormat("logit_bias has %d entries, at most %d are allowed",
                                             static_cast<int>(logit_bias.size()), kMaxLogitBias));
  }
  if (banned_tokens.size() > static_cast<size_t>(kMaxBannedTokens)) {
    return InvalidFieldError(
        "banned_tokens", absl::StrFormat("banned_tokens has %d entries, at most %d are allowed",
                                         static_cast<int>(banned_tokens.size()), kMaxBannedTokens));
  }
  for (const auto& [token, bias] : logit_bias) {
    if (token < 0 || token >= vocab_size) {
      return InvalidFieldError(
          "logit_bias", absl::StrFormat("logit_bias token %d is outside the vocabulary [0, %d)",
                                        token, vocab_size));
    }
    if (!std::isfinite(bias)) {
      return InvalidFieldError(
          "logit_bias", absl::StrFormat("logit_bias[%d] must be finite, got %g", token, bias));
    }
  }
  std::vector<bool> banned(vocab_size);
  int distinct_banned = 0;
  for (size_t i = 0; i < banned_tokens.size(); ++i) {
    const int32_t token = banned_tokens[i];
    if (token < 0 || token >= vocab_size) {
      return InvalidFieldError(
          absl::StrFormat("banned_tokens[%d]", static_cast<int>(i)),
          absl::StrFormat("banned_tokens[%d] = %d is outside the vocabulary [0, %d)",
                          static_cast<int>(i), token, vocab_size));
    }
    if (!banned[token]) ++distinct_banned;
    banned[token] = true;
  }
  if (distinct_banned == vocab_size) {
    return InvalidFieldError(
        "banned_tokens",
        absl::StrFormat(
            "banned_tokens bans all %d tokens of the vocabulary; at least one must remain",
            vocab_size));
  }
  if (logprobs_top_n < -1 || logprobs_top_n > kMaxTopLogprobs) {
    return InvalidFieldError(
        "logprobs_top_n", absl::StrFormat("logprobs_top_n must be in [-1, %d] (-1 = off), got %d",
                                          kMaxTopLogprobs, logprobs_top_n));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Sampler>> Sampler::Create(const SamplerConfig& params,
                                                         int vocab_size) {
  MODRWKV_RETURN_IF_ERROR(params.Validate(vocab_size));
  uint64_t seed;
  if (params.seed.has_value()) {
    seed = *params.seed;
  } else {
    std::random_device rd;
    seed = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }
  return std::unique_ptr<Sampler>(new Sampler(params, vocab_size, seed));
}

Sampler::Sampler(const SamplerConfig& params, int vocab_size, uint64_t seed)
    : params_(params), vocab_size_(vocab_size), seed_(seed), rng_(seed) {
  bias_.assign(params_.logit_bias.begin(), params_.logit_bias.end());
  std::vector<int32_t>& banned = params_.banned_tokens;
  std::sort(banned.begin(), banned.end());
  banned.erase(std::unique(banned.begin(), banned.end()), banned.end());
}

double Sampler::Uniform() { return static_cast<double>(rng_() >> 11) * 0x1p-53; }

float Sampler::occurrence(int32_t token) const {
  auto it = occurrence_.find(token);
  return it == occurrence_.end() ? 0.0f : it->second;
}

void Sampler::AcceptPrompt(absl::Span<const int32_t> tokens) {
  if (params_.repetition_penalty == 1.0f) return;
  for (int32_t t : tokens) {
    if (t >= 0 && t < vocab_size_) repetition_seen_.insert(t);
  }
}

void Sampler::Accept(int32_t token) {
  if (token < 0 || token >= vocab_size_) return;
  if (params_.repetition_penalty != 1.0f) repetition_seen_.insert(token);
  if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) {
    // PIPELINE.generate: decay every weight, then count the new token.
    for (auto& [t, w] : occurrence_) w *= params_.penalty_decay;
    occurrence_[token] += 1.0f;
  }
}

void Sampler::ApplyPenalties(absl::Span<float> logits) const {
  const int32_t n = static_cast<int32_t>(logits.size());
  const float rp = params_.repetition_penalty;
  for (int32_t t : repetition_seen_) {
    if (t >= n) continue;
    float& v = logits[t];
    v = v > 0 ? v / rp : v * rp;
  }
  for (const auto& [t, w] : occurrence_) {
    if (t < n) logits[t] -= params_.presence_penalty + params_.frequency_penalty * w;
  }
  for (const auto& [t, b] : bias_) {
    if (t < n) logits[t] += b;
  }
  for (int32_t t : params_.banned_tokens) {
    if (t < n) logits[t] = -kInf;
  }
}

int32_t Sampler::Sample(absl::Span<float> logits, SampleResult* out) {
  logits = logits.first(std::min(logits.size(), static_cast<size_t>(vocab_size_)));
  ApplyPenalties(logits);
  const ArgMax am = ArgMaxKernel(logits.data(), logits.size());
  int32_t token;
  if (am.index < 0) {
    // Nothing above -inf: the lowest id that is not banned (Validate keeps one).
    token = 0;
    for (int32_t b : params_.banned_tokens) {  // sorted
      if (b == token) ++token;
      if (b > token) break;
    }
  } else if (params_.temperature == 0.0f || am.value == kInf) {
    token = am.index;
  } else {
    token = SampleStochastic(logits, am.value);
  }
  if (out != nullptr && params_.logprobs_top_n >= 0) FillLogprobs(logits, am.value, token, out);
  Accept(token);
  return token;
}

int32_t Sampler::SampleStochastic(absl::Span<const float> logits, float max_logit) {
  const size_t n = logits.size();
  const float scale = Exp2Scale(1.0 / params_.temperature);
  const float min_p = params_.min_p;
  const double top_p = params_.top_p;
  Scratch& s = Scratch::ForThisThread(n);
  std::vector<Cand>& c = s.cands;

  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < n) {
    TopK(logits.data(), n, static_cast<size_t>(params_.top_k), max_logit, &c);  // Better-first
    double total = 0;
    for (Cand& x : c) {
      x.v = Exp2NonPositive((x.v - max_logit) * scale);
      total += x.v;
    }
    size_t count = c.size();
    if (top_p < 1.0) {
      const double need = top_p * total * (1.0 - kTopPRelTolerance);
      double cum = 0;
      for (size_t t = 0; t < c.size(); ++t) {
        cum += c[t].v;
        if (cum >= need) {
          count = t + 1;
          break;
        }
      }
    }
    while (count > 1 && c[count - 1].v < min_p) --count;  // sorted: drop the tail below min_p
    return DrawFromCands(c, count, Uniform());
  }

  double total = ExpKernel(logits.data(), s.e.data(), n, max_logit, scale, s.block_sum.data());
  if (top_p >= 1.0) {
    if (min_p > 0) {
      // Every token is "in the nucleus" of this cut; only min-p removes any.
      const Cand keep_all = {0.0f, std::numeric_limits<int32_t>::max()};
      total = MaskKernel(s.e.data(), n, keep_all, min_p, s.block_sum.data());
    }
    return DrawFromBlocks(s.e.data(), n, s.block_sum.data(), total, Uniform());
  }

  // Top-p over the whole vocabulary. The nucleus is a Better-first prefix, so it lies inside the
  // tokens at or above the highest threshold whose mass already reaches the target. If those are
  // few, list them and draw from the list; else mask the buffer.
  const double need = top_p * total * (1.0 - kTopPRelTolerance);
  double mass[kNumThresholds];
  int64_t count[kNumThresholds];
  ThresholdMassKernel(s.e.data(), n, mass, count);
  for (int k = 0; k < kNumThresholds; ++k) {
    if (mass[k] < need) continue;
    if (count[k] > static_cast<int64_t>(kMaxListDraw)) break;
    c.clear();
    CollectAboveKernel(s.e.data(), n, kNucleusThresholds[k], &c);
    s.band.assign(c.begin(), c.end());
    const Cand cut = FindNucleusCut(&s.band, need, 0);
    auto kept = [&](const Cand& x) { return !Better(cut, x) && x.v >= min_p; };
    const size_t kept_count =
        static_cast<size_t>(std::partition(c.begin(), c.end(), kept) - c.begin());
    return DrawFromCands(c, kept_count, Uniform());
  }
  const Cand cut = FindNucleusCutInBuffer(s.e.data(), n, need, &s.band);
  total = MaskKernel(s.e.data(), n, cut, min_p, s.block_sum.data());
  return DrawFromBlocks(s.e.data(), n, s.block_sum.data(), total, Uniform());
}

void Sampler::FillLogprobs(absl::Span<const float> logits, float max_logit, int32_t token,
                           SampleResult* out) const {
  const size_t n = logits.size();
  out->top_logprobs.clear();
  if (!(max_logit > -kInf && max_logit < kInf)) {  // degenerate logits: no distribution
    out->logprob = logits[token] == max_logit && max_logit == kInf ? 0.0f : -kInf;
    return;
  }
  Scratch& s = Scratch::ForThisThread(n);
  const double z =
      ExpKernel(logits.data(), s.e.data(), n, max_logit, Exp2Scale(1.0), s.block_sum.data());
  const double log_z = std::log(z);
  auto logprob = [&](float logit) {
    return static_cast<float>(static_cast<double>(logit) - max_logit - log_z);
  };
  out->logprob = logprob(logits[token]);
  if (params_.logprobs_top_n > 0) {
    std::vector<Cand> top;
    TopK(logits.data(), n, static_cast<size_t>(params_.logprobs_top_n), max_logit, &top);
    out->top_logprobs.reserve(top.size());
    for (const Cand& x : top) out->top_logprobs.emplace_back(x.id, logprob(x.v));
  }
}

}  // namespace modrwkv
