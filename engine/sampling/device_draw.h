// Sampling where the logits are (on a GPU), without copying them to the host: what the host-side
// Sampler hands the backend for one step, and the reference definition of what the backend does
// with it.
//
// The Sampler keeps its state on the host (seed and random stream, the repetition set, the
// presence/frequency weights, bias and bans); each step it turns that state into sparse edits of
// the logits (one per token it touches: O(distinct tokens seen), a few KB, against 256 KB of
// logits) and one uniform random number. The backend applies the edits, then draws:
//
//   1. v = banned ? -inf : ((v > 0 ? v / repetition : v * repetition) - subtract) + add: the
//      Sampler's own penalties, bias and bans, bit for bit.
//   2. The largest v (NaN ignored, lowest id on ties). None above -inf: `fallback` (the lowest id
//      that is not banned). Temperature 0 (or so small that 1 / temperature overflows) or a +inf
//      logit: that argmax.
//   3. p = exp((v - max) / temperature) (NaN and -inf: 0), so the top token has p = 1.
//   4. Tokens in "better" order (p descending, lower id first on ties); keep the first top_k
//      (0 = all), then the shortest prefix of those whose mass reaches top_p x their mass
//      (x (1 - 1e-6), as the Sampler), then only those with p >= min_p; none left (min_p > 1):
//      the argmax.
//   5. The kept tokens in id order, their masses accumulated in double: the first whose running
//      sum exceeds u x the kept mass (the last kept token if rounding leaves none).
//
// Steps 1-4 are the Sampler's distribution (the same kept tokens, the same probabilities up to
// float rounding); step 5 draws from it in id order where the Sampler draws some cases in
// "better" order, so for a given seed the GPU's tokens are not the CPU's: they are the same
// distribution, and deterministic for a seed on the GPU. ReferenceDeviceDraw is this definition
// as plain C++, the CPU twin the CUDA kernel (engine/cuda/sample.cu) is tested against.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace modrwkv {

// One token's edit. The neutral values (1, 0, 0, false) leave a logit bit for bit unchanged.
struct LogitEdit {
  int32_t token = 0;
  float repetition = 1.0f;  // v > 0 ? v / r : v * r
  float subtract = 0.0f;    // presence + frequency x occurrence weight
  float add = 0.0f;         // logit bias
  int32_t banned = 0;       // 1: the logit becomes -inf
};

struct DeviceDraw {
  float temperature = 1.0f;  // 0: greedy
  int32_t top_k = 0;         // 0 or >= vocab: off
  float top_p = 1.0f;
  float min_p = 0.0f;
  double u = 0.0;               // uniform in [0, 1), from the Sampler's random stream
  int32_t fallback = 0;         // the token when no logit is above -inf
  int32_t logprobs_top_n = -1;  // >= 0: report DeviceLogprobs for this row
};

// Logprobs reported with a draw (SamplerConfig::logprobs_top_n), defined as the Sampler's
// SampleResult: log_softmax of the logits after step 1 (before temperature and truncation), the
// chosen token's and the top_n largest (value descending, lower id first; -inf and NaN never
// listed). No distribution (no logit above -inf, or a +inf one): the chosen token's is 0 if it
// holds +inf, else -inf, and none are listed.
constexpr int kMaxDeviceTopLogprobs = 20;  // SamplerConfig::kMaxTopLogprobs
struct DeviceLogprobs {
  float logprob = 0.0f;  // of the chosen token
  int32_t count = 0;     // entries of ids/values in use
  int32_t ids[kMaxDeviceTopLogprobs] = {};
  float values[kMaxDeviceTopLogprobs] = {};
};

// Step 1, in place.
void ApplyLogitEdits(absl::Span<float> logits, absl::Span<const LogitEdit> edits);

// Steps 2-5 on edited logits: the token the backend must pick.
int32_t ReferenceDeviceDraw(absl::Span<const float> logits, const DeviceDraw& d);

// The logprobs a draw of `token` from edited `logits` reports (top_n <= kMaxDeviceTopLogprobs).
DeviceLogprobs ReferenceDeviceLogprobs(absl::Span<const float> logits, int32_t token, int top_n);

// Steps 2-4: each token's probability of being drawn (0 outside the kept set; sums to 1). For
// tests that compare the distribution with the Sampler's.
std::vector<double> DeviceDrawProbabilities(absl::Span<const float> logits, const DeviceDraw& d);

}  // namespace modrwkv
