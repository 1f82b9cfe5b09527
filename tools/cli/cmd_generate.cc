// generate: one prompt, streamed completion on stdout. Drives one sequence through Model::Step
// directly (the server's scheduler does the same for many).
#include <chrono>
#include <cstdio>

#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "engine/grammar/constraint_cache.h"
#include "engine/loader/initial_state_loader.h"
#include "engine/sampling/sampler.h"
#include "engine/text/stop_conditions.h"
#include "engine/text/token_output.h"
#include "server/server_options.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"
#include "tools/cli/multimodal_prompt.h"

namespace modrwkv::cli {
namespace {

// What follows the audio rows in the official speech models' prompt.
constexpr char kSpeechPrompt[] =
    "\x16"
    "Assistant:";

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
  Flags flags("generate",
              "--model M [--vocab V] (--prompt TEXT | --question Q) [--image F | --audio F] "
              "[--max-tokens N] [sampling flags]",
              "Generates a completion of the prompt and prints only the generated text, "
              "streaming as it goes.");
  AddModelFlags(flags);
  flags.Add("vocab", "", "vocabulary file; default: next to the model, then the bundled copy")
      .Add("prompt", "",
           "prompt text, fed as is; {image} marks where --image goes (default: before the text)")
      .Add("question", "",
           "a user message: wrapped in the model's chat template, stops at the turn end (24), "
           "greedy unless --temperature is given")
      .Add("image", "", "an image file (JPEG, PNG, WebP, ...) for a model with a vision encoder")
      .Add("audio", "",
           "an audio file (WAV, FLAC, MP3, Opus, ...) for a model with an audio encoder; without "
           "--prompt and --question the official speech prompt follows it (\\x16Assistant:), "
           "greedy, stopping at the turn end (24)")
      .Add("initial-state", "",
           "start from a trained initial state (state tuning: a blocks.{i}.att.time_state file, "
           ".pth or .safetensors), or none (default: the state the checkpoint carries, if any)")
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
      .AddBool("json", "structured output: the answer is a JSON object")
      .Add("json-schema", "",
           "structured output: a file holding a JSON Schema the answer follows "
           "(docs/structured-output.md)")
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

  const bool question = !flags.Str("question").empty();
  const bool prompt_given = !flags.Str("prompt").empty();
  // An audio clip alone: the speech models' prompt (the audio rows, then "\x16Assistant:").
  const bool speech = !question && !prompt_given && !flags.Str("audio").empty();
  if (question && prompt_given) {
    return UsageError(flags, absl::InvalidArgumentError("give one of --prompt and --question"));
  }
  if (!question && !prompt_given && !speech) {
    return UsageError(flags,
                      absl::InvalidArgumentError("give --prompt or --question (or --audio alone)"));
  }
  auto tok = LoadTokenizer(flags.Str("vocab"), flags.Str("model"));
  if (!tok.ok()) return Fail(tok.status());
  auto bundle = LoadBundleFromFlags(flags, 1, tok->get());
  if (!bundle.ok()) return Fail(bundle.status());
  Model& m = *bundle->model;
  const int vocab = m.config().vocab_size;
  std::string text = speech ? std::string(kSpeechPrompt) : flags.Str("prompt");
  if (question || speech) {
    const std::string& tmpl = bundle->manifest.chat_template.empty()
                                  ? std::string(server::kDefaultChatTemplate)
                                  : bundle->manifest.chat_template;
    if (question) text = absl::StrReplaceAll(tmpl, {{"{text}", flags.Str("question")}});
    stop.stop_token_ids.push_back(24);
    for (int32_t t : bundle->manifest.stop_tokens) stop.stop_token_ids.push_back(t);
    for (int32_t t : bundle->manifest.ban_tokens) params->banned_tokens.push_back(t);
    if (!flags.Given("temperature")) params->temperature = 0.0f;
  }
  if (auto st = params->Validate(vocab); !st.ok()) return UsageError(flags, st);
  if (auto st = stop.Validate(vocab); !st.ok()) return UsageError(flags, st);

  if (!flags.Str("image").empty() && !flags.Str("audio").empty()) {
    return UsageError(flags, absl::InvalidArgumentError("give one of --image and --audio"));
  }
  const MediaFile media = !flags.Str("audio").empty() ? MediaFile{"audio", flags.Str("audio")}
                                                      : MediaFile{"image", flags.Str("image")};
  // "{image}" / "{audio}" marks where the media goes; without it, first.
  const std::string marker = "{" + media.kind + "}";
  const size_t at = text.find(marker);
  std::vector<int32_t> before, after;
  if (at == std::string::npos) {
    after = (*tok)->Encode(text);
  } else {
    before = (*tok)->Encode(text.substr(0, at));
    after = (*tok)->Encode(text.substr(at + marker.size()));
  }
  for (const auto* ids : {&before, &after}) {
    for (int32_t t : *ids) {
      if (t >= vocab) {
        return Fail(absl::InvalidArgumentError(
            absl::StrFormat("prompt token %d is outside the model's vocabulary of %d", t, vocab)));
      }
    }
  }
  auto threads = ModelOptionsFromFlags(flags, 1);
  if (!threads.ok()) return UsageError(flags, threads.status());
  auto parts =
      BuildPrompt(*bundle, before, after, media, threads->threads > 0 ? threads->threads : 1);
  if (!parts.ok()) return Fail(parts.status());
  std::vector<int32_t> prompt = before;
  prompt.insert(prompt.end(), after.begin(), after.end());
  const int64_t prompt_rows = PromptRows(*parts, m.config().n_embd);
  // Ids the vocabulary has no bytes for (the embedding table has 65536 rows, the World vocab
  // 65530 ids; later ModRWKV checkpoints use a few of them as modality markers) are never text.
  for (int32_t id = (*tok)->vocab_size(); id < vocab; ++id) params->banned_tokens.push_back(id);
  if (flags.Bool("json") || !flags.Str("json-schema").empty()) {
    grammar::ConstraintCache constraints(
        std::make_shared<const grammar::TokenVocabulary>((*tok)->AllTokenBytes()), 1);
    if (flags.Str("json-schema").empty()) {
      params->constraint = constraints.JsonObject();
    } else {
      auto schema = ReadFile(flags.Str("json-schema"));
      if (!schema.ok()) return Fail(schema.status());
      auto c = constraints.ForSchema(*schema, "json-schema");
      if (!c.ok()) return UsageError(flags, c.status());
      params->constraint = *c;
    }
    params->constraint_end_tokens = stop.stop_token_ids;
  }
  auto sampler = Sampler::Create(*params, vocab);
  if (!sampler.ok()) return UsageError(flags, sampler.status());
  (*sampler)->AcceptPrompt(prompt);

  std::shared_ptr<const InitialState> initial = bundle->initial_state;
  if (const std::string given = flags.Str("initial-state"); given == "none") {
    initial.reset();
  } else if (!given.empty()) {
    auto loaded = LoadInitialState(given, given, m.config());
    if (!loaded.ok()) return Fail(loaded.status());
    initial = std::make_shared<const InitialState>(*std::move(loaded));
  }
  if (initial) {
    if (auto st = m.WriteSlot(0, initial->state); !st.ok()) return Fail(st);
  }

  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  std::vector<StepResult> res;
  StepEntry entry;
  entry.slot = 0;
  entry.sampler = sampler->get();
  // Prefill in chunks; the last one samples the first generated token.
  if (auto st = Prefill(m, *parts, StepOutput::kSample, &entry, &res); !st.ok()) return Fail(st);
  const auto t_first = Clock::now();

  TokenOutput output(tok->get(), stop, m.config().vocab_size);
  auto emit = [](const std::string& s) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  };
  int32_t token = res[0].token;
  while (true) {
    const TokenOutput::Result r = output.Push(token, (*sampler)->constraint_complete());
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
    std::fprintf(stderr,
                 "prompt %lld rows in %.3f s (%.1f rows/s); generated %d tokens, %.1f t/s\n",
                 static_cast<long long>(prompt_rows), prefill_s, prompt_rows / prefill_s, generated,
                 generated > 1 ? (generated - 1) / decode_s : 0.0);
  }
  return 0;
}

}  // namespace modrwkv::cli
