// Server-side caps and defaults end to end: --max-tokens-limit, --default-max-tokens,
// --default-timeout and --max-chat-streams-per-owner.
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

}  // namespace
}  // namespace modrwkv::e2e
