// libFuzzer harness for server/http/openai_api.cc, the HTTP API's request parsing: each input is a
// request body for both /v1/chat/completions and /v1/completions, translated on as the server
// does (ToEngineRequest with the parts' names, chat turn rules) against the World vocabulary on a
// model with images and audio. Seeds: tests/fuzz/seeds/openai_api_fuzz.
// Invariants: no crash; a refused body is INVALID_ARGUMENT, NOT_FOUND (another model) or
// UNIMPLEMENTED (a feature not served), with a message, and its OpenAI error body is valid JSON
// with a 4xx status; an accepted body names every prompt part and, once translated, is a request
// the engine accepts (a chat answer stops at 24 and never samples 0).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/strings/escaping.h"
#include "engine/text/tokenizer.h"
#include "server/convert.h"
#include "server/http/openai_api.h"
#include "server/status_mapping.h"
#include "tests/test_paths.h"

namespace {

using modrwkv::server::PendingMedia;
using modrwkv::server::TranslationContext;
namespace http = modrwkv::server::http;

void Check(bool ok, const absl::Status& context = absl::OkStatus()) {
  if (ok) return;
  if (!context.ok()) {
    std::fprintf(stderr, "status: %s\n", absl::CHexEscape(context.ToString()).c_str());
  }
  __builtin_trap();
}

struct Server {
  std::unique_ptr<modrwkv::Tokenizer> world;
  std::unique_ptr<modrwkv::grammar::ConstraintCache> constraints;  // response_format schemas
  TranslationContext ctx;
  http::ApiContext api;
};

const Server& GetServer() {
  static const Server* s = [] {
    auto* out = new Server;
    auto world = modrwkv::Tokenizer::LoadFile(modrwkv::testing_paths::WorldVocab());
    Check(world.ok());
    out->world = std::move(*world);
    out->ctx = {.tokenizer = out->world.get(),
                .model_vocab = 65536,
                .max_prompt_tokens = 4096,
                .chat_template =
                    "{image}\x16User: {text}\x17\x16"
                    "Assistant:"};
    modrwkv::server::ImageTranslation image;
    image.splice.rows = 16;
    image.max_images = 3;
    image.max_bytes = 64;
    out->ctx.image = image;
    out->ctx.audio = modrwkv::server::AudioTranslation{/*max_clips=*/2, /*max_bytes=*/64};
    out->constraints = std::make_unique<modrwkv::grammar::ConstraintCache>(
        std::make_shared<const modrwkv::grammar::TokenVocabulary>(out->world->AllTokenBytes()), 4);
    out->ctx.constraints = out->constraints.get();
    out->api.model_name = "demo";
    out->api.user_template = out->ctx.chat_template;
    out->api.max_n = 4;
    return out;
  }();
  return *s;
}

void CheckRefusal(const absl::Status& st) {
  Check(!st.ok());
  Check(!st.message().empty(), st);
  Check(st.code() == absl::StatusCode::kInvalidArgument ||
            st.code() == absl::StatusCode::kNotFound ||
            st.code() == absl::StatusCode::kUnimplemented,
        st);
  const http::ApiError e = http::ToApiError(st);
  Check(e.http_status >= 400 && e.http_status < 500, st);
  const nlohmann::json j = nlohmann::json::parse(e.body, nullptr, /*allow_exceptions=*/false);
  Check(!j.is_discarded() && j.contains("error") && j["error"]["message"].is_string(), st);
}

void Run(const std::string& body, bool chat) {
  const Server& s = GetServer();
  absl::StatusOr<http::ApiRequest> r =
      chat ? http::ParseChatCompletion(body, s.api) : http::ParseCompletion(body, s.api);
  if (!r.ok()) return CheckRefusal(r.status());
  Check(r->chat == chat);
  Check(static_cast<int>(r->part_names.size()) == r->generate.input_size());
  Check(r->n >= 1 && r->n <= s.api.max_n);
  std::vector<PendingMedia> media;
  absl::StatusOr<modrwkv::EngineRequest> e = modrwkv::server::ToEngineRequest(
      r->generate, s.ctx, std::chrono::system_clock::time_point::max(), &media,
      [&](int i) { return r->part_names[i]; });
  if (!e.ok()) {
    const absl::Status renamed = http::RenameToApiField(e.status(), *r);
    Check(renamed.code() == e.status().code(), renamed);
    return CheckRefusal(renamed);
  }
  if (chat) modrwkv::server::ApplyChatTurnRules(s.ctx, &*e);
  Check(e->sampling.Validate(s.ctx.model_vocab).ok());
  Check(e->stop.Validate(s.ctx.model_vocab).ok());
  const auto& stops = e->stop.stop_token_ids;
  const auto& bans = e->sampling.banned_tokens;
  if (chat) {
    Check(std::find(stops.begin(), stops.end(), 24) != stops.end());
    Check(std::find(bans.begin(), bans.end(), 0) != bans.end());
  }
  for (const PendingMedia& m : media) Check(m.part < e->prompt.size() && !m.field.empty());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  Run(body, /*chat=*/true);
  Run(body, /*chat=*/false);
  return 0;
}
