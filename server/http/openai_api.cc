#include "server/http/openai_api.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "engine/base/errors.h"
#include "engine/base/status_macros.h"
#include "engine/text/utf8.h"
#include "server/server_options.h"
#include "server/status_mapping.h"

namespace modrwkv::server::http {
namespace {

using json = nlohmann::json;

absl::Status Bad(absl::string_view field, absl::string_view what) {
  return InvalidField(field, absl::StrCat(field, " ", what));
}

const char* TypeName(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::string:
      return "a string";
    case json::value_t::array:
      return "an array";
    case json::value_t::object:
      return "an object";
    case json::value_t::number_float:
      return "a number";
    default:
      return "an integer";
  }
}

// Typed reads of optional members: absent or null = not set; the wrong type is INVALID_ARGUMENT.
absl::StatusOr<std::optional<double>> Number(const json& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) return Bad(key, absl::StrCat("must be a number, got ", TypeName(*it)));
  const double v = it->get<double>();
  if (!std::isfinite(v)) return Bad(key, "must be finite");
  return v;
}

absl::StatusOr<std::optional<double>> NumberIn(const json& o, const char* key, double lo,
                                               double hi) {
  MODRWKV_ASSIGN_OR_RETURN(std::optional<double> v, Number(o, key));
  if (v && (*v < lo || *v > hi)) {
    return Bad(key, absl::StrFormat("must be in [%g, %g], got %g", lo, hi, *v));
  }
  return v;
}

absl::StatusOr<std::optional<int64_t>> Integer(const json& o, const char* key, int64_t lo,
                                               int64_t hi) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_integer()) {
    return Bad(key, absl::StrCat("must be an integer, got ", TypeName(*it)));
  }
  if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(hi)) {
    return Bad(key, absl::StrFormat("must be in [%d, %d]", lo, hi));
  }
  const int64_t v = it->get<int64_t>();
  if (v < lo || v > hi) return Bad(key, absl::StrFormat("must be in [%d, %d], got %d", lo, hi, v));
  return v;
}

absl::StatusOr<std::optional<bool>> Bool(const json& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) return Bad(key, absl::StrCat("must be a boolean, got ", TypeName(*it)));
  return it->get<bool>();
}

absl::StatusOr<std::optional<std::string>> String(const json& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) return Bad(key, absl::StrCat("must be a string, got ", TypeName(*it)));
  return it->get<std::string>();
}

absl::StatusOr<json> ParseObject(std::string_view body) {
  json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return InvalidField("body", "body: the request body is not valid JSON");
  }
  if (!j.is_object()) {
    return InvalidField("body", absl::StrCat("body: must be a JSON object, got ", TypeName(j)));
  }
  return j;
}

absl::Status Unsupported(absl::string_view field, absl::string_view what) {
  return WithField(absl::UnimplementedError(absl::StrCat(field, ": ", what)), field);
}

// Members that would change what the answer means if ignored.
absl::Status RefuseUnsupported(const json& o) {
  for (const char* key : {"tools", "functions"}) {
    auto it = o.find(key);
    if (it != o.end() && !it->is_null() && !(it->is_array() && it->empty())) {
      return Unsupported(key, "tool and function calling is not supported by this server");
    }
  }
  // best_of > 1 would pick among hidden completions; only 1 is served.
  MODRWKV_RETURN_IF_ERROR(Integer(o, "best_of", 1, 1).status());
  MODRWKV_ASSIGN_OR_RETURN(std::optional<bool> echo, Bool(o, "echo"));
  if (echo.value_or(false)) return Unsupported("echo", "echo is not supported by this server");
  MODRWKV_ASSIGN_OR_RETURN(std::optional<std::string> suffix, String(o, "suffix"));
  if (suffix && !suffix->empty()) {
    return Unsupported("suffix", "suffix (fill in the middle) is not supported by this server");
  }
  return absl::OkStatus();
}

// response_format: "text", "json_object" or "json_schema" (its "schema" as JSON text; the
// engine's translation compiles it and names what it refuses).
absl::Status ParseResponseFormat(const json& o, pb::SamplingParams* s) {
  auto rf = o.find("response_format");
  if (rf == o.end() || rf->is_null()) return absl::OkStatus();
  if (!rf->is_object() || !rf->contains("type") || !(*rf)["type"].is_string()) {
    return Bad("response_format", "must be an object with a string \"type\"");
  }
  const std::string type = (*rf)["type"].get<std::string>();
  if (type == "text") return absl::OkStatus();
  if (type == "json_object") {
    s->mutable_response_format()->set_json_object(true);
    return absl::OkStatus();
  }
  if (type != "json_schema") {
    return Bad("response_format.type",
               absl::StrCat("must be \"text\", \"json_object\" or \"json_schema\", got \"",
                            absl::CHexEscape(type.substr(0, 32)), "\""));
  }
  auto js = rf->find("json_schema");
  if (js == rf->end() || !js->is_object()) {
    return Bad("response_format.json_schema", "must be an object with a \"schema\"");
  }
  if (auto name = js->find("name"); name != js->end() && !name->is_string()) {
    return Bad("response_format.json_schema.name", "must be a string");
  }
  auto schema = js->find("schema");
  if (schema == js->end() || !(schema->is_object() || schema->is_boolean())) {
    return Bad("response_format.json_schema.schema", "must be a JSON Schema (an object)");
  }
  s->mutable_response_format()->set_json_schema(schema->dump());
  return absl::OkStatus();
}

// Sampling, stopping and the options shared by both endpoints, into `out`.
absl::Status ParseCommon(const json& o, const ApiContext& ctx, ApiRequest* out) {
  MODRWKV_RETURN_IF_ERROR(RefuseUnsupported(o));
  MODRWKV_ASSIGN_OR_RETURN(std::optional<std::string> model, String(o, "model"));
  if (model && !model->empty() && *model != ctx.model_name) {
    return WithReason(WithField(absl::NotFoundError(absl::StrFormat(
                                    "model: \"%s\" is not served here (GET /v1/models: \"%s\")",
                                    *model, ctx.model_name)),
                                "model"),
                      "MODEL_NOT_FOUND");
  }
  pb::GenerateRequest& g = out->generate;
  pb::SamplingParams& s = *g.mutable_sampling();
  // OpenAI's ranges (narrower than the engine's where they differ).
  MODRWKV_ASSIGN_OR_RETURN(std::optional<double> temperature, NumberIn(o, "temperature", 0, 2));
  if (temperature) s.set_temperature(static_cast<float>(*temperature));
  MODRWKV_ASSIGN_OR_RETURN(std::optional<double> top_p, NumberIn(o, "top_p", 0, 1));
  if (top_p) {
    if (*top_p == 0) return Bad("top_p", "must be in (0, 1], got 0");
    s.set_top_p(static_cast<float>(*top_p));
  }
  MODRWKV_ASSIGN_OR_RETURN(std::optional<double> presence, NumberIn(o, "presence_penalty", -2, 2));
  if (presence) s.set_presence_penalty(static_cast<float>(*presence));
  MODRWKV_ASSIGN_OR_RETURN(std::optional<double> frequency,
                           NumberIn(o, "frequency_penalty", -2, 2));
  if (frequency) s.set_frequency_penalty(static_cast<float>(*frequency));
  MODRWKV_ASSIGN_OR_RETURN(
      std::optional<int64_t> seed,
      Integer(o, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()));
  if (seed) s.set_seed(static_cast<uint64_t>(*seed));
  if (auto it = o.find("logit_bias"); it != o.end() && !it->is_null()) {
    if (!it->is_object()) {
      return Bad("logit_bias", absl::StrCat("must be an object, got ", TypeName(*it)));
    }
    for (const auto& [key, value] : it->items()) {
      int32_t id = 0;
      if (!absl::SimpleAtoi(key, &id) || id < 0) {
        return Bad("logit_bias", absl::StrFormat("keys must be token ids, got \"%s\"",
                                                 absl::CHexEscape(key.substr(0, 32))));
      }
      if (!value.is_number() || !std::isfinite(value.get<double>()) ||
          std::abs(value.get<double>()) > 100) {
        return Bad("logit_bias",
                   absl::StrFormat("values must be numbers in [-100, 100] (token %d)", id));
      }
      (*s.mutable_logit_bias())[id] = value.get<float>();
    }
  }
  // RWKV extensions (docs/api.md): the engine checks their ranges.
  MODRWKV_ASSIGN_OR_RETURN(std::optional<int64_t> top_k, Integer(o, "top_k", 0, 1 << 30));
  if (top_k) s.set_top_k(static_cast<int32_t>(*top_k));
  MODRWKV_ASSIGN_OR_RETURN(std::optional<double> min_p, Number(o, "min_p"));
  if (min_p) s.set_min_p(static_cast<float>(*min_p));
  MODRWKV_ASSIGN_OR_RETURN(std::optional<double> rep, Number(o, "repetition_penalty"));
  if (rep) s.set_repetition_penalty(static_cast<float>(*rep));
  MODRWKV_ASSIGN_OR_RETURN(std::optional<double> decay, Number(o, "penalty_decay"));
  if (decay) s.set_penalty_decay(static_cast<float>(*decay));
  MODRWKV_RETURN_IF_ERROR(ParseResponseFormat(o, &s));
  MODRWKV_ASSIGN_OR_RETURN(std::optional<std::string> session, String(o, "session_id"));
  if (session) g.set_session_id(*session);
  MODRWKV_ASSIGN_OR_RETURN(std::optional<std::string> initial, String(o, "initial_state"));
  if (initial) g.set_initial_state(*initial);
  // The server's own cap (--max-request-priority) is checked with the gRPC request's.
  MODRWKV_ASSIGN_OR_RETURN(std::optional<int64_t> priority,
                           Integer(o, "priority", kMinRequestPriority, kMaxRequestPriority));
  if (priority) g.set_priority(static_cast<int32_t>(*priority));
  MODRWKV_ASSIGN_OR_RETURN(std::optional<double> timeout, Number(o, "timeout"));
  if (timeout) {
    if (*timeout <= 0 || *timeout > 1e6) return Bad("timeout", "must be in (0, 1e6] seconds");
    const int64_t nanos = static_cast<int64_t>(*timeout * 1e9);
    g.mutable_timeout()->set_seconds(nanos / 1000000000);
    g.mutable_timeout()->set_nanos(static_cast<int32_t>(nanos % 1000000000));
  }

  pb::StopConditions& stop = *g.mutable_stop();
  MODRWKV_ASSIGN_OR_RETURN(std::optional<int64_t> max_tokens,
                           Integer(o, "max_tokens", 1, std::numeric_limits<int32_t>::max()));
  MODRWKV_ASSIGN_OR_RETURN(
      std::optional<int64_t> max_completion,
      Integer(o, "max_completion_tokens", 1, std::numeric_limits<int32_t>::max()));
  if (max_completion) max_tokens = max_completion;
  if (max_tokens) stop.set_max_tokens(static_cast<int32_t>(*max_tokens));
  if (auto it = o.find("stop"); it != o.end() && !it->is_null()) {
    if (it->is_string()) {
      stop.add_stop_strings(it->get<std::string>());
    } else if (it->is_array()) {
      for (size_t i = 0; i < it->size(); ++i) {
        if (!(*it)[i].is_string()) {
          return Bad(absl::StrCat("stop[", i, "]"),
                     absl::StrCat("must be a string, got ", TypeName((*it)[i])));
        }
        stop.add_stop_strings((*it)[i].get<std::string>());
      }
    } else {
      return Bad("stop",
                 absl::StrCat("must be a string or an array of strings, got ", TypeName(*it)));
    }
  }

  MODRWKV_ASSIGN_OR_RETURN(std::optional<int64_t> n, Integer(o, "n", 1, ctx.max_n));
  out->n = static_cast<int>(n.value_or(1));
  if (n) out->generate.set_n(out->n);
  MODRWKV_ASSIGN_OR_RETURN(std::optional<bool> stream, Bool(o, "stream"));
  out->stream = stream.value_or(false);
  if (auto it = o.find("stream_options"); it != o.end() && !it->is_null()) {
    if (!it->is_object()) {
      return Bad("stream_options", absl::StrCat("must be an object, got ", TypeName(*it)));
    }
    if (!out->stream) return Bad("stream_options", "is only allowed with \"stream\": true");
    auto usage = it->find("include_usage");
    if (usage != it->end() && !usage->is_null()) {
      if (!usage->is_boolean()) return Bad("stream_options.include_usage", "must be a boolean");
      out->include_usage = usage->get<bool>();
    }
  }
  return absl::OkStatus();
}

// Appends one part to the request, named `name` in errors.
void AddText(std::string text, std::string name, ApiRequest* r) {
  if (text.empty()) return;
  r->generate.add_input()->set_text(std::move(text));
  r->part_names.push_back(std::move(name));
}

// "data:<mime>;base64,<data>" -> bytes; anything else is refused (the server fetches nothing).
absl::StatusOr<std::string> DataUrlBytes(const std::string& url, const std::string& field,
                                         std::string* mime) {
  if (!absl::StartsWith(url, "data:")) {
    return Bad(field,
               "must be a data: URL (\"data:image/png;base64,...\"); this server fetches "
               "no remote URLs");
  }
  const size_t comma = url.find(',');
  const absl::string_view header =
      absl::string_view(url).substr(5, comma == std::string::npos ? std::string::npos : comma - 5);
  if (comma == std::string::npos || !absl::EndsWith(header, ";base64")) {
    return Bad(field, "must be a base64 data: URL (\"data:<type>;base64,<data>\")");
  }
  *mime = std::string(header.substr(0, header.size() - 7));
  std::string bytes;
  if (!absl::Base64Unescape(absl::string_view(url).substr(comma + 1), &bytes)) {
    return Bad(field, "has data that is not valid base64");
  }
  return bytes;
}

struct MessageMedia {
  std::vector<pb::InputPart> parts;
  std::vector<std::string> names;
};

// A message's content: a string, or an array of parts. Text parts are joined with "\n"; media
// parts (user messages only) are collected in order.
absl::Status ReadContent(const json& m, const std::string& field, bool media_allowed,
                         std::string* text, MessageMedia* media) {
  auto it = m.find("content");
  if (it == m.end() || it->is_null()) return absl::OkStatus();
  if (it->is_string()) {
    *text = it->get<std::string>();
    return absl::OkStatus();
  }
  if (!it->is_array()) {
    return Bad(field, absl::StrCat("must be a string or an array of parts, got ", TypeName(*it)));
  }
  std::vector<std::string> texts;
  for (size_t j = 0; j < it->size(); ++j) {
    const json& part = (*it)[j];
    const std::string pfield = absl::StrCat(field, "[", j, "]");
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
      return Bad(pfield, "must be an object with a string \"type\"");
    }
    const std::string type = part["type"].get<std::string>();
    if (type == "text") {
      MODRWKV_ASSIGN_OR_RETURN(std::optional<std::string> t, String(part, "text"));
      if (!t) return Bad(absl::StrCat(pfield, ".text"), "is missing");
      texts.push_back(*t);
      continue;
    }
    if ((type != "image_url" && type != "input_audio") || !media_allowed) {
      return Bad(absl::StrCat(pfield, ".type"),
                 media_allowed ? absl::StrFormat("\"%s\" is not a content part type this server "
                                                 "reads (text, image_url, input_audio)",
                                                 absl::CHexEscape(type.substr(0, 32)))
                               : std::string("must be \"text\" in this message's role"));
    }
    pb::InputPart in;
    std::string name;
    if (type == "image_url") {
      name = absl::StrCat(pfield, ".image_url");
      const json* url = part.contains("image_url") ? &part["image_url"] : nullptr;
      if (url && url->is_object()) url = url->contains("url") ? &(*url)["url"] : nullptr;
      if (!url || !url->is_string()) return Bad(name, "must have a string \"url\"");
      std::string mime;
      MODRWKV_ASSIGN_OR_RETURN(std::string bytes,
                               DataUrlBytes(url->get<std::string>(), name, &mime));
      in.mutable_image()->set_data(std::move(bytes));
      in.mutable_image()->set_mime_type(mime);
    } else {
      name = absl::StrCat(pfield, ".input_audio");
      const json* audio = part.contains("input_audio") ? &part["input_audio"] : nullptr;
      if (!audio || !audio->is_object() || !audio->contains("data") ||
          !(*audio)["data"].is_string()) {
        return Bad(name, "must be an object with base64 \"data\"");
      }
      std::string bytes;
      if (!absl::Base64Unescape((*audio)["data"].get<std::string>(), &bytes)) {
        return Bad(absl::StrCat(name, ".data"), "is not valid base64");
      }
      in.mutable_audio()->set_data(std::move(bytes));
      if (audio->contains("format") && (*audio)["format"].is_string()) {
        in.mutable_audio()->set_mime_type(
            absl::StrCat("audio/", (*audio)["format"].get<std::string>()));
      }
    }
    media->parts.push_back(std::move(in));
    media->names.push_back(std::move(name));
  }
  *text = absl::StrJoin(texts, "\n");
  return absl::OkStatus();
}

// A user message through the chat template: the text before the media marker, the media, the rest.
void AddUserTurn(const std::string& tmpl, const std::string& text, MessageMedia media,
                 const std::string& field, ApiRequest* r) {
  const std::string filled = absl::StrReplaceAll(tmpl, {{"{text}", text}});
  size_t at = filled.find("{image}");
  if (at == std::string::npos) at = filled.find("{audio}");
  std::string before, after = filled;
  if (at != std::string::npos) {
    before = filled.substr(0, at);
    after = absl::StrReplaceAll(filled.substr(at + 7), {{"{image}", ""}, {"{audio}", ""}});
  }
  AddText(before, field, r);
  for (size_t i = 0; i < media.parts.size(); ++i) {
    *r->generate.add_input() = std::move(media.parts[i]);
    r->part_names.push_back(std::move(media.names[i]));
  }
  AddText(after, field, r);
}

absl::Status ParseLogprobsChat(const json& o, ApiRequest* r) {
  MODRWKV_ASSIGN_OR_RETURN(std::optional<bool> logprobs, Bool(o, "logprobs"));
  MODRWKV_ASSIGN_OR_RETURN(std::optional<int64_t> top,
                           Integer(o, "top_logprobs", 0, SamplerConfig::kMaxTopLogprobs));
  if (top && !logprobs.value_or(false)) {
    return Bad("top_logprobs", "needs \"logprobs\": true");
  }
  r->logprobs = logprobs.value_or(false);
  if (r->logprobs) r->generate.set_logprobs_top_n(static_cast<int32_t>(top.value_or(0)));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ApiRequest> ParseChatCompletion(std::string_view body, const ApiContext& ctx) {
  MODRWKV_ASSIGN_OR_RETURN(json o, ParseObject(body));
  ApiRequest r;
  r.chat = true;
  MODRWKV_RETURN_IF_ERROR(ParseCommon(o, ctx, &r));
  MODRWKV_RETURN_IF_ERROR(ParseLogprobsChat(o, &r));
  auto msgs = o.find("messages");
  if (msgs == o.end() || !msgs->is_array() || msgs->empty()) {
    return Bad("messages", "must be a non-empty array of messages");
  }
  bool text_only = true;  // the messages so far
  for (size_t i = 0; i < msgs->size(); ++i) {
    const json& m = (*msgs)[i];
    const std::string field = absl::StrCat("messages[", i, "]");
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return Bad(field, "must be an object with a string \"role\"");
    }
    const std::string role = m["role"].get<std::string>();
    const bool user = role == "user";
    const bool system = role == "system" || role == "developer";
    if (!user && !system && role != "assistant") {
      return Bad(absl::StrCat(field, ".role"),
                 absl::StrFormat("\"%s\" is not a role this server renders (system, developer, "
                                 "user, assistant)",
                                 absl::CHexEscape(role.substr(0, 32))));
    }
    if (m.contains("tool_calls") && !m["tool_calls"].is_null()) {
      return Unsupported(absl::StrCat(field, ".tool_calls"), "tool calls are not supported");
    }
    std::string text;
    MessageMedia media;
    MODRWKV_RETURN_IF_ERROR(
        ReadContent(m, absl::StrCat(field, ".content"), /*media_allowed=*/user, &text, &media));
    if (i + 1 == msgs->size()) {
      if (text_only) r.generate.set_prefix_parts(r.generate.input_size());
    }
    if (user) {
      if (i + 1 == msgs->size() && text.empty() && media.parts.empty()) {
        return Bad(absl::StrCat(field, ".content"), "is empty: the last message needs content");
      }
      if (!media.parts.empty()) text_only = false;
      AddUserTurn(ctx.user_template, text, std::move(media), field, &r);
    } else if (system) {
      AddText(absl::StrReplaceAll(ctx.system_template, {{"{text}", text}}), field, &r);
    } else {
      AddText(text + kAssistantEnd, field, &r);
    }
    if (i + 1 == msgs->size() && !user) {
      return Bad(absl::StrCat(field, ".role"),
                 absl::StrFormat("is \"%s\": the last message must be the user's", role));
    }
  }
  // Chat answers end at the turn end, never at end of text (the gRPC Chat's rules; see
  // ApplyChatTurnRules, applied after translation).
  r.generate.mutable_stop()->set_ignore_end_of_text(true);
  return r;
}

absl::StatusOr<ApiRequest> ParseCompletion(std::string_view body, const ApiContext& ctx) {
  MODRWKV_ASSIGN_OR_RETURN(json o, ParseObject(body));
  ApiRequest r;
  r.chat = false;
  MODRWKV_RETURN_IF_ERROR(ParseCommon(o, ctx, &r));
  MODRWKV_ASSIGN_OR_RETURN(std::optional<int64_t> logprobs,
                           Integer(o, "logprobs", 0, SamplerConfig::kMaxTopLogprobs));
  if (logprobs) {
    r.logprobs = true;
    r.generate.set_logprobs_top_n(static_cast<int32_t>(*logprobs));
  }
  // Extension (as in vLLM): do not stop at end of text (token 0).
  MODRWKV_ASSIGN_OR_RETURN(std::optional<bool> ignore_eos, Bool(o, "ignore_eos"));
  if (ignore_eos.value_or(false)) r.generate.mutable_stop()->set_ignore_end_of_text(true);
  auto p = o.find("prompt");
  if (p == o.end() || p->is_null()) return Bad("prompt", "is missing");
  if (p->is_string()) {
    r.generate.add_input()->set_text(p->get<std::string>());
  } else if (p->is_array() && !p->empty() && (*p)[0].is_number_integer()) {
    pb::TokenIds* ids = r.generate.add_input()->mutable_tokens();
    for (size_t i = 0; i < p->size(); ++i) {
      const json& t = (*p)[i];
      if (!t.is_number_integer() || t.get<int64_t>() < 0 ||
          t.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return Bad(absl::StrCat("prompt[", i, "]"), "must be a token id (a non-negative integer)");
      }
      ids->add_ids(t.get<int32_t>());
    }
  } else if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) {
    r.generate.add_input()->set_text((*p)[0].get<std::string>());
  } else if (p->is_array() && p->size() > 1) {
    return Unsupported("prompt", "one prompt per request (use n for several completions)");
  } else {
    return Bad("prompt", absl::StrCat("must be a string, an array of token ids or an array of one "
                                      "string, got ",
                                      TypeName(*p)));
  }
  r.part_names.push_back("prompt");
  return r;
}

absl::Status RenameToApiField(const absl::Status& s, const ApiRequest& request) {
  const std::string field = FieldOf(s);
  if ((s.code() != absl::StatusCode::kInvalidArgument &&
       s.code() != absl::StatusCode::kUnimplemented) ||
      field.empty()) {
    return s;
  }
  std::string name;
  std::string rest;
  constexpr absl::string_view kSchema = "sampling.response_format.json_schema";
  if (absl::StartsWith(field, kSchema)) {
    name = "response_format.json_schema.schema";
    rest = field.substr(kSchema.size());
  } else if (absl::StartsWith(field, "prompt.tokens.ids")) {
    name = "prompt";
    rest = field.substr(17);
  } else if (field == "input") {
    name = request.chat ? "messages" : "prompt";
  } else if (absl::StartsWith(field, "stop.stop_strings")) {
    name = absl::StrCat("stop", field.substr(17));
  } else if (field == "stop.max_tokens") {
    name = "max_tokens";
  } else if (absl::StartsWith(field, "sampling.")) {
    name = field.substr(9);
  } else if (field == "logprobs_top_n") {
    name = request.chat ? "top_logprobs" : "logprobs";
  }
  if (name.empty()) return s;
  const std::string api_field = absl::StrCat(name, rest);
  std::string message = absl::StrReplaceAll(s.message(), {{field, api_field}});
  absl::Status out = WithField(absl::Status(s.code(), message), api_field);
  const std::string reason = ReasonOf(s);
  return reason.empty() ? out : WithReason(out, reason);
}

ApiError ToApiError(const absl::Status& s) {
  ApiError e;
  const char* type = "server_error";
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      e.http_status = 400, type = "invalid_request_error";
      break;
    case absl::StatusCode::kUnimplemented:
      e.http_status = 400, type = "invalid_request_error";
      break;
    case absl::StatusCode::kUnauthenticated:
      e.http_status = 401, type = "authentication_error";
      break;
    case absl::StatusCode::kPermissionDenied:
      e.http_status = 403, type = "permission_error";
      break;
    case absl::StatusCode::kNotFound:
      e.http_status = 404, type = "not_found_error";
      break;
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      e.http_status = 409, type = "conflict_error";
      break;
    case absl::StatusCode::kResourceExhausted:
      e.http_status = 429, type = "rate_limit_error";
      break;
    case absl::StatusCode::kUnavailable:
      e.http_status = 503, type = "service_unavailable_error";
      break;
    case absl::StatusCode::kDeadlineExceeded:
      e.http_status = 504, type = "timeout_error";
      break;
    case absl::StatusCode::kCancelled:
      e.http_status = 499, type = "cancelled";
      break;
    default:
      e.http_status = 500, type = "server_error";
  }
  if (e.http_status == 429 || e.http_status == 503) {
    const int64_t ms = absl::ToInt64Milliseconds(RetryDelayOf(s));
    e.retry_after_seconds = static_cast<int>(std::max<int64_t>(1, (ms + 999) / 1000));
  }
  const std::string field = FieldOf(s);
  json err = {{"message", std::string(s.message())},
              {"type", type},
              {"param", field.empty() ? json(nullptr) : json(field)},
              {"code", ErrorInfoReason(s)}};
  e.body = json{{"error", err}}.dump(-1, ' ', false, json::error_handler_t::replace);
  return e;
}

std::string_view FinishReasonName(EndReason reason) {
  switch (reason) {
    case EndReason::kStopToken:
    case EndReason::kStopString:
      return "stop";
    case EndReason::kLength:
    case EndReason::kDeadline:
      return "length";
    case EndReason::kCancelled:
      return "cancelled";
    default:
      return "error";
  }
}

namespace {

json BytesArray(std::string_view bytes) {
  json a = json::array();
  for (unsigned char c : bytes) a.push_back(static_cast<int>(c));
  return a;
}

std::string TokenText(const Tokenizer& tok, int32_t id) {
  return ReplaceInvalidUtf8(tok.TokenBytes(id));
}

}  // namespace

json ChatLogprobs(const std::vector<int32_t>& tokens, const std::vector<SampleResult>& logprobs,
                  const Tokenizer& tokenizer) {
  json content = json::array();
  for (size_t i = 0; i < tokens.size() && i < logprobs.size(); ++i) {
    json top = json::array();
    for (const auto& [id, lp] : logprobs[i].top_logprobs) {
      top.push_back({{"token", TokenText(tokenizer, id)},
                     {"logprob", lp},
                     {"bytes", BytesArray(tokenizer.TokenBytes(id))}});
    }
    content.push_back({{"token", TokenText(tokenizer, tokens[i])},
                       {"logprob", logprobs[i].logprob},
                       {"bytes", BytesArray(tokenizer.TokenBytes(tokens[i]))},
                       {"top_logprobs", std::move(top)}});
  }
  return json{{"content", std::move(content)}};
}

json CompletionLogprobs(const std::vector<int32_t>& tokens,
                        const std::vector<SampleResult>& logprobs, const Tokenizer& tokenizer,
                        size_t* offset) {
  json out = {{"tokens", json::array()},
              {"token_logprobs", json::array()},
              {"top_logprobs", json::array()},
              {"text_offset", json::array()}};
  for (size_t i = 0; i < tokens.size() && i < logprobs.size(); ++i) {
    out["tokens"].push_back(TokenText(tokenizer, tokens[i]));
    out["token_logprobs"].push_back(logprobs[i].logprob);
    json top = json::object();
    for (const auto& [id, lp] : logprobs[i].top_logprobs) top[TokenText(tokenizer, id)] = lp;
    out["top_logprobs"].push_back(std::move(top));
    out["text_offset"].push_back(*offset);
    *offset += tokenizer.TokenBytes(tokens[i]).size();
  }
  return out;
}

void AppendLogprobs(json* a, const json& b) {
  if (a->is_null()) {
    *a = b;
    return;
  }
  for (auto& [key, value] : a->items()) {
    if (value.is_array() && b.contains(key)) {
      for (const json& v : b[key]) value.push_back(v);
    }
  }
}

json UsageJson(int prompt_tokens, int completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

json ModelsJson(const std::string& model_name, int64_t created,
                const std::vector<std::string>& initial_states,
                const std::string& default_initial_state) {
  return {{"object", "list"},
          {"data", json::array({{{"id", model_name},
                                 {"object", "model"},
                                 {"created", created},
                                 {"owned_by", "modrwkv"},
                                 {"initial_states", initial_states},
                                 {"default_initial_state", default_initial_state}}})}};
}

}  // namespace modrwkv::server::http
