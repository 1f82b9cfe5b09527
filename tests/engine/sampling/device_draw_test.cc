// Sampling on the device, its reference definition (engine/sampling/device_draw.h) against the
// Sampler: the edits reproduce the Sampler's penalties, bias and bans bit for bit, the kept tokens
// and their probabilities are the Sampler's distribution, and the draw walks them in id order.
#include "engine/sampling/device_draw.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <vector>

#include "engine/sampling/sampler.h"
#include "gtest/gtest.h"

namespace modrwkv {
namespace {

constexpr int kVocab = 2000;

std::vector<float> RandomLogits(uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(kVocab);
  for (float& x : v) x = normal(rng);
  return v;
}

SamplerConfig Penalised() {
  SamplerConfig c;
  c.temperature = 0.8f;
  c.repetition_penalty = 1.3f;
  c.presence_penalty = 0.4f;
  c.frequency_penalty = 0.25f;
  c.penalty_decay = 0.9f;
  c.logit_bias = {{7, 2.5f}, {8, -1.0f}, {11, 0.75f}};
  c.banned_tokens = {0, 1, 3};
  c.seed = 99;
  return c;
}

TEST(DeviceDrawTest, EditsReproduceTheSamplersPenaltiesBitForBit) {
  auto a = Sampler::Create(Penalised(), kVocab).value();
  auto b = Sampler::Create(Penalised(), kVocab).value();
  const std::vector<int32_t> prompt = {5, 6, 7, 11, 900};
  a->AcceptPrompt(prompt);
  b->AcceptPrompt(prompt);
  for (int32_t t : {7, 7, 12, 1999, 8, 7}) {
    a->Accept(t);
    b->Accept(t);
  }
  std::vector<float> logits = RandomLogits(1, 3.0f);
  logits[5] = -2.0f;  // a negative logit under the repetition penalty
  std::vector<float> ours = logits;
  a->Sample(absl::MakeSpan(logits));  // leaves the penalised logits in place
  std::vector<LogitEdit> edits;
  const DeviceDraw d = b->PrepareDeviceDraw(&edits);
  ApplyLogitEdits(absl::MakeSpan(ours), edits);
  EXPECT_EQ(std::memcmp(ours.data(), logits.data(), logits.size() * 4), 0);
  EXPECT_EQ(d.fallback, 2);  // 0 and 1 are banned
  EXPECT_FLOAT_EQ(d.temperature, 0.8f);
  // One edit per touched token: 5, 6, 7, 11, 900 (seen), 12, 1999, 8 (generated), 0, 1, 3 (bans).
  EXPECT_EQ(edits.size(), 11u);
}

// The Sampler's empirical frequencies agree with the reference probabilities (within 5 sigma for
// every token expected 30 times or more), and it never draws a token the reference excludes.
TEST(DeviceDrawTest, KeptTokensAndProbabilitiesAreTheSamplers) {
  struct Case {
    float temperature;
    int top_k;
    float top_p, min_p;
  };
  for (const Case& c :
       {Case{1.0f, 0, 1.0f, 0.0f}, Case{0.7f, 40, 1.0f, 0.0f}, Case{1.0f, 0, 0.9f, 0.0f},
        Case{1.2f, 0, 1.0f, 0.05f}, Case{0.9f, 100, 0.8f, 0.02f}}) {
    SamplerConfig cfg;
    cfg.temperature = c.temperature;
    cfg.top_k = c.top_k;
    cfg.top_p = c.top_p;
    cfg.min_p = c.min_p;
    cfg.seed = 5;
    cfg.penalty_decay = 1.0f;
    auto s = Sampler::Create(cfg, kVocab).value();
    const std::vector<float> logits = RandomLogits(3, 2.0f);
    DeviceDraw d;
    d.temperature = c.temperature;
    d.top_k = c.top_k;
    d.top_p = c.top_p;
    d.min_p = c.min_p;
    const std::vector<double> p = DeviceDrawProbabilities(logits, d);
    double sum = 0;
    int support = 0;
    for (double x : p) {
      sum += x;
      support += x > 0;
    }
    EXPECT_NEAR(sum, 1.0, 1e-9);
    if (c.top_k > 0) {
      EXPECT_LE(support, c.top_k);
    }
    constexpr int kDraws = 40000;
    std::vector<int> seen(kVocab, 0);
    for (int i = 0; i < kDraws; ++i) {
      std::vector<float> l = logits;
      ++seen[s->Sample(absl::MakeSpan(l))];
    }
    int tested = 0;
    for (int t = 0; t < kVocab; ++t) {
      if (seen[t] > 0) {
        ASSERT_GT(p[t], 0.0) << "token " << t << " drawn by the Sampler";
      }
      const double want = p[t] * kDraws;
      if (want < 30) continue;
      ++tested;
      EXPECT_LT(std::abs(seen[t] - want), 5 * std::sqrt(want))
          << "token " << t << " T=" << c.temperature << " k=" << c.top_k << " p=" << c.top_p;
    }
    EXPECT_GT(tested, 5);
  }
}

TEST(DeviceDrawTest, TheDrawWalksTheKeptTokensInIdOrder) {
  std::vector<float> logits(8, -std::numeric_limits<float>::infinity());
  logits[2] = 0.0f;            // p = 1
  logits[5] = std::log(3.0f);  // p = 3
  logits[6] = std::log(0.001f);
  DeviceDraw d;
  d.min_p = 0.01f;  // drops token 6 (p relative to the top: 0.00033)
  std::map<int32_t, int> hits;
  constexpr int kSteps = 4000;
  for (int i = 0; i < kSteps; ++i) {
    d.u = (i + 0.5) / kSteps;
    ++hits[ReferenceDeviceDraw(logits, d)];
  }
  EXPECT_EQ(hits.size(), 2u);
  EXPECT_EQ(hits[2], kSteps / 4);  // u < 0.25: token 2, then token 5
  EXPECT_EQ(hits[5], 3 * kSteps / 4);
  d.u = 0.0;
  EXPECT_EQ(ReferenceDeviceDraw(logits, d), 2);
}

TEST(DeviceDrawTest, DegenerateLogits) {
  const float inf = std::numeric_limits<float>::infinity();
  DeviceDraw d;
  d.fallback = 4;
  std::vector<float> none(6, -inf);
  none[1] = std::nanf("");
  EXPECT_EQ(ReferenceDeviceDraw(none, d), 4);
  std::vector<float> plus = {0.0f, inf, 3.0f, inf};
  EXPECT_EQ(ReferenceDeviceDraw(plus, d), 1);  // the lowest +inf
  std::vector<float> greedy = {0.5f, 2.0f, 2.0f, -1.0f};
  d.temperature = 0.0f;
  EXPECT_EQ(ReferenceDeviceDraw(greedy, d), 1);  // lowest id on a tie
  d.temperature = 1e-39f;                        // 1 / temperature overflows: greedy
  EXPECT_EQ(ReferenceDeviceDraw(greedy, d), 1);
  EXPECT_EQ(DeviceDrawProbabilities(greedy, d)[1], 1.0);
  d.temperature = 1.0f;
  d.min_p = 1.5f;  // nothing kept: the argmax, never an empty draw
  EXPECT_EQ(ReferenceDeviceDraw(greedy, d), 1);
  EXPECT_EQ(DeviceDrawProbabilities(greedy, d)[1], 1.0);
  d.min_p = 0.0f;
  // Edits out of range are ignored; a ban wins over everything else.
  std::vector<float> l = {1.0f, 2.0f};
  ApplyLogitEdits(absl::MakeSpan(l),
                  {LogitEdit{5, 2.0f, 1.0f, 1.0f, 0}, LogitEdit{1, 2.0f, 1.0f, 1.0f, 1}});
  EXPECT_EQ(l[0], 1.0f);
  EXPECT_EQ(l[1], -inf);
}

// The logprobs a draw reports are the Sampler's SampleResult for the same token: the same ids in
// the same order, values within float rounding (the Sampler's vector exp against std::exp).
TEST(DeviceDrawTest, LogprobsAreTheSamplers) {
  for (const int top_n : {0, 1, 5, 20}) {
    SamplerConfig c = Penalised();
    c.logprobs_top_n = top_n;
    auto sampler = Sampler::Create(c, kVocab).value();
    for (uint32_t seed = 0; seed < 20; ++seed) {
      std::vector<float> logits = RandomLogits(100 + seed, 4.0f);
      logits[50] = logits[51] = logits[52] = 9.0f;  // a tie at the top: lower ids first
      logits[60] = std::nanf("");
      SampleResult want;
      const int32_t token = sampler->Sample(absl::MakeSpan(logits), &want);  // edits them
      const DeviceLogprobs got = ReferenceDeviceLogprobs(logits, token, top_n);
      EXPECT_NEAR(got.logprob, want.logprob, 1e-5) << "top_n " << top_n << ", seed " << seed;
      ASSERT_EQ(got.count, static_cast<int32_t>(want.top_logprobs.size()));
      for (int t = 0; t < got.count; ++t) {
        EXPECT_EQ(got.ids[t], want.top_logprobs[t].first);
        EXPECT_NEAR(got.values[t], want.top_logprobs[t].second, 1e-5);
      }
    }
  }
  // No distribution: nothing listed; the chosen token's is 0 on +inf, else -inf.
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> plus = {0.0f, inf, 1.0f};
  EXPECT_EQ(ReferenceDeviceLogprobs(plus, 1, 3).logprob, 0.0f);
  EXPECT_EQ(ReferenceDeviceLogprobs(plus, 1, 3).count, 0);
  std::vector<float> none = {-inf, std::nanf(""), -inf};
  EXPECT_EQ(ReferenceDeviceLogprobs(none, 0, 3).logprob, -inf);
  EXPECT_EQ(ReferenceDeviceLogprobs(none, 0, 3).count, 0);
  // Fewer finite logits than asked for: only those.
  std::vector<float> two = {-inf, 1.0f, -inf, 1.0f};
  const DeviceLogprobs t = ReferenceDeviceLogprobs(two, 3, 20);
  ASSERT_EQ(t.count, 2);
  EXPECT_EQ(t.ids[0], 1);
  EXPECT_EQ(t.ids[1], 3);
  EXPECT_NEAR(t.values[0], std::log(0.5), 1e-6);
  EXPECT_NEAR(t.logprob, std::log(0.5), 1e-6);
}

// The edits and the draw carry what a backend needs to stay on the Sampler's random stream: one
// number per step, and the Accept()ed tokens feed the next step's edits.
TEST(DeviceDrawTest, SameSeedSameDraws) {
  SamplerConfig cfg = Penalised();
  auto a = Sampler::Create(cfg, kVocab).value();
  auto b = Sampler::Create(cfg, kVocab).value();
  for (int i = 0; i < 5; ++i) {
    std::vector<LogitEdit> ea, eb;
    const DeviceDraw da = a->PrepareDeviceDraw(&ea), db = b->PrepareDeviceDraw(&eb);
    EXPECT_EQ(da.u, db.u);
    EXPECT_EQ(ea.size(), eb.size());
    a->Accept(100 + i);
    b->Accept(100 + i);
  }
  EXPECT_TRUE(a->CanDrawOnDevice());
  std::vector<LogitEdit> edits;
  EXPECT_EQ(a->PrepareDeviceDraw(&edits).logprobs_top_n, -1);
  cfg.logprobs_top_n = 2;  // logprobs are reported by the device draw too
  auto c = Sampler::Create(cfg, kVocab).value();
  EXPECT_TRUE(c->CanDrawOnDevice());
  EXPECT_EQ(c->PrepareDeviceDraw(&edits).logprobs_top_n, 2);
}

}  // namespace
}  // namespace modrwkv
