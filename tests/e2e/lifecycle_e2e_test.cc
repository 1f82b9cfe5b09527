// The server process's life end to end: start-up validation (flags and environment), health and
// readiness, graceful drain on SIGTERM, bearer-token auth, TLS and mutual TLS, reflection.
#include "grpcpp/generic/generic_stub.h"
#include "tests/e2e/e2e_util.h"

namespace modrwkv::e2e {
namespace {

using ServingStatus = grpc::health::v1::HealthCheckResponse;

TEST(LifecycleE2eTest, InvalidOptionsFailAtStartupNamingTheOption) {
  const std::string model = DemoModel().string();
  std::string err;
  EXPECT_EQ(RunCli("serve --model " + model + " --max-running 0", &err), 2);
  EXPECT_NE(err.find("--max-running"), std::string::npos) << err;
  EXPECT_EQ(RunCli("serve --model " + model + " --state-slots 2 --max-running 4", &err), 2);
  EXPECT_NE(err.find("state-slots"), std::string::npos) << err;
  EXPECT_EQ(RunCli("serve --model " + model + " --chat-template nothing-here", &err), 2);
  EXPECT_NE(err.find("{text}"), std::string::npos) << err;
  EXPECT_EQ(RunCli("serve --model " + model + " --tls-cert /nonexistent.pem --tls-key x", &err), 2);
  EXPECT_NE(err.find("tls-cert"), std::string::npos) << err;
  EXPECT_EQ(RunCli("serve --model /nonexistent.pth", &err), 2);
  EXPECT_NE(err.find("model"), std::string::npos) << err;
  EXPECT_EQ(RunCli("serve --model " + model + " --drain-timeout soon", &err), 2);
  EXPECT_NE(err.find("--drain-timeout"), std::string::npos) << err;
  // Environment variables are validated the same way.
  EXPECT_EQ(RunCli("serve --model " + model + " --log-format xml", &err), 2);
  EXPECT_NE(err.find("--log-format"), std::string::npos) << err;
  EXPECT_EQ(RunCli("serve --model " + model + " --help", &err), 0);
}

TEST(LifecycleE2eTest, EnvironmentVariablesConfigureTheServerAndFlagsWin) {
  ServerProcess::Options o;
  o.env = {"MODRWKV_MAX_RUNNING=3", "MODRWKV_MAX_QUEUED_REQUESTS=7", "MODRWKV_LOG_FORMAT=json",
           "MODRWKV_MAX_STEP_TOKENS=64"};
  o.args = {"--max-step-tokens", "100"};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  pb::ModelInfo info;
  grpc::ClientContext ctx;
  ASSERT_TRUE(pb::Inference::NewStub(server->Channel())->GetModelInfo(&ctx, {}, &info).ok());
  EXPECT_EQ(info.limits().max_running(), 3);
  EXPECT_EQ(info.limits().max_queued_requests(), 7);
  EXPECT_EQ(info.limits().max_step_tokens(), 100);
  EXPECT_NE(server->Log().find("{\"ts\":"), std::string::npos);  // JSON log lines

  std::string err;
  // Started directly: the env var must reach the flag parser and fail it.
  const std::string cmd = "MODRWKV_PORT=not-a-port " + std::string(MODRWKV_CLI) +
                          " serve --model " + DemoModel().string() + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) err.append(buf, n);
  const int st = pclose(p);
  EXPECT_EQ(WEXITSTATUS(st), 2);
  EXPECT_NE(err.find("--port must be an integer"), std::string::npos) << err;
}

TEST(LifecycleE2eTest, HealthReportsLivenessAndReadiness) {
  auto server = ServerProcess::Start({});
  ASSERT_NE(server, nullptr);
  auto ch = server->Channel();
  EXPECT_EQ(Health(ch, ""), ServingStatus::SERVING);
  EXPECT_EQ(Health(ch, "modrwkv.v1.Inference"), ServingStatus::SERVING);
  grpc::Status st;
  Health(ch, "no.such.Service", &st);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST(LifecycleE2eTest, ReadinessIsNotServingUntilLoadedAndWarmedUp) {
  // A warm-up batch of 256 sequences keeps the server busy for a few hundred ms after it starts
  // listening: long enough to look at it before it is ready.
  ServerProcess::Options o;
  o.args = {"--max-running", "256"};
  o.wait_ready = false;
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  auto ch = server->Channel();
  EXPECT_EQ(Health(ch, ""), ServingStatus::SERVING);  // alive
  EXPECT_EQ(Health(ch, "modrwkv.v1.Inference"), ServingStatus::NOT_SERVING);
  auto stub = pb::Inference::NewStub(ch);
  StreamResult early = RunGenerate(stub.get(), Greedy("too early", 2));
  EXPECT_EQ(early.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  auto info = ErrorInfoOf(early.status);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->reason(), "LOADING");
  EXPECT_TRUE(RetryInfoOf(early.status).has_value());
  EXPECT_EQ(server->Log().find("msg=ready"), std::string::npos) << "became ready too soon";
  EXPECT_TRUE(
      Eventually([&] { return Health(ch, "modrwkv.v1.Inference") == ServingStatus::SERVING; },
                 std::chrono::seconds(60)));
  EXPECT_TRUE(RunGenerate(stub.get(), Greedy("now", 2)).status.ok());
  EXPECT_NE(server->Log().find("msg=\"warmed up\" sequences=256"), std::string::npos);
}

TEST(LifecycleE2eTest, SigtermDrainsTheInFlightRequestThenExitsZero) {
  ServerProcess::Options o;
  o.args = {"--drain-timeout", "30s"};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  auto ch = server->Channel();
  auto stub = pb::Inference::NewStub(ch);
  // Long enough to still be running when the signal arrives (~1 ms per token on the demo model).
  constexpr int kTokens = 1000;
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, Greedy("A long story", kTokens));
  pb::GenerateResponse first;
  ASSERT_TRUE(reader->Read(&first));
  server->Signal(SIGTERM);
  // Draining: readiness goes NOT_SERVING (liveness stays), new work is refused as UNAVAILABLE.
  EXPECT_TRUE(
      Eventually([&] { return Health(ch, "modrwkv.v1.Inference") == ServingStatus::NOT_SERVING; }));
  EXPECT_EQ(Health(ch, ""), ServingStatus::SERVING);
  StreamResult refused = RunGenerate(stub.get(), Greedy("late", 3));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << refused.status.error_message();
  auto info = ErrorInfoOf(refused.status);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->reason(), "DRAINING");
  EXPECT_TRUE(RetryInfoOf(refused.status).has_value());
  // The in-flight request runs to its end.
  StreamResult rest = Collect(reader.get());
  ASSERT_TRUE(rest.status.ok()) << rest.status.error_message();
  ASSERT_TRUE(rest.result.has_value());
  EXPECT_EQ(rest.result->finish_reason(), pb::FINISH_REASON_LENGTH);
  EXPECT_EQ(rest.result->usage().generated_tokens(), kTokens);
  EXPECT_EQ(static_cast<int>(rest.ids.size()) + first.chunk().token_ids_size(), kTokens);
  EXPECT_EQ(server->WaitExit(std::chrono::seconds(20)), 0) << server->Log();
  EXPECT_NE(server->Log().find("msg=stopped drained=true"), std::string::npos) << server->Log();
}

TEST(LifecycleE2eTest, DrainTimeoutCancelsWhatIsLeftAndStillExitsZero) {
  ServerProcess::Options o;
  o.args = {"--drain-timeout", "200ms"};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, Greedy("Endless", 100000000));
  pb::GenerateResponse first;
  ASSERT_TRUE(reader->Read(&first));
  // An idle Chat stream does not hold the drain up either.
  grpc::ClientContext chat_ctx;
  auto chat = stub->Chat(&chat_ctx);
  const auto t0 = Clock::now();
  server->Signal(SIGTERM);
  StreamResult rest = Collect(reader.get());
  EXPECT_FALSE(rest.status.ok());
  EXPECT_EQ(server->WaitExit(std::chrono::seconds(20)), 0) << server->Log();
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5));
  EXPECT_NE(server->Log().find("drain timeout"), std::string::npos) << server->Log();
  EXPECT_FALSE(chat->Finish().ok());
}

TEST(LifecycleE2eTest, BearerTokensAuthenticateAndOwnSessions) {
  const fs::path tokens = fs::temp_directory_path() / ("e2e_tokens_" + std::to_string(getpid()));
  {
    std::ofstream f(tokens);
    f << "# name token\nalice alice-secret-1\nbob bob-secret-22\n";
  }
  ServerProcess::Options o;
  o.args = {"--auth-token-file", tokens.string()};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  auto ch = server->Channel();
  auto stub = pb::Inference::NewStub(ch);
  auto sessions = pb::Sessions::NewStub(ch);
  auto generate = [&](const std::string& auth) {
    grpc::ClientContext ctx;
    if (!auth.empty()) ctx.AddMetadata("authorization", auth);
    auto reader = stub->Generate(&ctx, Greedy("hi", 3));
    return Collect(reader.get());
  };
  for (const std::string& bad : {std::string(), std::string("Bearer wrong-token"),
                                 std::string("Basic alice-secret-1"), std::string("Bearer ")}) {
    StreamResult r = generate(bad);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << "'" << bad << "'";
    auto info = ErrorInfoOf(r.status);
    ASSERT_TRUE(info.has_value());
    EXPECT_EQ(info->reason(), "UNAUTHENTICATED");
  }
  EXPECT_TRUE(generate("Bearer alice-secret-1").status.ok());
  EXPECT_TRUE(generate("bearer bob-secret-22").status.ok());
  // Health needs no token (probes carry none).
  EXPECT_EQ(Health(ch, "modrwkv.v1.Inference"), ServingStatus::SERVING);

  // A session belongs to its creator; another caller cannot see or use it.
  pb::Session s;
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer alice-secret-1");
    ASSERT_TRUE(sessions->CreateSession(&ctx, {}, &s).ok());
  }
  pb::GetSessionRequest get;
  get.set_session_id(s.session_id());
  pb::Session out;
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer bob-secret-22");
    EXPECT_EQ(sessions->GetSession(&ctx, get, &out).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer bob-secret-22");
    pb::GenerateRequest req = Greedy("steal", 2);
    req.set_session_id(s.session_id());
    auto reader = stub->Generate(&ctx, req);
    EXPECT_EQ(Collect(reader.get()).status.error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer alice-secret-1");
    EXPECT_TRUE(sessions->GetSession(&ctx, get, &out).ok());
  }
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(sessions->GetSession(&ctx, get, &out).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  fs::remove(tokens);
}

TEST(LifecycleE2eTest, TlsAndMutualTls) {
  const fs::path dir = fs::temp_directory_path() / ("e2e_tls_" + std::to_string(getpid()));
  if (!MakeCertificates(dir, {{"client", "/CN=client", ""}}))
    GTEST_SKIP() << "openssl could not make test certificates";
  {
    ServerProcess::Options o;
    o.args = {"--tls-cert", (dir / "server.pem").string(), "--tls-key",
              (dir / "server.key").string()};
    auto server = ServerProcess::Start(o);
    ASSERT_NE(server, nullptr);
    EXPECT_EQ(Health(TlsChannel(*server, dir, ""), "modrwkv.v1.Inference"), ServingStatus::SERVING);
    auto stub = pb::Inference::NewStub(TlsChannel(*server, dir, ""));
    EXPECT_TRUE(RunGenerate(stub.get(), Greedy("tls", 3)).status.ok());
    // A plaintext client cannot talk to a TLS server.
    grpc::Status st;
    Health(server->Channel(), "", &st);
    EXPECT_FALSE(st.ok());
  }
  {
    ServerProcess::Options o;
    o.args = {"--tls-cert",      (dir / "server.pem").string(),
              "--tls-key",       (dir / "server.key").string(),
              "--tls-client-ca", (dir / "ca.pem").string()};
    auto server = ServerProcess::Start(o);
    ASSERT_NE(server, nullptr);
    EXPECT_EQ(Health(TlsChannel(*server, dir, "client"), ""), ServingStatus::SERVING);
    grpc::Status st;
    Health(TlsChannel(*server, dir, ""), "", &st);
    EXPECT_FALSE(st.ok()) << "mTLS server accepted a client without a certificate";
  }
  fs::remove_all(dir);
}

// grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo, spoken with hand-encoded bytes
// (the reflection protos are compiled into libgrpc++_reflection; linking our own copy would
// register them twice): list_services. The call's status; the response bytes in *response.
grpc::Status ListServices(const std::shared_ptr<grpc::Channel>& channel, std::string* response) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto call =
      stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag;
  bool ok;
  call->StartCall(reinterpret_cast<void*>(1));
  cq.Next(&tag, &ok);
  const std::string request("\x3a\x01*", 3);  // field 7 (list_services) = "*"
  grpc::Slice slice(request);
  grpc::ByteBuffer out(&slice, 1);
  call->Write(out, reinterpret_cast<void*>(2));
  cq.Next(&tag, &ok);
  grpc::ByteBuffer in;
  call->Read(&in, reinterpret_cast<void*>(3));
  if (cq.Next(&tag, &ok) && ok) {
    std::vector<grpc::Slice> slices;
    if (in.Dump(&slices).ok()) {
      for (const auto& sl : slices) {
        response->append(reinterpret_cast<const char*>(sl.begin()), sl.size());
      }
    }
  }
  call->WritesDone(reinterpret_cast<void*>(4));
  cq.Next(&tag, &ok);
  grpc::Status st;
  call->Finish(&st, reinterpret_cast<void*>(5));
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return st;
}

TEST(LifecycleE2eTest, ReflectionListsTheServices) {
  auto server = ServerProcess::Start({});
  ASSERT_NE(server, nullptr);
  std::string response;
  grpc::Status st = ListServices(server->Channel(), &response);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_NE(response.find("modrwkv.v1.Inference"), std::string::npos);
  EXPECT_NE(response.find("modrwkv.v1.Sessions"), std::string::npos);
  EXPECT_NE(response.find("grpc.health.v1.Health"), std::string::npos);
}

TEST(LifecycleE2eTest, NoReflectionTurnsReflectionOff) {
  ServerProcess::Options o;
  o.args = {"--no-reflection"};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  std::string response;
  EXPECT_EQ(ListServices(server->Channel(), &response).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(response.find("modrwkv.v1.Inference"), std::string::npos);
  EXPECT_EQ(Health(server->Channel(), "modrwkv.v1.Inference"), ServingStatus::SERVING);
}

TEST(LifecycleE2eTest, MetricsListenOnTheGrpcHostByDefault) {
  ServerProcess::Options o;
  o.metrics_host = false;  // no --metrics-host: it follows --host 127.0.0.1
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  EXPECT_NE(server->Log().find("metrics_host=127.0.0.1"), std::string::npos) << server->Log();
  EXPECT_EQ(ScrapeMetric(*server, "modrwkv_ready"), 1);
}

}  // namespace
}  // namespace modrwkv::e2e
