// The OpenAI wire format: request bodies into GenerateRequests (rendering and the errors' field
// names), errors into OpenAI's error shape, logprobs into both of OpenAI's shapes.
#include "server/http/openai_api.h"

#include "absl/strings/escaping.h"
#include "engine/base/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/status_mapping.h"

namespace modrwkv::server::http {
namespace {

using json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class OpenAiApiTest : public testing::Test {
 protected:
  OpenAiApiTest() {
    ctx_.model_name = "demo";
    ctx_.user_template = "<U {text}>";
    ctx_.system_template = "<S {text}>";
  }
  // The prompt's parts as text ("[image]" for an image part).
  static std::vector<std::string> Parts(const ApiRequest& r) {
    std::vector<std::string> out;
    for (const pb::InputPart& p : r.generate.input()) {
      out.push_back(p.has_image() ? "[image]" : p.has_audio() ? "[audio]" : p.text());
    }
    return out;
  }
  absl::Status ChatError(const json& body) {
    return ParseChatCompletion(body.dump(), ctx_).status();
  }

  ApiContext ctx_;
};

TEST_F(OpenAiApiTest, RendersMessagesThroughTheTemplates) {
  const json body = {
      {"model", "demo"},
      {"messages",
       {{{"role", "system"}, {"content", "be brief"}},
        {{"role", "user"}, {"content", "hi"}},
        {{"role", "assistant"}, {"content", " hello"}},
        {{"role", "user"},
         {"content", {{{"type", "text"}, {"text", "a"}}, {{"type", "text"}, {"text", "b"}}}}}}}};
  absl::StatusOr<ApiRequest> r = ParseChatCompletion(body.dump(), ctx_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->chat);
  EXPECT_THAT(Parts(*r), ElementsAre("<S be brief>", "<U hi>", " hello\x17", "<U a\nb>"));
  EXPECT_THAT(r->part_names,
              ElementsAre("messages[0]", "messages[1]", "messages[2]", "messages[3]"));
  EXPECT_TRUE(r->generate.stop().ignore_end_of_text());  // chat answers end at the turn end
  EXPECT_EQ(r->generate.prefix_parts(),
            3);  // what the prefix cache may share: all but the last message
  EXPECT_EQ(r->n, 1);
  EXPECT_FALSE(r->stream);
}

TEST_F(OpenAiApiTest, ImagesGoWhereTheTemplateSaysAndAreNamedByTheirPart) {
  ctx_.user_template = "{image}<U {text}>";
  const std::string png = "\x89PNG fake";
  const json body = {
      {"messages",
       {{{"role", "user"},
         {"content",
          {{{"type", "text"}, {"text", "what"}},
           {{"type", "image_url"},
            {"image_url", {{"url", "data:image/png;base64," + absl::Base64Escape(png)}}}}}}}}}};
  absl::StatusOr<ApiRequest> r = ParseChatCompletion(body.dump(), ctx_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(Parts(*r), ElementsAre("[image]", "<U what>"));
  EXPECT_THAT(r->part_names, ElementsAre("messages[0].content[1].image_url", "messages[0]"));
  EXPECT_EQ(r->generate.input(0).image().data(), png);
  EXPECT_EQ(r->generate.input(0).image().mime_type(), "image/png");
  EXPECT_EQ(r->generate.prefix_parts(), 0);
}

TEST_F(OpenAiApiTest, SamplingStopAndStreamingOptionsMapToTheRequest) {
  const json body = {{"messages", {{{"role", "user"}, {"content", "x"}}}},
                     {"temperature", 0.5},
                     {"top_p", 0.9},
                     {"presence_penalty", 0.25},
                     {"frequency_penalty", -0.5},
                     {"seed", 7},
                     {"logit_bias", {{"42", -100}}},
                     {"max_completion_tokens", 12},
                     {"stop", {"\n\n", "END"}},
                     {"n", 3},
                     {"stream", true},
                     {"stream_options", {{"include_usage", true}}},
                     {"logprobs", true},
                     {"top_logprobs", 4},
                     {"top_k", 20},
                     {"penalty_decay", 0.99},
                     {"session_id", "00000000000000000000000000000001"}};
  absl::StatusOr<ApiRequest> r = ParseChatCompletion(body.dump(), ctx_);
  ASSERT_TRUE(r.ok()) << r.status();
  const pb::SamplingParams& s = r->generate.sampling();
  EXPECT_FLOAT_EQ(s.temperature(), 0.5f);
  EXPECT_FLOAT_EQ(s.top_p(), 0.9f);
  EXPECT_FLOAT_EQ(s.presence_penalty(), 0.25f);
  EXPECT_FLOAT_EQ(s.frequency_penalty(), -0.5f);
  EXPECT_EQ(s.seed(), 7u);
  EXPECT_FLOAT_EQ(s.logit_bias().at(42), -100.0f);
  EXPECT_EQ(s.top_k(), 20);
  EXPECT_FLOAT_EQ(s.penalty_decay(), 0.99f);
  EXPECT_EQ(r->generate.stop().max_tokens(), 12);
  EXPECT_THAT(r->generate.stop().stop_strings(), ElementsAre("\n\n", "END"));
  EXPECT_EQ(r->n, 3);
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_TRUE(r->logprobs);
  EXPECT_EQ(r->generate.logprobs_top_n(), 4);
  EXPECT_EQ(r->generate.session_id(), "00000000000000000000000000000001");
}

TEST_F(OpenAiApiTest, ResponseFormatsMapToTheSamplingField) {
  const json user = {{{"role", "user"}, {"content", "x"}}};
  absl::StatusOr<ApiRequest> r = ParseChatCompletion(
      json{{"messages", user}, {"response_format", {{"type", "json_object"}}}}.dump(), ctx_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->generate.sampling().response_format().json_object());
  const json schema = {{"type", "object"}, {"properties", {{"a", {{"type", "integer"}}}}}};
  r = ParseCompletion(
      json{{"prompt", "x"},
           {"response_format",
            {{"type", "json_schema"}, {"json_schema", {{"name", "s"}, {"schema", schema}}}}}}
          .dump(),
      ctx_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(json::parse(r->generate.sampling().response_format().json_schema()), schema);
  r = ParseChatCompletion(json{{"messages", user}, {"response_format", {{"type", "text"}}}}.dump(),
                          ctx_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->generate.sampling().has_response_format());
}

TEST_F(OpenAiApiTest, CompletionPromptsAreTextOrTokenIds) {
  absl::StatusOr<ApiRequest> r = ParseCompletion(R"({"prompt": "abc", "logprobs": 2})", ctx_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->chat);
  EXPECT_THAT(Parts(*r), ElementsAre("abc"));
  EXPECT_FALSE(r->generate.stop().ignore_end_of_text());
  EXPECT_EQ(r->generate.logprobs_top_n(), 2);
  r = ParseCompletion(R"({"prompt": [1, 2, 3], "ignore_eos": true})", ctx_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->generate.input(0).tokens().ids(), ElementsAre(1, 2, 3));
  EXPECT_TRUE(r->generate.stop().ignore_end_of_text());
  r = ParseCompletion(R"({"prompt": ["only one"]})", ctx_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(Parts(*r), ElementsAre("only one"));
  EXPECT_EQ(ParseCompletion(R"({"prompt": ["a", "b"]})", ctx_).status().code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(FieldOf(ParseCompletion(R"({"prompt": [1, -2]})", ctx_).status()), "prompt[1]");
  EXPECT_EQ(FieldOf(ParseCompletion(R"({"prompt": 5})", ctx_).status()), "prompt");
  EXPECT_EQ(FieldOf(ParseCompletion(R"({})", ctx_).status()), "prompt");
}

TEST_F(OpenAiApiTest, BadRequestsNameTheirField) {
  const json user = {{{"role", "user"}, {"content", "x"}}};
  struct Case {
    json body;
    absl::StatusCode code;
    std::string field;
  };
  const std::vector<Case> cases = {
      {{{"messages", user}, {"temperature", 3}}, absl::StatusCode::kInvalidArgument, "temperature"},
      {{{"messages", user}, {"temperature", "hot"}},
       absl::StatusCode::kInvalidArgument,
       "temperature"},
      {{{"messages", user}, {"top_p", 0}}, absl::StatusCode::kInvalidArgument, "top_p"},
      {{{"messages", user}, {"max_tokens", 0}}, absl::StatusCode::kInvalidArgument, "max_tokens"},
      {{{"messages", user}, {"n", 9}}, absl::StatusCode::kInvalidArgument, "n"},
      {{{"messages", user}, {"stop", {"a", 1}}}, absl::StatusCode::kInvalidArgument, "stop[1]"},
      {{{"messages", user}, {"logit_bias", {{"x", 1}}}},
       absl::StatusCode::kInvalidArgument,
       "logit_bias"},
      {{{"messages", user}, {"logit_bias", {{"5", 101}}}},
       absl::StatusCode::kInvalidArgument,
       "logit_bias"},
      {{{"messages", user}, {"top_logprobs", 2}},
       absl::StatusCode::kInvalidArgument,
       "top_logprobs"},
      {{{"messages", user}, {"stream_options", {{"include_usage", true}}}},
       absl::StatusCode::kInvalidArgument,
       "stream_options"},
      {{{"messages", user}, {"model", "gpt-4"}}, absl::StatusCode::kNotFound, "model"},
      {{{"messages", user}, {"response_format", {{"type", "yaml"}}}},
       absl::StatusCode::kInvalidArgument,
       "response_format.type"},
      {{{"messages", user}, {"response_format", {{"type", "json_schema"}}}},
       absl::StatusCode::kInvalidArgument,
       "response_format.json_schema"},
      {{{"messages", user},
        {"response_format", {{"type", "json_schema"}, {"json_schema", {{"name", "x"}}}}}},
       absl::StatusCode::kInvalidArgument,
       "response_format.json_schema.schema"},
      {{{"messages", user}, {"tools", {{{"type", "function"}}}}},
       absl::StatusCode::kUnimplemented,
       "tools"},
      {{{"messages", json::array()}}, absl::StatusCode::kInvalidArgument, "messages"},
      {{{"messages",
         {{{"role", "user"}, {"content", "x"}}, {{"role", "assistant"}, {"content", "y"}}}}},
       absl::StatusCode::kInvalidArgument,
       "messages[1].role"},
      {{{"messages", {{{"role", "tool"}, {"content", "x"}}}}},
       absl::StatusCode::kInvalidArgument,
       "messages[0].role"},
      {{{"messages", {{{"role", "user"}, {"content", 5}}}}},
       absl::StatusCode::kInvalidArgument,
       "messages[0].content"},
      {{{"messages",
         {{{"role", "user"},
           {"content", {{{"type", "image_url"}, {"image_url", {{"url", "https://x/a.png"}}}}}}}}}},
       absl::StatusCode::kInvalidArgument,
       "messages[0].content[0].image_url"},
      {{{"messages",
         {{{"role", "user"},
           {"content", {{{"type", "image_url"}, {"image_url", "data:image/png;base64,@@@"}}}}}}}},
       absl::StatusCode::kInvalidArgument,
       "messages[0].content[0].image_url"},
      {{{"messages",
         {{{"role", "system"}, {"content", {{{"type", "image_url"}, {"image_url", "data:,"}}}}},
          {{"role", "user"}, {"content", "x"}}}}},
       absl::StatusCode::kInvalidArgument,
       "messages[0].content[0].type"},
  };
  for (const Case& c : cases) {
    const absl::Status st = ChatError(c.body);
    EXPECT_EQ(st.code(), c.code) << c.body.dump() << " -> " << st;
    EXPECT_EQ(FieldOf(st), c.field) << c.body.dump() << " -> " << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr(c.field)) << st;
  }
  EXPECT_EQ(FieldOf(ParseChatCompletion("{not json", ctx_).status()), "body");
  EXPECT_EQ(FieldOf(ParseChatCompletion("[1]", ctx_).status()), "body");
}

TEST_F(OpenAiApiTest, TranslationErrorsAreRenamedToTheApiFields) {
  absl::StatusOr<ApiRequest> r =
      ParseChatCompletion(json{{"messages", {{{"role", "user"}, {"content", "x"}}}}}.dump(), ctx_);
  ASSERT_TRUE(r.ok());
  absl::Status st =
      RenameToApiField(InvalidField("sampling.top_k", "sampling.top_k must be >= 0, got -1"), *r);
  EXPECT_EQ(FieldOf(st), "top_k");
  EXPECT_EQ(st.message(), "top_k must be >= 0, got -1");
  st = RenameToApiField(InvalidField("stop.max_tokens", "stop.max_tokens = 9 is above ..."), *r);
  EXPECT_EQ(FieldOf(st), "max_tokens");
  st = RenameToApiField(InvalidField("stop.stop_strings[1]", "stop.stop_strings[1] is empty"), *r);
  EXPECT_EQ(FieldOf(st), "stop[1]");
  st = RenameToApiField(InvalidField("input", "input: the prompt is empty"), *r);
  EXPECT_EQ(FieldOf(st), "messages");
  st = RenameToApiField(InvalidField("logprobs_top_n", "logprobs_top_n must be"), *r);
  EXPECT_EQ(FieldOf(st), "top_logprobs");
  st = RenameToApiField(
      WithField(absl::UnimplementedError("sampling.response_format.json_schema.properties.a."
                                         "minimum: \"minimum\" is not supported"),
                "sampling.response_format.json_schema.properties.a.minimum"),
      *r);
  EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(FieldOf(st), "response_format.json_schema.schema.properties.a.minimum");
  EXPECT_EQ(st.message(),
            "response_format.json_schema.schema.properties.a.minimum: \"minimum\" is not "
            "supported");
  const absl::Status other = absl::NotFoundError("no session");
  EXPECT_EQ(RenameToApiField(other, *r), other);
}

TEST_F(OpenAiApiTest, ErrorsHaveOpenAisShapeAndStatus) {
  ApiError e = ToApiError(InvalidField("temperature", "temperature must be in [0, 2], got 3"));
  EXPECT_EQ(e.http_status, 400);
  EXPECT_FALSE(e.retry_after_seconds.has_value());
  const json j = json::parse(e.body);
  EXPECT_EQ(j["error"]["message"], "temperature must be in [0, 2], got 3");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "temperature");
  EXPECT_EQ(j["error"]["code"], "INVALID_ARGUMENT");

  e = ToApiError(
      WithRetryDelay(WithReason(absl::ResourceExhaustedError("queue full"), "QUEUE_FULL"),
                     absl::Milliseconds(2500)));
  EXPECT_EQ(e.http_status, 429);
  EXPECT_EQ(e.retry_after_seconds, 3);
  EXPECT_EQ(json::parse(e.body)["error"]["code"], "QUEUE_FULL");
  EXPECT_EQ(json::parse(e.body)["error"]["param"], nullptr);
  EXPECT_EQ(ToApiError(absl::UnauthenticatedError("no token")).http_status, 401);
  EXPECT_EQ(ToApiError(absl::NotFoundError("x")).http_status, 404);
  e = ToApiError(absl::UnavailableError("loading"));
  EXPECT_EQ(e.http_status, 503);
  EXPECT_EQ(e.retry_after_seconds, 1);
  EXPECT_EQ(ToApiError(absl::InternalError("x")).http_status, 500);
}

TEST_F(OpenAiApiTest, LogprobsInBothShapes) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
      Tokenizer::LoadFile(std::string(MODRWKV_SOURCE_DIR) + "/assets/rwkv_vocab_v20230424.txt");
  ASSERT_TRUE(tok.ok());
  const std::vector<int32_t> ids = (*tok)->Encode("Hello world");
  ASSERT_EQ(ids.size(), 2u);
  std::vector<SampleResult> lps(2);
  lps[0].logprob = -0.5f;
  lps[0].top_logprobs = {{ids[0], -0.5f}, {ids[1], -2.0f}};
  lps[1].logprob = -1.0f;
  const json chat = ChatLogprobs(ids, lps, **tok);
  ASSERT_EQ(chat["content"].size(), 2u);
  EXPECT_EQ(chat["content"][0]["token"], "Hello");
  EXPECT_FLOAT_EQ(chat["content"][0]["logprob"].get<float>(), -0.5f);
  EXPECT_EQ(chat["content"][0]["bytes"].size(), 5u);
  EXPECT_EQ(chat["content"][0]["top_logprobs"][1]["token"], " world");
  EXPECT_EQ(chat["content"][1]["top_logprobs"].size(), 0u);

  size_t offset = 3;
  json completion = CompletionLogprobs(ids, lps, **tok, &offset);
  EXPECT_EQ(completion["tokens"], json({"Hello", " world"}));
  EXPECT_EQ(completion["text_offset"], json({3, 8}));
  EXPECT_EQ(offset, 14u);
  EXPECT_FLOAT_EQ(completion["top_logprobs"][0][" world"].get<float>(), -2.0f);
  json all;
  AppendLogprobs(&all, completion);
  AppendLogprobs(&all, completion);
  EXPECT_EQ(all["tokens"].size(), 4u);
}

TEST_F(OpenAiApiTest, FinishReasons) {
  EXPECT_EQ(FinishReasonName(EndReason::kStopToken), "stop");
  EXPECT_EQ(FinishReasonName(EndReason::kStopString), "stop");
  EXPECT_EQ(FinishReasonName(EndReason::kLength), "length");
  EXPECT_EQ(FinishReasonName(EndReason::kDeadline), "length");
}

}  // namespace
}  // namespace modrwkv::server::http
