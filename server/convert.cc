#include "server/convert.h"

#include <algorithm>
#include <cmath>

#include "absl/functional/function_ref.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "engine/base/status_macros.h"
#include "engine/text/utf8.h"
#include "server/server_options.h"
#include "server/status_mapping.h"

namespace modrwkv::server {
namespace {

// The field that names a media part: a Generate part's "input[2]" + ".image"; a chat turn's
// "images[0]" or an OpenAI request's "messages[1].content[0].image_url" name the media already.
std::string MediaField(const std::string& part_path, absl::string_view suffix) {
  return absl::StartsWith(part_path, "input[") ? absl::StrCat(part_path, suffix) : part_path;
}

// `field` names the prompt in errors about it as a whole: "input" for Generate, "text" for a chat
// turn (whose prompt is its templated text). `path_of(i)` names part i ("input[2]").
absl::StatusOr<std::vector<InputRows>> ToEnginePrompt(
    const google::protobuf::RepeatedPtrField<pb::InputPart>& input, const TranslationContext& ctx,
    absl::string_view field, absl::FunctionRef<std::string(int)> path_of,
    std::vector<PendingMedia>* images) {
  std::vector<InputRows> parts;
  int64_t total = 0;
  int n_images = 0;
  int n_clips = 0;
  int n_series = 0;
  for (int i = 0; i < input.size(); ++i) {
    const pb::InputPart& p = input[i];
    const std::string path = path_of(i);
    InputRows part;
    switch (p.kind_case()) {
      case pb::InputPart::kText:
        ctx.tokenizer->EncodeTo(p.text(), &part.tokens);
        break;
      case pb::InputPart::kTokens: {
        const auto& ids = p.tokens().ids();
        for (int j = 0; j < ids.size(); ++j) {
          if (ids[j] < 0 || ids[j] >= ctx.model_vocab) {
            return InvalidField(
                absl::StrCat(path, ".tokens.ids[", j, "]"),
                absl::StrFormat("%s.tokens.ids[%d] = %d is outside the vocabulary [0, %d)", path, j,
                                ids[j], ctx.model_vocab));
          }
        }
        part.tokens.assign(ids.begin(), ids.end());
        break;
      }
      case pb::InputPart::kImage:
        if (ctx.image && images != nullptr) {
          const ImageTranslation& it = *ctx.image;
          const std::string image_field = MediaField(path, ".image");
          if (++n_images > it.max_images) {
            return InvalidField(image_field,
                                absl::StrFormat("%s: more than %d images in one request "
                                                "(max-images-per-request)",
                                                image_field, it.max_images));
          }
          const std::string& data = p.image().data();
          if (data.empty()) {
            return InvalidField(image_field, absl::StrCat(image_field, ".data is empty"));
          }
          if (static_cast<int64_t>(data.size()) > it.max_bytes) {
            return InvalidField(image_field,
                                absl::StrFormat("%s is %d bytes, more than the limit of %d "
                                                "(max-image-bytes)",
                                                image_field, data.size(), it.max_bytes));
          }
          const bool marked = it.splice.mode == encoders::SpliceMode::kReplacePad;
          if (marked && it.splice.start_token >= 0) {
            parts.push_back(InputRows{{it.splice.start_token}, {}});
          }
          PendingMedia pending;
          pending.part = parts.size();
          pending.kind = encoders::kImageKind;
          pending.bytes = std::make_shared<const std::string>(data);
          pending.field = image_field;
          images->push_back(std::move(pending));
          parts.emplace_back();  // filled by FillMediaRows
          if (marked && it.splice.end_token >= 0) {
            parts.push_back(InputRows{{it.splice.end_token}, {}});
          }
          total += it.splice.rows + (marked ? 2 : 0);
          continue;
        }
        [[fallthrough]];
      case pb::InputPart::kAudio:
        if (p.kind_case() == pb::InputPart::kAudio && ctx.audio && images != nullptr) {
          const AudioTranslation& at = *ctx.audio;
          const std::string field = MediaField(path, ".audio");
          if (++n_clips > at.max_clips) {
            return InvalidField(field, absl::StrFormat("%s: more than %d audio clips in one "
                                                       "request (max-audio-per-request)",
                                                       field, at.max_clips));
          }
          const std::string& data = p.audio().data();
          if (data.empty()) return InvalidField(field, absl::StrCat(field, ".data is empty"));
          if (static_cast<int64_t>(data.size()) > at.max_bytes) {
            return InvalidField(field, absl::StrFormat("%s is %d bytes, more than the limit of %d "
                                                       "(max-audio-bytes)",
                                                       field, data.size(), at.max_bytes));
          }
          PendingMedia pending;
          pending.part = parts.size();
          pending.kind = encoders::kAudioKind;
          pending.bytes = std::make_shared<const std::string>(data);
          pending.field = field;
          images->push_back(std::move(pending));
          parts.emplace_back();  // filled by FillMediaRows; its rows are counted then
          ++total;               // not empty
          continue;
        }
        [[fallthrough]];
      case pb::InputPart::kTimeSeries:
        if (p.kind_case() == pb::InputPart::kTimeSeries && ctx.series && images != nullptr) {
          const SeriesTranslation& st = *ctx.series;
          const std::string field = MediaField(path, ".time_series");
          if (++n_series > st.max_series) {
            return InvalidField(field, absl::StrFormat("%s: more than %d time series in one "
                                                       "request (max-series-per-request)",
                                                       field, st.max_series));
          }
          MODRWKV_ASSIGN_OR_RETURN(encoders::Series series, ToSeries(p.time_series(), st, field));
          PendingMedia pending;
          pending.part = parts.size();
          pending.kind = encoders::kSeriesKind;
          pending.bytes = std::make_shared<const std::string>(encoders::PackSeries(series));
          pending.field = field;
          images->push_back(std::move(pending));
          parts.emplace_back();  // filled by FillMediaRows
          total += series.length / st.patch * st.rows_per_patch;
          continue;
        }
        {
          const char* kind = p.kind_case() == pb::InputPart::kImage   ? "image"
                             : p.kind_case() == pb::InputPart::kAudio ? "audio"
                                                                      : "time_series";
          return WithField(
              WithReason(absl::UnimplementedError(absl::StrCat(
                             path, ".", kind, ": ", kind,
                             " input is not served by this model (no encoder for it is "
                             "loaded)")),
                         "MODALITY_NOT_SERVED"),
              absl::StrCat(path, ".", kind));
        }
      case pb::InputPart::KIND_NOT_SET:
        return InvalidField(path, absl::StrCat(path, " has no kind set (text, tokens, ...)"));
    }
    total += static_cast<int64_t>(part.tokens.size());
    if (!part.tokens.empty()) parts.push_back(std::move(part));
  }
  if (total == 0) {
    return InvalidField(field, absl::StrCat(field,
                                            " is empty: give at least one text or token part with "
                                            "content"));
  }
  if (total > ctx.max_prompt_tokens) {
    return InvalidField(
        field, absl::StrFormat("%s has %d tokens, more than this server accepts in one prompt (%d)",
                               field, total, ctx.max_prompt_tokens));
  }
  return parts;
}

// `chat_turn`: a chat turn also bans end-of-text (0), so that it ends at the turn end only.
absl::Status ToEngineSampling(const pb::SamplingParams& in, bool has_logprobs, int32_t logprobs,
                              const TranslationContext& ctx, bool chat_turn, SamplerConfig* out) {
  if (in.has_temperature()) out->temperature = in.temperature();
  if (in.has_top_k()) out->top_k = in.top_k();
  if (in.has_top_p()) out->top_p = in.top_p();
  if (in.has_min_p()) out->min_p = in.min_p();
  if (in.has_repetition_penalty()) out->repetition_penalty = in.repetition_penalty();
  if (in.has_presence_penalty()) out->presence_penalty = in.presence_penalty();
  if (in.has_frequency_penalty()) out->frequency_penalty = in.frequency_penalty();
  if (in.has_penalty_decay()) out->penalty_decay = in.penalty_decay();
  for (const auto& [token, bias] : in.logit_bias()) {
    if (token < 0 || token >= ctx.model_vocab) {
      return InvalidField(
          "sampling.logit_bias",
          absl::StrFormat("sampling.logit_bias has token %d outside the vocabulary [0, %d)", token,
                          ctx.model_vocab));
    }
    out->logit_bias[token] = bias;
  }
  out->banned_tokens.assign(in.banned_token_ids().begin(), in.banned_token_ids().end());
  if (in.has_seed()) out->seed = in.seed();
  if (has_logprobs) {
    if (logprobs < 0 || logprobs > SamplerConfig::kMaxTopLogprobs) {
      return InvalidField("logprobs_top_n",
                          absl::StrFormat("logprobs_top_n must be in [0, %d], got %d",
                                          SamplerConfig::kMaxTopLogprobs, logprobs));
    }
    out->logprobs_top_n = logprobs;
  }
  if (in.has_response_format()) {
    const pb::ResponseFormat& rf = in.response_format();
    constexpr char kField[] = "sampling.response_format";
    if (ctx.constraints == nullptr) {
      return WithField(absl::UnimplementedError(absl::StrCat(
                           kField, ": structured output is not available on this server")),
                       kField);
    }
    switch (rf.format_case()) {
      case pb::ResponseFormat::kJsonObject:
        if (rf.json_object()) out->constraint = ctx.constraints->JsonObject();
        break;
      case pb::ResponseFormat::kJsonSchema: {
        MODRWKV_ASSIGN_OR_RETURN(
            out->constraint,
            ctx.constraints->ForSchema(rf.json_schema(), "sampling.response_format.json_schema"));
        break;
      }
      case pb::ResponseFormat::FORMAT_NOT_SET:
        break;
    }
  }
  // Validate what the client sent before adding our own bans, so indices match the request.
  MODRWKV_RETURN_IF_ERROR(RenameEngineField(out->Validate(ctx.model_vocab)));
  // Ids the vocabulary has no bytes for (the embedding table is larger than the World vocab;
  // later ModRWKV checkpoints use a few as modality markers) are never text.
  for (int32_t id = ctx.tokenizer->vocab_size(); id < ctx.model_vocab; ++id) {
    out->banned_tokens.push_back(id);
  }
  if (chat_turn) out->banned_tokens.push_back(kEndOfTextToken);
  // The client's bans passed on their own; with ours added they must still pass (one token left,
  // the engine's bound on the list), else the engine would refuse the request only once it is
  // scheduled, naming its own field.
  if (absl::Status st = out->Validate(ctx.model_vocab); !st.ok()) {
    return InvalidField(
        "sampling.banned_token_ids",
        absl::StrFormat("sampling.banned_token_ids with the ids the server always bans (%d and up, "
                        "which have no text%s) is refused: %s",
                        ctx.tokenizer->vocab_size(), chat_turn ? ", and 0 in a chat turn" : "",
                        st.message()));
  }
  return absl::OkStatus();
}

absl::Status ToEngineStop(const pb::StopConditions& in, const TranslationContext& ctx,
                          StopConditions* out) {
  if (in.has_max_tokens()) {
    if (ctx.max_tokens_limit > 0 && in.max_tokens() > ctx.max_tokens_limit) {
      return InvalidField("stop.max_tokens",
                          absl::StrFormat("stop.max_tokens = %d is above this server's limit of %d "
                                          "(max-tokens-limit)",
                                          in.max_tokens(), ctx.max_tokens_limit));
    }
    out->max_tokens = in.max_tokens();
  } else if (ctx.default_max_tokens > 0) {
    out->max_tokens = ctx.default_max_tokens;
  }
  out->stop_strings.assign(in.stop_strings().begin(), in.stop_strings().end());
  out->stop_token_ids.assign(in.stop_token_ids().begin(), in.stop_token_ids().end());
  return RenameEngineField(out->Validate(ctx.model_vocab));
}

absl::StatusOr<absl::Time> DeadlineOf(bool has_timeout, const google::protobuf::Duration& timeout,
                                      std::chrono::system_clock::time_point grpc_deadline,
                                      const TranslationContext& ctx) {
  absl::Time deadline = absl::InfiniteFuture();
  if (grpc_deadline != std::chrono::system_clock::time_point::max()) {
    deadline = absl::FromChrono(grpc_deadline);
  } else if (!has_timeout && ctx.default_timeout > absl::ZeroDuration()) {
    return absl::Now() + ctx.default_timeout;
  }
  if (has_timeout) {
    if (timeout.seconds() < 0 || timeout.nanos() < 0 ||
        (timeout.seconds() == 0 && timeout.nanos() == 0)) {
      return InvalidField("timeout", "timeout must be positive when set");
    }
    const absl::Duration d = absl::Seconds(timeout.seconds()) + absl::Nanoseconds(timeout.nanos());
    deadline = std::min(deadline, absl::Now() + d);
  }
  return deadline;
}

}  // namespace

absl::StatusOr<SessionId> ParseSessionId(absl::string_view text, absl::string_view field) {
  absl::StatusOr<SessionId> id = SessionId::Parse(std::string_view(text.data(), text.size()));
  if (!id.ok()) {
    // Quote at most 64 bytes, cut on a character boundary: the message also travels in
    // google.rpc.Status, a proto3 string that the client refuses to parse unless it is UTF-8.
    size_t n = std::min<size_t>(text.size(), 64);
    while (n > 0 && n < text.size() && (static_cast<uint8_t>(text[n]) & 0xC0) == 0x80) --n;
    return InvalidField(field,
                        absl::StrCat(field, " must be 32 hex digits, got '",
                                     ReplaceInvalidUtf8(std::string_view(text.data(), n)), "'"));
  }
  return id;
}

absl::StatusOr<std::shared_ptr<const InitialState>> ResolveInitialState(
    const TranslationContext& ctx, const std::string& name, bool has_session,
    const std::string& field) {
  static const InitialStates* const kNoStates =
      new InitialStates(InitialStates::Create({}, "").value());
  return (ctx.initial_states ? ctx.initial_states : kNoStates)->Resolve(name, has_session, field);
}

// A request's `priority` field, checked against the range any caller may ask from
// ([kMinRequestPriority, kMaxRequestPriority]); the caller's own cap is
// ServingContext::AdmitRequest's.
absl::StatusOr<int> PriorityOf(int priority) {
  if (priority < kMinRequestPriority || priority > kMaxRequestPriority) {
    return InvalidField("priority",
                        absl::StrFormat("priority %d is outside [%d, %d]; above 0 a caller may "
                                        "ask up to max-request-priority or its own max-priority",
                                        priority, kMinRequestPriority, kMaxRequestPriority));
  }
  return priority;
}

absl::StatusOr<EngineRequest> ToEngineRequest(const pb::GenerateRequest& req,
                                              const TranslationContext& ctx,
                                              std::chrono::system_clock::time_point grpc_deadline,
                                              std::vector<PendingMedia>* images) {
  return ToEngineRequest(req, ctx, grpc_deadline, images,
                         [](int i) { return absl::StrCat("input[", i, "]"); });
}

absl::StatusOr<EngineRequest> ToEngineRequest(const pb::GenerateRequest& req,
                                              const TranslationContext& ctx,
                                              std::chrono::system_clock::time_point grpc_deadline,
                                              std::vector<PendingMedia>* images,
                                              absl::FunctionRef<std::string(int)> part_name) {
  EngineRequest out;
  MODRWKV_ASSIGN_OR_RETURN(out.prompt,
                           ToEnginePrompt(req.input(), ctx, "input", part_name, images));
  if (req.has_session_id()) {
    MODRWKV_ASSIGN_OR_RETURN(out.session, ParseSessionId(req.session_id(), "session_id"));
  }
  MODRWKV_ASSIGN_OR_RETURN(
      out.initial_state,
      ResolveInitialState(ctx, req.initial_state(), req.has_session_id(), "initial_state"));
  MODRWKV_RETURN_IF_ERROR(ToEngineSampling(req.sampling(), req.has_logprobs_top_n(),
                                           req.logprobs_top_n(), ctx, /*chat_turn=*/false,
                                           &out.sampling));
  MODRWKV_RETURN_IF_ERROR(ToEngineStop(req.stop(), ctx, &out.stop));
  if (!req.stop().ignore_end_of_text()) out.stop.stop_token_ids.push_back(kEndOfTextToken);
  MODRWKV_ASSIGN_OR_RETURN(out.deadline,
                           DeadlineOf(req.has_timeout(), req.timeout(), grpc_deadline, ctx));
  MODRWKV_ASSIGN_OR_RETURN(out.priority, PriorityOf(req.priority()));
  return out;
}

absl::StatusOr<ChoicePlan> ToChoicePlan(const pb::GenerateRequest& req,
                                        const TranslationContext& ctx) {
  ChoicePlan plan;
  if (req.has_n()) {
    if (req.n() < 1 || req.n() > ctx.max_choices) {
      return InvalidField("n", absl::StrFormat("n = %d is outside [1, %d] (max-choices)", req.n(),
                                               ctx.max_choices));
    }
    if (req.n() > 1 && req.has_session_id()) {
      return InvalidField("n",
                          "n must be 1 with a session_id (one session keeps one answer); "
                          "fork the session for more");
    }
    plan.n = req.n();
  }
  if (req.prefix_parts() != 0) {
    if (req.prefix_parts() < 0 || req.prefix_parts() >= req.input_size()) {
      return InvalidField("prefix_parts",
                          absl::StrFormat("prefix_parts = %d must leave at least one of the %d "
                                          "input parts after the prefix",
                                          req.prefix_parts(), req.input_size()));
    }
    for (int i = 0; i < req.prefix_parts(); ++i) {
      const pb::InputPart::KindCase kind = req.input(i).kind_case();
      if (kind != pb::InputPart::kText && kind != pb::InputPart::kTokens) {
        return InvalidField("prefix_parts",
                            absl::StrFormat("prefix_parts = %d covers input[%d], which is not a "
                                            "text or token part",
                                            req.prefix_parts(), i));
      }
    }
    // The engine prompt has no part for an empty text or token part (ToEnginePrompt drops them;
    // a non-empty text always gives a token: the vocabularies cover every byte), so the prefix
    // is counted in its parts.
    for (int i = 0; i < req.prefix_parts(); ++i) {
      const pb::InputPart& p = req.input(i);
      plan.prefix_parts +=
          p.kind_case() == pb::InputPart::kText ? !p.text().empty() : p.tokens().ids_size() > 0;
    }
  }
  return plan;
}

void ApplyChatTurnRules(const TranslationContext& ctx, EngineRequest* request) {
  std::vector<int32_t>& stops = request->stop.stop_token_ids;
  std::vector<int32_t>& bans = request->sampling.banned_tokens;
  stops.push_back(kChatTurnEndToken);
  for (int32_t t : ctx.chat_stop_tokens) {
    if (t < ctx.model_vocab && t != kChatTurnEndToken) stops.push_back(t);
  }
  if (std::find(bans.begin(), bans.end(), kEndOfTextToken) == bans.end()) {
    bans.push_back(kEndOfTextToken);
  }
  for (int32_t t : ctx.chat_ban_tokens) {
    if (t < ctx.model_vocab && t != kEndOfTextToken) bans.push_back(t);
  }
}

absl::StatusOr<EngineRequest> ToEngineChatTurn(const pb::ChatRequest& req, SessionId session,
                                               const TranslationContext& ctx,
                                               std::chrono::system_clock::time_point grpc_deadline,
                                               std::vector<PendingMedia>* images) {
  if (req.text().empty()) return InvalidField("text", "text is empty: a chat turn needs a message");
  // The turn as parts: the template's text before "{image}", the images, the text after (no
  // "{image}", or a raw turn: the images first).
  std::string before, after;
  if (req.raw()) {
    after = req.text();
  } else {
    const std::string text = absl::StrReplaceAll(ctx.chat_template, {{"{text}", req.text()}});
    // One marker for the turn's media: "{image}" or "{audio}" (the first that appears).
    size_t at = text.find("{image}");
    if (at == std::string::npos) at = text.find("{audio}");
    if (at == std::string::npos) {
      after = text;
    } else {
      before = text.substr(0, at);
      after = absl::StrReplaceAll(text.substr(at + 7), {{"{image}", ""}, {"{audio}", ""}});
    }
  }
  google::protobuf::RepeatedPtrField<pb::InputPart> input;
  std::vector<std::string> paths;
  if (!before.empty()) {
    input.Add()->set_text(before);
    paths.push_back("text");
  }
  for (int i = 0; i < req.images_size(); ++i) {
    *input.Add()->mutable_image() = req.images(i);
    paths.push_back(absl::StrCat("images[", i, "]"));
  }
  for (int i = 0; i < req.audio_size(); ++i) {
    *input.Add()->mutable_audio() = req.audio(i);
    paths.push_back(absl::StrCat("audio[", i, "]"));
  }
  input.Add()->set_text(after);
  paths.push_back("text");
  EngineRequest out;
  MODRWKV_ASSIGN_OR_RETURN(out.prompt,
                           ToEnginePrompt(
                               input, ctx, "text", [&](int i) { return paths[i]; }, images));
  out.session = session;
  MODRWKV_RETURN_IF_ERROR(ToEngineSampling(req.sampling(), req.has_logprobs_top_n(),
                                           req.logprobs_top_n(), ctx, /*chat_turn=*/true,
                                           &out.sampling));
  MODRWKV_RETURN_IF_ERROR(ToEngineStop(req.stop(), ctx, &out.stop));
  ApplyChatTurnRules(ctx, &out);
  MODRWKV_ASSIGN_OR_RETURN(out.deadline,
                           DeadlineOf(req.has_timeout(), req.timeout(), grpc_deadline, ctx));
  MODRWKV_ASSIGN_OR_RETURN(out.priority, PriorityOf(req.priority()));
  return out;
}

absl::StatusOr<encoders::Series> ToSeries(const pb::TimeSeriesInput& in,
                                          const SeriesTranslation& st, absl::string_view field) {
  if (in.channels() != st.channels) {
    return InvalidField(absl::StrCat(field, ".channels"),
                        absl::StrFormat("%s.channels is %d; the model takes %d values per step",
                                        field, in.channels(), st.channels));
  }
  if (in.has_sample_rate_hz() && !(std::isfinite(in.sample_rate_hz()) && in.sample_rate_hz() > 0)) {
    return InvalidField(absl::StrCat(field, ".sample_rate_hz"),
                        absl::StrCat(field, ".sample_rate_hz must be a positive number"));
  }
  const int n = in.values_size();
  if (n % in.channels() != 0) {
    return InvalidField(absl::StrCat(field, ".values"),
                        absl::StrFormat("%s.values has %d values, not a multiple of %d channels "
                                        "(a ragged last step)",
                                        field, n, in.channels()));
  }
  encoders::Series s;
  s.channels = in.channels();
  s.length = n / in.channels();
  s.values.assign(in.values().begin(), in.values().end());
  MODRWKV_RETURN_IF_ERROR(
      WithField(encoders::ValidateSeries(s, st.channels, st.patch, st.max_length, field),
                absl::StrCat(field, ".values")));
  return s;
}

absl::StatusOr<ForecastPlan> ToForecastPlan(const pb::ForecastRequest& req,
                                            const TranslationContext& ctx,
                                            std::chrono::system_clock::time_point grpc_deadline) {
  if (!ctx.series) {
    return WithField(WithReason(absl::UnimplementedError(
                                    "Forecast needs a time-series model; this server's model "
                                    "has no time-series encoder (GetModelInfo.modalities)"),
                                "MODALITY_NOT_SERVED"),
                     "series");
  }
  const SeriesTranslation& st = *ctx.series;
  if (!req.has_series()) return InvalidField("series", "series is required");
  ForecastPlan plan;
  MODRWKV_ASSIGN_OR_RETURN(plan.series, ToSeries(req.series(), st, "series"));
  plan.horizon = req.horizon() == 0 ? st.horizon : req.horizon();
  if (plan.horizon < 1 || plan.horizon > st.max_forecast_horizon) {
    return InvalidField("horizon",
                        absl::StrFormat("horizon %d is outside [0, %d] (0 = the model's own %d; "
                                        "max-forecast-horizon)",
                                        req.horizon(), st.max_forecast_horizon, st.horizon));
  }
  MODRWKV_ASSIGN_OR_RETURN(plan.deadline,
                           DeadlineOf(req.has_timeout(), req.timeout(), grpc_deadline, ctx));
  MODRWKV_ASSIGN_OR_RETURN(plan.priority, PriorityOf(req.priority()));
  return plan;
}

absl::Status FillMediaRows(const std::vector<PendingMedia>& images,
                           const std::vector<std::shared_ptr<const encoders::EmbeddingRows>>& rows,
                           int n_embd, EngineRequest* request) {
  if (rows.size() != images.size()) {
    return absl::InternalError(absl::StrFormat("the encoder returned %d results for %d images",
                                               rows.size(), images.size()));
  }
  for (size_t i = 0; i < images.size(); ++i) {
    const encoders::EmbeddingRows& r = *rows[i];
    if (r.dim != n_embd || r.rows <= 0 || images[i].part >= request->prompt.size() ||
        r.data.size() != static_cast<size_t>(r.rows) * r.dim) {
      return absl::InternalError(
          absl::StrFormat("%s: the encoder returned %d rows of width %d for a model of width %d",
                          images[i].field, r.rows, r.dim, n_embd));
    }
    request->prompt[images[i].part].embeddings = r.data;
  }
  return absl::OkStatus();
}

size_t AppendTokenEvent(const TokenEvent& event, pb::TokenChunk* chunk) {
  size_t bytes = event.text.size() + 5 * event.tokens.size();
  chunk->mutable_text()->append(event.text);
  for (int32_t t : event.tokens) chunk->add_token_ids(t);
  for (size_t i = 0; i < event.logprobs.size(); ++i) {
    const SampleResult& s = event.logprobs[i];
    pb::TokenLogprob* lp = chunk->add_logprobs();
    lp->set_token_id(i < event.tokens.size() ? event.tokens[i] : -1);
    lp->set_logprob(s.logprob);
    for (const auto& [id, logprob] : s.top_logprobs) {
      pb::TopLogprob* top = lp->add_top();
      top->set_token_id(id);
      top->set_logprob(logprob);
    }
    bytes += 10 * (1 + s.top_logprobs.size());
  }
  return bytes;
}

pb::FinishReason ToProto(EndReason reason) {
  switch (reason) {
    case EndReason::kStopToken:
      return pb::FINISH_REASON_STOP;
    case EndReason::kLength:
      return pb::FINISH_REASON_LENGTH;
    case EndReason::kStopString:
      return pb::FINISH_REASON_STOP_STRING;
    case EndReason::kCancelled:
      return pb::FINISH_REASON_CANCELLED;
    case EndReason::kDeadline:
      return pb::FINISH_REASON_DEADLINE;
    case EndReason::kError:
      return pb::FINISH_REASON_ERROR;
  }
  return pb::FINISH_REASON_ERROR;
}

absl::Status RpcStatusOf(const FinishEvent& event, bool grpc_deadline_passed) {
  switch (event.reason) {
    case EndReason::kStopToken:
    case EndReason::kLength:
    case EndReason::kStopString:
      return absl::OkStatus();
    case EndReason::kDeadline:
      if (grpc_deadline_passed) return absl::DeadlineExceededError("deadline exceeded");
      return absl::OkStatus();
    case EndReason::kCancelled:
      return absl::CancelledError("request cancelled");
    case EndReason::kError:
      if (event.status.ok()) return absl::InternalError("generation failed");
      return event.status;
  }
  return absl::InternalError("unknown finish reason");
}

absl::Status StreamOverflowError(int64_t limit) {
  return WithReason(absl::ResourceExhaustedError(absl::StrFormat(
                        "the client read too slowly: more than %d bytes of output were waiting "
                        "to be sent (stream-buffer-bytes), so the request was cancelled",
                        limit)),
                    "STREAM_BUFFER_OVERFLOW");
}

void FillDuration(absl::Duration d, google::protobuf::Duration* out) {
  const int64_t ns = absl::ToInt64Nanoseconds(d);
  out->set_seconds(ns / 1000000000);
  out->set_nanos(static_cast<int32_t>(ns % 1000000000));
}

void FillUsage(const FinishEvent& event, pb::Usage* usage) {
  usage->set_prompt_tokens(event.prompt_tokens);
  usage->set_generated_tokens(event.generated_tokens);
  if (event.time_to_first_token != absl::InfiniteDuration()) {
    FillDuration(event.time_to_first_token, usage->mutable_time_to_first_token());
  }
  FillDuration(event.queue_time, usage->mutable_queue_time());
  FillDuration(event.total_time, usage->mutable_total_time());
}

void FillSession(const SessionInfo& info, pb::Session* out) {
  out->set_session_id(info.id.ToString());
  out->set_hot(info.hot);
  out->set_busy(info.busy);
  out->set_tokens(info.tokens);
  const int64_t us = absl::ToUnixMicros(info.last_used);
  out->mutable_last_used()->set_seconds(us / 1000000);
  out->mutable_last_used()->set_nanos(static_cast<int32_t>((us % 1000000) * 1000));
}

std::string FingerprintHex(uint64_t fingerprint) { return absl::StrFormat("%016x", fingerprint); }

}  // namespace modrwkv::server
