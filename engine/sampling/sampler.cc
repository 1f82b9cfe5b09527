// Token sampler: config validation, penalties, and the order of the sampling stages. Never sorts
// the vocabulary: the O(vocab) passes are the vector kernels of simd_kernels.cc, and sorting is
// confined to the few candidates that can matter (top_k_nucleus.cc).
#include "engine/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/base/errors.h"
#include "engine/base/status_macros.h"
#include "engine/sampling/simd_kernels.h"
#include "engine/sampling/top_k_nucleus.h"

namespace modrwkv {
namespace {

using sampling_internal::ArgMax;
using sampling_internal::ArgMaxKernel;
using sampling_internal::Better;
using sampling_internal::Cand;
using sampling_internal::CollectAboveKernel;
using sampling_internal::DrawFromBlocks;
using sampling_internal::DrawFromCands;
using sampling_internal::Exp2NonPositive;
using sampling_internal::Exp2Scale;
using sampling_internal::ExpKernel;
using sampling_internal::FindNucleusCut;
using sampling_internal::FindNucleusCutInBuffer;
using sampling_internal::kBlock;
using sampling_internal::kInf;
using sampling_internal::kNucleusThresholds;
using sampling_internal::kNumThresholds;
using sampling_internal::MaskKernel;
using sampling_internal::ThresholdMassKernel;
using sampling_internal::TopK;

// A nucleus whose mass equals top_p up to float rounding is not extended by one more token.
constexpr double kTopPRelTolerance = 1e-6;
// A nucleus with at most this many candidates is drawn from the list, else from the masked buffer.
constexpr size_t kMaxListDraw = 4096;

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
  if (params_.constraint != nullptr) {
    // A banned end token cannot close the document.
    std::vector<int32_t> ends;
    for (int32_t t : params_.constraint_end_tokens) {
      if (!std::binary_search(banned.begin(), banned.end(), t)) ends.push_back(t);
    }
    constrained_ =
        std::make_unique<grammar::ConstrainedSequence>(params_.constraint, std::move(ends));
  }
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
  if (constrained_ != nullptr) constrained_->Accept(token);
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

bool Sampler::IsPlainGreedy() const {
  return params_.temperature == 0.0f && params_.repetition_penalty == 1.0f &&
         params_.presence_penalty == 0.0f && params_.frequency_penalty == 0.0f && bias_.empty() &&
         params_.banned_tokens.empty() && constrained_ == nullptr && params_.logprobs_top_n < 0;
}

static_assert(kMaxDeviceTopLogprobs == SamplerConfig::kMaxTopLogprobs);

bool Sampler::CanDrawOnDevice() const { return constrained_ == nullptr; }

DeviceDraw Sampler::PrepareDeviceDraw(std::vector<LogitEdit>* edits) {
  // One edit per token, merged from the four sources in ApplyPenalties' order.
  absl::flat_hash_map<int32_t, size_t> at;
  auto edit = [&](int32_t t) -> LogitEdit& {
    auto [it, fresh] = at.try_emplace(t, edits->size());
    if (fresh) edits->push_back(LogitEdit{t});
    return (*edits)[it->second];
  };
  if (params_.repetition_penalty != 1.0f) {
    for (int32_t t : repetition_seen_) edit(t).repetition = params_.repetition_penalty;
  }
  for (const auto& [t, w] : occurrence_) {
    const float sub = params_.presence_penalty + params_.frequency_penalty * w;
    if (sub != 0.0f) edit(t).subtract = sub;
  }
  for (const auto& [t, b] : bias_) edit(t).add = b;
  for (int32_t t : params_.banned_tokens) edit(t).banned = 1;
  DeviceDraw d;
  d.temperature = params_.temperature;
  d.top_k = params_.top_k;
  d.top_p = params_.top_p;
  d.min_p = params_.min_p;
  d.u = Uniform();
  d.logprobs_top_n = params_.logprobs_top_n;
  d.fallback = 0;
  for (int32_t b : params_.banned_tokens) {  // sorted: the lowest id that is not banned
    if (b == d.fallback) ++d.fallback;
    if (b > d.fallback) break;
  }
  return d;
}

int32_t Sampler::Sample(absl::Span<float> logits, SampleResult* out) {
  logits = logits.first(std::min(logits.size(), static_cast<size_t>(vocab_size_)));
  ApplyPenalties(logits);
  if (constrained_ != nullptr) constrained_->MaskLogits(logits);
  const ArgMax am = ArgMaxKernel(logits.data(), logits.size());
  int32_t token;
  const int32_t first_allowed =
      am.index < 0 && constrained_ != nullptr ? constrained_->FirstAllowed() : -1;
  if (first_allowed >= 0) {
    token = first_allowed;  // everything the constraint allows was banned or -inf
  } else if (am.index < 0) {
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
