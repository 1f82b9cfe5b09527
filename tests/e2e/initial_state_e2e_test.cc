// Trained initial states (state tuning) end to end: the real server with --initial-state streams
// what the official `rwkv` package generates from that state (tests/golden/rwkv7/initial_state/
// demo_seed3, made by tools/golden/gen_initial_state_fixtures.py on the tests' demo model), through
// every way a request starts: Generate, a session made from the state, Chat, the prefix cache,
// n choices, the HTTP API and a server default.
#include <fstream>
#include <sstream>

#include "httplib.h"
#include "modrwkv/v1/sessions.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/e2e_util.h"

namespace modrwkv::e2e {
namespace {

using json = nlohmann::json;

std::string FixtureDir() {
  return std::string(MODRWKV_SOURCE_DIR) + "/tests/golden/rwkv7/initial_state/demo_seed3";
}

json Fixture() {
  std::ifstream f(FixtureDir() + "/manifest.json");
  EXPECT_TRUE(f.good()) << "missing fixture " << FixtureDir();
  std::stringstream ss;
  ss << f.rdbuf();
  return json::parse(ss.str());
}

// The fixture's prompt as token parts: the first four ids, then the rest (so that
// prefix_parts = 1 marks a prefix the cache may keep).
pb::GenerateRequest FromIds(const json& fx, const std::string& initial_state) {
  const std::vector<int32_t> prompt = fx["prompt"].get<std::vector<int32_t>>();
  pb::GenerateRequest req;
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (i == 0 || i == 4) req.add_input();
    req.mutable_input(req.input_size() - 1)->mutable_tokens()->add_ids(prompt[i]);
  }
  req.mutable_sampling()->set_temperature(0.0f);
  req.mutable_stop()->set_max_tokens(static_cast<int>(fx["greedy_ids"].size()));
  req.mutable_stop()->set_ignore_end_of_text(true);
  req.set_logprobs_top_n(0);
  req.set_initial_state(initial_state);
  return req;
}

class InitialStateE2eTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    fixture_ = new json(Fixture());
    ServerProcess::Options o;
    o.args = {"--initial-state",
              "golden=" + FixtureDir() + "/time_state.pth",
              "--http-port",
              "0",
              "--prefix-cache-min-tokens",
              "4",
              "--max-running",
              "8"};
    server_ = ServerProcess::Start(o).release();
    ASSERT_NE(server_, nullptr);
  }
  static void TearDownTestSuite() {
    delete server_;
    delete fixture_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    stub_ = pb::Inference::NewStub(server_->Channel());
    sessions_ = pb::Sessions::NewStub(server_->Channel());
  }
  const json& fx() const { return *fixture_; }
  std::vector<int32_t> Want() const { return fx()["greedy_ids"].get<std::vector<int32_t>>(); }
  std::vector<int32_t> WantFromZeros() const {
    return fx()["zero_state_greedy_ids"].get<std::vector<int32_t>>();
  }

  static ServerProcess* server_;
  static json* fixture_;
  std::unique_ptr<pb::Inference::Stub> stub_;
  std::unique_ptr<pb::Sessions::Stub> sessions_;
};
ServerProcess* InitialStateE2eTest::server_ = nullptr;
json* InitialStateE2eTest::fixture_ = nullptr;

TEST_F(InitialStateE2eTest, GenerateFromTheStateEqualsTheOfficialPackage) {
  const std::string starts = R"(modrwkv_initial_state_starts_total{state="golden"})";
  const double starts_before = ScrapeMetric(*server_, starts);
  ASSERT_FALSE(std::isnan(starts_before)) << "the state's series is exported from the start";
  StreamResult r = RunGenerate(stub_.get(), FromIds(fx(), "golden"));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.ids, Want());
  const std::vector<double> want_lp = fx()["greedy_logprobs"].get<std::vector<double>>();
  ASSERT_EQ(r.logprobs.size(), want_lp.size());
  for (size_t i = 0; i < want_lp.size(); ++i) {
    EXPECT_NEAR(r.logprobs[i].logprob(), want_lp[i], 2e-3) << "token " << i;
  }
  // Naming none, or "none", is the zero state (this server has no default).
  for (const char* zero : {"", "none"}) {
    r = RunGenerate(stub_.get(), FromIds(fx(), zero));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.ids, WantFromZeros()) << "'" << zero << "'";
  }
  // One start from the state, none from the zero-state requests (tests of this suite run one
  // at a time).
  EXPECT_EQ(ScrapeMetric(*server_, starts), starts_before + 1);
}

TEST_F(InitialStateE2eTest, SessionsAndChatStartFromTheState) {
  pb::CreateSessionRequest create;
  create.set_initial_state("golden");
  pb::Session session;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(sessions_->CreateSession(&ctx, create, &session).ok());
  }
  pb::GenerateRequest turn = FromIds(fx(), "");
  turn.set_session_id(session.session_id());
  StreamResult r = RunGenerate(stub_.get(), turn);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.ids, Want());

  // Chat's first message starts its fresh session from the state; the fixture's prompt is the
  // tokens of this text. (Chat also bans token 0 and stops at 24: neither is in the answer.)
  grpc::ClientContext ctx;
  auto stream = stub_->Chat(&ctx);
  pb::ChatRequest msg;
  msg.set_text("User: hi\n\nAssistant:");
  msg.set_raw(true);
  msg.set_initial_state("golden");
  msg.mutable_sampling()->set_temperature(0.0f);
  msg.mutable_stop()->set_max_tokens(static_cast<int>(Want().size()));
  ASSERT_TRUE(stream->Write(msg));
  std::vector<int32_t> ids;
  pb::ChatResponse resp;
  while (stream->Read(&resp) && !resp.has_turn_end()) {
    ids.insert(ids.end(), resp.chunk().token_ids().begin(), resp.chunk().token_ids().end());
  }
  EXPECT_EQ(ids, Want());
  // Later messages continue the session: naming a state there is an error.
  pb::ChatRequest later;
  later.set_text("more");
  later.set_initial_state("golden");
  ASSERT_TRUE(stream->Write(later));
  stream->WritesDone();
  while (stream->Read(&resp)) {
  }
  const grpc::Status st = stream->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(BadFieldOf(st), "initial_state") << st.error_message();
}

TEST_F(InitialStateE2eTest, PrefixCacheAndChoicesKeepTheStartingState) {
  const double hits_before = ScrapeMetric(*server_, "modrwkv_prefix_cache_hits_total");
  for (int round = 0; round < 2; ++round) {  // a miss that caches the prefix, then a hit
    pb::GenerateRequest req = FromIds(fx(), "golden");
    req.set_prefix_parts(1);
    StreamResult r = RunGenerate(stub_.get(), req);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.ids, Want()) << "round " << round;
  }
  EXPECT_EQ(ScrapeMetric(*server_, "modrwkv_prefix_cache_hits_total"), hits_before + 1);
  // The same prefix from the zero state is another entry, not the state's.
  pb::GenerateRequest zero = FromIds(fx(), "none");
  zero.set_prefix_parts(1);
  StreamResult r = RunGenerate(stub_.get(), zero);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.ids, WantFromZeros());

  pb::GenerateRequest two = FromIds(fx(), "golden");
  two.set_n(2);
  ChoicesResult c = RunGenerateChoices(stub_.get(), two);
  ASSERT_TRUE(c.status.ok()) << c.status.error_message();
  for (const StreamResult& choice : c.choices) EXPECT_EQ(choice.ids, Want());
}

TEST_F(InitialStateE2eTest, TheHttpApiTakesTheStateByName) {
  httplib::Client http("127.0.0.1", server_->http_port());
  http.set_read_timeout(60, 0);
  const json body = {{"prompt", "User: hi\n\nAssistant:"},
                     {"max_tokens", Want().size()},
                     {"temperature", 0},
                     {"initial_state", "golden"}};
  auto res = http.Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  pb::DetokenizeRequest detok;
  for (int32_t id : Want()) detok.add_token_ids(id);
  pb::DetokenizeResponse text;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->Detokenize(&ctx, detok, &text).ok());
  // The completion stops early only at end-of-text (id 0), which the fixture's tokens are not.
  EXPECT_EQ(json::parse(res->body)["choices"][0]["text"], text.text());

  // GET /v1/models lists the states, as GetModelInfo does (this server has no default).
  res = http.Get("/v1/models");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json model = json::parse(res->body)["data"][0];
  EXPECT_EQ(model["initial_states"], json::array({"golden"})) << res->body;
  EXPECT_EQ(model["default_initial_state"], "") << res->body;

  json unknown = body;
  unknown["initial_state"] = "nope";
  res = http.Post("/v1/completions", unknown.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400) << res->body;
  EXPECT_NE(res->body.find("initial_state"), std::string::npos) << res->body;
}

TEST_F(InitialStateE2eTest, RefusalsNameTheFieldAndModelInfoListsTheStates) {
  pb::ModelInfo info;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->GetModelInfo(&ctx, {}, &info).ok());
  }
  ASSERT_EQ(info.initial_states_size(), 1);
  EXPECT_EQ(info.initial_states(0), "golden");
  EXPECT_EQ(info.default_initial_state(), "");

  StreamResult r = RunGenerate(stub_.get(), FromIds(fx(), "nope"));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(BadFieldOf(r.status), "initial_state");
  EXPECT_NE(r.status.error_message().find("golden"), std::string::npos)  // what there is
      << r.status.error_message();
  r = RunGenerate(stub_.get(), FromIds(fx(), std::string(5000, 'x')));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_LT(r.status.error_message().size(), 200u);  // the name is not echoed back

  pb::Session session;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(sessions_->CreateSession(&ctx, {}, &session).ok());
  }
  pb::GenerateRequest on_session = FromIds(fx(), "golden");
  on_session.set_session_id(session.session_id());
  r = RunGenerate(stub_.get(), on_session);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(BadFieldOf(r.status), "initial_state") << r.status.error_message();

  pb::CreateSessionRequest create;
  create.set_initial_state("nope");
  grpc::ClientContext ctx;
  const grpc::Status st = sessions_->CreateSession(&ctx, create, &session);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(BadFieldOf(st), "initial_state") << st.error_message();
}

// A server whose default is the state: requests that name none start from it, "none" from zeros.
TEST(InitialStateDefaultE2eTest, TheDefaultStateAppliesToRequestsThatNameNone) {
  const json fx = Fixture();
  ServerProcess::Options o;
  o.args = {"--initial-state", "golden=" + FixtureDir() + "/time_state.pth",
            "--default-initial-state", "golden"};
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  StreamResult r = RunGenerate(stub.get(), FromIds(fx, ""));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.ids, fx["greedy_ids"].get<std::vector<int32_t>>());
  r = RunGenerate(stub.get(), FromIds(fx, "none"));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.ids, fx["zero_state_greedy_ids"].get<std::vector<int32_t>>());
}

// A state file that does not fit the model stops the start with an error naming it.
TEST(InitialStateDefaultE2eTest, AStateOfAnotherModelStopsTheStart) {
  const std::string other =
      std::string(MODRWKV_SOURCE_DIR) + "/tests/golden/rwkv7/initial_state/micro/time_state.pth";
  const fs::path err_file =
      fs::temp_directory_path() / ("e2e_state_err_" + std::to_string(getpid()));
  // `timeout`: a server that wrongly starts is stopped rather than left to hang the test.
  const std::string cmd = "timeout 60 " + std::string(MODRWKV_CLI) + " serve --model " +
                          DemoModel().string() + " --vocab " + VocabPath() +
                          " --port 0 --metrics-port -1 --no-warmup --initial-state small=" + other +
                          " >/dev/null 2>" + err_file.string();
  const int rc = std::system(cmd.c_str());
  const std::string err = ReadAll(err_file);
  fs::remove(err_file);
  ASSERT_TRUE(WIFEXITED(rc)) << err;
  EXPECT_NE(WEXITSTATUS(rc), 0) << err;
  EXPECT_NE(WEXITSTATUS(rc), 124) << err;  // stopped by `timeout`: it started
  EXPECT_NE(err.find("initial-state small"), std::string::npos) << err;
  EXPECT_NE(err.find("has shape [1,64,64], expected [2,64,64]"), std::string::npos) << err;
}

}  // namespace
}  // namespace modrwkv::e2e
