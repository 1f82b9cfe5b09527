// The OpenAI-compatible HTTP API's wire format, in one place: request bodies (JSON) in, with
// validation whose errors name the OpenAI request's fields, and response bodies out. Requests
// become a GenerateRequest, so the gRPC API's translation (server/convert.h) does the rest and both
// faces accept and refuse the same things. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/sampling/sampler.h"
#include "engine/serving/scheduler.h"
#include "engine/text/tokenizer.h"
#include "modrwkv/v1/inference.pb.h"
#include "nlohmann/json.hpp"

namespace modrwkv::server::http {

namespace pb = ::modrwkv::v1;

// A system message: "{text}" is replaced by its content.
inline constexpr char kDefaultSystemTemplate[] = "\x16System: {text}\x17";
// After an assistant message's content (the chat turn's end token, 24).
inline constexpr char kAssistantEnd[] = "\x17";

// What rendering and checking a request needs to know about the server.
struct ApiContext {
  std::string model_name;     // the one model served ("model" must be it, or empty)
  std::string user_template;  // the chat template: "{text}", optional "{image}" / "{audio}"
  std::string system_template = kDefaultSystemTemplate;
  int max_n = 8;  // choices per request
};

// One request, translated.
struct ApiRequest {
  bool chat = true;  // /v1/chat/completions; false: /v1/completions
  pb::GenerateRequest generate;
  // The OpenAI path of each input part of `generate` ("messages[2].content[1].image_url"), so
  // errors about a part name what the client sent.
  std::vector<std::string> part_names;
  int n = 1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool logprobs = false;  // per-token logprobs asked (with generate.logprobs_top_n alternatives)
  // Chat: generate.prefix_parts are the messages before the last user message when they are all
  // text (the prefix cache may share their state between requests).
};

// POST /v1/chat/completions. Messages are rendered into one prompt: system messages through the
// system template, user messages through the chat template (images and audio where it says
// "{image}"/"{audio}", else before the text), assistant messages as their content followed by the
// turn end. The last message must be the user's. INVALID_ARGUMENT naming the field; NOT_FOUND for
// another model's name; UNIMPLEMENTED for features this server does not have (tools, response
// formats other than text).
absl::StatusOr<ApiRequest> ParseChatCompletion(std::string_view body, const ApiContext& ctx);
// POST /v1/completions: `prompt` is a string, or an array of token ids, or an array of one string.
absl::StatusOr<ApiRequest> ParseCompletion(std::string_view body, const ApiContext& ctx);

// An INVALID_ARGUMENT from the gRPC translation names the GenerateRequest's fields
// ("sampling.top_p", "input[3].image"); this names the OpenAI request's ("top_p",
// "messages[1].content[0].image_url") in the message and the field. Other statuses pass.
absl::Status RenameToApiField(const absl::Status& s, const ApiRequest& request);

// An error as OpenAI clients expect it: HTTP status, {"error": {message, type, param, code}}, and
// Retry-After seconds for 429/503.
struct ApiError {
  int http_status = 500;
  std::string body;
  std::optional<int> retry_after_seconds;
};
ApiError ToApiError(const absl::Status& s);

// "stop", "length" (max tokens, or the server-side timeout: the answer was cut), or "cancelled" /
// "error" (never sent in a successful response).
std::string_view FinishReasonName(EndReason reason);

// Per-token logprobs in the chat shape ({"token", "logprob", "bytes", "top_logprobs"}) for
// `tokens` (one SampleResult each).
nlohmann::json ChatLogprobs(const std::vector<int32_t>& tokens,
                            const std::vector<SampleResult>& logprobs, const Tokenizer& tokenizer);
// The completions shape: {"tokens", "token_logprobs", "top_logprobs", "text_offset"}; `offset` is
// the text length before these tokens (advanced past their bytes).
nlohmann::json CompletionLogprobs(const std::vector<int32_t>& tokens,
                                  const std::vector<SampleResult>& logprobs,
                                  const Tokenizer& tokenizer, size_t* offset);
// Appends `b` to `a` (both of one shape; null `a` becomes `b`).
void AppendLogprobs(nlohmann::json* a, const nlohmann::json& b);

// "usage": prompt, completion and total tokens (over all choices' completions).
nlohmann::json UsageJson(int prompt_tokens, int completion_tokens);

// GET /v1/models. The model object also lists the trained initial states a request may name in
// `initial_state` and the one it starts from when it names none ("": the zero state), as
// GetModelInfo's fields.
nlohmann::json ModelsJson(const std::string& model_name, int64_t created,
                          const std::vector<std::string>& initial_states,
                          const std::string& default_initial_state);

}  // namespace modrwkv::server::http
