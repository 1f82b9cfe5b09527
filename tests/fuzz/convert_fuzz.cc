// libFuzzer harness for server/convert.cc, the translation of client requests into engine
// requests (ToEngineRequest, ToEngineChatTurn, ToForecastPlan). Each input is used three ways:
//   1. parsed as a serialized modrwkv.v1.GenerateRequest (seeds:
//   tests/fuzz/textproto_seeds/convert_fuzz);
//   2. parsed as a serialized modrwkv.v1.ChatRequest;
//   3. read as a sequence of edits that build both requests field by field (FuzzedDataProvider),
//      which reaches NaNs, extreme ids, long ban lists and odd durations far faster than
//      mutating the wire format.
// (Debian has no libprotobuf-mutator; the field-by-field builder stands in for it.)
// Every request is translated against two servers: the World vocabulary on a 65536-row model,
// and a 256-byte vocabulary on a 300-row model whose ids 257..299 have no bytes.
// Invariants: no crash; an error is INVALID_ARGUMENT naming a request field, or UNIMPLEMENTED
// for media parts, never anything else, and its google.rpc.Status details parse on the client
// (proto3 refuses strings that are not UTF-8); an accepted request is one the engine accepts as is
// (its sampling and stop conditions validate, prompt ids are within the model's vocabulary, the
// prompt fits the bound, the server's own bans and stop tokens are in place).
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "encoders/multimodal/media_router.h"
#include "encoders/timeseries/series.h"
#include "encoders/timeseries/timeseries_model.h"
#include "engine/base/errors.h"
#include "engine/text/tokenizer.h"
#include "engine/text/utf8.h"
#include "google/protobuf/stubs/logging.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "server/convert.h"
#include "server/server_options.h"
#include "server/status_mapping.h"
#include "tests/test_paths.h"

namespace {

namespace pb = ::modrwkv::v1;
using modrwkv::server::PendingMedia;
using modrwkv::server::TranslationContext;
using SysClock = std::chrono::system_clock;

constexpr char kChatTemplate[] =
    "\x16User: {text}\x17\x16"
    "Assistant:";

void Check(bool ok, const absl::Status& context = absl::OkStatus()) {
  if (ok) return;
  if (!context.ok()) {
    std::fprintf(stderr, "status: %s\n", absl::CHexEscape(context.ToString()).c_str());
  }
  __builtin_trap();
}

std::string ByteVocab() {
  std::string s;
  static const char kHex[] = "0123456789abcdef";
  for (int b = 0; b < 256; ++b) {
    s += std::to_string(b + 1) + " b'\\x" + kHex[b >> 4] + kHex[b & 15] + "' 1\n";
  }
  return s;
}

struct Servers {
  std::unique_ptr<modrwkv::Tokenizer> world, bytes;
  TranslationContext world_ctx, bytes_ctx;
  // A model with images (generation B markers, images in the template) and audio.
  TranslationContext image_ctx;
  std::unique_ptr<modrwkv::server::InitialStates> states;  // world_ctx's: "persona"
};

const Servers& GetServers() {
  static const Servers* s = [] {
    auto* out = new Servers;
    auto world = modrwkv::Tokenizer::LoadFile(modrwkv::testing_paths::WorldVocab());
    auto bytes = modrwkv::Tokenizer::LoadFromString(ByteVocab());
    Check(world.ok() && bytes.ok());
    out->world = std::move(*world);
    out->bytes = std::move(*bytes);
    out->world_ctx = {.tokenizer = out->world.get(),
                      .model_vocab = 65536,
                      .max_prompt_tokens = 1 << 20,
                      .chat_template = kChatTemplate};
    out->bytes_ctx = {.tokenizer = out->bytes.get(),
                      .model_vocab = 300,
                      .max_prompt_tokens = 64,
                      .chat_template = kChatTemplate};
    out->world_ctx.max_choices = 8;
    auto persona = std::make_shared<modrwkv::InitialState>();
    persona->name = "persona";
    out->states = std::make_unique<modrwkv::server::InitialStates>(
        modrwkv::server::InitialStates::Create({persona}, "").value());
    out->world_ctx.initial_states = out->states.get();
    out->image_ctx = {.tokenizer = out->world.get(),
                      .model_vocab = 65536,
                      .max_prompt_tokens = 300,
                      .chat_template =
                          "\x16User:{image}{text}\x17\x16"
                          "Assistant:"};
    modrwkv::server::ImageTranslation image;
    image.splice.mode = modrwkv::encoders::SpliceMode::kReplacePad;
    image.splice.rows = 16;
    image.splice.start_token = 65530;
    image.splice.end_token = 65531;
    image.max_images = 3;
    image.max_bytes = 12;
    out->image_ctx.image = image;
    out->image_ctx.audio = modrwkv::server::AudioTranslation{/*max_clips=*/2, /*max_bytes=*/10};
    modrwkv::server::SeriesTranslation series;
    series.channels = 2;
    series.patch = 4;
    series.max_length = 16;
    series.horizon = 3;
    series.max_forecast_horizon = 7;
    series.max_series = 2;
    out->image_ctx.series = series;
    return out;
  }();
  return *s;
}

// The BadRequest field a converted error carries to the client ("" if none).
std::string BadField(const absl::Status& s) {
  const grpc::Status g = modrwkv::server::ToGrpcStatus(s);
  Check(static_cast<int>(g.error_code()) == static_cast<int>(s.code()), s);
  // What a client gets must parse: proto3 refuses a string field that is not UTF-8.
  google::rpc::Status rpc;
  Check(rpc.ParseFromString(g.error_details()), s);
  for (const auto& any : rpc.details()) {
    google::rpc::BadRequest bad;
    if (any.UnpackTo(&bad) && bad.field_violations_size() > 0) {
      return bad.field_violations(0).field();
    }
  }
  return "";
}

void CheckError(const absl::Status& s, const TranslationContext& ctx, bool chat) {
  Check(!s.ok());
  Check(!s.message().empty());
  if (s.code() == absl::StatusCode::kUnimplemented &&
      absl::StartsWith(modrwkv::FieldOf(s), "sampling.response_format")) {
    return;  // structured output is off in this context (no schema cache): refused by name
  }
  if (s.code() == absl::StatusCode::kUnimplemented) {
    // A chat turn's only media are images and audio clips.
    Check(!chat || !(ctx.image.has_value() && ctx.audio.has_value()), s);
    Check(modrwkv::server::ErrorInfoReason(s) == "MODALITY_NOT_SERVED", s);
    return;
  }
  Check(s.code() == absl::StatusCode::kInvalidArgument, s);
  // The field is a path in the request message, not an engine name.
  const std::string field = BadField(s);
  static const char* const kGenerateFields[] = {
      "input",  "sampling.", "stop.", "session_id",   "logprobs_top_n", "timeout",
      "series", "horizon",   "n",     "prefix_parts", "initial_state",  "priority"};
  static const char* const kChatFields[] = {"text",  "images",         "audio",   "sampling.",
                                            "stop.", "logprobs_top_n", "timeout", "priority"};
  bool known = false;
  if (chat) {
    for (const char* f : kChatFields) known |= absl::StartsWith(field, f);
  } else {
    for (const char* f : kGenerateFields) known |= absl::StartsWith(field, f);
  }
  Check(known, s);
}

bool Contains(const std::vector<int32_t>& v, int32_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

// What the engine will do with an accepted request must succeed.
// Media parts wait for the encoder: empty parts listed in `images`, an image counted at the
// splice's rows, an audio clip at one row (its length is known once decoded).
void CheckAccepted(const modrwkv::EngineRequest& out, const TranslationContext& ctx,
                   const std::vector<PendingMedia>& images) {
  int64_t total = 0;
  int n_images = 0, n_clips = 0;
  int n_series = 0;
  std::vector<int64_t> series_rows(out.prompt.size(), 0);
  for (const PendingMedia& m : images) {
    if (m.kind == modrwkv::encoders::kSeriesKind) {
      // A series part was checked whole: it unpacks to a series the model takes.
      Check(ctx.series.has_value());
      absl::StatusOr<modrwkv::encoders::Series> series =
          modrwkv::encoders::UnpackSeries(*m.bytes, m.field);
      Check(series.ok(), series.status());
      const absl::Status valid = modrwkv::encoders::ValidateSeries(
          *series, ctx.series->channels, ctx.series->patch, ctx.series->max_length, m.field);
      Check(valid.ok(), valid);
      Check(m.part < out.prompt.size());
      series_rows[m.part] = series->length / ctx.series->patch;
      ++n_series;
      continue;
    }
    const bool audio = m.kind == modrwkv::encoders::kAudioKind;
    Check(audio || m.kind == modrwkv::encoders::kImageKind);
    Check(audio ? ctx.audio.has_value() : ctx.image.has_value());
    Check(static_cast<int64_t>(m.bytes->size()) <=
          (audio ? ctx.audio->max_bytes : ctx.image->max_bytes));
    ++(audio ? n_clips : n_images);
  }
  Check(!ctx.image || n_images <= ctx.image->max_images);
  Check(!ctx.audio || n_clips <= ctx.audio->max_clips);
  Check(!ctx.series || n_series <= ctx.series->max_series);
  for (size_t i = 0; i < out.prompt.size(); ++i) {
    const modrwkv::InputRows& part = out.prompt[i];
    const auto pending = std::find_if(images.begin(), images.end(),
                                      [&](const PendingMedia& im) { return im.part == i; });
    Check(part.embeddings.empty());
    Check((pending != images.end()) == part.tokens.empty());
    if (pending != images.end()) {
      total += pending->kind == modrwkv::encoders::kAudioKind    ? 1
               : pending->kind == modrwkv::encoders::kSeriesKind ? series_rows[i]
                                                                 : ctx.image->splice.rows;
    }
    for (int32_t id : part.tokens) Check(id >= 0 && id < ctx.model_vocab);
    total += static_cast<int64_t>(part.tokens.size());
  }
  for (const PendingMedia& im : images) Check(im.bytes != nullptr && !im.field.empty());
  Check(total > 0 && total <= ctx.max_prompt_tokens);
  Check(out.sampling.Validate(ctx.model_vocab).ok(), out.sampling.Validate(ctx.model_vocab));
  Check(out.stop.Validate(ctx.model_vocab).ok(), out.stop.Validate(ctx.model_vocab));
  const absl::flat_hash_set<int32_t> banned(out.sampling.banned_tokens.begin(),
                                            out.sampling.banned_tokens.end());
  for (int32_t id = ctx.tokenizer->vocab_size(); id < ctx.model_vocab; ++id) {
    Check(banned.contains(id));
  }
}

void TranslateGenerate(const pb::GenerateRequest& req, const TranslationContext& ctx,
                       SysClock::time_point deadline) {
  std::vector<PendingMedia> images;
  absl::StatusOr<modrwkv::EngineRequest> out =
      modrwkv::server::ToEngineRequest(req, ctx, deadline, &images);
  if (!out.ok()) return CheckError(out.status(), ctx, /*chat=*/false);
  CheckAccepted(*out, ctx, images);
  Check(out->session.has_value() == req.has_session_id());
  // A named state only without a session, and only one the context has.
  Check(out->initial_state == nullptr ||
        (!req.has_session_id() && req.initial_state() == out->initial_state->name));
  Check((out->initial_state != nullptr) ==
        (req.initial_state() == "persona" && ctx.initial_states));
  // The priority as asked, within the range any caller may ask from.
  Check(out->priority == req.priority() && out->priority >= -100 &&
        out->priority <= modrwkv::server::kMaxRequestPriority);
  Check(out->sampling.logprobs_top_n == (req.has_logprobs_top_n() ? req.logprobs_top_n() : -1));
  if (!req.stop().ignore_end_of_text()) {
    Check(Contains(out->stop.stop_token_ids, modrwkv::server::kEndOfTextToken));
  }
  // The choices: n within [1, max_choices] (1 with a session), a prefix of text/token parts that
  // leaves one part.
  absl::StatusOr<modrwkv::server::ChoicePlan> plan = modrwkv::server::ToChoicePlan(req, ctx);
  if (!plan.ok()) return CheckError(plan.status(), ctx, /*chat=*/false);
  Check(plan->n >= 1 && plan->n <= ctx.max_choices);
  Check(plan->n == 1 || !req.has_session_id());
  Check(plan->prefix_parts < static_cast<size_t>(req.input_size()) || plan->prefix_parts == 0);
  for (size_t i = 0; i < plan->prefix_parts; ++i) {
    Check(out->prompt[i].embeddings.empty());  // text and token parts map one to one
  }
}

void TranslateChat(const pb::ChatRequest& req, const TranslationContext& ctx,
                   SysClock::time_point deadline) {
  const modrwkv::SessionId session{1, 2};
  std::vector<PendingMedia> images;
  absl::StatusOr<modrwkv::EngineRequest> out =
      modrwkv::server::ToEngineChatTurn(req, session, ctx, deadline, &images);
  if (!out.ok()) return CheckError(out.status(), ctx, /*chat=*/true);
  CheckAccepted(*out, ctx, images);
  Check(out->session == session);
  Check(out->priority == req.priority() && out->priority >= -100 &&
        out->priority <= modrwkv::server::kMaxRequestPriority);
  // A turn never ends in end-of-text and always stops at the turn end.
  Check(Contains(out->sampling.banned_tokens, modrwkv::server::kEndOfTextToken));
  Check(Contains(out->stop.stop_token_ids, modrwkv::server::kChatTurnEndToken));
}

// A Forecast of the request's first time_series part (or none) with `horizon`.
void TranslateForecast(const pb::GenerateRequest& gen, int32_t horizon,
                       const TranslationContext& ctx, SysClock::time_point deadline) {
  pb::ForecastRequest req;
  for (const pb::InputPart& part : gen.input()) {
    if (part.has_time_series()) {
      *req.mutable_series() = part.time_series();
      break;
    }
  }
  req.set_horizon(horizon);
  if (gen.has_timeout()) *req.mutable_timeout() = gen.timeout();
  req.set_priority(gen.priority());
  absl::StatusOr<modrwkv::server::ForecastPlan> plan =
      modrwkv::server::ToForecastPlan(req, ctx, deadline);
  if (!plan.ok()) return CheckError(plan.status(), ctx, /*chat=*/false);
  Check(ctx.series.has_value());
  Check(plan->horizon >= 1 && plan->horizon <= ctx.series->max_forecast_horizon);
  Check(plan->priority == req.priority() && plan->priority >= -100 &&
        plan->priority <= modrwkv::server::kMaxRequestPriority);
  const absl::Status valid = modrwkv::encoders::ValidateSeries(
      plan->series, ctx.series->channels, ctx.series->patch, ctx.series->max_length, "series");
  Check(valid.ok(), valid);
}

void TranslateBoth(const pb::GenerateRequest* gen, const pb::ChatRequest* chat,
                   SysClock::time_point deadline, int32_t horizon = 0) {
  const Servers& s = GetServers();
  for (const TranslationContext* ctx : {&s.world_ctx, &s.bytes_ctx, &s.image_ctx}) {
    if (gen) TranslateGenerate(*gen, *ctx, deadline);
    if (gen) TranslateForecast(*gen, horizon, *ctx, deadline);
    if (chat) TranslateChat(*chat, *ctx, deadline);
  }
}

float FuzzFloat(FuzzedDataProvider& p) {
  static constexpr float kSpecial[] = {0.0f,
                                       -0.0f,
                                       1.0f,
                                       -1.0f,
                                       0.5f,
                                       2.0f,
                                       100.0f,
                                       100.00001f,
                                       -100.0f,
                                       1e-45f,
                                       std::numeric_limits<float>::max(),
                                       -std::numeric_limits<float>::max(),
                                       std::numeric_limits<float>::infinity(),
                                       -std::numeric_limits<float>::infinity(),
                                       std::numeric_limits<float>::quiet_NaN()};
  if (p.ConsumeBool()) return p.PickValueInArray(kSpecial);
  return p.ConsumeFloatingPoint<float>();
}

int32_t FuzzId(FuzzedDataProvider& p) {
  static constexpr int32_t kSpecial[] = {-1,
                                         0,
                                         1,
                                         24,
                                         255,
                                         256,
                                         257,
                                         299,
                                         300,
                                         65529,
                                         65530,
                                         65535,
                                         65536,
                                         1 << 20,
                                         std::numeric_limits<int32_t>::min(),
                                         std::numeric_limits<int32_t>::max()};
  if (p.ConsumeBool()) return p.PickValueInArray(kSpecial);
  return p.ConsumeIntegralInRange<int32_t>(-2, 66000);
}

// A string field as the server receives it: proto3 refuses to parse a string that is not UTF-8,
// so ill-formed bytes become U+FFFD.
std::string FuzzString(FuzzedDataProvider& p, size_t max_bytes) {
  return modrwkv::ReplaceInvalidUtf8(p.ConsumeRandomLengthString(max_bytes));
}

std::string FuzzSessionId(FuzzedDataProvider& p) {
  if (p.ConsumeBool()) return FuzzString(p, 80);
  static const char kHex[] = "0123456789abcdefABCDEF";
  std::string s;
  for (int i = 0; i < 32; ++i) s += kHex[p.ConsumeIntegralInRange<int>(0, 21)];
  return s;
}

// Builds a GenerateRequest and a ChatRequest from one sequence of edits.
void BuildStructured(FuzzedDataProvider& p, pb::GenerateRequest* gen, pb::ChatRequest* chat,
                     SysClock::time_point* deadline) {
  pb::SamplingParams* s = gen->mutable_sampling();
  pb::StopConditions* stop = gen->mutable_stop();
  int banned = 0;
  for (int op = 0; op < 64 && p.remaining_bytes() > 0; ++op) {
    switch (p.ConsumeIntegralInRange<int>(0, 33)) {
      case 0:
        gen->add_input()->set_text(FuzzString(p, 256));
        break;
      case 1: {
        auto* ids = gen->add_input()->mutable_tokens();
        const int n = p.ConsumeIntegralInRange<int>(0, 80);
        for (int i = 0; i < n; ++i) ids->add_ids(FuzzId(p));
        break;
      }
      case 2:
        gen->add_input()->mutable_image()->set_data(p.ConsumeRandomLengthString(16));
        break;
      case 3:
        gen->add_input()->mutable_audio()->set_data(p.ConsumeRandomLengthString(16));
        break;
      case 4: {  // a series: mostly the served model's 2 channels, lengths around its bounds
        pb::TimeSeriesInput* ts = gen->add_input()->mutable_time_series();
        ts->set_channels(p.ConsumeBool() ? 2 : p.ConsumeIntegralInRange<int32_t>(-1, 3));
        const int n = p.ConsumeIntegralInRange<int>(0, 40);
        for (int i = 0; i < n; ++i) {
          ts->add_values(p.ConsumeBool() ? static_cast<float>(i) : FuzzFloat(p));
        }
        if (p.ConsumeBool()) ts->set_sample_rate_hz(FuzzFloat(p));
        break;
      }
      case 5:
        gen->add_input();  // no kind
        break;
      case 6:
        s->set_temperature(FuzzFloat(p));
        break;
      case 7:
        s->set_top_k(p.ConsumeBool() ? p.ConsumeIntegral<int32_t>() : FuzzId(p));
        break;
      case 8:
        s->set_top_p(FuzzFloat(p));
        break;
      case 9:
        s->set_min_p(FuzzFloat(p));
        break;
      case 10:
        s->set_repetition_penalty(FuzzFloat(p));
        break;
      case 11:
        s->set_presence_penalty(FuzzFloat(p));
        break;
      case 12:
        s->set_frequency_penalty(FuzzFloat(p));
        break;
      case 13:
        s->set_penalty_decay(FuzzFloat(p));
        break;
      case 14:
        (*s->mutable_logit_bias())[FuzzId(p)] = FuzzFloat(p);
        break;
      case 15:
        s->add_banned_token_ids(FuzzId(p));
        break;
      case 16: {  // a run of bans [from, to): the small vocabulary whole, or past the engine's
                  // bound on the list (SamplerConfig::kMaxBannedTokens)
        const int64_t from = FuzzId(p), to = FuzzId(p);
        const int n = static_cast<int>(std::clamp<int64_t>(to - from, 0, 5000 - banned));
        for (int i = 0; i < n; ++i) s->add_banned_token_ids(static_cast<int32_t>(from + i));
        banned += n;
        break;
      }
      case 17:
        s->set_seed(p.ConsumeIntegral<uint64_t>());
        break;
      case 18:
        stop->set_max_tokens(p.ConsumeBool() ? p.ConsumeIntegral<int32_t>()
                                             : p.ConsumeIntegralInRange<int32_t>(-1, 2));
        break;
      case 19:
        stop->add_stop_strings(FuzzString(p, 300));
        break;
      case 20:
        stop->add_stop_token_ids(FuzzId(p));
        break;
      case 21:
        stop->set_ignore_end_of_text(p.ConsumeBool());
        break;
      case 22:
        gen->set_session_id(FuzzSessionId(p));
        break;
      case 23:
        gen->set_logprobs_top_n(p.ConsumeIntegralInRange<int32_t>(-2, 22));
        break;
      case 24:
        gen->mutable_timeout()->set_seconds(p.ConsumeBool() ? p.ConsumeIntegral<int64_t>()
                                                            : p.ConsumeIntegralInRange(-1, 2));
        gen->mutable_timeout()->set_nanos(p.ConsumeBool() ? p.ConsumeIntegral<int32_t>()
                                                          : p.ConsumeIntegralInRange(-1, 2));
        break;
      case 25:
        chat->set_text(FuzzString(p, 256));
        break;
      case 26:
        chat->set_raw(p.ConsumeBool());
        break;
      case 27: {
        static const SysClock::time_point kDeadlines[] = {SysClock::time_point::max(),
                                                          SysClock::time_point{},
                                                          SysClock::now() + std::chrono::hours(1)};
        *deadline = p.PickValueInArray(kDeadlines);
        break;
      }
      case 28:
        chat->add_images()->set_data(p.ConsumeRandomLengthString(16));
        break;
      case 29:
        chat->add_audio()->set_data(p.ConsumeRandomLengthString(16));
        break;
      case 30:
        gen->set_n(p.ConsumeBool() ? p.ConsumeIntegral<int32_t>()
                                   : p.ConsumeIntegralInRange<int32_t>(-1, 10));
        break;
      case 31:
        gen->set_prefix_parts(p.ConsumeBool() ? p.ConsumeIntegral<int32_t>()
                                              : p.ConsumeIntegralInRange<int32_t>(-1, 4));
        break;
      case 32: {
        static const char* const kStates[] = {"", "none", "persona", "model"};
        gen->set_initial_state(p.ConsumeBool() ? std::string(p.PickValueInArray(kStates))
                                               : FuzzString(p, 80));
        break;
      }
      case 33:
        gen->set_priority(p.ConsumeBool() ? p.ConsumeIntegral<int32_t>()
                                          : p.ConsumeIntegralInRange<int32_t>(-102, 12));
        break;
    }
  }
  *chat->mutable_sampling() = gen->sampling();
  *chat->mutable_stop() = gen->stop();
  if (gen->has_logprobs_top_n()) chat->set_logprobs_top_n(gen->logprobs_top_n());
  if (gen->has_timeout()) *chat->mutable_timeout() = gen->timeout();
  chat->set_priority(gen->priority());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Parsing fuzzed bytes makes protobuf log every string field with invalid UTF-8.
  google::protobuf::SetLogHandler(nullptr);
  (void)GetServers();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const SysClock::time_point no_deadline = SysClock::time_point::max();
  {
    pb::GenerateRequest gen;
    if (gen.ParseFromArray(data, static_cast<int>(size))) TranslateBoth(&gen, nullptr, no_deadline);
    pb::ChatRequest chat;
    if (chat.ParseFromArray(data, static_cast<int>(size))) {
      TranslateBoth(nullptr, &chat, no_deadline);
    }
  }
  FuzzedDataProvider p(data, size);
  pb::GenerateRequest gen;
  pb::ChatRequest chat;
  SysClock::time_point deadline = no_deadline;
  const int32_t horizon = p.ConsumeIntegralInRange<int32_t>(-1, 9);
  BuildStructured(p, &gen, &chat, &deadline);
  TranslateBoth(&gen, &chat, deadline, horizon);
  return 0;
}
