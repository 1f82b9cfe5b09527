// Tests for engine/sampling/sampler.cc: penalties, truncation, seeded draws and logprobs.
#include "engine/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace modrwkv {
namespace {

using ::testing::HasSubstr;

constexpr float kInf = std::numeric_limits<float>::infinity();

std::unique_ptr<Sampler> MakeSampler(const SamplerConfig& p, int vocab) {
  absl::StatusOr<std::unique_ptr<Sampler>> s = Sampler::Create(p, vocab);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

std::vector<float> LogitsFromProbs(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(static_cast<float>(std::log(p)));
  return l;
}

std::vector<float> GaussianLogits(int n, float stddev, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> l(n);
  for (float& x : l) x = d(gen);
  return l;
}

// Token -> count over `draws` samples by one seeded sampler (logits restored each draw).
std::map<int32_t, int> Histogram(SamplerConfig p, const std::vector<float>& logits, int draws,
                                 uint64_t seed = 1) {
  p.seed = seed;
  auto s = MakeSampler(p, static_cast<int>(logits.size()));
  std::map<int32_t, int> counts;
  std::vector<float> work;
  for (int i = 0; i < draws; ++i) {
    work = logits;
    ++counts[s->Sample(absl::MakeSpan(work))];
  }
  return counts;
}

std::set<int32_t> Keys(const std::map<int32_t, int>& m) {
  std::set<int32_t> k;
  for (const auto& [id, n] : m) k.insert(id);
  return k;
}

// Reference nucleus: sort everything (probability desc, id asc), smallest prefix reaching top_p.
std::set<int32_t> ReferenceNucleus(const std::vector<float>& logits, double top_p) {
  const float mx = *std::max_element(logits.begin(), logits.end());
  std::vector<std::pair<double, int32_t>> p;
  double z = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    p.emplace_back(std::exp(static_cast<double>(logits[i]) - mx), static_cast<int32_t>(i));
    z += p.back().first;
  }
  std::sort(p.begin(), p.end(), [](auto& a, auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  std::set<int32_t> out;
  double cum = 0;
  for (const auto& [e, id] : p) {
    out.insert(id);
    cum += e;
    if (cum >= top_p * z * (1 - 1e-6)) break;
  }
  return out;
}

TEST(SamplerTest, GreedyPicksArgmax) {
  for (int vocab : {5, 1003, 65536}) {
    std::vector<float> l = GaussianLogits(vocab, 2.0f, vocab);
    const int32_t want = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
    SamplerConfig p;
    p.temperature = 0;
    auto s = MakeSampler(p, vocab);
    EXPECT_EQ(s->Sample(absl::MakeSpan(l)), want) << "vocab " << vocab;
  }
}

// A backend may pick a plain greedy sampler's token itself (on the GPU): anything that changes the
// logits or needs them afterwards makes the sampler not plain.
TEST(SamplerTest, PlainGreedyIsGreedyWithNothingElse) {
  SamplerConfig p;
  p.temperature = 0;
  EXPECT_TRUE(MakeSampler(p, 100)->IsPlainGreedy());
  std::vector<SamplerConfig> not_plain(6, p);
  not_plain[0].temperature = 0.5f;
  not_plain[1].repetition_penalty = 1.1f;
  not_plain[2].presence_penalty = 0.5f;
  not_plain[3].logit_bias = {{3, 1.0f}};
  not_plain[4].banned_tokens = {0};
  not_plain[5].logprobs_top_n = 0;
  for (size_t i = 0; i < not_plain.size(); ++i) {
    EXPECT_FALSE(MakeSampler(not_plain[i], 100)->IsPlainGreedy()) << i;
  }
}

TEST(SamplerTest, GreedyTiesGoToLowestId) {
  SamplerConfig p;
  p.temperature = 0;
  // Ties in different vector lanes, in the same lane, and in the scalar tail.
  for (std::vector<int> ties :
       std::vector<std::vector<int>>{{7, 3, 500}, {13, 5}, {17, 18}, {16, 17, 18}, {999, 1000}}) {
    std::vector<float> l(1001, 0.0f);
    for (int t : ties) l[t] = 4.0f;
    auto s = MakeSampler(p, 1001);
    EXPECT_EQ(s->Sample(absl::MakeSpan(l)), *std::min_element(ties.begin(), ties.end()));
  }
}

TEST(SamplerTest, ZeroTemperatureIsGreedyTinyTemperatureIsNot) {
  std::vector<float> l = {1.0f, 3.0f, 2.0f, 3.0f, -1.0f};  // 1 and 3 tie for the max
  SamplerConfig greedy;
  greedy.temperature = 0;
  EXPECT_EQ(Keys(Histogram(greedy, l, 200)), (std::set<int32_t>{1}));

  SamplerConfig tiny;
  tiny.temperature = 1e-3f;  // the ties stay equally likely, everything else vanishes
  std::map<int32_t, int> h = Histogram(tiny, l, 2000);
  EXPECT_EQ(Keys(h), (std::set<int32_t>{1, 3}));
  EXPECT_NEAR(h[1] / 2000.0, 0.5, 0.05);

  // A temperature so small that 1/T overflows float must not produce NaN.
  tiny.temperature = 1e-40f;
  EXPECT_EQ(Keys(Histogram(tiny, {0.0f, 1.0f, 0.5f}, 100)), (std::set<int32_t>{1}));
}

TEST(SamplerTest, TopKOneEqualsGreedy) {
  std::vector<float> l = GaussianLogits(65536, 1.0f, 7);
  const int32_t want = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
  SamplerConfig p;
  p.top_k = 1;
  p.temperature = 2.0f;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    EXPECT_EQ(Keys(Histogram(p, l, 5, seed)), (std::set<int32_t>{want}));
  }
}

TEST(SamplerTest, TopKKeepsExactlyKCandidates) {
  std::vector<float> l = GaussianLogits(100, 0.3f, 11);
  std::vector<int32_t> order(100);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return l[a] > l[b]; });
  SamplerConfig p;
  p.top_k = 5;
  p.temperature = 5.0f;  // flatten, so that all five show up
  std::set<int32_t> seen;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    for (int32_t t : Keys(Histogram(p, l, 40, seed))) seen.insert(t);
  }
  EXPECT_EQ(seen, std::set<int32_t>(order.begin(), order.begin() + 5));
}

TEST(SamplerTest, TopKBreaksTiesAtTheCutByLowestId) {
  std::vector<float> l(64, 0.0f);
  l[5] = 3.0f;
  l[30] = l[10] = l[20] = 2.0f;  // three-way tie for the second place
  SamplerConfig p;
  p.top_k = 2;
  p.temperature = 3.0f;
  EXPECT_EQ(Keys(Histogram(p, l, 500)), (std::set<int32_t>{5, 10}));
  p.top_k = 100;  // above the heap limit: the threshold path breaks ties the same way
  l.assign(200, 0.0f);
  for (int i = 0; i < 99; ++i) l[i] = 5.0f;
  l[150] = l[120] = l[199] = 2.0f;
  std::set<int32_t> want;
  for (int i = 0; i < 99; ++i) want.insert(i);
  want.insert(120);
  p.temperature = 100.0f;
  std::set<int32_t> seen;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    for (int32_t t : Keys(Histogram(p, l, 200, seed))) seen.insert(t);
  }
  EXPECT_EQ(seen, want);
}

TEST(SamplerTest, LargeTopKKeepsOnlyTheTopK) {
  std::vector<float> l = GaussianLogits(4096, 0.5f, 3);
  std::vector<float> sorted = l;
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  const float kth = sorted[1999];
  SamplerConfig p;
  p.top_k = 2000;  // above the heap limit: the nth_element path
  p.temperature = 10.0f;
  std::map<int32_t, int> h = Histogram(p, l, 5000);
  for (const auto& [id, n] : h) EXPECT_GE(l[id], kth) << "token " << id;
  EXPECT_GT(h.size(), 1000u);
}

TEST(SamplerTest, TopPKeepsTheNucleusOfAKnownDistribution) {
  std::vector<float> l = LogitsFromProbs({0.5, 0.3, 0.15, 0.05});
  SamplerConfig p;
  p.top_p = 0.8f;
  constexpr int kDraws = 20000;
  std::map<int32_t, int> h = Histogram(p, l, kDraws);
  EXPECT_EQ(Keys(h), (std::set<int32_t>{0, 1}));
  EXPECT_NEAR(h[0] / double{kDraws}, 0.5 / 0.8, 0.015);

  p.top_p = 0.9f;
  h = Histogram(p, l, kDraws);
  EXPECT_EQ(Keys(h), (std::set<int32_t>{0, 1, 2}));
  EXPECT_NEAR(h[2] / double{kDraws}, 0.15 / 0.95, 0.015);

  p.top_p = 1.0f;  // off: the full distribution
  h = Histogram(p, l, kDraws);
  EXPECT_NEAR(h[0] / double{kDraws}, 0.5, 0.015);
  EXPECT_NEAR(h[1] / double{kDraws}, 0.3, 0.015);
  EXPECT_NEAR(h[2] / double{kDraws}, 0.15, 0.015);
  EXPECT_NEAR(h[3] / double{kDraws}, 0.05, 0.015);
}

TEST(SamplerTest, TopPWithTopKRenormalisesWithinTopK) {
  // top_k = 3 leaves 0.5, 0.3, 0.15 (renormalised: .526, .316, .158); top_p = 0.8 keeps 0 and 1.
  std::vector<float> l = LogitsFromProbs({0.5, 0.3, 0.15, 0.05});
  SamplerConfig p;
  p.top_k = 3;
  p.top_p = 0.8f;
  EXPECT_EQ(Keys(Histogram(p, l, 2000)), (std::set<int32_t>{0, 1}));
  p.top_p = 0.85f;  // 0.526 + 0.316 = 0.842 < 0.85: the third token is needed
  EXPECT_EQ(Keys(Histogram(p, l, 2000)), (std::set<int32_t>{0, 1, 2}));
}

TEST(SamplerTest, TopPOnTheFullVocabularyMatchesAFullSort) {
  // Peaked to flat: a small nucleus, a nucleus past the candidate thresholds, and the fallback.
  for (float stddev : {6.0f, 3.0f, 1.0f}) {
    for (float top_p : {0.5f, 0.9f}) {
      std::vector<float> l = GaussianLogits(65536, stddev, 5);
      const std::set<int32_t> nucleus = ReferenceNucleus(l, top_p);
      SamplerConfig p;
      p.top_p = top_p;
      std::map<int32_t, int> h = Histogram(p, l, 1000);
      int outside = 0;
      for (const auto& [id, n] : h) outside += nucleus.count(id) ? 0 : n;
      EXPECT_EQ(outside, 0) << "stddev " << stddev << " top_p " << top_p << " nucleus "
                            << nucleus.size();
      if (nucleus.size() <= 20) {
        EXPECT_EQ(Keys(h), nucleus) << "stddev " << stddev;
      }
    }
  }
}

TEST(SamplerTest, TopPCutsALargeTiedNucleusByLowestId) {
  // All 65536 tokens equally likely: the nucleus for 0.5 is exactly ids [0, 32768).
  std::vector<float> l(65536, 0.0f);
  SamplerConfig p;
  p.top_p = 0.5f;
  std::map<int32_t, int> h = Histogram(p, l, 2000);
  EXPECT_LT(h.rbegin()->first, 32768);
  EXPECT_GT(h.rbegin()->first, 32000);  // and it is not cut short either
  EXPECT_LT(h.begin()->first, 800);
}

TEST(SamplerTest, MinPKeepsTokensAboveAFractionOfTheMax) {
  std::vector<float> l = LogitsFromProbs({0.5, 0.3, 0.15, 0.05});
  SamplerConfig p;
  p.min_p = 0.25f;  // p >= 0.125
  constexpr int kDraws = 20000;
  std::map<int32_t, int> h = Histogram(p, l, kDraws);
  EXPECT_EQ(Keys(h), (std::set<int32_t>{0, 1, 2}));
  EXPECT_NEAR(h[2] / double{kDraws}, 0.15 / 0.95, 0.015);
  p.min_p = 0.7f;
  EXPECT_EQ(Keys(Histogram(p, l, 500)), (std::set<int32_t>{0}));
  // After top-p (order: top-p then min-p) and after top-k.
  p.min_p = 0.5f;  // p >= 0.25
  p.top_p = 0.95f;
  EXPECT_EQ(Keys(Histogram(p, l, 2000)), (std::set<int32_t>{0, 1}));
  p.top_p = 1.0f;
  p.top_k = 3;
  EXPECT_EQ(Keys(Histogram(p, l, 2000)), (std::set<int32_t>{0, 1}));
}

TEST(SamplerTest, MinPOnTheFullVocabulary) {
  std::vector<float> l = GaussianLogits(65536, 2.0f, 9);
  const float mx = *std::max_element(l.begin(), l.end());
  SamplerConfig p;
  p.min_p = 0.05f;
  std::map<int32_t, int> h = Histogram(p, l, 3000);
  for (const auto& [id, n] : h) EXPECT_GE(std::exp(l[id] - mx), 0.05f * 0.9999f) << id;
  EXPECT_GT(h.size(), 3u);
}

TEST(SamplerTest, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  SamplerConfig p;
  p.temperature = 0;
  p.repetition_penalty = 2.0f;
  auto s = MakeSampler(p, 5);
  s->AcceptPrompt({0, 1, 0, 0});  // counted once per distinct token
  std::vector<float> l = {3.0f, -2.0f, 1.0f, 0.5f, 1.4f};
  EXPECT_EQ(s->Sample(absl::MakeSpan(l)), 0);  // 3 / 2 = 1.5 still beats 1.4
  EXPECT_FLOAT_EQ(l[0], 1.5f);
  EXPECT_FLOAT_EQ(l[1], -4.0f);
  EXPECT_FLOAT_EQ(l[2], 1.0f);
  EXPECT_FLOAT_EQ(l[3], 0.5f);
  // The sampled token joined the context: 4 is penalised once it has been generated.
  l = {0.0f, 0.0f, 0.0f, 0.0f, 1.4f};
  EXPECT_EQ(s->Sample(absl::MakeSpan(l)), 4);
  l = {0.0f, 0.0f, 0.0f, 0.6f, 1.0f};
  EXPECT_EQ(s->Sample(absl::MakeSpan(l)), 3);
  EXPECT_FLOAT_EQ(l[4], 0.5f);
}

TEST(SamplerTest, PresenceAndFrequencyPenaltiesDecayLikeThePipeline) {
  SamplerConfig p;
  p.temperature = 0;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  p.penalty_decay = 0.9f;
  auto s = MakeSampler(p, 8);
  s->AcceptPrompt({1, 2});  // the prompt does not count for presence/frequency
  for (int32_t t : {3, 3, 5, 3}) s->Accept(t);
  // w3: 1 -> 0.9 + 1 = 1.9 -> 1.71 -> 1.539 + 1 = 2.539; w5: 1 -> 0.9.
  EXPECT_NEAR(s->occurrence(3), 2.539, 1e-5);
  EXPECT_NEAR(s->occurrence(5), 0.9, 1e-6);
  EXPECT_EQ(s->occurrence(1), 0.0f);
  std::vector<float> l(8, 0.0f);
  l[7] = -5.0f;
  EXPECT_EQ(s->Sample(absl::MakeSpan(l)), 0);
  EXPECT_NEAR(l[3], -(0.5 + 0.25 * 2.539), 1e-5);
  EXPECT_NEAR(l[5], -(0.5 + 0.25 * 0.9), 1e-6);
  EXPECT_EQ(l[1], 0.0f);
  EXPECT_EQ(l[7], -5.0f);
  // Sample() accepted its own token: 0 now has weight 1 and the others decayed once more.
  EXPECT_NEAR(s->occurrence(0), 1.0, 1e-6);
  EXPECT_NEAR(s->occurrence(5), 0.81, 1e-6);
}

TEST(SamplerTest, NoDecayCountsOccurrences) {
  SamplerConfig p;
  p.frequency_penalty = 1.0f;
  p.penalty_decay = 1.0f;
  auto s = MakeSampler(p, 4);
  for (int i = 0; i < 7; ++i) s->Accept(2);
  EXPECT_FLOAT_EQ(s->occurrence(2), 7.0f);
}

TEST(SamplerTest, LogitBiasChangesTheArgmax) {
  SamplerConfig p;
  p.temperature = 0;
  std::vector<float> l = {1.0f, 2.0f, 3.0f};
  EXPECT_EQ(MakeSampler(p, 3)->Sample(absl::MakeSpan(l)), 2);
  p.logit_bias = {{0, 5.0f}};
  l = {1.0f, 2.0f, 3.0f};
  EXPECT_EQ(MakeSampler(p, 3)->Sample(absl::MakeSpan(l)), 0);
  p.logit_bias = {{2, -1.5f}};
  l = {1.0f, 2.0f, 3.0f};
  EXPECT_EQ(MakeSampler(p, 3)->Sample(absl::MakeSpan(l)), 1);
}

TEST(SamplerTest, BannedTokenIsNeverSampled) {
  std::vector<float> l = GaussianLogits(65536, 1.0f, 13);
  l[1234] = 30.0f;  // overwhelmingly likely unless banned
  SamplerConfig p;
  p.banned_tokens = {1234};
  for (int mode = 0; mode < 5; ++mode) {
    SamplerConfig q = p;
    if (mode == 1) q.temperature = 0;
    if (mode == 2) q.top_k = 40;
    if (mode == 3) q.top_p = 0.5f;
    if (mode == 4) q.min_p = 0.5f;
    std::map<int32_t, int> h = Histogram(q, l, 500);
    EXPECT_EQ(h.count(1234), 0u) << "mode " << mode;
  }
  // Every token but one banned.
  p.banned_tokens.clear();
  for (int i = 0; i < 8; ++i) {
    if (i != 6) p.banned_tokens.push_back(i);
  }
  EXPECT_EQ(Keys(Histogram(p, {9, 9, 9, 9, 9, 9, 0, 9}, 200)), (std::set<int32_t>{6}));
}

TEST(SamplerTest, DegenerateLogitsFallBackToALegalToken) {
  SamplerConfig p;
  p.banned_tokens = {0, 1, 3};
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> l = {nan, nan, nan, nan, -kInf};
  EXPECT_EQ(MakeSampler(p, 5)->Sample(absl::MakeSpan(l)), 2);
  l = {0.0f, 1.0f, 2.0f, kInf, kInf};
  EXPECT_EQ(MakeSampler(p, 5)->Sample(absl::MakeSpan(l)), 4);
  // NaN entries are ignored by a normal draw.
  l = {nan, 0.0f, nan, 0.0f, nan};
  p.banned_tokens.clear();
  EXPECT_EQ(Keys(Histogram(p, l, 300)), (std::set<int32_t>{1, 3}));
}

TEST(SamplerTest, SeedMakesDrawsReproducible) {
  std::vector<float> flat(65536, 0.0f);
  for (int mode = 0; mode < 3; ++mode) {
    SamplerConfig p;
    if (mode == 1) p.top_p = 0.5f;
    if (mode == 2) p.top_k = 1000;
    auto run = [&](uint64_t seed) {
      p.seed = seed;
      auto s = MakeSampler(p, 65536);
      std::vector<int32_t> out;
      for (int i = 0; i < 30; ++i) {
        std::vector<float> l = flat;
        out.push_back(s->Sample(absl::MakeSpan(l)));
      }
      return out;
    };
    EXPECT_EQ(run(42), run(42)) << "mode " << mode;
    EXPECT_NE(run(42), run(43)) << "mode " << mode;
  }
  SamplerConfig p;
  p.seed = 99;
  EXPECT_EQ(MakeSampler(p, 10)->seed(), 99u);
  p.seed.reset();
  EXPECT_NE(MakeSampler(p, 10)->seed(), MakeSampler(p, 10)->seed());
}

TEST(SamplerTest, FullVocabularyDrawMatchesTheDistribution) {
  // Four tokens (one in the last block) with p = 0.2 each; the other 65532 share 0.2.
  std::vector<float> l(65536, 0.0f);
  const std::vector<int32_t> heavy = {100, 20000, 40000, 65535};
  for (int32_t t : heavy) l[t] = std::log(65532.0f);
  constexpr int kDraws = 20000;
  std::map<int32_t, int> h = Histogram(SamplerConfig{}, l, kDraws);
  int rest = kDraws;
  for (int32_t t : heavy) {
    EXPECT_NEAR(h[t] / double{kDraws}, 0.2, 0.015) << t;
    rest -= h[t];
  }
  EXPECT_NEAR(rest / double{kDraws}, 0.2, 0.015);
}

TEST(SamplerTest, ValidateNamesTheField) {
  struct Case {
    void (*mutate)(SamplerConfig&);
    const char* message;
  };
  const Case cases[] = {
      {[](SamplerConfig& p) { p.temperature = -1; }, "temperature must be in [0, inf)"},
      {[](SamplerConfig& p) { p.temperature = std::nanf(""); }, "temperature"},
      {[](SamplerConfig& p) { p.top_k = -1; }, "top_k must be >= 0 (0 = off), got -1"},
      {[](SamplerConfig& p) { p.top_p = 1.5f; }, "top_p must be in (0, 1], got 1.5"},
      {[](SamplerConfig& p) { p.top_p = 0; }, "top_p must be in (0, 1], got 0"},
      {[](SamplerConfig& p) { p.top_p = std::nanf(""); }, "top_p must be in (0, 1], got nan"},
      {[](SamplerConfig& p) { p.min_p = 2; }, "min_p must be in [0, 1], got 2"},
      {[](SamplerConfig& p) { p.repetition_penalty = 0; }, "repetition_penalty"},
      {[](SamplerConfig& p) { p.presence_penalty = 1000; }, "presence_penalty"},
      {[](SamplerConfig& p) { p.frequency_penalty = std::nanf(""); }, "frequency_penalty"},
      {[](SamplerConfig& p) { p.penalty_decay = 1.5f; }, "penalty_decay"},
      {[](SamplerConfig& p) {
         p.logit_bias = {{70000, 1.0f}};
       },
       "logit_bias token 70000 is outside the vocabulary [0, 65536)"},
      {[](SamplerConfig& p) {
         p.logit_bias = {{5, kInf}};
       },
       "logit_bias[5] must be finite"},
      {[](SamplerConfig& p) {
         p.banned_tokens = {1, -1};
       },
       "banned_tokens[1] = -1 is outside the vocabulary"},
      {[](SamplerConfig& p) { p.logprobs_top_n = 21; }, "logprobs_top_n"},
  };
  EXPECT_TRUE(SamplerConfig{}.Validate(65536).ok());
  for (const Case& c : cases) {
    SamplerConfig p;
    c.mutate(p);
    absl::Status st = p.Validate(65536);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(std::string(st.message()), HasSubstr(c.message));
    EXPECT_EQ(Sampler::Create(p, 65536).status(), st);
  }
  SamplerConfig all;
  all.banned_tokens = {0, 1, 2, 1};
  EXPECT_THAT(std::string(all.Validate(3).message()), HasSubstr("banned_tokens bans all 3"));
  EXPECT_TRUE(all.Validate(4).ok());
  EXPECT_THAT(std::string(SamplerConfig{}.Validate(0).message()), HasSubstr("vocab_size"));
}

// log_softmax in double, the reference for the logprobs.
std::vector<double> LogSoftmax(const std::vector<float>& l) {
  double mx = -INFINITY;
  for (float x : l) mx = std::max<double>(mx, x);
  double z = 0;
  for (float x : l) z += std::exp(x - mx);
  std::vector<double> out;
  for (float x : l) out.push_back(x - mx - std::log(z));
  return out;
}

TEST(SamplerTest, LogprobsMatchLogSoftmaxBeforeTemperature) {
  std::vector<float> l = GaussianLogits(1000, 3.0f, 21);
  const std::vector<double> ref = LogSoftmax(l);
  std::vector<int32_t> order(1000);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return l[a] > l[b]; });
  for (float temperature : {1.0f, 0.3f, 0.0f}) {
    SamplerConfig p;
    p.temperature = temperature;
    p.top_k = 50;
    p.logprobs_top_n = 5;
    p.seed = 3;
    auto s = MakeSampler(p, 1000);
    std::vector<float> work = l;
    SampleResult r;
    const int32_t t = s->Sample(absl::MakeSpan(work), &r);
    EXPECT_NEAR(r.logprob, ref[t], 1e-5);
    ASSERT_EQ(r.top_logprobs.size(), 5u);
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(r.top_logprobs[i].first, order[i]);
      EXPECT_NEAR(r.top_logprobs[i].second, ref[order[i]], 1e-5);
    }
  }
}

TEST(SamplerTest, LogprobsAreNormalisedAndIncludePenalties) {
  SamplerConfig p;
  p.logprobs_top_n = 4;
  p.banned_tokens = {2};
  p.logit_bias = {{3, 1.0f}};
  auto s = MakeSampler(p, 4);
  std::vector<float> l = {0.5f, -1.0f, 2.0f, 0.25f};
  SampleResult r;
  s->Sample(absl::MakeSpan(l), &r);
  ASSERT_EQ(r.top_logprobs.size(), 3u);  // the banned token has no probability to report
  double sum = 0;
  for (const auto& [id, lp] : r.top_logprobs) sum += std::exp(lp);
  EXPECT_NEAR(sum, 1.0, 1e-6);
  EXPECT_EQ(r.top_logprobs[0].first, 3);  // 0.25 + bias 1.0 beats 0.5
  EXPECT_NEAR(r.top_logprobs[0].second, LogSoftmax({0.5f, -1.0f, -kInf, 1.25f})[3], 1e-6);

  // top_n = 0: the chosen token only. top_n = -1: `out` untouched.
  p.logprobs_top_n = 0;
  l = {0.5f, -1.0f, 2.0f, 0.25f};
  r.top_logprobs = {{9, 9.0f}};
  const int32_t t = MakeSampler(p, 4)->Sample(absl::MakeSpan(l), &r);
  EXPECT_TRUE(r.top_logprobs.empty());
  EXPECT_NEAR(r.logprob, LogSoftmax({0.5f, -1.0f, -kInf, 1.25f})[t], 1e-6);
  p.logprobs_top_n = -1;
  r.logprob = 42.0f;
  MakeSampler(p, 4)->Sample(absl::MakeSpan(l), &r);
  EXPECT_EQ(r.logprob, 42.0f);
}

TEST(SamplerTest, ShortLogitsUseOnlyWhatIsThere) {
  SamplerConfig p;
  auto s = MakeSampler(p, 100);
  std::vector<float> l = {0.0f, 1.0f, 2.0f};
  for (int i = 0; i < 50; ++i) EXPECT_LT(s->Sample(absl::MakeSpan(l)), 3);
}

}  // namespace
}  // namespace modrwkv

namespace modrwkv {
namespace {

// A toy vocabulary and schema {"a": integer}: whatever the logits prefer, only tokens that
// continue the document are drawn, and the answer ends once it is complete.
struct Constrained {
  std::shared_ptr<const grammar::TokenConstraint> constraint;
  std::vector<std::string> bytes = {"", "{", "}", "\"a\"", ":", "1", "x", " ", "{\"a\":"};

  Constrained() {
    auto g = grammar::JsonGrammar::FromSchema(
        nlohmann::json::parse(
            R"({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]})"),
        "schema");
    EXPECT_TRUE(g.ok()) << g.status();
    constraint = std::make_shared<const grammar::TokenConstraint>(
        *g, std::make_shared<const grammar::TokenVocabulary>(bytes));
  }
};

TEST(SamplerConstraintTest, DrawsOnlyWhatContinuesTheDocument) {
  Constrained c;
  for (const float temperature : {0.0f, 1.0f}) {
    SamplerConfig p;
    p.temperature = temperature;
    p.seed = 7;
    p.logprobs_top_n = 2;
    p.constraint = c.constraint;
    auto s = MakeSampler(p, 9);
    std::string text;
    for (int step = 0; step < 40 && !s->constraint_complete(); ++step) {
      std::vector<float> logits = {0, 1, 5, 0, 2, 3, 9, 4, 1};  // "x" most likely, never valid
      SampleResult r;
      const int32_t t = s->Sample(absl::MakeSpan(logits), &r);
      ASSERT_NE(t, 6);
      EXPECT_TRUE(std::isfinite(r.logprob));
      EXPECT_EQ(logits[6], -kInf);  // masked before the logprobs
      text += c.bytes[t];
    }
    EXPECT_TRUE(s->constraint_complete()) << text;
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << text;
    EXPECT_TRUE(j["a"].is_number_integer()) << text;
  }
}

TEST(SamplerConstraintTest, EverythingAllowedBannedFallsBackToTheLowestAllowedId) {
  Constrained c;
  SamplerConfig p;
  p.temperature = 0;
  p.constraint = c.constraint;
  p.banned_tokens = {1, 8};  // the only two tokens that can start the object
  auto s = MakeSampler(p, 9);
  std::vector<float> logits(9, 0.0f);
  EXPECT_EQ(s->Sample(absl::MakeSpan(logits)), 1);
}

TEST(SamplerConstraintTest, EndTokensCloseADocumentThatMayEnd) {
  auto g = grammar::JsonGrammar::FromSchema(nlohmann::json::parse(R"({"type": "integer"})"), "s");
  ASSERT_TRUE(g.ok());
  SamplerConfig p;
  p.temperature = 0;
  p.constraint = std::make_shared<const grammar::TokenConstraint>(
      *g, std::make_shared<const grammar::TokenVocabulary>(std::vector<std::string>{"", "1", "x"}));
  p.constraint_end_tokens = {0};
  auto s = MakeSampler(p, 3);
  std::vector<float> logits = {9, 1, 5};
  EXPECT_EQ(s->Sample(absl::MakeSpan(logits)), 1);  // nothing written: the end is not allowed
  logits = {9, 1, 5};
  EXPECT_EQ(s->Sample(absl::MakeSpan(logits)), 0);  // "1" may end
  EXPECT_TRUE(s->constraint_complete());
  // A banned end token cannot close it: with none left, "1" ends the answer at once.
  p.banned_tokens = {0};
  auto banned_end = MakeSampler(p, 3);
  logits = {9, 1, 5};
  EXPECT_EQ(banned_end->Sample(absl::MakeSpan(logits)), 1);
  EXPECT_TRUE(banned_end->constraint_complete());
}

}  // namespace
}  // namespace modrwkv
