// Proto <-> engine translation, in one place: requests in (with validation whose errors name the
// request's fields), events and results out. Pure functions; thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "encoders/multimodal/media_router.h"
#include "encoders/multimodal/model_bundle.h"
#include "encoders/timeseries/series.h"
#include "engine/grammar/constraint_cache.h"
#include "engine/model/model.h"
#include "engine/serving/scheduler.h"
#include "engine/text/tokenizer.h"
#include "modrwkv/v1/inference.pb.h"
#include "modrwkv/v1/sessions.pb.h"
#include "server/initial_states.h"

namespace modrwkv::server {

namespace pb = ::modrwkv::v1;

// Chat turns end at this token ("\x17", the template's end of a message) and never produce 0.
inline constexpr int32_t kChatTurnEndToken = 24;
inline constexpr int32_t kEndOfTextToken = 0;

// Image parts, when the model has a vision encoder.
struct ImageTranslation {
  encoders::ImageSplice splice;
  int max_images = 4;            // per request (Generate) or per chat turn
  int64_t max_bytes = 20 << 20;  // per image
};

struct AudioTranslation {
  int max_clips = 4;             // per request (Generate) or per chat turn
  int64_t max_bytes = 25 << 20;  // per clip
  // For GetModelInfo: the longest clip (capped at the encoder's window; enforced by the decoder)
  // and the prompt rows per second of audio.
  double max_seconds = 0;
  double rows_per_second = 0;
};

// Time-series parts (Generate) and the Forecast RPC, when the model has a time-series encoder.
struct SeriesTranslation {
  int channels = 1;
  int patch = 4;
  int rows_per_patch = 1;  // prompt rows per patch: 1 (WaveNet), or the channels (Timer)
  int max_length = 512;
  int horizon = 1;               // steps one model run forecasts
  int max_forecast_horizon = 1;  // the most a Forecast may ask (rolled out beyond `horizon`)
  int max_series = 4;            // time_series parts per Generate request
  std::vector<int32_t> forecast_prompt;  // the manifest's prompt, after the series rows
};

// A media part (image, audio clip, series) waiting for the encoder pool: its rows go into
// EngineRequest::prompt[part].
struct PendingMedia {
  size_t part = 0;
  std::string kind;  // encoders::kImageKind, kAudioKind, kSeriesKind
  std::shared_ptr<const std::string> bytes;
  std::string field;  // "input[2].image", "images[0]": named in errors
};

// What request translation needs to know about the model and the server.
struct TranslationContext {
  const Tokenizer* tokenizer = nullptr;
  int model_vocab = 0;            // rows of the embedding table
  int64_t max_prompt_tokens = 0;  // one prompt can never exceed the queued-token bound
  std::string chat_template;      // contains "{text}" once
  int max_tokens_limit = 0;       // stop.max_tokens above it is INVALID_ARGUMENT; 0 = no limit
  int default_max_tokens = 0;     // when stop.max_tokens is unset; 0 = the engine's default
  // The request's timeout when it sets neither `timeout` nor a gRPC deadline; zero = none.
  absl::Duration default_timeout = absl::ZeroDuration();
  std::optional<ImageTranslation> image;    // unset: image parts are UNIMPLEMENTED
  std::optional<AudioTranslation> audio;    // unset: audio parts are UNIMPLEMENTED
  std::optional<SeriesTranslation> series;  // unset: time_series parts and Forecast UNIMPLEMENTED
  // The model manifest's stop and ban tokens, for chat turns (on top of kChatTurnEndToken / 0).
  std::vector<int32_t> chat_stop_tokens, chat_ban_tokens;
  // Compiled structured-output constraints; unset: sampling.response_format is UNIMPLEMENTED.
  grammar::ConstraintCache* constraints = nullptr;
  int max_choices = 1;  // the largest GenerateRequest.n
  // The trained initial states requests may name; unset: none (only "" and "none" resolve).
  const InitialStates* initial_states = nullptr;
};

// `name` (a request's initial_state field) through ctx.initial_states (InitialStates::Resolve).
absl::StatusOr<std::shared_ptr<const InitialState>> ResolveInitialState(
    const TranslationContext& ctx, const std::string& name, bool has_session,
    const std::string& field);

// EngineRequest -> engine request. Prompt, session id, sampling, stop conditions (max_tokens
// capped and defaulted by the context), logprobs and the deadline (the sooner of `timeout` and the
// gRPC deadline; the context's default timeout when neither is set). Errors: INVALID_ARGUMENT
// naming the field, UNIMPLEMENTED for media parts no encoder serves. Image parts become empty
// embedding parts (with the splice's marker tokens around them) listed in `images`, to be filled
// by FillMediaRows once encoded; `images` may be null only when the request has none.
absl::StatusOr<EngineRequest> ToEngineRequest(const pb::GenerateRequest& req,
                                              const TranslationContext& ctx,
                                              std::chrono::system_clock::time_point grpc_deadline,
                                              std::vector<PendingMedia>* images = nullptr);

// As above; `part_name(i)` names input part i in errors (default "input[i]"), e.g. the OpenAI
// request's "messages[1].content[0].image_url" that the part came from.
absl::StatusOr<EngineRequest> ToEngineRequest(const pb::GenerateRequest& req,
                                              const TranslationContext& ctx,
                                              std::chrono::system_clock::time_point grpc_deadline,
                                              std::vector<PendingMedia>* images,
                                              absl::FunctionRef<std::string(int)> part_name);

// How many completions a Generate request asks for, and the prompt parts it marks as a prefix
// shared with other requests (the prefix-state cache's key).
struct ChoicePlan {
  int n = 1;
  // The parts of EngineRequest::prompt the prefix covers: the request's prefix_parts less the
  // empty text / token parts among them, which the engine prompt does not have.
  size_t prefix_parts = 0;
};
// GenerateRequest.n (1..ctx.max_choices; 1 with a session_id) and prefix_parts (text or token
// parts, at least one part after them); INVALID_ARGUMENT naming the field.
absl::StatusOr<ChoicePlan> ToChoicePlan(const pb::GenerateRequest& req,
                                        const TranslationContext& ctx);

// What makes a request a chat turn's answer: it stops at the turn end (24) and the manifest's stop
// tokens, and never samples end of text (0) or the manifest's banned tokens.
void ApplyChatTurnRules(const TranslationContext& ctx, EngineRequest* request);

// One chat turn -> engine request on `session` (the template applied unless `raw`; the turn's
// images where the template has "{image}", else before its text).
absl::StatusOr<EngineRequest> ToEngineChatTurn(const pb::ChatRequest& req, SessionId session,
                                               const TranslationContext& ctx,
                                               std::chrono::system_clock::time_point grpc_deadline,
                                               std::vector<PendingMedia>* images = nullptr);

// The series of a TimeSeriesInput, checked against the model (channels, length, finite values);
// INVALID_ARGUMENT naming `field` ("input[1].time_series", "series").
absl::StatusOr<encoders::Series> ToSeries(const pb::TimeSeriesInput& in,
                                          const SeriesTranslation& st, absl::string_view field);

// A Forecast request, checked: the series, the horizon (0 = the model's; at most
// max_forecast_horizon) and the deadline (as for Generate). UNIMPLEMENTED without a time-series
// model; INVALID_ARGUMENT naming the field.
struct ForecastPlan {
  encoders::Series series;
  int horizon = 0;
  absl::Time deadline = absl::InfiniteFuture();
  int priority = 0;
};
absl::StatusOr<ForecastPlan> ToForecastPlan(const pb::ForecastRequest& req,
                                            const TranslationContext& ctx,
                                            std::chrono::system_clock::time_point grpc_deadline);

// Puts encoded rows ([rows][n_embd] each, in the order of `images`) into the request's prompt.
absl::Status FillMediaRows(const std::vector<PendingMedia>& images,
                           const std::vector<std::shared_ptr<const encoders::EmbeddingRows>>& rows,
                           int n_embd, EngineRequest* request);

// "session_id" values: 32 hex digits; `field` names the request field in errors.
absl::StatusOr<SessionId> ParseSessionId(absl::string_view text, absl::string_view field);

// Appends one scheduler event to a chunk (coalescing). Returns the bytes it adds to the encoded
// chunk, approximately: text bytes + 5 per token id + 10 per logprob entry.
size_t AppendTokenEvent(const TokenEvent& event, pb::TokenChunk* chunk);

pb::FinishReason ToProto(EndReason reason);
// How a finished engine request ends its RPC: OK for stop, length, stop string and the request's
// own timeout; DEADLINE_EXCEEDED when the gRPC deadline itself passed; CANCELLED; the engine's
// error (INTERNAL if it carries none) for kError.
absl::Status RpcStatusOf(const FinishEvent& event, bool grpc_deadline_passed);
// The error of a stream whose client read too slowly (more than `limit` bytes piled up).
absl::Status StreamOverflowError(int64_t limit);
void FillUsage(const FinishEvent& event, pb::Usage* usage);
void FillSession(const SessionInfo& info, pb::Session* out);
void FillDuration(absl::Duration d, google::protobuf::Duration* out);
std::string FingerprintHex(uint64_t fingerprint);

}  // namespace modrwkv::server
