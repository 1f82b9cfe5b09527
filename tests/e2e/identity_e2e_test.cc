// Caller identities end to end: bearer-token identities that survive edits of the token file,
// SIGHUP reloads that keep open streams, and client certificates naming callers under mTLS.
#include "tests/e2e/e2e_util.h"

namespace modrwkv::e2e {
namespace {

void WriteFile(const fs::path& p, const std::string& text) {
  const fs::path tmp = p.string() + ".tmp";
  {
    std::ofstream f(tmp);
    f << text;
  }
  fs::rename(tmp, p);  // the server never reads half a file
}

grpc::Status GetSession(pb::Sessions::Stub* stub, const std::string& auth, const std::string& id) {
  grpc::ClientContext ctx;
  if (!auth.empty()) ctx.AddMetadata("authorization", auth);
  pb::GetSessionRequest req;
  req.set_session_id(id);
  pb::Session out;
  return stub->GetSession(&ctx, req, &out);
}

// One Chat turn on an open stream; true once its TurnEnd arrived.
bool Turn(grpc::ClientReaderWriter<pb::ChatRequest, pb::ChatResponse>* stream,
          const std::string& text) {
  pb::ChatRequest req;
  req.set_text(text);
  req.mutable_stop()->set_max_tokens(3);
  if (!stream->Write(req)) return false;
  pb::ChatResponse resp;
  while (stream->Read(&resp)) {
    if (resp.has_turn_end()) return true;
  }
  return false;
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST(IdentityE2eTest, TokenIdentitiesSurviveEditsAndSighupReloadsWithoutDroppingStreams) {
  const fs::path tokens = fs::temp_directory_path() / ("e2e_id_tokens_" + std::to_string(getpid()));
  WriteFile(tokens, "bare-token-xyz\nalice alice-secret-1\n");
  ServerProcess::Options o;
  o.args = {"--auth-token-file", tokens.string()};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  auto ch = server->Channel();
  auto sessions = pb::Sessions::NewStub(ch);
  auto inference = pb::Inference::NewStub(ch);

  pb::Session s;
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer bare-token-xyz");
    ASSERT_TRUE(sessions->CreateSession(&ctx, {}, &s).ok());
  }
  // The bare token's identity is its digest (SHA-256 "ab43..."), not its line.
  EXPECT_TRUE(Eventually([&] {
    return server->Log().find("caller=token:ab438531375e9ef4") != std::string::npos;
  })) << server->Log();

  // A Chat stream opened with a token that the reload below revokes.
  grpc::ClientContext chat_ctx;
  chat_ctx.AddMetadata("authorization", "Bearer alice-secret-1");
  auto chat = inference->Chat(&chat_ctx);
  ASSERT_TRUE(Turn(chat.get(), "before"));

  // Lines added above the bare token, alice revoked, bob added.
  WriteFile(tokens, "# rotated\nbob bob-secret-22\nbare-token-xyz\n");
  server->Signal(SIGHUP);
  ASSERT_TRUE(Eventually([&] { return Count(server->Log(), "auth tokens reloaded") == 1; }))
      << server->Log();
  EXPECT_TRUE(GetSession(sessions.get(), "Bearer bare-token-xyz", s.session_id()).ok())
      << "the bare token's sessions must survive edits of the file";
  EXPECT_EQ(GetSession(sessions.get(), "Bearer bob-secret-22", s.session_id()).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GetSession(sessions.get(), "Bearer alice-secret-1", s.session_id()).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // The open stream was admitted before the reload and goes on.
  EXPECT_TRUE(Turn(chat.get(), "after"));

  // An invalid file keeps the previous tokens and says why.
  WriteFile(tokens, "bob bob-secret-22\nshort\n");
  server->Signal(SIGHUP);
  ASSERT_TRUE(Eventually([&] { return server->Log().find("reload failed") != std::string::npos; }))
      << server->Log();
  EXPECT_NE(server->Log().find("line 2"), std::string::npos);
  EXPECT_TRUE(GetSession(sessions.get(), "Bearer bare-token-xyz", s.session_id()).ok());
  EXPECT_TRUE(Turn(chat.get(), "still here"));
  chat->WritesDone();
  EXPECT_TRUE(chat->Finish().ok());
  EXPECT_FALSE(server->Exited());
  fs::remove(tokens);
}

TEST(IdentityE2eTest, ClientCertificatesNameTheCallerUnderMutualTls) {
  const fs::path dir = fs::temp_directory_path() / ("e2e_id_tls_" + std::to_string(getpid()));
  if (!MakeCertificates(
          dir, {{"a", "/CN=client-a", "URI:spiffe://modrwkv.test/a"}, {"b", "/CN=client-b", ""}})) {
    GTEST_SKIP() << "openssl could not make test certificates";
  }
  ServerProcess::Options o;
  o.args = {"--tls-cert",      (dir / "server.pem").string(),
            "--tls-key",       (dir / "server.key").string(),
            "--tls-client-ca", (dir / "ca.pem").string()};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  EXPECT_NE(server->Log().find("identity=certificate"), std::string::npos) << server->Log();
  auto a = pb::Sessions::NewStub(TlsChannel(*server, dir, "a"));
  auto b = pb::Sessions::NewStub(TlsChannel(*server, dir, "b"));
  pb::Session s;
  {
    grpc::ClientContext ctx;
    grpc::Status st = a->CreateSession(&ctx, {}, &s);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  EXPECT_TRUE(GetSession(a.get(), "", s.session_id()).ok());
  EXPECT_EQ(GetSession(b.get(), "", s.session_id()).error_code(), grpc::StatusCode::NOT_FOUND);
  // The request log line is written as the call finishes, maybe after the client has its answer.
  auto logged = [&](const char* what) {
    return Eventually([&] { return server->Log().find(what) != std::string::npos; });
  };
  EXPECT_TRUE(logged("caller=cert:spiffe://modrwkv.test/a")) << server->Log();
  EXPECT_TRUE(logged("caller=cert:client-b")) << server->Log();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace modrwkv::e2e
