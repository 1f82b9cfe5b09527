// Sessions and Chat end to end: a session's state continues exactly across requests, forks,
// export from one server process and import into another; Chat keeps its state across turns.
#include <atomic>
#include <cmath>

#include "tests/e2e/e2e_util.h"

namespace modrwkv::e2e {
namespace {

std::vector<float> LogprobsOf(const StreamResult& r) {
  std::vector<float> out;
  for (const auto& lp : r.logprobs) out.push_back(lp.logprob());
  return out;
}

class SessionsE2eTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Two state slots and a batch of one: sessions move to the cold tier and back.
    ServerProcess::Options o;
    o.args = {"--max-running", "2"};
    server_ = ServerProcess::Start(o).release();
    ASSERT_NE(server_, nullptr);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    stub_ = pb::Inference::NewStub(server_->Channel());
    sessions_ = pb::Sessions::NewStub(server_->Channel());
  }

  static pb::Session Create(pb::Sessions::Stub* stub) {
    pb::Session s;
    grpc::ClientContext ctx;
    EXPECT_TRUE(stub->CreateSession(&ctx, {}, &s).ok());
    return s;
  }
  static std::string Export(pb::Sessions::Stub* stub, const std::string& id,
                            pb::SessionBlobHeader* header = nullptr) {
    pb::ExportSessionRequest req;
    req.set_session_id(id);
    grpc::ClientContext ctx;
    auto reader = stub->ExportSession(&ctx, req);
    std::string blob;
    pb::SessionBlobChunk chunk;
    bool first = true;
    while (reader->Read(&chunk)) {
      if (first && header) *header = chunk.header();
      first = false;
      blob += chunk.data();
    }
    grpc::Status st = reader->Finish();
    EXPECT_TRUE(st.ok()) << st.error_message();
    return blob;
  }
  static grpc::Status Import(pb::Sessions::Stub* stub, const std::string& blob, pb::Session* out,
                             size_t chunk_bytes = 100000) {
    grpc::ClientContext ctx;
    auto writer = stub->ImportSession(&ctx, out);
    for (size_t off = 0; off < blob.size(); off += chunk_bytes) {
      pb::SessionBlobChunk chunk;
      chunk.set_data(blob.substr(off, chunk_bytes));
      if (!writer->Write(chunk)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }
  static pb::GenerateRequest OnSession(const std::string& prompt, int n, const std::string& id) {
    pb::GenerateRequest req = Greedy(prompt, n);
    req.set_session_id(id);
    req.set_logprobs_top_n(0);
    return req;
  }

  static ServerProcess* server_;
  std::unique_ptr<pb::Inference::Stub> stub_;
  std::unique_ptr<pb::Sessions::Stub> sessions_;
};
ServerProcess* SessionsE2eTest::server_ = nullptr;

TEST_F(SessionsE2eTest, ASessionContinuesWhereItStopped) {
  // Two requests on a session equal one request whose prompt is both parts (greedy): the second
  // continues from the first one's state, including its last sampled token.
  const pb::Session s = Create(sessions_.get());
  StreamResult a = RunGenerate(stub_.get(), OnSession("The first part.", 12, s.session_id()));
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  StreamResult b = RunGenerate(stub_.get(), OnSession(" And then", 12, s.session_id()));
  ASSERT_TRUE(b.status.ok()) << b.status.error_message();

  pb::TokenizeRequest treq;
  treq.set_text(" And then");
  pb::TokenizeResponse tresp;
  grpc::ClientContext tctx;
  ASSERT_TRUE(stub_->Tokenize(&tctx, treq, &tresp).ok());
  pb::GenerateRequest whole = Greedy("The first part.", 12);
  auto* ids = whole.add_input()->mutable_tokens()->mutable_ids();
  ids->Add(a.ids.begin(), a.ids.end());
  ids->Add(tresp.token_ids().begin(), tresp.token_ids().end());
  StreamResult w = RunGenerate(stub_.get(), whole);
  ASSERT_TRUE(w.status.ok());
  EXPECT_EQ(w.ids, b.ids);
  // And it is the session's state that made the difference.
  const pb::Session fresh = Create(sessions_.get());
  StreamResult c = RunGenerate(stub_.get(), OnSession(" And then", 12, fresh.session_id()));
  ASSERT_TRUE(c.status.ok());
  EXPECT_NE(LogprobsOf(c), LogprobsOf(b));

  pb::GetSessionRequest get;
  get.set_session_id(s.session_id());
  pb::Session info;
  grpc::ClientContext ctx;
  ASSERT_TRUE(sessions_->GetSession(&ctx, get, &info).ok());
  EXPECT_FALSE(info.busy());
  EXPECT_GT(info.tokens(), 20);
}

TEST_F(SessionsE2eTest, ExportedSessionContinuesIdenticallyInAnotherServerProcess) {
  const pb::Session s = Create(sessions_.get());
  ASSERT_TRUE(RunGenerate(stub_.get(), OnSession("Remember this.", 9, s.session_id())).status.ok());
  pb::SessionBlobHeader header;
  const std::string blob = Export(sessions_.get(), s.session_id(), &header);
  ASSERT_FALSE(blob.empty());
  EXPECT_EQ(header.format_version(), 1u);
  EXPECT_EQ(header.n_layer(), 2);
  EXPECT_EQ(header.n_embd(), 128);
  EXPECT_EQ(header.dtype(), "f32");
  EXPECT_EQ(header.total_bytes(), static_cast<int64_t>(blob.size()));
  EXPECT_EQ(header.model_fingerprint().size(), 16u);
  StreamResult here = RunGenerate(stub_.get(), OnSession(" What was it?", 20, s.session_id()));
  ASSERT_TRUE(here.status.ok());

  auto other = ServerProcess::Start({});
  ASSERT_NE(other, nullptr);
  auto other_sessions = pb::Sessions::NewStub(other->Channel());
  auto other_stub = pb::Inference::NewStub(other->Channel());
  pb::Session imported;
  grpc::Status st = Import(other_sessions.get(), blob, &imported, 7000);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_NE(imported.session_id(), s.session_id());
  StreamResult there =
      RunGenerate(other_stub.get(), OnSession(" What was it?", 20, imported.session_id()));
  ASSERT_TRUE(there.status.ok()) << there.status.error_message();
  EXPECT_EQ(there.ids, here.ids);
  EXPECT_EQ(there.text, here.text);
  EXPECT_EQ(LogprobsOf(there), LogprobsOf(here));  // bit-identical continuation
  // The imported state matters: a fresh session answers with other probabilities.
  pb::Session fresh = Create(other_sessions.get());
  StreamResult cold =
      RunGenerate(other_stub.get(), OnSession(" What was it?", 20, fresh.session_id()));
  ASSERT_TRUE(cold.status.ok());
  EXPECT_NE(LogprobsOf(cold), LogprobsOf(here));
}

TEST_F(SessionsE2eTest, ImportRejectsBlobsOfAnotherModelAndGarbage) {
  const pb::Session s = Create(sessions_.get());
  ASSERT_TRUE(RunGenerate(stub_.get(), OnSession("x", 2, s.session_id())).status.ok());
  const std::string blob = Export(sessions_.get(), s.session_id());
  pb::Session out;
  grpc::Status garbage = Import(sessions_.get(), "definitely not a state blob", &out);
  EXPECT_EQ(garbage.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << garbage.error_message();
  std::string corrupt = blob;
  corrupt[corrupt.size() / 2] ^= 0x40;
  EXPECT_EQ(Import(sessions_.get(), corrupt, &out).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  grpc::Status too_big = Import(sessions_.get(), blob + blob, &out);
  EXPECT_EQ(too_big.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(BadFieldOf(too_big), "data");

  ServerProcess::Options o;
  o.model = DemoModel(/*seed=*/4);  // same shape, other weights
  auto other = ServerProcess::Start(o);
  ASSERT_NE(other, nullptr);
  auto other_sessions = pb::Sessions::NewStub(other->Channel());
  grpc::Status st = Import(other_sessions.get(), blob, &out);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << st.error_message();
}

TEST_F(SessionsE2eTest, ForkCopiesTheStateAndDeleteRemovesIt) {
  const pb::Session s = Create(sessions_.get());
  ASSERT_TRUE(RunGenerate(stub_.get(), OnSession("Shared past.", 5, s.session_id())).status.ok());
  pb::ForkSessionRequest fork;
  fork.set_session_id(s.session_id());
  pb::Session copy;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(sessions_->ForkSession(&ctx, fork, &copy).ok());
  }
  EXPECT_NE(copy.session_id(), s.session_id());
  StreamResult a = RunGenerate(stub_.get(), OnSession(" Next:", 15, s.session_id()));
  StreamResult b = RunGenerate(stub_.get(), OnSession(" Next:", 15, copy.session_id()));
  ASSERT_TRUE(a.status.ok() && b.status.ok());
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(LogprobsOf(a), LogprobsOf(b));
  ASSERT_EQ(a.logprobs.size(), 15u);

  pb::DeleteSessionRequest del;
  del.set_session_id(copy.session_id());
  pb::DeleteSessionResponse dresp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(sessions_->DeleteSession(&ctx, del, &dresp).ok());
  }
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(sessions_->DeleteSession(&ctx, del, &dresp).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  pb::GetSessionRequest get;
  get.set_session_id(copy.session_id());
  pb::Session out;
  grpc::ClientContext ctx;
  grpc::Status st = sessions_->GetSession(&ctx, get, &out);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(st.error_message().find("session_id"), std::string::npos);
  auto info = ErrorInfoOf(st);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->reason(), "SESSION_NOT_FOUND");
  get.set_session_id("xyz");
  grpc::ClientContext ctx2;
  st = sessions_->GetSession(&ctx2, get, &out);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(BadFieldOf(st), "session_id");
}

TEST_F(SessionsE2eTest, IdleSessionsMoveToTheColdTierAndBack) {
  // Two slots: three sessions cannot all stay hot.
  std::vector<pb::Session> ss;
  std::vector<StreamResult> first;
  for (int i = 0; i < 3; ++i) {
    ss.push_back(Create(sessions_.get()));
    first.push_back(RunGenerate(
        stub_.get(), OnSession("Session " + std::to_string(i), 6, ss.back().session_id())));
    ASSERT_TRUE(first.back().status.ok());
  }
  EXPECT_TRUE(Eventually([&] {
    return ScrapeMetric(*server_, "modrwkv_session_offloads_total{direction=\"to_cold\"}") >= 1;
  }));
  // The cold tier's host memory: a whole state per cold session (each has run a turn).
  EXPECT_TRUE(Eventually([&] {
    const double cold = ScrapeMetric(*server_, "modrwkv_sessions{tier=\"cold\"}");
    const double bytes = ScrapeMetric(*server_, "modrwkv_cold_tier_bytes");
    return cold >= 1 && bytes > 0 && std::fmod(bytes, cold) == 0;
  }));
  for (int i = 0; i < 3; ++i) {
    StreamResult r = RunGenerate(stub_.get(), OnSession(" more", 6, ss[i].session_id()));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  }
  EXPECT_GE(ScrapeMetric(*server_, "modrwkv_session_offloads_total{direction=\"to_hot\"}"), 1);
  EXPECT_GE(ScrapeMetric(*server_, "modrwkv_sessions{tier=\"cold\"}") +
                ScrapeMetric(*server_, "modrwkv_sessions{tier=\"hot\"}"),
            3);
}

// ---- Chat ----

struct Turn {
  std::string text;
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
  pb::TurnEnd end;
};

// Sends one turn and reads its answer up to TurnEnd.
bool ChatTurn(grpc::ClientReaderWriter<pb::ChatRequest, pb::ChatResponse>* stream,
              const pb::ChatRequest& req, Turn* out, std::string* session_id = nullptr) {
  if (!stream->Write(req)) return false;
  pb::ChatResponse resp;
  while (stream->Read(&resp)) {
    if (resp.has_started() && session_id) *session_id = resp.started().session_id();
    if (resp.has_chunk()) {
      out->text += resp.chunk().text();
      out->ids.insert(out->ids.end(), resp.chunk().token_ids().begin(),
                      resp.chunk().token_ids().end());
      for (const auto& lp : resp.chunk().logprobs()) out->logprobs.push_back(lp.logprob());
    }
    if (resp.has_turn_end()) {
      out->end = resp.turn_end();
      return true;
    }
  }
  return false;
}

pb::ChatRequest ChatMessage(const std::string& text, int max_tokens) {
  pb::ChatRequest req;
  req.set_text(text);
  req.mutable_sampling()->set_temperature(0.0f);
  req.mutable_stop()->set_max_tokens(max_tokens);
  return req;
}

TEST_F(SessionsE2eTest, ChatKeepsStateAcrossTurns) {
  grpc::ClientContext ctx;
  auto stream = stub_->Chat(&ctx);
  Turn t1, t2;
  std::string session_id;
  pb::ChatRequest m1 = ChatMessage("hi", 16), m2 = ChatMessage("and again", 16);
  m1.set_logprobs_top_n(0);
  m2.set_logprobs_top_n(0);
  ASSERT_TRUE(ChatTurn(stream.get(), m1, &t1, &session_id));
  ASSERT_TRUE(ChatTurn(stream.get(), m2, &t2));
  EXPECT_EQ(session_id.size(), 32u);
  EXPECT_NE(t1.end.finish_reason(), pb::FINISH_REASON_UNSPECIFIED);
  EXPECT_GT(t2.end.usage().generated_tokens(), 0);
  stream->WritesDone();
  grpc::Status st = stream->Finish();
  ASSERT_TRUE(st.ok()) << st.error_message();

  // The same conversation replayed with Generate on one session (the server's template, stop
  // token 24, token 0 banned) gives the same answers...
  const pb::Session s = Create(sessions_.get());
  auto turn_request = [&](const std::string& text) {
    pb::GenerateRequest req;
    req.add_input()->set_text("\x16User: " + text +
                              "\x17\x16"
                              "Assistant:");
    req.mutable_sampling()->set_temperature(0.0f);
    req.mutable_sampling()->add_banned_token_ids(0);
    req.mutable_stop()->set_max_tokens(16);
    req.mutable_stop()->add_stop_token_ids(24);
    req.mutable_stop()->set_ignore_end_of_text(true);
    req.set_session_id(s.session_id());
    req.set_logprobs_top_n(0);
    return req;
  };
  StreamResult g1 = RunGenerate(stub_.get(), turn_request("hi"));
  StreamResult g2 = RunGenerate(stub_.get(), turn_request("and again"));
  ASSERT_TRUE(g1.status.ok() && g2.status.ok());
  EXPECT_EQ(t1.ids, g1.ids);
  EXPECT_EQ(t2.ids, g2.ids);
  EXPECT_EQ(t2.text, g2.text);
  EXPECT_EQ(t1.logprobs, LogprobsOf(g1));
  EXPECT_EQ(t2.logprobs, LogprobsOf(g2));
  // ...and the second answer depends on the first turn (the state was kept). With random
  // weights the greedy tokens may agree, the probabilities cannot.
  const pb::Session fresh = Create(sessions_.get());
  pb::GenerateRequest alone = turn_request("and again");
  alone.set_session_id(fresh.session_id());
  StreamResult g2_alone = RunGenerate(stub_.get(), alone);
  ASSERT_TRUE(g2_alone.status.ok());
  ASSERT_EQ(g2_alone.logprobs.size(), g2_alone.ids.size());
  EXPECT_NE(LogprobsOf(g2_alone), t2.logprobs);

  // The conversation's own session is gone with its stream.
  pb::GetSessionRequest get;
  get.set_session_id(session_id);
  pb::Session out;
  EXPECT_TRUE(Eventually([&] {
    grpc::ClientContext c;
    return sessions_->GetSession(&c, get, &out).error_code() == grpc::StatusCode::NOT_FOUND;
  }));
}

TEST_F(SessionsE2eTest, ChatCanKeepItsSessionAndContinueIt) {
  std::string session_id;
  {
    grpc::ClientContext ctx;
    auto stream = stub_->Chat(&ctx);
    pb::ChatRequest req = ChatMessage("remember me", 8);
    req.set_keep_session(true);
    Turn t;
    ASSERT_TRUE(ChatTurn(stream.get(), req, &t, &session_id));
    stream->WritesDone();
    ASSERT_TRUE(stream->Finish().ok());
  }
  pb::GetSessionRequest get;
  get.set_session_id(session_id);
  pb::Session out;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(sessions_->GetSession(&ctx, get, &out).ok());
  }
  // A new stream continues the kept session.
  grpc::ClientContext ctx;
  auto stream = stub_->Chat(&ctx);
  pb::ChatRequest req = ChatMessage("still there?", 8);
  req.set_session_id(session_id);
  Turn t;
  std::string started;
  ASSERT_TRUE(ChatTurn(stream.get(), req, &t, &started));
  EXPECT_EQ(started, session_id);
  // session_id on a later message is refused, naming the field.
  pb::ChatRequest late = ChatMessage("x", 2);
  late.set_session_id(session_id);
  ASSERT_TRUE(stream->Write(late));
  pb::ChatResponse resp;
  while (stream->Read(&resp)) {
  }
  grpc::Status st = stream->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(BadFieldOf(st), "session_id");
}

TEST_F(SessionsE2eTest, ChatRejectsAnEmptyTurnAndACancelledChatFreesItsSlot) {
  {
    grpc::ClientContext ctx;
    auto stream = stub_->Chat(&ctx);
    ASSERT_TRUE(stream->Write(ChatMessage("", 5)));
    pb::ChatResponse resp;
    while (stream->Read(&resp)) {
    }
    grpc::Status st = stream->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(BadFieldOf(st), "text");
  }
  grpc::ClientContext ctx;
  auto stream = stub_->Chat(&ctx);
  ASSERT_TRUE(stream->Write(ChatMessage("talk forever", 1000000)));
  pb::ChatResponse resp;
  int chunks = 0;
  while (chunks < 3 && stream->Read(&resp)) chunks += resp.has_chunk();
  ASSERT_EQ(chunks, 3);
  EXPECT_EQ(ScrapeMetric(*server_, "modrwkv_requests_running"), 1);
  ctx.TryCancel();
  while (stream->Read(&resp)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(Eventually([&] { return ScrapeMetric(*server_, "modrwkv_requests_running") == 0; }));
}

TEST_F(SessionsE2eTest, ChatOnAnUnknownSessionFailsNotFoundWithNothingBeforeIt) {
  grpc::ClientContext ctx;
  auto stream = stub_->Chat(&ctx);
  pb::ChatRequest req = ChatMessage("anyone there?", 4);
  req.set_session_id("0123456789abcdef0123456789abcdef");
  ASSERT_TRUE(stream->Write(req));
  pb::ChatResponse resp;
  int messages = 0;
  while (stream->Read(&resp)) {
    ++messages;
    ADD_FAILURE() << "unexpected message before the error: " << resp.ShortDebugString();
  }
  grpc::Status st = stream->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << st.error_message();
  EXPECT_EQ(messages, 0);
  auto info = ErrorInfoOf(st);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->reason(), "SESSION_NOT_FOUND");
}

// Streams cancelled right after their first message, while the server creates their session and
// submits their first turn (the window in which a reactor used to be finished and deleted under
// the scheduler thread's feet). Every stream must end, the server must stay up, and every session
// these streams made must be deleted. Run under ThreadSanitizer/ASan to see the race itself.
TEST_F(SessionsE2eTest, ManyChatStreamsCancelledRightAfterTheirFirstMessage) {
  const auto before = [&] {
    const std::string m = HttpGet(server_->metrics_port(), "/metrics");
    return Metric(m, "modrwkv_sessions{tier=\"hot\"}") +
           Metric(m, "modrwkv_sessions{tier=\"cold\"}");
  };
  const double sessions_before = before();
  constexpr int kThreads = 4, kStreamsPerThread = 40;
  std::vector<std::thread> threads;
  std::atomic<int> ended{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      auto stub = pb::Inference::NewStub(server_->Channel());
      for (int i = 0; i < kStreamsPerThread; ++i) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        auto stream = stub->Chat(&ctx);
        stream->Write(ChatMessage("hello", 64));
        pb::ChatResponse resp;
        // Vary the moment of the cancel: at once, after the first message, after a yield.
        if (i % 3 == 1) stream->Read(&resp);
        if (i % 3 == 2) std::this_thread::yield();
        ctx.TryCancel();
        while (stream->Read(&resp)) {
        }
        stream->Finish();
        ended.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ended.load(), kThreads * kStreamsPerThread);
  // The server is alive and serves; nothing runs; every stream's session is gone.
  EXPECT_EQ(Health(server_->Channel(), "modrwkv.v1.Inference"),
            grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_TRUE(RunGenerate(stub_.get(), Greedy("still alive", 3)).status.ok());
  EXPECT_TRUE(Eventually([&] { return ScrapeMetric(*server_, "modrwkv_requests_running") == 0; }));
  EXPECT_TRUE(Eventually([&] { return before() == sessions_before; }))
      << "sessions before " << sessions_before << ", now " << before();
}

TEST(SessionLimitsE2eTest, PerOwnerQuotaAndColdTierEvictionThroughTheServer) {
  // Two callers; each may hold 3 sessions; the cold tier holds 4 idle sessions.
  const fs::path tokens = fs::temp_directory_path() / ("quota_tokens_" + std::to_string(getpid()));
  { std::ofstream(tokens) << "alice alice-secret-1\nbob bob-secret-22\n"; }
  ServerProcess::Options o;
  o.args = {"--max-running",       "1", "--max-sessions-per-owner", "3",
            "--max-cold-sessions", "4", "--auth-token-file",        tokens.string()};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  auto sessions = pb::Sessions::NewStub(server->Channel());
  auto create = [&](const std::string& bearer, pb::Session* out) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + bearer);
    return sessions->CreateSession(&ctx, {}, out);
  };
  auto exists = [&](const std::string& bearer, const pb::Session& s) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + bearer);
    pb::GetSessionRequest req;
    req.set_session_id(s.session_id());
    pb::Session out;
    return sessions->GetSession(&ctx, req, &out).ok();
  };
  const std::string alice = "alice-secret-1", bob = "bob-secret-22";
  pb::Session b1;
  ASSERT_TRUE(create(bob, &b1).ok());
  std::vector<pb::Session> mine(3);
  for (auto& s : mine) ASSERT_TRUE(create(alice, &s).ok());
  // Over the quota: RESOURCE_EXHAUSTED with its reason, the limit named.
  pb::Session extra;
  grpc::Status st = create(alice, &extra);
  ASSERT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_NE(st.error_message().find("max_sessions_per_owner"), std::string::npos);
  auto info = ErrorInfoOf(st);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->reason(), "SESSION_QUOTA");
  // Bob's second session overflows the tier (5 > 4): Bob's own oldest goes, none of Alice's.
  pb::Session b2;
  ASSERT_TRUE(create(bob, &b2).ok());
  EXPECT_FALSE(exists(bob, b1));
  for (const auto& s : mine)
    EXPECT_TRUE(exists(alice, s)) << "another caller's session was evicted";
  EXPECT_TRUE(Eventually([&] {
    return ScrapeMetric(*server, "modrwkv_sessions_evicted_total{reason=\"cold_capacity\"}") == 1;
  }));
  fs::remove(tokens);
}

TEST(SessionLimitsE2eTest, ATokenFileLineSetsItsCallersOwnQuota) {
  const fs::path tokens =
      fs::temp_directory_path() / ("own_quota_tokens_" + std::to_string(getpid()));
  {
    std::ofstream(tokens)
        << "carol carol-secret-3 max-sessions=1\ndave dave-secret-44 max-sessions=0\n";
  }
  ServerProcess::Options o;
  o.args = {"--max-sessions-per-owner", "2", "--auth-token-file", tokens.string()};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  auto sessions = pb::Sessions::NewStub(server->Channel());
  auto create = [&](const std::string& bearer) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + bearer);
    pb::Session out;
    return sessions->CreateSession(&ctx, {}, &out);
  };
  ASSERT_TRUE(create("carol-secret-3").ok());
  const grpc::Status st = create("carol-secret-3");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(st.error_message().find("its own limit"), std::string::npos) << st.error_message();
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(create("dave-secret-44").ok()) << i;  // unbounded
  fs::remove(tokens);
}

}  // namespace
}  // namespace modrwkv::e2e
