// Structured output's cost per token on the World vocabulary (65,536 ids): applying a cached mask
// and advancing the matcher (every constrained token pays this), against a plain greedy
// Sampler::Sample; and computing a mask the first time a state is seen (paid once per distinct
// state per schema, then cached).
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "engine/grammar/token_constraint.h"
#include "engine/sampling/sampler.h"
#include "engine/text/tokenizer.h"

namespace modrwkv {
namespace {

using grammar::ConstrainedSequence;
using grammar::JsonGrammar;
using grammar::TokenConstraint;
using grammar::TokenVocabulary;

constexpr char kSchema[] = R"({"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 32}, "age": {"type": "integer"},
    "email": {"type": ["string", "null"]},
    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 8}},
    "required": ["name", "age"]})";
constexpr char kDocument[] =
    R"({"name": "Ada Lovelace", "age": 36, "email": null, "tags": ["math", "poetry", "engines"]})";

struct World {
  std::unique_ptr<Tokenizer> tok;
  std::shared_ptr<const TokenVocabulary> vocab;
  std::vector<int32_t> doc;  // kDocument's tokens
};

const World& GetWorld() {
  static const World* w = [] {
    auto* out = new World;
    out->tok =
        *Tokenizer::LoadFile(std::string(MODRWKV_SOURCE_DIR) + "/assets/rwkv_vocab_v20230424.txt");
    out->vocab = std::make_shared<const TokenVocabulary>(out->tok->AllTokenBytes());
    out->doc = out->tok->Encode(kDocument);
    return out;
  }();
  return *w;
}

std::shared_ptr<const TokenConstraint> NewConstraint() {
  auto g = JsonGrammar::FromSchema(nlohmann::json::parse(kSchema), "schema");
  return std::make_shared<const TokenConstraint>(*g, GetWorld().vocab);
}

// Mask + advance for each token of the document, masks cached (the steady state).
void BM_MaskAndAdvanceWarm(benchmark::State& state) {
  const World& w = GetWorld();
  auto c = NewConstraint();
  std::vector<float> logits(65536, 0.0f);
  for (int pass = 0; pass < 2; ++pass) {  // fill the cache
    ConstrainedSequence seq(c, {0});
    for (int32_t t : w.doc) {
      seq.MaskLogits(absl::MakeSpan(logits));
      seq.Accept(t);
    }
  }
  for (auto _ : state) {
    ConstrainedSequence seq(c, {0});
    for (int32_t t : w.doc) {
      seq.MaskLogits(absl::MakeSpan(logits));
      seq.Accept(t);
    }
    benchmark::DoNotOptimize(logits.data());
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(w.doc.size()));
  state.counters["tokens"] = static_cast<double>(w.doc.size());
}
BENCHMARK(BM_MaskAndAdvanceWarm)->Unit(benchmark::kMicrosecond);

// The same walk on a fresh constraint: every state's mask computed once.
void BM_MaskAndAdvanceCold(benchmark::State& state) {
  const World& w = GetWorld();
  std::vector<float> logits(65536, 0.0f);
  int64_t masks = 0;
  for (auto _ : state) {
    auto c = NewConstraint();
    ConstrainedSequence seq(c, {0});
    for (int32_t t : w.doc) {
      seq.MaskLogits(absl::MakeSpan(logits));
      seq.Accept(t);
    }
    masks += c->stats().computed;
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(w.doc.size()));
  state.counters["masks_per_doc"] = static_cast<double>(masks) / state.iterations();
  state.counters["ms_per_mask"] = benchmark::Counter(
      static_cast<double>(masks), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_MaskAndAdvanceCold)->Unit(benchmark::kMillisecond);

// A greedy Sampler::Sample per token, with and without the constraint (warm): the whole
// per-token cost of the sampling stage.
void BM_GreedySample(benchmark::State& state) {
  const bool constrained = state.range(0) != 0;
  const World& w = GetWorld();
  SamplerConfig p;
  p.temperature = 0;
  if (constrained) p.constraint = NewConstraint();
  std::vector<float> base(65536);
  for (size_t i = 0; i < base.size(); ++i) base[i] = static_cast<float>((i * 7919) % 1000) * 1e-3f;
  std::vector<float> logits;
  auto run_doc = [&] {
    auto s = *Sampler::Create(p, 65536);
    for (int32_t t : w.doc) {
      logits = base;
      logits[t] = 10;  // the document's next token is the most likely: the walk stays valid
      benchmark::DoNotOptimize(s->Sample(absl::MakeSpan(logits)));
    }
  };
  run_doc();  // fill the cache
  for (auto _ : state) run_doc();
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(w.doc.size()));
}
BENCHMARK(BM_GreedySample)->Arg(0)->Arg(1)->ArgName("constrained")->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace modrwkv
