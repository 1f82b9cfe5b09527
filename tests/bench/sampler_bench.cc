// Cost of one Sampler::Sample call on a 65536-token vocabulary, per sampling mode.
//
// "lm" logits imitate a language model: Gaussian bulk (sd 2) with a few dozen strong candidates,
// so the nucleus is small. "flat" logits (Gaussian, sd 1) make the top-p nucleus tens of thousands
// of tokens: the worst case for top-p. Cases with penalties, bias or bans copy the logits back
// before each call (Sample edits them in place); BM_CopyLogits is that copy alone.
#include <cstring>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "engine/sampling/sampler.h"

namespace modrwkv {
namespace {

constexpr int kVocab = 65536;

std::vector<float> MakeLogits(bool flat) {
  std::mt19937 gen(1);
  std::normal_distribution<float> d(0.0f, flat ? 1.0f : 2.0f);
  std::vector<float> l(kVocab);
  for (float& x : l) x = d(gen);
  if (!flat) {
    for (int i = 0; i < 40; ++i) l[gen() % kVocab] = 12.0f + 0.2f * static_cast<float>(i);
  }
  return l;
}

void Run(benchmark::State& state, SamplerConfig p, bool flat, bool restore) {
  p.seed = 7;
  auto sampler = Sampler::Create(p, kVocab);
  if (!sampler.ok()) {
    state.SkipWithError(std::string(sampler.status().message()).c_str());
    return;
  }
  const std::vector<float> base = MakeLogits(flat);
  std::vector<float> logits = base;
  SampleResult result;
  SampleResult* out = p.logprobs_top_n >= 0 ? &result : nullptr;
  for (auto _ : state) {
    if (restore) std::memcpy(logits.data(), base.data(), base.size() * sizeof(float));
    benchmark::DoNotOptimize((*sampler)->Sample(absl::MakeSpan(logits), out));
  }
}

void BM_CopyLogits(benchmark::State& state) {
  const std::vector<float> base = MakeLogits(false);
  std::vector<float> logits(kVocab);
  for (auto _ : state) {
    std::memcpy(logits.data(), base.data(), base.size() * sizeof(float));
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_CopyLogits);

void BM_Greedy(benchmark::State& state) {
  SamplerConfig p;
  p.temperature = 0;
  Run(state, p, false, false);
}
BENCHMARK(BM_Greedy);

void BM_Temperature(benchmark::State& state) {  // full-vocabulary draw, no truncation
  SamplerConfig p;
  p.temperature = 0.8f;
  Run(state, p, false, false);
}
BENCHMARK(BM_Temperature);

void BM_TopP09(benchmark::State& state) {
  SamplerConfig p;
  p.temperature = 0.8f;
  p.top_p = 0.9f;
  Run(state, p, false, false);
}
BENCHMARK(BM_TopP09);

void BM_TopP09Flat(benchmark::State& state) {
  SamplerConfig p;
  p.temperature = 0.8f;
  p.top_p = 0.9f;
  Run(state, p, true, false);
}
BENCHMARK(BM_TopP09Flat);

void BM_TopK40(benchmark::State& state) {
  SamplerConfig p;
  p.top_k = 40;
  Run(state, p, false, false);
}
BENCHMARK(BM_TopK40);

void BM_TopK40TopP09(benchmark::State& state) {
  SamplerConfig p;
  p.temperature = 0.8f;
  p.top_k = 40;
  p.top_p = 0.9f;
  Run(state, p, false, false);
}
BENCHMARK(BM_TopK40TopP09);

void BM_MinP(benchmark::State& state) {
  SamplerConfig p;
  p.min_p = 0.05f;
  Run(state, p, false, false);
}
BENCHMARK(BM_MinP);

// ChatRWKV-like settings after a long conversation: 1000 prompt tokens and 1000 generated ones.
void BM_PenaltiesTopP(benchmark::State& state) {
  SamplerConfig p;
  p.temperature = 1.0f;
  p.top_p = 0.3f;
  p.repetition_penalty = 1.1f;
  p.presence_penalty = 0.3f;
  p.frequency_penalty = 0.3f;
  p.penalty_decay = 0.996f;
  p.banned_tokens = {0};
  p.logit_bias = {{11, -1.0f}, {33, 2.0f}};
  p.seed = 7;
  auto sampler = std::move(Sampler::Create(p, kVocab)).value();
  std::mt19937 gen(3);
  std::vector<int32_t> prompt(1000);
  for (int32_t& t : prompt) t = static_cast<int32_t>(gen() % kVocab);
  sampler->AcceptPrompt(prompt);
  for (int i = 0; i < 1000; ++i) sampler->Accept(static_cast<int32_t>(gen() % kVocab));
  const std::vector<float> base = MakeLogits(false);
  std::vector<float> logits(kVocab);
  for (auto _ : state) {
    std::memcpy(logits.data(), base.data(), base.size() * sizeof(float));
    benchmark::DoNotOptimize(sampler->Sample(absl::MakeSpan(logits)));
  }
}
BENCHMARK(BM_PenaltiesTopP);

void BM_TopP09Logprobs5(benchmark::State& state) {
  SamplerConfig p;
  p.top_p = 0.9f;
  p.logprobs_top_n = 5;
  Run(state, p, false, false);
}
BENCHMARK(BM_TopP09Logprobs5);

}  // namespace
}  // namespace modrwkv
