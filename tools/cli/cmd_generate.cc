// generate: one prompt, streamed completion on stdout. Drives one sequence through Model::Step
// directly (the server's scheduler does the same for many).
#include <chrono>
#include <cstdio>

#include "absl/strings/str_format.h"
#include "engine/sampling/sampler.h"
#include "engine/text/stop_conditions.h"
#include "engine/text/token_output.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"

namespace modrwkv::cli {
namespace {

constexpr int kPrefillChunk = 512;

absl::StatusOr<SamplerConfig> SamplingFromFlags(const Flags& f) {
  SamplerConfig p;
  auto fl = [&](const char* name, double lo, double hi, float* out) -> absl::Status {
    auto v = f.Float(name, lo, hi);
    if (!v.ok()) return v.status();
    *out = static_cast<float>(*v);
    return absl::OkStatus();
  };
  for (auto st :
       {fl("temperature", 0, 100, &p.temperature), fl("top-p", 0, 1, &p.top_p),
        fl("min-p", 0, 1, &p.min_p), fl("repetition-penalty", 0, 100, &p.repetition_penalty),
        fl("presence-penalty", -100, 100, &p.presence_penalty),
        fl("frequency-penalty", -100, 100, &p.frequency_penalty),
        fl("penalty-decay", 0, 1, &p.penalty_decay)}) {
    if (!st.ok()) return st;
  }
  auto top_k = f.Int("top-k", 0, 1 << 30);
  if (!top_k.ok()) return top_k.status();
  p.top_k = static_cast<int>(*top_k);
  if (!f.Str("seed").empty()) {
    auto seed = f.Int("seed", 0, INT64_MAX);
    if (!seed.ok()) return seed.status();
    p.seed = static_cast<uint64_t>(*seed);
  }
  auto ban = ParseIds(f.Str("ban"), "ban");
  if (!ban.ok()) return ban.status();
  p.banned_tokens = *ban;
  return p;
}

}  // namespace

int RunGenerate(int argc, char** argv) {
  Flags flags("generate", "--model M [--vocab V] --prompt TEXT [--max-tokens N] [sampling flags]",
              "Generates a completion of the prompt and prints only the generated text, "
              "streaming as it goes.");
  AddModelFlags(flags);
  flags.Add("vocab", "", "vocabulary file; default: next to the model, then the bundled copy")
      .Add("prompt", "", "prompt text", true)
      .Add("max-tokens", "200", "stop after this many tokens")
      .Add("temperature", "1.0", "0 = greedy")
      .Add("top-k", "0", "keep the k most likely tokens (0 = off)")
      .Add("top-p", "0.3", "nucleus sampling mass (1 = off)")
      .Add("min-p", "0", "drop tokens below min-p * p(most likely) (0 = off)")
      .Add("repetition-penalty", "1.0", "HF-style penalty on seen tokens (1 = off)")
      .Add("presence-penalty", "0.5", "RWKV-style presence penalty")
      .Add("frequency-penalty", "0.5", "RWKV-style frequency penalty")
      .Add("penalty-decay", "0.996", "per-token decay of the occurrence weights")
      .Add("seed", "", "sampling seed (reproducible output)")
      .Add("ban", "", "banned token ids, comma-separated")
      .Add("stop", "", "stop string (repeat the flag for several)")
      .Add("stop-token", "0", "stop token ids, comma-separated (0 = end of text)")
      .AddBool("stats", "print timing to stderr at the end");
  auto parsed = flags.Parse(argc, argv, 2);
  if (!parsed.ok()) return UsageError(flags, parsed.status());
  if (!*parsed) return 0;

  auto params = SamplingFromFlags(flags);
  if (!params.ok()) return UsageError(flags, params.status());
  StopConditions stop;
  auto max_tokens = flags.Int("max-tokens", 1, 1 << 24);
  if (!max_tokens.ok()) return UsageError(flags, max_tokens.status());
  stop.max_tokens = static_cast<int>(*max_tokens);
  for (const std::string& s : flags.All("stop")) {
    if (!s.empty()) stop.stop_strings.push_back(s);
  }
  auto stop_ids = ParseIds(flags.Str("stop-token"), "stop-token");
  if (!stop_ids.ok()) return UsageError(flags, stop_ids.status());
  stop.stop_token_ids = *stop_ids;

  auto tok = LoadTokenizer(flags.Str("vocab"), flags.Str("model"));
  if (!tok.ok()) return Fail(tok.status());
  auto model = LoadModelFromFlags(flags, 1);
  if (!model.ok()) return Fail(model.status());
  Model& m = **model;
  const int vocab = m.config().vocab_size;
  if (auto st = params->Validate(vocab); !st.ok()) return UsageError(flags, st);
  if (auto st = stop.Validate(vocab); !st.ok()) return UsageError(flags, st);

  const std::vector<int32_t> prompt = (*tok)->Encode(flags.Str("prompt"));
  if (prompt.empty()) return UsageError(flags, absl::InvalidArgumentError("--prompt is empty"));
  for (int32_t t : prompt) {
    if (t >= vocab) {
      return Fail(absl::InvalidArgumentError(
          absl::StrFormat("prompt token %d is outside the model's vocabulary of %d", t, vocab)));
    }
  }
  // Ids the vocabulary has no bytes for (the embedding table has 65536 rows, the World vocab
  // 65530 ids; later ModRWKV checkpoints use a few of them as modality markers) are never text.
  for (int32_t id = (*tok)->vocab_size(); id < vocab; ++id) params->banned_tokens.push_back(id);
  auto sampler = Sampler::Create(*params, vocab);
  if (!sampler.ok()) return UsageError(flags, sampler.status());
  (*sampler)->AcceptPrompt(prompt);

  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  std::vector<StepResult> res;
  StepEntry entry;
  entry.slot = 0;
  entry.sampler = sampler->get();
  // Prefill in chunks; the last one samples the first generated token.
  for (size_t pos = 0; pos < prompt.size(); pos += kPrefillChunk) {
    const size_t n = std::min<size_t>(kPrefillChunk, prompt.size() - pos);
    entry.inputs = {InputRowsView::Tokens(absl::MakeConstSpan(prompt).subspan(pos, n))};
    entry.output = pos + n == prompt.size() ? StepOutput::kSample : StepOutput::kNone;
    if (auto st = m.Step({entry}, &res); !st.ok()) return Fail(st);
  }
  const auto t_first = Clock::now();

  TokenOutput output(tok->get(), stop, m.config().vocab_size);
  auto emit = [](const std::string& s) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  };
  int32_t token = res[0].token;
  while (true) {
    const TokenOutput::Result r = output.Push(token);
    emit(r.text);
    if (r.stop != StopReason::kNone) break;
    const int32_t in[1] = {token};
    entry.inputs = {InputRowsView::Tokens(in)};
    entry.output = StepOutput::kSample;
    if (auto st = m.Step({entry}, &res); !st.ok()) return Fail(st);
    token = res[0].token;
  }
  const int generated = output.generated();
  emit("\n");
  if (flags.Bool("stats")) {
    const double prefill_s = std::chrono::duration<double>(t_first - t0).count();
    const double decode_s = std::chrono::duration<double>(Clock::now() - t_first).count();
    std::fprintf(stderr, "prompt %zu tokens in %.3f s (%.1f t/s); generated %d tokens, %.1f t/s\n",
                 prompt.size(), prefill_s, prompt.size() / prefill_s, generated,
                 generated > 1 ? (generated - 1) / decode_s : 0.0);
  }
  return 0;
}

}  // namespace modrwkv::cli
