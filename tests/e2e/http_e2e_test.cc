// The OpenAI-compatible HTTP API end to end: the real server binary with --http-port, a real HTTP
// client (cpp-httplib), answers compared with the gRPC face's for the same greedy requests.
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/e2e_util.h"

namespace modrwkv::e2e {
namespace {

using json = nlohmann::json;

// Reads a Server-Sent Events body: the JSON of every "data:" event, and whether [DONE] ended it.
struct SseStream {
  std::vector<json> events;
  bool done = false;
};
SseStream ParseSse(const std::string& body) {
  SseStream s;
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("data: ", 0) != 0) continue;
    const std::string data = line.substr(6);
    if (data == "[DONE]") {
      s.done = true;
      continue;
    }
    EXPECT_FALSE(s.done) << "an event after [DONE]";
    s.events.push_back(json::parse(data));
  }
  return s;
}

class HttpE2eTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerProcess::Options o;
    o.args = {"--http-port",   "0", "--served-model-name",       "demo",
              "--max-running", "8", "--prefix-cache-min-tokens", "64"};
    server_ = ServerProcess::Start(o).release();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(server_->http_port(), 0) << server_->Log();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    stub_ = pb::Inference::NewStub(server_->Channel());
    http_ = std::make_unique<httplib::Client>("127.0.0.1", server_->http_port());
    http_->set_read_timeout(60, 0);
  }
  httplib::Result Post(const std::string& path, const json& body) {
    return http_->Post(path.c_str(), body.dump(), "application/json");
  }

  static ServerProcess* server_;
  std::unique_ptr<pb::Inference::Stub> stub_;
  std::unique_ptr<httplib::Client> http_;
};
ServerProcess* HttpE2eTest::server_ = nullptr;

// What a chat completion of `messages` must equal: Generate on the documented rendering (system
// and user templates, assistant content + "\x17"), stopping at 24 and never sampling 0.
pb::GenerateRequest ChatAsGenerate(const std::string& rendered, int max_tokens) {
  pb::GenerateRequest req = Greedy(rendered, max_tokens);
  req.mutable_sampling()->add_banned_token_ids(0);
  req.mutable_stop()->add_stop_token_ids(24);
  return req;
}

TEST_F(HttpE2eTest, CompletionEqualsGrpcGenerate) {
  const std::string prompt = "User: hello\n\nAssistant:";
  StreamResult grpc_result = RunGenerate(stub_.get(), Greedy(prompt, 40));
  ASSERT_TRUE(grpc_result.status.ok()) << grpc_result.status.error_message();
  pb::GenerateRequest with_eot = Greedy(prompt, 40);
  with_eot.mutable_stop()->set_ignore_end_of_text(false);
  grpc_result = RunGenerate(stub_.get(), with_eot);
  ASSERT_TRUE(grpc_result.status.ok());

  auto res = Post("/v1/completions",
                  {{"model", "demo"}, {"prompt", prompt}, {"max_tokens", 40}, {"temperature", 0}});
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  ASSERT_EQ(res->status, 200) << res->body;
  const json j = json::parse(res->body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], "demo");
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["text"], grpc_result.text);
  EXPECT_EQ(j["choices"][0]["finish_reason"],
            grpc_result.result->finish_reason() == pb::FINISH_REASON_LENGTH ? "length" : "stop");
  EXPECT_EQ(j["usage"]["prompt_tokens"], grpc_result.result->usage().prompt_tokens());
  EXPECT_EQ(j["usage"]["completion_tokens"], grpc_result.result->usage().generated_tokens());
  EXPECT_EQ(j["usage"]["total_tokens"], grpc_result.result->usage().prompt_tokens() +
                                            grpc_result.result->usage().generated_tokens());
  EXPECT_FALSE(res->get_header_value("X-Request-Id").empty() &&
               j["id"].get<std::string>().size() <= 5);
}

TEST_F(HttpE2eTest, ChatStreamedAndWholeEqualTheGrpcAnswerOnTheRenderedConversation) {
  const json messages = {{{"role", "system"}, {"content", "You are terse."}},
                         {{"role", "user"}, {"content", "hi"}},
                         {{"role", "assistant"}, {"content", " hello"}},
                         {{"role", "user"}, {"content", "count to three"}}};
  const std::string rendered =
      "\x16System: You are terse.\x17"
      "\x16User: hi\x17\x16"
      "Assistant: hello\x17"
      "\x16User: count to three\x17\x16"
      "Assistant:";
  const StreamResult expected = RunGenerate(stub_.get(), ChatAsGenerate(rendered, 32));
  ASSERT_TRUE(expected.status.ok()) << expected.status.error_message();
  ASSERT_FALSE(expected.text.empty());

  const json body = {{"messages", messages}, {"max_tokens", 32}, {"temperature", 0}};
  auto whole = Post("/v1/chat/completions", body);
  ASSERT_TRUE(whole);
  ASSERT_EQ(whole->status, 200) << whole->body;
  const json j = json::parse(whole->body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], expected.text);
  EXPECT_EQ(j["usage"]["prompt_tokens"], expected.result->usage().prompt_tokens());

  json streamed_body = body;
  streamed_body["stream"] = true;
  streamed_body["stream_options"] = {{"include_usage", true}};
  auto streamed = Post("/v1/chat/completions", streamed_body);
  ASSERT_TRUE(streamed);
  ASSERT_EQ(streamed->status, 200) << streamed->body;
  EXPECT_EQ(streamed->get_header_value("Content-Type"), "text/event-stream");
  const SseStream sse = ParseSse(streamed->body);
  EXPECT_TRUE(sse.done);
  ASSERT_GE(sse.events.size(), 3u);
  std::string text;
  int finishes = 0;
  for (size_t i = 0; i + 1 < sse.events.size(); ++i) {
    const json& e = sse.events[i];
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    ASSERT_EQ(e["choices"].size(), 1u);
    const json& c = e["choices"][0];
    if (i == 0) {
      EXPECT_EQ(c["delta"]["role"], "assistant");
    }
    if (c["delta"].contains("content")) text += c["delta"]["content"].get<std::string>();
    if (!c["finish_reason"].is_null()) ++finishes;
  }
  EXPECT_EQ(text, expected.text);
  EXPECT_EQ(finishes, 1);
  // The usage chunk comes last, with no choices.
  const json& usage = sse.events.back();
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], expected.result->usage().generated_tokens());
}

TEST_F(HttpE2eTest, NChoicesShareOnePrefillAndDrawWithTheirOwnSeeds) {
  const json body = {{"prompt", "Once upon a time, in a land far away, there lived"},
                     {"max_tokens", 12},
                     {"temperature", 1.0},
                     {"seed", 5},
                     {"n", 3},
                     {"logprobs", 2}};
  const char* prefilled = "modrwkv_prompt_tokens_total";
  const double prefilled_before = std::max(0.0, ScrapeMetric(*server_, prefilled));
  auto res = Post("/v1/completions", body);
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json j = json::parse(res->body);
  ASSERT_EQ(j["choices"].size(), 3u);
  int completion_tokens = 0;
  for (int i = 0; i < 3; ++i) {
    const json& c = j["choices"][i];
    EXPECT_EQ(c["index"], i);
    EXPECT_EQ(c["logprobs"]["tokens"].size(), c["logprobs"]["token_logprobs"].size());
    EXPECT_EQ(c["logprobs"]["top_logprobs"][0].size(), 2u);
    completion_tokens += static_cast<int>(c["logprobs"]["tokens"].size());
  }
  EXPECT_EQ(j["usage"]["completion_tokens"], completion_tokens);
  // The prompt was prefilled once (its last token once per choice), not three times.
  const int prompt_tokens = j["usage"]["prompt_tokens"];
  ASSERT_GT(prompt_tokens, 5);
  EXPECT_EQ(ScrapeMetric(*server_, prefilled) - prefilled_before, prompt_tokens - 1 + 3);
  // Choice i is bit for bit the request with seed 5 + i on its own (a cold prefill).
  for (int i = 0; i < 3; ++i) {
    json one = body;
    one["n"] = 1;
    one["seed"] = 5 + i;
    auto single = Post("/v1/completions", one);
    ASSERT_TRUE(single);
    ASSERT_EQ(single->status, 200);
    const json alone = json::parse(single->body);
    EXPECT_EQ(alone["choices"][0]["text"], j["choices"][i]["text"]) << i;
    EXPECT_EQ(alone["choices"][0]["logprobs"], j["choices"][i]["logprobs"]) << i;
    EXPECT_EQ(alone["usage"]["prompt_tokens"], prompt_tokens);
  }
}

TEST_F(HttpE2eTest, ACachedSystemPromptGivesTheColdAnswerAndIsNotPrefilledAgain) {
  std::string system;
  for (int i = 0; i < 12; ++i) system += "You answer questions about the sea, briefly and kindly. ";
  const auto rendered = [&](const std::string& question) {
    return "\x16System: " + system + "\x17\x16User: " + question + "\x17\x16" + "Assistant:";
  };
  const auto chat = [&](const std::string& question, int n) {
    return Post(
        "/v1/chat/completions",
        {{"messages",
          {{{"role", "system"}, {"content", system}}, {{"role", "user"}, {"content", question}}}},
         {"max_tokens", 16},
         {"temperature", 0},
         {"n", n}});
  };
  const auto metric = [&](const char* name) { return std::max(0.0, ScrapeMetric(*server_, name)); };
  const double hits0 = metric("modrwkv_prefix_cache_hits_total");
  const double misses0 = metric("modrwkv_prefix_cache_misses_total");

  // First use: a miss, prefilled and cached; the answer is the cold one.
  auto first = chat("Why is the sea salty?", 1);
  ASSERT_TRUE(first);
  ASSERT_EQ(first->status, 200) << first->body;
  const json j1 = json::parse(first->body);
  const StreamResult cold1 =
      RunGenerate(stub_.get(), ChatAsGenerate(rendered("Why is the sea salty?"), 16));
  ASSERT_TRUE(cold1.status.ok());
  EXPECT_EQ(j1["choices"][0]["message"]["content"], cold1.text);
  EXPECT_EQ(j1["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  EXPECT_EQ(metric("modrwkv_prefix_cache_misses_total"), misses0 + 1);

  // Another question after the same system prompt: a hit; only the new message is prefilled, and
  // each of two choices is bit for bit the cold answer.
  const double prefilled0 = metric("modrwkv_prompt_tokens_total");
  const double saved0 = metric("modrwkv_prefix_cache_tokens_saved_total");
  auto second = chat("How deep is it?", 2);
  ASSERT_TRUE(second);
  ASSERT_EQ(second->status, 200) << second->body;
  const json j2 = json::parse(second->body);
  const StreamResult cold2 =
      RunGenerate(stub_.get(), ChatAsGenerate(rendered("How deep is it?"), 16));
  ASSERT_TRUE(cold2.status.ok());
  EXPECT_EQ(j2["choices"][0]["message"]["content"], cold2.text);
  EXPECT_EQ(j2["choices"][1]["message"]["content"], cold2.text);
  EXPECT_EQ(metric("modrwkv_prefix_cache_hits_total"), hits0 + 1);
  const int cached = j2["usage"]["prompt_tokens_details"]["cached_tokens"];
  EXPECT_GE(cached, 64);
  EXPECT_EQ(j2["usage"]["prompt_tokens"], cold2.result->usage().prompt_tokens());
  EXPECT_EQ(metric("modrwkv_prefix_cache_tokens_saved_total"), saved0 + cached);
  // Prefilled by the HTTP request: the two choices' own rows only (the gRPC cold run adds its
  // whole prompt to the same counter).
  const int own_rows = j2["usage"]["prompt_tokens"].get<int>() - cached;
  EXPECT_EQ(metric("modrwkv_prompt_tokens_total") - prefilled0,
            2 * own_rows + cold2.result->usage().prompt_tokens());
}

TEST_F(HttpE2eTest, BadRequestsGetOpenAiErrors) {
  auto res = http_->Post("/v1/chat/completions", "{oops", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  json j = json::parse(res->body);
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "body");

  res = Post("/v1/chat/completions",
             {{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"temperature", 7}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_EQ(json::parse(res->body)["error"]["param"], "temperature");

  // An image on a text-only model: the part is named as the client sent it.
  res = Post("/v1/chat/completions",
             {{"messages",
               {{{"role", "user"},
                 {"content",
                  {{{"type", "image_url"}, {"image_url", {{"url", "data:image/png;base64,AAAA"}}}},
                   {{"type", "text"}, {"text", "what"}}}}}}}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400) << res->body;
  EXPECT_NE(json::parse(res->body)["error"]["message"].get<std::string>().find(
                "messages[0].content[0].image_url"),
            std::string::npos)
      << res->body;

  res = Post("/v1/completions", {{"prompt", "x"}, {"model", "gpt-4o"}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  EXPECT_EQ(json::parse(res->body)["error"]["code"], "MODEL_NOT_FOUND");

  res = Post("/v1/completions", {{"prompt", {0, 1, 70000}}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_EQ(json::parse(res->body)["error"]["param"], "prompt[2]");

  res = http_->Get("/v1/nothing");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  EXPECT_TRUE(json::parse(res->body).contains("error"));
}

TEST_F(HttpE2eTest, ModelsHealthAndMetrics) {
  auto res = http_->Get("/v1/models");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  const json j = json::parse(res->body);
  EXPECT_EQ(j["data"][0]["id"], "demo");
  EXPECT_EQ(http_->Get("/health")->status, 200);
  EXPECT_EQ(http_->Get("/health/ready")->status, 200);

  const double before = ScrapeMetric(
      *server_, "modrwkv_http_requests_total{method=\"openai.Completions\",status=\"400\"}");
  ASSERT_EQ(Post("/v1/completions", {{"prompt", "x"}, {"top_p", 5}})->status, 400);
  EXPECT_EQ(
      ScrapeMetric(*server_,
                   "modrwkv_http_requests_total{method=\"openai.Completions\",status=\"400\"}"),
      std::max(0.0, before) + 1);  // absent (NaN) before the first
  EXPECT_GE(ScrapeMetric(*server_,
                         "modrwkv_http_requests_total{method=\"openai.Models\",status=\"200\"}"),
            1);
}

TEST_F(HttpE2eTest, AClientThatLeavesAStreamFreesItsSlot) {
  // Read three events of a long stream, then drop the connection.
  httplib::Client c("127.0.0.1", server_->http_port());
  int events = 0;
  const json body = {
      {"prompt", "Once"}, {"max_tokens", 5000}, {"stream", true}, {"temperature", 0}};
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    events += static_cast<int>(std::count(data, data + n, '\n')) / 2;
    return events < 3;
  };
  const char* cancelled = "modrwkv_requests_finished_total{reason=\"cancelled\"}";
  const double cancelled_before = std::max(0.0, ScrapeMetric(*server_, cancelled));
  auto res = c.send(req);
  EXPECT_GE(events, 3);
  // The engine request is cancelled (not run to its 5000 tokens) and its slot freed.
  EXPECT_TRUE(Eventually([&] { return ScrapeMetric(*server_, cancelled) == cancelled_before + 1; },
                         std::chrono::seconds(20)))
      << "the engine request kept running after its client left";
  EXPECT_EQ(ScrapeMetric(*server_, "modrwkv_requests_running"), 0);
}

TEST(HttpDrainE2eTest, SigtermLetsARunningStreamFinish) {
  ServerProcess::Options o;
  o.args = {"--http-port", "0", "--drain-timeout", "30s"};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  httplib::Client c("127.0.0.1", server->http_port());
  c.set_read_timeout(60, 0);
  std::string body;
  std::atomic<bool> first{false};
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = json{
      {"prompt", "Once"},
      {"max_tokens", 120},
      {"stream", true},
      {"temperature", 0},
      {"ignore_eos",
       true}}.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    body.append(data, n);
    first = true;
    return true;
  };
  std::thread reader([&] { c.send(req); });
  ASSERT_TRUE(Eventually([&] { return first.load(); }, std::chrono::seconds(20)));
  server->Signal(SIGTERM);
  reader.join();
  const SseStream sse = ParseSse(body);
  EXPECT_TRUE(sse.done) << "the stream was cut by the drain";
  ASSERT_GE(sse.events.size(), 2u);
  EXPECT_EQ(sse.events.back()["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(server->WaitExit(std::chrono::seconds(30)), 0) << server->Log();
}

class HttpAuthE2eTest : public testing::Test {};

TEST_F(HttpAuthE2eTest, BearerTokensAsOnGrpc) {
  const fs::path tokens =
      fs::temp_directory_path() / ("modrwkv_http_tokens_" + std::to_string(getpid()));
  { std::ofstream(tokens) << "alice secret-a\n"; }
  ServerProcess::Options o;
  o.args = {"--http-port", "0", "--auth-token-file", tokens.string()};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  httplib::Client c("127.0.0.1", server->http_port());
  auto res = c.Get("/v1/models");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);
  EXPECT_EQ(json::parse(res->body)["error"]["type"], "authentication_error");
  c.set_bearer_token_auth("wrong");
  EXPECT_EQ(c.Get("/v1/models")->status, 401);
  c.set_bearer_token_auth("secret-a");
  EXPECT_EQ(c.Get("/v1/models")->status, 200);
  res = c.Post("/v1/completions", json{{"prompt", "hi"}, {"max_tokens", 2}}.dump(),
               "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  // The request log line is written after the answer went out, by the logger's own thread.
  EXPECT_TRUE(Eventually([&] { return server->Log().find("alice") != std::string::npos; }))
      << server->Log();
  fs::remove(tokens);
}

}  // namespace
}  // namespace modrwkv::e2e
