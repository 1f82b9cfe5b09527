// Top-k selection, the top-p nucleus cut (a radix search over the candidates' float bits) and the
// weighted draws. Sorting is confined to the few candidates that can matter.
#include "engine/sampling/top_k_nucleus.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "engine/sampling/simd_kernels.h"

namespace modrwkv::sampling_internal {
namespace {

// top_k above this collects candidates above a counted threshold instead of using a heap.
constexpr int kHeapTopKLimit = 64;

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

}  // namespace

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

// Each radix round adds up the mass of the digits above the cut and keeps, in order, only the
// candidates on the cut digit; a short sorted band, or an exact tie settled by the lowest ids,
// ends it.
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

}  // namespace modrwkv::sampling_internal
