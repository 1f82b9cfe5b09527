// Token sampling for one sequence: penalties, logit bias and bans, temperature, top-k / top-p /
// min-p truncation, seeded random choice and optional logprobs. See docs/sampling.md.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/grammar/token_constraint.h"
#include "engine/sampling/device_draw.h"

namespace modrwkv {

// Per-request sampling options. Every default means "off": with defaults the sampler draws from
// softmax(logits) unchanged.
struct SamplerConfig {
  static constexpr int kMaxTopLogprobs = 20;  // as OpenAI's and vLLM's APIs
  // Every step of a sequence touches each entry, so one request cannot slow the whole batch.
  static constexpr int kMaxBannedTokens = 4096;
  static constexpr int kMaxLogitBias = 1024;

  float temperature = 1.0f;  // >= 0; 0 = greedy (argmax, ties -> lowest id)
  int top_k = 0;             // >= 0; 0 = off; >= vocab size is off too
  float top_p = 1.0f;        // (0, 1]; 1 = off
  float min_p = 0.0f;        // [0, 1]; keep tokens with p >= min_p * p_max; 0 = off

  // HF/CTRL style, over the distinct tokens of the prompt (AcceptPrompt) and of the generated
  // text: a positive logit is divided by it, a negative one multiplied. (0, 100]; 1 = off.
  float repetition_penalty = 1.0f;

  // RWKV PIPELINE style (alpha_presence, alpha_frequency, alpha_decay), over generated tokens
  // only: each token has an occurrence weight w; logit[t] -= presence_penalty (if t was ever
  // generated) + frequency_penalty * w[t]. After each generated token every weight is multiplied
  // by penalty_decay and the new token's weight gets +1. Penalties in [-100, 100], decay in [0, 1].
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  float penalty_decay = 0.996f;  // ChatRWKV's API demo value; 1 = no decay

  absl::flat_hash_map<int32_t, float> logit_bias;  // token -> bias (finite), <= kMaxLogitBias
  std::vector<int32_t> banned_tokens;  // logit forced to -inf; at most kMaxBannedTokens entries

  // With a seed, the same params and the same sequence of logits give the same tokens (on one
  // build: the vector kernels give the same bits with and without AVX2). Without one the sampler
  // seeds itself from std::random_device; Sampler::seed() reports the seed used.
  std::optional<uint64_t> seed;

  // -1 = no logprobs; N >= 0: report the chosen token's logprob and the N most likely tokens
  // (N <= kMaxTopLogprobs).
  int logprobs_top_n = -1;

  // Structured output: only tokens that continue a document valid under the constraint are
  // drawn, after penalties, bias and bans (so logprobs are those of the constrained
  // distribution). `constraint_end_tokens` (the request's stop tokens; banned ones are dropped)
  // may close the document where it can end. See docs/structured-output.md.
  std::shared_ptr<const grammar::TokenConstraint> constraint;
  std::vector<int32_t> constraint_end_tokens;

  // OK, or InvalidArgument naming the first offending field, e.g.
  // "top_p must be in (0, 1], got 1.5".
  absl::Status Validate(int vocab_size) const;
};

// Logprobs of one sampling step. They come from log_softmax of the logits after penalties, bias
// and bans but before temperature and truncation: the model's own (penalised) distribution, so
// they do not depend on how adventurous the sampling settings are. A banned token has -inf.
struct SampleResult {
  float logprob = 0.0f;                                 // of the chosen token
  std::vector<std::pair<int32_t, float>> top_logprobs;  // most likely first, ties -> lower id
};

// Draws tokens for one sequence. Not thread-safe: owned and called by whoever drives the sequence
// (the scheduler thread). Memory is O(distinct tokens seen); the O(vocab) scratch space is per
// thread and shared by all samplers that thread drives.
class Sampler {
 public:
  static absl::StatusOr<std::unique_ptr<Sampler>> Create(const SamplerConfig& params,
                                                         int vocab_size);

  // Picks the next token from `logits` ([vocab_size] fp32, the model's raw output) and Accept()s
  // it, so the caller must not Accept() it again. On return `logits` holds the values after
  // penalties, bias and bans (temperature and truncation never touch it). Order: repetition
  // penalty -> presence/frequency -> bias -> bans -> temperature -> top-k -> top-p -> min-p ->
  // draw. If logits.size() != vocab_size only the first min(size, vocab_size) entries are used.
  // If no logit is finite (all banned or NaN) returns the lowest id holding +inf, else the lowest
  // id that is not banned (with a constraint: the lowest id it allows). `out` is written only when
  // params.logprobs_top_n >= 0.
  int32_t Sample(absl::Span<float> logits, SampleResult* out = nullptr);

  // Records a generated token that the sampler did not choose (a forced or replayed token):
  // updates the repetition set and the presence/frequency weights exactly as Sample() does.
  void Accept(int32_t token);

  // Records prompt tokens for the repetition penalty only. Presence/frequency ignore the prompt,
  // as the official RWKV PIPELINE does (its occurrence table starts empty at generation).
  void AcceptPrompt(absl::Span<const int32_t> tokens);

  // Greedy with nothing that changes the logits or needs them afterwards (no penalties, bias,
  // bans, constraint or logprobs): Sample() is then the lowest id of the largest logit (NaN
  // ignored; 0 when none is above -inf), so a backend may pick it where the logits are (on the
  // GPU) and only Accept() it here.
  bool IsPlainGreedy() const;

  // Sampling where the logits are (device_draw.h), logprobs included (DeviceLogprobs). Possible
  // without a constraint (its mask is built on the host).
  bool CanDrawOnDevice() const;
  // This step's edits of the logits (appended to *edits, one per token touched) and the draw,
  // with one number from the random stream. The backend picks the token as ReferenceDeviceDraw
  // defines and the caller Accept()s it.
  DeviceDraw PrepareDeviceDraw(std::vector<LogitEdit>* edits);

  // With a constraint: nothing more may be generated (the document is complete).
  bool constraint_complete() const { return constrained_ != nullptr && constrained_->complete(); }

  const SamplerConfig& params() const { return params_; }
  uint64_t seed() const { return seed_; }
  // Occurrence weight of `token` for the presence/frequency penalties (0 if never generated).
  float occurrence(int32_t token) const;

 private:
  Sampler(const SamplerConfig& params, int vocab_size, uint64_t seed);

  void ApplyPenalties(absl::Span<float> logits) const;
  int32_t SampleStochastic(absl::Span<const float> logits, float max_logit);
  void FillLogprobs(absl::Span<const float> logits, float max_logit, int32_t token,
                    SampleResult* out) const;
  double Uniform();  // [0, 1), 53 random bits

  SamplerConfig params_;
  int vocab_size_;
  uint64_t seed_;
  std::mt19937_64 rng_;  // fully specified by the standard: same seed, same stream everywhere
  std::vector<std::pair<int32_t, float>> bias_;  // params_.logit_bias flattened
  absl::flat_hash_set<int32_t> repetition_seen_;
  absl::flat_hash_map<int32_t, float> occurrence_;
  std::unique_ptr<grammar::ConstrainedSequence> constrained_;  // set when params_.constraint is
};

}  // namespace modrwkv
