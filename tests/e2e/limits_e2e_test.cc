// Server-side caps and defaults end to end: --max-tokens-limit, --default-max-tokens,
// --default-timeout, --max-chat-streams-per-owner, --max-requests-per-owner, request priorities
// (--max-request-priority) and the callers' own limits from the token file.
#include <map>
#include <mutex>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/e2e_util.h"

namespace modrwkv::e2e {
namespace {

TEST(LimitsE2eTest, MaxTokensIsCappedAndDefaulted) {
  ServerProcess::Options o;
  o.args = {"--max-tokens-limit", "8", "--default-max-tokens", "5"};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  StreamResult over = RunGenerate(stub.get(), Greedy("hi", 9));
  EXPECT_EQ(over.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(BadFieldOf(over.status), "stop.max_tokens");
  EXPECT_NE(over.status.error_message().find("max-tokens-limit"), std::string::npos);
  StreamResult at = RunGenerate(stub.get(), Greedy("hi", 8));
  ASSERT_TRUE(at.status.ok()) << at.status.error_message();
  EXPECT_EQ(at.ids.size(), 8u);
  pb::GenerateRequest unset = Greedy("hi", 1);
  unset.mutable_stop()->clear_max_tokens();
  StreamResult def = RunGenerate(stub.get(), unset);
  ASSERT_TRUE(def.status.ok()) << def.status.error_message();
  ASSERT_TRUE(def.result.has_value());
  EXPECT_EQ(def.result->finish_reason(), pb::FINISH_REASON_LENGTH);
  EXPECT_EQ(def.result->usage().generated_tokens(), 5);
  // Without identities there is no per-caller series.
  EXPECT_EQ(HttpGet(server->metrics_port(), "/metrics").find("modrwkv_caller_requests_total{"),
            std::string::npos);
}

TEST(LimitsE2eTest, PriorityOrdersTheQueueWithinTheServersCap) {
  ServerProcess::Options o;
  o.args = {"--max-running", "1", "--max-request-priority", "10", "--http-port", "0"};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  {
    grpc::ClientContext ctx;
    pb::ModelInfo info;
    ASSERT_TRUE(stub->GetModelInfo(&ctx, pb::GetModelInfoRequest(), &info).ok());
    EXPECT_EQ(info.limits().max_request_priority(), 10);
  }

  // One slot in the batch, held by a request that runs until cancelled.
  grpc::ClientContext blocker_ctx;
  auto blocker = stub->Generate(&blocker_ctx, Greedy("hold", 1000000));
  pb::GenerateResponse first;
  ASSERT_TRUE(blocker->Read(&first));
  // Three wait behind it, sent lowest priority first, each running until cancelled too: with one
  // slot, the one whose first token comes after a cancel is the one admitted, so the order of
  // first tokens is the admission order.
  std::mutex mu;
  std::vector<std::string> started;
  const std::vector<std::pair<std::string, int>> queued = {{"low", -5}, {"zero", 0}, {"high", 10}};
  std::map<std::string, grpc::ClientContext> contexts;
  for (const auto& [name, priority] : queued) contexts[name];  // made here: threads only look up
  std::vector<std::thread> clients;
  // On every way out (a failed assertion included) the streams end and their threads are joined.
  absl::Cleanup join = [&] {
    blocker_ctx.TryCancel();
    for (auto& [name, ctx] : contexts) ctx.TryCancel();
    for (std::thread& t : clients) t.join();
  };
  for (const auto& [name, priority] : queued) {
    clients.emplace_back([&, name = name, priority = priority] {
      pb::GenerateRequest req = Greedy("wait", 1000000);
      req.set_priority(priority);
      auto reader = stub->Generate(&contexts.at(name), req);
      pb::GenerateResponse resp;
      if (reader->Read(&resp)) {
        std::lock_guard<std::mutex> l(mu);
        started.push_back(name);
      }
      while (reader->Read(&resp)) {
      }
      EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED) << name;
    });
    const double waiting = static_cast<double>(clients.size());
    ASSERT_TRUE(Eventually([&] {
      return ScrapeMetric(*server, "modrwkv_requests_waiting") == waiting;
    })) << name
        << " never queued";
  }
  const auto started_count = [&] {
    std::lock_guard<std::mutex> l(mu);
    return started.size();
  };
  blocker_ctx.TryCancel();
  for (size_t i = 0; i < queued.size(); ++i) {
    ASSERT_TRUE(Eventually([&] { return started_count() == i + 1; }, std::chrono::seconds(30)));
    std::lock_guard<std::mutex> l(mu);
    contexts.at(started.back()).TryCancel();  // the next one in line gets the slot
  }
  std::move(join).Invoke();
  while (blocker->Read(&first)) {
  }
  EXPECT_EQ(blocker->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(started, (std::vector<std::string>{"high", "zero", "low"}));

  // Outside [-100, --max-request-priority]: refused, naming the field, on every face.
  for (int priority : {11, -101}) {
    pb::GenerateRequest req = Greedy("hi", 2);
    req.set_priority(priority);
    StreamResult r = RunGenerate(stub.get(), req);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << priority;
    EXPECT_EQ(BadFieldOf(r.status), "priority") << priority;
    EXPECT_NE(r.status.error_message().find("max-request-priority"), std::string::npos);
  }
  {
    grpc::ClientContext ctx;
    auto chat = stub->Chat(&ctx);
    pb::ChatRequest turn;
    turn.set_text("hi");
    turn.set_priority(11);
    chat->Write(turn);
    chat->WritesDone();
    pb::ChatResponse resp;
    while (chat->Read(&resp)) {
    }
    const grpc::Status st = chat->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(BadFieldOf(st), "priority");
  }
  httplib::Client http("127.0.0.1", server->http_port());
  http.set_read_timeout(60, 0);
  nlohmann::json body = {{"prompt", "hi"}, {"max_tokens", 2}, {"priority", 11}};
  auto res = http.Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400) << res->body;
  EXPECT_EQ(nlohmann::json::parse(res->body)["error"]["param"], "priority") << res->body;
  body["priority"] = 10;
  res = http.Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
}

TEST(LimitsE2eTest, DefaultTimeoutEndsRequestsThatSetNoDeadline) {
  ServerProcess::Options o;
  o.args = {"--default-timeout", "300ms"};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  const auto t0 = Clock::now();
  grpc::ClientContext ctx;  // no deadline, no timeout
  auto reader = stub->Generate(&ctx, Greedy("go on", 1000000));
  StreamResult r = Collect(reader.get());
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_TRUE(r.result.has_value());
  EXPECT_EQ(r.result->finish_reason(), pb::FINISH_REASON_DEADLINE);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(20));
  // The request's own timeout wins over the default.
  pb::GenerateRequest req = Greedy("go on", 1000000);
  req.mutable_timeout()->set_nanos(800000000);
  grpc::ClientContext ctx2;
  const auto t1 = Clock::now();
  auto reader2 = stub->Generate(&ctx2, req);
  StreamResult r2 = Collect(reader2.get());
  ASSERT_TRUE(r2.status.ok()) << r2.status.error_message();
  EXPECT_EQ(r2.result->finish_reason(), pb::FINISH_REASON_DEADLINE);
  EXPECT_GE(Clock::now() - t1, std::chrono::milliseconds(800));
}

TEST(LimitsE2eTest, ChatStreamsPerCallerAreBounded) {
  const fs::path tokens =
      fs::temp_directory_path() / ("e2e_limit_tokens_" + std::to_string(getpid()));
  {
    std::ofstream f(tokens);
    f << "alice alice-secret-1\nbob bob-secret-22\n";
  }
  ServerProcess::Options o;
  o.args = {"--auth-token-file", tokens.string(), "--max-chat-streams-per-owner", "2"};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  struct Open {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReaderWriter<pb::ChatRequest, pb::ChatResponse>> stream;
  };
  // Opens a stream and runs one turn on it: the turn's answer proves it was admitted.
  auto open = [&](const std::string& token, grpc::Status* refused) {
    auto s = std::make_unique<Open>();
    s->ctx.AddMetadata("authorization", "Bearer " + token);
    s->stream = stub->Chat(&s->ctx);
    pb::ChatRequest req;
    req.set_text("hi");
    req.mutable_stop()->set_max_tokens(2);
    s->stream->Write(req);
    pb::ChatResponse resp;
    while (s->stream->Read(&resp)) {
      if (resp.has_turn_end()) return s;
    }
    *refused = s->stream->Finish();
    return std::unique_ptr<Open>();
  };
  grpc::Status st;
  auto a1 = open("alice-secret-1", &st);
  auto a2 = open("alice-secret-1", &st);
  ASSERT_TRUE(a1 && a2);
  EXPECT_FALSE(open("alice-secret-1", &st));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(st.error_message().find("max-chat-streams-per-owner"), std::string::npos)
      << st.error_message();
  ASSERT_TRUE(ErrorInfoOf(st).has_value());
  EXPECT_EQ(ErrorInfoOf(st)->reason(), "TOO_MANY_STREAMS");
  auto b1 = open("bob-secret-22", &st);  // another caller is not affected
  EXPECT_TRUE(b1);
  // Closing one of alice's streams makes room again.
  a1->stream->WritesDone();
  EXPECT_TRUE(a1->stream->Finish().ok());
  std::unique_ptr<Open> a3;
  EXPECT_TRUE(Eventually([&] { return (a3 = open("alice-secret-1", &st)) != nullptr; }));
  for (Open* s : {a2.get(), a3.get(), b1.get()}) {
    if (!s) continue;
    s->stream->WritesDone();
    s->stream->Finish();
  }
  fs::remove(tokens);
}

TEST(LimitsE2eTest, CallersHaveTheirOwnRequestAndPriorityLimits) {
  const fs::path tokens =
      fs::temp_directory_path() / ("e2e_caller_tokens_" + std::to_string(getpid()));
  {
    std::ofstream f(tokens);
    f << "alice alice-secret-1 max-requests=2 max-priority=7\nbob bob-secret-22\n";
  }
  absl::Cleanup remove_tokens = [&] { fs::remove(tokens); };
  ServerProcess::Options o;
  o.args = {"--auth-token-file",
            tokens.string(),
            "--max-requests-per-owner",
            "1",
            "--max-running",
            "8",
            "--http-port",
            "0"};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  auto generate = [&](const std::string& token, int priority, int max_tokens) {
    pb::GenerateRequest req = Greedy("hi", max_tokens);
    req.set_priority(priority);
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token);
    auto reader = stub->Generate(&ctx, req);
    return Collect(reader.get());
  };

  // What each caller may do, as GetModelInfo tells it.
  for (const auto& [token, priority, requests] :
       {std::tuple<std::string, int, int>{"bob-secret-22", 0, 1}, {"alice-secret-1", 7, 2}}) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token);
    pb::ModelInfo info;
    ASSERT_TRUE(stub->GetModelInfo(&ctx, pb::GetModelInfoRequest(), &info).ok());
    EXPECT_EQ(info.limits().max_request_priority(), priority) << token;
    EXPECT_EQ(info.limits().max_requests_in_flight(), requests) << token;
  }
  // Priorities: bob has the server's cap (0), alice her own (7).
  StreamResult r = generate("bob-secret-22", 1, 2);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(BadFieldOf(r.status), "priority");
  EXPECT_NE(r.status.error_message().find("max-request-priority"), std::string::npos);
  EXPECT_TRUE(generate("bob-secret-22", 0, 2).status.ok());
  r = generate("alice-secret-1", 7, 2);
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  r = generate("alice-secret-1", 8, 2);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(r.status.error_message().find("max-priority"), std::string::npos)
      << r.status.error_message();

  // Requests in flight: streams that run until cancelled, each admitted once its first token
  // came.
  struct Long {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReader<pb::GenerateResponse>> reader;
  };
  auto start_long = [&](const std::string& token) {
    auto l = std::make_unique<Long>();
    l->ctx.AddMetadata("authorization", "Bearer " + token);
    l->reader = stub->Generate(&l->ctx, Greedy("hold", 1000000));
    pb::GenerateResponse first;
    EXPECT_TRUE(l->reader->Read(&first)) << l->reader->Finish().error_message();
    return l;
  };
  auto end_long = [](Long* l) {
    l->ctx.TryCancel();
    pb::GenerateResponse resp;
    while (l->reader->Read(&resp)) {
    }
    EXPECT_EQ(l->reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  };
  auto bob = start_long("bob-secret-22");
  r = generate("bob-secret-22", 0, 2);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(r.status.error_message().find("max-requests-per-owner"), std::string::npos)
      << r.status.error_message();
  ASSERT_TRUE(ErrorInfoOf(r.status).has_value());
  EXPECT_EQ(ErrorInfoOf(r.status)->reason(), "TOO_MANY_REQUESTS");
  {  // a Chat turn is a request too
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer bob-secret-22");
    auto chat = stub->Chat(&ctx);
    pb::ChatRequest turn;
    turn.set_text("hi");
    turn.mutable_stop()->set_max_tokens(2);
    chat->Write(turn);
    chat->WritesDone();
    pb::ChatResponse resp;
    while (chat->Read(&resp)) {
    }
    EXPECT_EQ(chat->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  httplib::Client http("127.0.0.1", server->http_port());
  http.set_read_timeout(60, 0);
  const httplib::Headers bob_header = {{"Authorization", "Bearer bob-secret-22"}};
  const nlohmann::json body = {{"prompt", "hi"}, {"max_tokens", 2}};
  auto res = http.Post("/v1/completions", bob_header, body.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 429) << res->body;
  // Alice's own limit is two; bob's request does not count against her.
  auto alice1 = start_long("alice-secret-1");
  auto alice2 = start_long("alice-secret-1");
  r = generate("alice-secret-1", 0, 2);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(r.status.error_message().find("its own limit"), std::string::npos)
      << r.status.error_message();
  // A request that ended makes room (once the server has seen the cancel).
  end_long(bob.get());
  EXPECT_TRUE(Eventually([&] { return generate("bob-secret-22", 0, 2).status.ok(); }));
  res = http.Post("/v1/completions", bob_header, body.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  end_long(alice1.get());
  end_long(alice2.get());
  // The refusals are counted.
  EXPECT_GE(ScrapeMetric(*server, "modrwkv_admission_rejections_total{reason=\"caller_requests\"}"),
            4);
  // Per caller: bob's refusals (two gRPC, one HTTP), alice's generated tokens (two of them in her
  // priority 7 request).
  EXPECT_GE(
      ScrapeMetric(*server,
                   "modrwkv_caller_requests_total{caller=\"bob\",code=\"RESOURCE_EXHAUSTED\"}"),
      3);
  EXPECT_GE(
      ScrapeMetric(*server, "modrwkv_caller_tokens_total{caller=\"alice\",kind=\"generated\"}"), 2);
  EXPECT_GE(ScrapeMetric(*server, "modrwkv_caller_requests_total{caller=\"alice\",code=\"OK\"}"),
            1);
}

}  // namespace
}  // namespace modrwkv::e2e
