// Sessions across replicas (--shared-sessions): a real redis-server started here and two real
// server processes. A conversation runs on A, A drains (SIGTERM) between turns and hands its
// sessions to Redis, and the conversation continues on B exactly as it would have on A. A Redis
// that is gone leaves a server serving its local sessions, counting the failures. With
// write-through, A may crash (SIGKILL) instead, and a replica whose copy another one has resumed
// since gives way to the later state.
#include "tests/e2e/e2e_util.h"
#include "tests/redis_process.h"

namespace modrwkv::e2e {
namespace {

using testing_redis::RedisProcess;

pb::Session CreateSession(const ServerProcess& server) {
  auto stub = pb::Sessions::NewStub(server.Channel());
  pb::Session s;
  grpc::ClientContext ctx;
  EXPECT_TRUE(stub->CreateSession(&ctx, {}, &s).ok());
  return s;
}

grpc::Status GetSession(const ServerProcess& server, const std::string& id,
                        pb::Session* out = nullptr) {
  auto stub = pb::Sessions::NewStub(server.Channel());
  pb::GetSessionRequest get;
  get.set_session_id(id);
  pb::Session s;
  grpc::ClientContext ctx;
  grpc::Status st = stub->GetSession(&ctx, get, &s);
  if (out) *out = s;
  return st;
}

// One turn of a conversation kept in `session`.
StreamResult Turn(const ServerProcess& server, const std::string& session,
                  const std::string& text) {
  auto stub = pb::Inference::NewStub(server.Channel());
  pb::GenerateRequest req = Greedy(text, 12);
  req.set_session_id(session);
  return RunGenerate(stub.get(), req);
}

pb::Session ForkSession(const ServerProcess& server, const std::string& id) {
  auto stub = pb::Sessions::NewStub(server.Channel());
  pb::ForkSessionRequest fork;
  fork.set_session_id(id);
  pb::Session s;
  grpc::ClientContext ctx;
  EXPECT_TRUE(stub->ForkSession(&ctx, fork, &s).ok());
  return s;
}

grpc::Status DeleteSession(const ServerProcess& server, const std::string& id) {
  auto stub = pb::Sessions::NewStub(server.Channel());
  pb::DeleteSessionRequest del;
  del.set_session_id(id);
  pb::DeleteSessionResponse out;
  grpc::ClientContext ctx;
  return stub->DeleteSession(&ctx, del, &out);
}

// One Chat stream: its turns (raw, greedy, 12 tokens) on `session` (or a new kept one when
// empty), stopping at the first failed turn. The texts, and the stream's status.
struct ChatRun {
  std::string session_id;
  std::vector<std::string> texts;
  grpc::Status status;
};
ChatRun Chat(const ServerProcess& server, const std::string& session,
             const std::vector<std::string>& turns, std::function<void(int)> before_turn = {}) {
  auto stub = pb::Inference::NewStub(server.Channel());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto stream = stub->Chat(&ctx);
  ChatRun run;
  for (size_t i = 0; i < turns.size(); ++i) {
    if (before_turn) before_turn(static_cast<int>(i));
    pb::ChatRequest turn;
    if (i == 0 && !session.empty()) turn.set_session_id(session);
    if (i == 0 && session.empty()) turn.set_keep_session(true);
    turn.set_raw(true);
    turn.set_text(turns[i]);
    turn.mutable_sampling()->set_temperature(0);
    turn.mutable_stop()->set_max_tokens(12);
    if (!stream->Write(turn)) break;
    std::string text;
    bool ended = false;
    pb::ChatResponse resp;
    while (!ended && stream->Read(&resp)) {
      if (resp.has_started()) run.session_id = resp.started().session_id();
      if (resp.has_chunk()) text += resp.chunk().text();
      ended = resp.has_turn_end() && resp.turn_end().error_message().empty();
    }
    if (!ended) break;
    run.texts.push_back(text);
  }
  stream->WritesDone();
  pb::ChatResponse resp;
  while (stream->Read(&resp)) {
  }
  run.status = stream->Finish();
  return run;
}

const std::vector<std::string> kTurns = {
    "User: hello, who are you?\n\nAssistant:", "\n\nUser: and where do you live?\n\nAssistant:",
    "\n\nUser: tell me more.\n\nAssistant:"};

// Redis and two replicas sharing it.
class SharedSessionsTwoReplicasE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    redis_ = RedisProcess::Start();
    ASSERT_NE(redis_, nullptr);
    options_.args = {"--shared-sessions", redis_->url()};
    a_ = ServerProcess::Start(options_);
    b_ = ServerProcess::Start(options_);
    ASSERT_NE(a_, nullptr);
    ASSERT_NE(b_, nullptr);
  }

  std::unique_ptr<RedisProcess> redis_;
  ServerProcess::Options options_;
  std::unique_ptr<ServerProcess> a_, b_;
};

TEST_F(SharedSessionsTwoReplicasE2eTest, AConversationContinuesOnAnotherReplicaAfterADrain) {
  auto& a = a_;
  auto& b = b_;

  // The undisturbed conversation, all on B.
  const std::string ref_id = CreateSession(*b).session_id();
  std::vector<std::string> want;
  for (const std::string& t : kTurns) {
    StreamResult r = Turn(*b, ref_id, t);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    want.push_back(r.text);
  }

  // The same conversation: the first turn on A, then A drains; the rest on B. Two more sessions
  // come back through the other entry points: a Sessions RPC and a Chat stream.
  const std::string id = CreateSession(*a).session_id();
  StreamResult first = Turn(*a, id, kTurns[0]);
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  EXPECT_EQ(first.text, want[0]);
  const std::string by_rpc = CreateSession(*a).session_id();
  ASSERT_TRUE(Turn(*a, by_rpc, kTurns[0]).status.ok());
  const std::string by_chat = CreateSession(*a).session_id();
  ASSERT_TRUE(Turn(*a, by_chat, kTurns[0]).status.ok());
  a->Signal(SIGTERM);
  ASSERT_EQ(a->WaitExit(std::chrono::seconds(30)), 0) << a->Log();
  EXPECT_NE(a->Log().find("sessions handed to the shared tier"), std::string::npos) << a->Log();
  EXPECT_NE(a->Log().find("shared_sessions=move"), std::string::npos) << a->Log();

  for (size_t i = 1; i < kTurns.size(); ++i) {
    StreamResult r = Turn(*b, id, kTurns[i]);
    ASSERT_TRUE(r.status.ok()) << i << ": " << r.status.error_message();
    EXPECT_EQ(r.text, want[i]) << "turn " << i;
  }
  {  // GetSession resumes it and reports its tokens.
    pb::Session s;
    ASSERT_TRUE(GetSession(*b, by_rpc, &s).ok());
    EXPECT_EQ(s.tokens(), first.result->usage().prompt_tokens() + 11);  // the last token pends
  }
  {  // A Chat stream continuing it: its raw turn is the conversation's next turn.
    const ChatRun run = Chat(*b, by_chat, {kTurns[1]});
    EXPECT_TRUE(run.status.ok()) << run.status.error_message();
    ASSERT_EQ(run.texts.size(), 1u);
    EXPECT_FALSE(run.texts[0].empty());
  }
  EXPECT_EQ(ScrapeMetric(*b, "modrwkv_shared_sessions_total{event=\"resumed\"}"), 3);
  // It lives on B now, in one place only: Redis gave it up when B took it.
  pb::Session s;
  ASSERT_TRUE(GetSession(*b, id, &s).ok());
  EXPECT_GT(s.tokens(), 0);

  // A third replica finds nothing to resume: a session is never in two places.
  auto c = ServerProcess::Start(options_);
  ASSERT_NE(c, nullptr);
  StreamResult elsewhere = Turn(*c, id, kTurns[1]);
  EXPECT_EQ(elsewhere.status.error_code(), grpc::StatusCode::NOT_FOUND);
}

// A full cold tier moves its least recently used idle session to Redis instead of deleting it;
// the next call on it brings it back, and the conversation goes on as if it had never left.
TEST(SharedSessionsE2eTest, AFullColdTierSpillsToRedisInsteadOfLosingSessions) {
  auto redis = RedisProcess::Start();
  ASSERT_NE(redis, nullptr);
  auto reference = ServerProcess::Start({});
  ServerProcess::Options o;
  o.args = {"--shared-sessions", redis->url(), "--max-running", "1", "--max-cold-sessions", "1"};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(reference, nullptr);
  ASSERT_NE(server, nullptr);
  const std::string ref = CreateSession(*reference).session_id();
  ASSERT_TRUE(Turn(*reference, ref, kTurns[0]).status.ok());
  const StreamResult want = Turn(*reference, ref, kTurns[1]);
  ASSERT_TRUE(want.status.ok());

  // One slot and one cold place: the third session's turn pushes the first out of the host.
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(CreateSession(*server).session_id());
    ASSERT_TRUE(Turn(*server, ids.back(), kTurns[0]).status.ok()) << i;
  }
  EXPECT_TRUE(Eventually([&] {
    return ScrapeMetric(*server, "modrwkv_shared_sessions_total{event=\"stored\"}") >= 1;
  }));
  const StreamResult back = Turn(*server, ids[0], kTurns[1]);
  ASSERT_TRUE(back.status.ok()) << back.status.error_message();
  EXPECT_EQ(back.text, want.text);
  EXPECT_GE(ScrapeMetric(*server, "modrwkv_shared_sessions_total{event=\"resumed\"}"), 1);
}

std::string RoutingHint(const ServerProcess& server) {
  auto stub = pb::Inference::NewStub(server.Channel());
  pb::ModelInfo info;
  grpc::ClientContext ctx;
  EXPECT_TRUE(stub->GetModelInfo(&ctx, {}, &info).ok());
  return info.session_routing_hint();
}

// Session ids start with their replica's routing hint, and `modrwkv client --target a,b` sends a
// session's calls to the replica holding it, whatever the order of the list; once that replica
// has drained, to the replica that resumes it from Redis.
TEST_F(SharedSessionsTwoReplicasE2eTest, TheClientRoutesASessionsCallsByTheHintInItsId) {
  auto& a = a_;
  auto& b = b_;
  const std::string hint_a = RoutingHint(*a), hint_b = RoutingHint(*b);
  ASSERT_EQ(hint_a.size(), 8u);
  ASSERT_NE(hint_a, hint_b);
  const std::string on_a = CreateSession(*a).session_id();
  const std::string on_b = CreateSession(*b).session_id();
  EXPECT_EQ(on_a.substr(0, 8), hint_a);
  EXPECT_EQ(on_b.substr(0, 8), hint_b);
  // Forks are new sessions of the same replica.
  {
    auto stub = pb::Sessions::NewStub(a->Channel());
    pb::ForkSessionRequest fork;
    fork.set_session_id(on_a);
    pb::Session s;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->ForkSession(&ctx, fork, &s).ok());
    EXPECT_EQ(s.session_id().substr(0, 8), hint_a);
  }
  // The premise: the wrong replica does not know the session (it is in A's memory, not Redis).
  ASSERT_EQ(GetSession(*b, on_a).error_code(), grpc::StatusCode::NOT_FOUND);

  const std::string both = " --target " + b->target() + "," + a->target();
  const std::string turn = " --prompt hello --max-tokens 4 --temperature 0";
  std::string err;
  for (int i = 0; i < 3; ++i) {  // not a lucky draw: the hint decides
    EXPECT_EQ(RunCli("client generate --session " + on_a + both + turn, &err), 0) << err;
    EXPECT_EQ(RunCli("client get-session --session " + on_b + both, &err), 0) << err;
  }
  // A call on no session goes to any live replica.
  EXPECT_EQ(RunCli("client create-session" + both, &err), 0) << err;
  EXPECT_NE(RunCli("client get-session --session nothex" + both, &err), 0);
  EXPECT_NE(err.find("--session"), std::string::npos) << err;

  // A drains: its session moves to Redis, and the client falls back to B, which resumes it.
  a->Signal(SIGTERM);
  ASSERT_EQ(a->WaitExit(std::chrono::seconds(30)), 0) << a->Log();
  EXPECT_EQ(RunCli("client generate --session " + on_a + both + turn, &err), 0) << err;
  EXPECT_EQ(GetSession(*b, on_a).error_code(), grpc::StatusCode::OK);
  EXPECT_EQ(ScrapeMetric(*b, "modrwkv_shared_sessions_total{event=\"resumed\"}"), 1);
  // With no replica left, the client says so.
  b->Signal(SIGTERM);
  ASSERT_EQ(b->WaitExit(std::chrono::seconds(30)), 0) << b->Log();
  EXPECT_NE(RunCli("client get-session --session " + on_a + both, &err), 0);
  EXPECT_NE(err.find("no --target replica answered"), std::string::npos) << err;
}

// Redis and two replicas sharing it, with write-through.
class SharedSessionsWriteThroughE2eTest : public SharedSessionsTwoReplicasE2eTest {
 protected:
  void SetUp() override {
    redis_ = RedisProcess::Start();
    ASSERT_NE(redis_, nullptr);
    options_.args = {"--shared-sessions", redis_->url(), "--shared-session-write-through"};
    a_ = ServerProcess::Start(options_);
    b_ = ServerProcess::Start(options_);
    ASSERT_NE(a_, nullptr);
    ASSERT_NE(b_, nullptr);
  }
  // The undisturbed conversation (kTurns), on B.
  std::vector<std::string> Reference() {
    const std::string id = CreateSession(*b_).session_id();
    std::vector<std::string> want;
    for (const std::string& t : kTurns) {
      StreamResult r = Turn(*b_, id, t);
      EXPECT_TRUE(r.status.ok()) << r.status.error_message();
      want.push_back(r.text);
    }
    return want;
  }
};

TEST_F(SharedSessionsWriteThroughE2eTest, SessionsSurviveAReplicaThatCrashes) {
  const std::vector<std::string> want = Reference();
  ASSERT_EQ(want.size(), kTurns.size());

  // On A: a conversation's first turn, a fork after it, a session with no turn yet, and a kept
  // Chat session with one turn. Then A is killed: no drain, no hand-off.
  const std::string id = CreateSession(*a_).session_id();
  StreamResult first = Turn(*a_, id, kTurns[0]);
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  EXPECT_EQ(first.text, want[0]);
  const std::string forked = ForkSession(*a_, id).session_id();
  const std::string fresh = CreateSession(*a_).session_id();
  const ChatRun chat = Chat(*a_, "", {kTurns[0]});
  ASSERT_TRUE(chat.status.ok()) << chat.status.error_message();
  ASSERT_EQ(chat.texts, std::vector<std::string>{want[0]});
  a_->Signal(SIGKILL);
  ASSERT_EQ(a_->WaitExit(std::chrono::seconds(10)), -1);  // killed, not exited
  ASSERT_TRUE(a_->Exited());

  // Every one continues on B where it was.
  for (size_t i = 1; i < kTurns.size(); ++i) {
    StreamResult r = Turn(*b_, id, kTurns[i]);
    ASSERT_TRUE(r.status.ok()) << i << ": " << r.status.error_message();
    EXPECT_EQ(r.text, want[i]) << "turn " << i;
  }
  StreamResult from_fork = Turn(*b_, forked, kTurns[1]);
  ASSERT_TRUE(from_fork.status.ok()) << from_fork.status.error_message();
  EXPECT_EQ(from_fork.text, want[1]);
  pb::Session s;
  ASSERT_TRUE(GetSession(*b_, fresh, &s).ok());
  EXPECT_EQ(s.tokens(), 0);
  const ChatRun chat_on_b = Chat(*b_, chat.session_id, {kTurns[1]});
  ASSERT_TRUE(chat_on_b.status.ok()) << chat_on_b.status.error_message();
  EXPECT_EQ(chat_on_b.texts, std::vector<std::string>{want[1]});
  EXPECT_EQ(ScrapeMetric(*b_, "modrwkv_shared_sessions_total{event=\"resumed\"}"), 4);
  EXPECT_NE(b_->Log().find("shared_sessions=write-through"), std::string::npos) << b_->Log();
}

TEST_F(SharedSessionsWriteThroughE2eTest, AStaleCopyGivesWayToTheLaterState) {
  const std::vector<std::string> want = Reference();
  ASSERT_EQ(want.size(), kTurns.size());

  // The conversation moves A -> B -> A while both live (a client that lost A for a moment):
  // A still holds its copy from before B's turn, and must not answer from it.
  const std::string id = CreateSession(*a_).session_id();
  ASSERT_EQ(Turn(*a_, id, kTurns[0]).text, want[0]);
  StreamResult on_b = Turn(*b_, id, kTurns[1]);
  ASSERT_TRUE(on_b.status.ok()) << on_b.status.error_message();
  EXPECT_EQ(on_b.text, want[1]);
  StreamResult back = Turn(*a_, id, kTurns[2]);
  ASSERT_TRUE(back.status.ok()) << back.status.error_message();
  EXPECT_EQ(back.text, want[2]);
  EXPECT_EQ(ScrapeMetric(*a_, "modrwkv_shared_sessions_total{event=\"stale\"}"), 1);
  EXPECT_EQ(ScrapeMetric(*a_, "modrwkv_shared_sessions_total{event=\"resumed\"}"), 1);

  // Deleted on A, it is gone from B too, whose copy is older.
  ASSERT_TRUE(DeleteSession(*a_, id).ok());
  EXPECT_EQ(GetSession(*b_, id).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GetSession(*a_, id).error_code(), grpc::StatusCode::NOT_FOUND);
}

// A Chat stream holds its session: another replica resuming it meanwhile (a client using it from
// two places) makes the stream's next turn fail ABORTED instead of two diverging states.
TEST_F(SharedSessionsWriteThroughE2eTest, AStreamWhoseSessionWasResumedElsewhereIsAborted) {
  const std::string id = CreateSession(*a_).session_id();
  const ChatRun run = Chat(*a_, id, {kTurns[0], kTurns[1]}, [&](int turn) {
    if (turn == 1) {
      EXPECT_TRUE(GetSession(*b_, id).ok());  // B resumes it between the turns
    }
  });
  EXPECT_EQ(run.texts.size(), 1u);
  EXPECT_EQ(run.status.error_code(), grpc::StatusCode::ABORTED) << run.status.error_message();
  EXPECT_NE(run.status.error_message().find("resumed by another replica"), std::string::npos)
      << run.status.error_message();
  EXPECT_EQ(ScrapeMetric(*a_, "modrwkv_shared_sessions_total{event=\"conflict\"}"), 1);
  // B holds the session as it was after the first turn; A gave its copy up.
  pb::Session s;
  ASSERT_TRUE(GetSession(*b_, id, &s).ok());
  EXPECT_GT(s.tokens(), 0);
  EXPECT_EQ(ScrapeMetric(*a_, "modrwkv_sessions{tier=\"hot\"}") +
                ScrapeMetric(*a_, "modrwkv_sessions{tier=\"cold\"}"),
            0);
}

TEST(SharedSessionsE2eTest, ARedisOutageLeavesLocalSessionsServing) {
  auto redis = RedisProcess::Start();
  ASSERT_NE(redis, nullptr);
  ServerProcess::Options o;
  o.args = {"--shared-sessions", redis->url()};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  const std::string id = CreateSession(*server).session_id();
  ASSERT_TRUE(Turn(*server, id, kTurns[0]).status.ok());

  redis->Stop();
  // A session this server does not have: the tier cannot be asked, so it is simply not found.
  StreamResult unknown = Turn(*server, std::string(32, 'a'), kTurns[0]);
  EXPECT_EQ(unknown.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_GE(ScrapeMetric(*server, "modrwkv_shared_sessions_total{event=\"error\"}"), 1);
  // Local sessions and plain requests go on; readiness is untouched.
  EXPECT_TRUE(Turn(*server, id, kTurns[1]).status.ok());
  EXPECT_EQ(Health(server->Channel(), "modrwkv.v1.Inference"),
            grpc::health::v1::HealthCheckResponse::SERVING);
  // Draining with nowhere to hand the sessions to still exits cleanly.
  server->Signal(SIGTERM);
  EXPECT_EQ(server->WaitExit(std::chrono::seconds(30)), 0) << server->Log();
}

}  // namespace
}  // namespace modrwkv::e2e
