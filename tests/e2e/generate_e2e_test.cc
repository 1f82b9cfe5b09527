// Inference.Generate end to end: the real server binary on loopback, a real gRPC client.
// Streaming, batching invariance, cancellation, deadlines, overload, slow readers, malformed
// requests, and the metrics that must move with each.
#include <atomic>
#include <set>
#include <thread>

#include "tests/e2e/e2e_util.h"

namespace modrwkv::e2e {
namespace {

class GenerateE2eTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerProcess::Options o;
    o.args = {"--max-running", "32", "--max-message-bytes", "65536"};
    server_ = ServerProcess::Start(o).release();
    ASSERT_NE(server_, nullptr);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    channel_ = server_->Channel();
    stub_ = pb::Inference::NewStub(channel_);
  }

  static ServerProcess* server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::Inference::Stub> stub_;
};
ServerProcess* GenerateE2eTest::server_ = nullptr;

TEST_F(GenerateE2eTest, TextDeltasConcatenateToTheDetokenizedIds) {
  StreamResult r = RunGenerate(stub_.get(), Greedy("User: hello\n\nAssistant:", 80));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_TRUE(r.result.has_value());
  EXPECT_EQ(r.messages_after_result, 0);
  EXPECT_EQ(r.result->finish_reason(), pb::FINISH_REASON_LENGTH);
  EXPECT_EQ(r.result->usage().generated_tokens(), 80);
  EXPECT_EQ(r.result->usage().prompt_tokens(), 7);
  EXPECT_TRUE(r.result->usage().has_time_to_first_token());
  ASSERT_EQ(r.ids.size(), 80u);
  EXPECT_GT(r.chunks, 1);  // it streamed, not one message at the end

  pb::DetokenizeRequest dreq;
  dreq.mutable_token_ids()->Assign(r.ids.begin(), r.ids.end());
  pb::DetokenizeResponse dresp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->Detokenize(&ctx, dreq, &dresp).ok());
  EXPECT_EQ(r.text, dresp.text());
  EXPECT_FALSE(r.text.empty());
}

TEST_F(GenerateE2eTest, TokenizeMatchesTheOfficialVectors) {
  pb::TokenizeRequest req;
  req.set_text("User: hi\n\nAssistant:");
  pb::TokenizeResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->Tokenize(&ctx, req, &resp).ok());
  EXPECT_EQ(std::vector<int32_t>(resp.token_ids().begin(), resp.token_ids().end()),
            (std::vector<int32_t>{24281, 59, 4571, 261, 5585, 41693, 59}));
}

TEST_F(GenerateE2eTest, ModelInfoDescribesShapesAndLimits) {
  pb::ModelInfo info;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->GetModelInfo(&ctx, {}, &info).ok());
  EXPECT_EQ(info.architecture(), "rwkv7");
  EXPECT_EQ(info.model_path(), "model.pth");  // the file name, not the server's directories
  EXPECT_EQ(info.shape().n_layer(), 2);
  EXPECT_EQ(info.shape().n_embd(), 128);
  EXPECT_EQ(info.shape().vocab_size(), 65536);
  EXPECT_EQ(info.state_bytes(), 2LL * 128 * (64 + 2) * 4);
  EXPECT_EQ(info.limits().max_running(), 32);
  EXPECT_EQ(info.limits().max_message_bytes(), 65536);
  EXPECT_EQ(info.limits().max_choices(), 8);
  EXPECT_EQ(info.fingerprint().size(), 16u);
  ASSERT_EQ(info.modalities_size(), 1);
  EXPECT_EQ(info.modalities(0), pb::MODALITY_TEXT);
}

// Batching must not change results: the engine is batch-invariant (engine/cpu/kernels.h), so
// every stream must equal the same request alone, token for token and logprob for logprob.
TEST_F(GenerateE2eTest, ConcurrentGreedyStreamsEqualTheSameRequestAlone) {
  constexpr int kStreams = 64;  // more than max_running (32): some wait in the queue
  std::vector<pb::GenerateRequest> reqs;
  for (int i = 0; i < kStreams; ++i) {
    reqs.push_back(
        Greedy("Prompt number " + std::to_string(i) + std::string(i % 7, '!'), 24 + i % 9));
    reqs.back().set_logprobs_top_n(2);
  }
  std::vector<StreamResult> alone(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    alone[i] = RunGenerate(stub_.get(), reqs[i]);
    ASSERT_TRUE(alone[i].status.ok()) << alone[i].status.error_message();
    ASSERT_EQ(alone[i].ids.size(), static_cast<size_t>(24 + i % 9));
  }
  std::vector<StreamResult> together(kStreams);
  std::vector<std::thread> threads;
  std::atomic<int> go{0};
  // One channel (one HTTP/2 connection) for all streams, as an application server would have.
  // (A storm of 64 fresh connections also trips a gRPC 1.51 client bug that fails some connects
  // with a clobbered errno, grpc/grpc#35064.)
  auto shared = server_->Channel();
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      auto stub = pb::Inference::NewStub(shared);
      go.fetch_add(1);
      while (go.load() < kStreams) std::this_thread::yield();
      together[i] = RunGenerate(stub.get(), reqs[i]);
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(together[i].status.ok()) << i << ": " << together[i].status.error_message();
    EXPECT_EQ(together[i].ids, alone[i].ids) << "stream " << i;
    ASSERT_EQ(together[i].logprobs.size(), alone[i].logprobs.size()) << "stream " << i;
    for (size_t k = 0; k < alone[i].logprobs.size(); ++k) {
      ASSERT_EQ(together[i].logprobs[k].logprob(), alone[i].logprobs[k].logprob())
          << "stream " << i << " token " << k;
    }
  }
}

// n choices: the prompt is prefilled once and forked; choice i is bit for bit the request alone
// with seed + i, its chunks and its result carry its index, and the stream ends after all of them.
TEST_F(GenerateE2eTest, NChoicesForkOnePrefillAndEachEqualsItsSeedAlone) {
  pb::GenerateRequest req = Greedy("Once upon a time, in a land far away, there lived", 24);
  req.mutable_sampling()->set_temperature(1.0f);
  req.mutable_sampling()->set_seed(7);
  req.set_logprobs_top_n(1);
  const double prefilled0 = ScrapeMetric(*server_, "modrwkv_prompt_tokens_total");
  req.set_n(3);
  const ChoicesResult together = RunGenerateChoices(stub_.get(), req);
  const double prefilled = ScrapeMetric(*server_, "modrwkv_prompt_tokens_total") - prefilled0;
  ASSERT_TRUE(together.status.ok()) << together.status.error_message();
  ASSERT_EQ(together.choices.size(), 3u);
  EXPECT_TRUE(together.ends_with_result);
  req.clear_n();
  int prompt_tokens = 0;
  std::set<std::vector<int32_t>> distinct;
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE(i);
    pb::GenerateRequest alone_req = req;
    alone_req.mutable_sampling()->set_seed(7 + i);
    const StreamResult alone = RunGenerate(stub_.get(), alone_req);
    ASSERT_TRUE(alone.status.ok()) << alone.status.error_message();
    const StreamResult& c = together.choices[i];
    ASSERT_TRUE(c.result.has_value());
    EXPECT_EQ(c.result->choice(), i);
    EXPECT_EQ(c.ids, alone.ids);
    EXPECT_EQ(c.text, alone.text);
    ASSERT_EQ(c.logprobs.size(), alone.logprobs.size());
    for (size_t k = 0; k < c.logprobs.size(); ++k) {
      EXPECT_EQ(c.logprobs[k].logprob(), alone.logprobs[k].logprob()) << "token " << k;
    }
    EXPECT_EQ(c.result->usage().prompt_tokens(), alone.result->usage().prompt_tokens());
    EXPECT_EQ(c.result->usage().generated_tokens(), 24);
    prompt_tokens = alone.result->usage().prompt_tokens();
    distinct.insert(c.ids);
  }
  EXPECT_EQ(distinct.size(), 3u);  // three different draws
  // Prefilled once for all but the last prompt token, which each choice feeds itself.
  EXPECT_EQ(prefilled, (prompt_tokens - 1) + 3);
}

TEST_F(GenerateE2eTest, CancellingMidStreamFreesTheSlot) {
  const std::string finished = "modrwkv_requests_finished_total{reason=\"cancelled\"}";
  const double cancelled_before = ScrapeMetric(*server_, finished);
  grpc::ClientContext ctx;
  auto reader = stub_->Generate(&ctx, Greedy("Tell me everything.", 1000000));
  pb::GenerateResponse resp;
  int chunks = 0;
  while (chunks < 3 && reader->Read(&resp)) chunks += resp.has_chunk();
  ASSERT_EQ(chunks, 3);
  EXPECT_EQ(ScrapeMetric(*server_, "modrwkv_requests_running"), 1);
  EXPECT_EQ(ScrapeMetric(*server_, "modrwkv_state_slots_used"), 1);
  ctx.TryCancel();
  while (reader->Read(&resp)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(Eventually([&] {
    return ScrapeMetric(*server_, "modrwkv_state_slots_used") == 0 &&
           ScrapeMetric(*server_, "modrwkv_requests_running") == 0;
  }));
  EXPECT_TRUE(Eventually([&] { return ScrapeMetric(*server_, finished) == cancelled_before + 1; }));
}

TEST_F(GenerateE2eTest, TimeoutEndsTheStreamWithFinishReasonDeadline) {
  pb::GenerateRequest req = Greedy("Keep going", 1000000);
  req.mutable_timeout()->set_nanos(300 * 1000 * 1000);
  const auto t0 = Clock::now();
  StreamResult r = RunGenerate(stub_.get(), req);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_TRUE(r.result.has_value());
  EXPECT_EQ(r.result->finish_reason(), pb::FINISH_REASON_DEADLINE);
  EXPECT_GT(r.result->usage().generated_tokens(), 0);
  EXPECT_EQ(static_cast<int>(r.ids.size()), r.result->usage().generated_tokens());
}

TEST_F(GenerateE2eTest, GrpcDeadlineEndsTheRequestAndFreesTheSlot) {
  StreamResult r =
      RunGenerate(stub_.get(), Greedy("Keep going", 1000000), std::chrono::milliseconds(300));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_GT(r.ids.size(), 0u);
  EXPECT_TRUE(Eventually([&] { return ScrapeMetric(*server_, "modrwkv_state_slots_used") == 0; }));
}

TEST_F(GenerateE2eTest, StopStringEndsTheStreamBeforeIt) {
  StreamResult full = RunGenerate(stub_.get(), Greedy("Once upon a time", 60));
  ASSERT_TRUE(full.status.ok());
  ASSERT_GT(full.text.size(), 20u);
  // A piece of the middle of the greedy output is a stop string that must match there.
  const std::string stop = full.text.substr(full.text.size() / 2, 3);
  const size_t at = full.text.find(stop);
  pb::GenerateRequest req = Greedy("Once upon a time", 60);
  req.mutable_stop()->add_stop_strings(stop);
  StreamResult r = RunGenerate(stub_.get(), req);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_TRUE(r.result.has_value());
  EXPECT_EQ(r.result->finish_reason(), pb::FINISH_REASON_STOP_STRING);
  EXPECT_EQ(r.text, full.text.substr(0, at));
}

TEST_F(GenerateE2eTest, LogprobsComeWithEveryToken) {
  pb::GenerateRequest req = Greedy("Numbers:", 10);
  req.set_logprobs_top_n(3);
  StreamResult r = RunGenerate(stub_.get(), req);
  ASSERT_TRUE(r.status.ok());
  ASSERT_EQ(r.logprobs.size(), 10u);
  for (size_t i = 0; i < r.logprobs.size(); ++i) {
    EXPECT_EQ(r.logprobs[i].token_id(), r.ids[i]);
    ASSERT_EQ(r.logprobs[i].top_size(), 3);
    // Greedy: the chosen token is the most likely one.
    EXPECT_EQ(r.logprobs[i].top(0).token_id(), r.ids[i]);
    EXPECT_LE(r.logprobs[i].logprob(), 0.0f);
  }
}

TEST_F(GenerateE2eTest, SeededSamplingIsReproducible) {
  pb::GenerateRequest req = Greedy("Seeds", 30);
  req.mutable_sampling()->set_temperature(1.0f);
  req.mutable_sampling()->set_seed(42);
  StreamResult a = RunGenerate(stub_.get(), req);
  StreamResult b = RunGenerate(stub_.get(), req);
  ASSERT_TRUE(a.status.ok() && b.status.ok());
  EXPECT_EQ(a.ids, b.ids);
}

struct BadCase {
  const char* name;
  std::function<void(pb::GenerateRequest*)> mutate;
  grpc::StatusCode code;
  const char* field;  // BadRequest field, and a substring of the message
};

TEST_F(GenerateE2eTest, MalformedRequestsNameTheFieldAndTheServerKeepsServing) {
  const std::vector<BadCase> cases = {
      {"empty input", [](pb::GenerateRequest* r) { r->clear_input(); },
       grpc::StatusCode::INVALID_ARGUMENT, "input"},
      {"empty text", [](pb::GenerateRequest* r) { r->mutable_input(0)->set_text(""); },
       grpc::StatusCode::INVALID_ARGUMENT, "input"},
      {"out-of-range id",
       [](pb::GenerateRequest* r) {
         auto* ids = r->add_input()->mutable_tokens()->mutable_ids();
         ids->Add(5);
         ids->Add(70000);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "input[1].tokens.ids[1]"},
      {"negative id", [](pb::GenerateRequest* r) { r->add_input()->mutable_tokens()->add_ids(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "input[1].tokens.ids[0]"},
      {"top_p", [](pb::GenerateRequest* r) { r->mutable_sampling()->set_top_p(5); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.top_p"},
      {"temperature", [](pb::GenerateRequest* r) { r->mutable_sampling()->set_temperature(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.temperature"},
      {"nan penalty",
       [](pb::GenerateRequest* r) { r->mutable_sampling()->set_presence_penalty(NAN); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.presence_penalty"},
      {"banned id",
       [](pb::GenerateRequest* r) { r->mutable_sampling()->add_banned_token_ids(1 << 20); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.banned_token_ids[0]"},
      {"max_tokens", [](pb::GenerateRequest* r) { r->mutable_stop()->set_max_tokens(0); },
       grpc::StatusCode::INVALID_ARGUMENT, "stop.max_tokens"},
      {"stop string",
       [](pb::GenerateRequest* r) { r->mutable_stop()->add_stop_strings(std::string(300, 'x')); },
       grpc::StatusCode::INVALID_ARGUMENT, "stop.stop_strings[0]"},
      {"logprobs", [](pb::GenerateRequest* r) { r->set_logprobs_top_n(50); },
       grpc::StatusCode::INVALID_ARGUMENT, "logprobs_top_n"},
      {"timeout", [](pb::GenerateRequest* r) { r->mutable_timeout()->set_seconds(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "timeout"},
      {"bad session id", [](pb::GenerateRequest* r) { r->set_session_id("nope"); },
       grpc::StatusCode::INVALID_ARGUMENT, "session_id"},
      {"unknown session", [](pb::GenerateRequest* r) { r->set_session_id(std::string(32, 'a')); },
       grpc::StatusCode::NOT_FOUND, "session_id"},
      {"oversized message",
       [](pb::GenerateRequest* r) { r->mutable_input(0)->set_text(std::string(70000, 'a')); },
       grpc::StatusCode::INVALID_ARGUMENT, "input"},
      {"image part", [](pb::GenerateRequest* r) { r->add_input()->mutable_image()->set_data("x"); },
       grpc::StatusCode::UNIMPLEMENTED, "input[1].image"},
      {"n zero", [](pb::GenerateRequest* r) { r->set_n(0); }, grpc::StatusCode::INVALID_ARGUMENT,
       "n"},
      {"n past max-choices", [](pb::GenerateRequest* r) { r->set_n(9); },
       grpc::StatusCode::INVALID_ARGUMENT, "n"},
      {"n with a session",
       [](pb::GenerateRequest* r) {
         r->set_n(2);
         r->set_session_id(std::string(32, 'a'));
       },
       grpc::StatusCode::INVALID_ARGUMENT, "n"},
      {"prefix_parts covers everything", [](pb::GenerateRequest* r) { r->set_prefix_parts(1); },
       grpc::StatusCode::INVALID_ARGUMENT, "prefix_parts"},
      {"prefix_parts negative", [](pb::GenerateRequest* r) { r->set_prefix_parts(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "prefix_parts"},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.name);
    pb::GenerateRequest req = Greedy("Hello", 5);
    c.mutate(&req);
    StreamResult r = RunGenerate(stub_.get(), req);
    EXPECT_EQ(r.status.error_code(), c.code) << c.name << ": " << r.status.error_message();
    EXPECT_NE(r.status.error_message().find(c.field), std::string::npos)
        << c.name << ": " << r.status.error_message();
    EXPECT_FALSE(r.result.has_value()) << c.name;
    auto info = ErrorInfoOf(r.status);
    ASSERT_TRUE(info.has_value()) << c.name;
    EXPECT_EQ(info->domain(), "modrwkv");
    if (c.code == grpc::StatusCode::INVALID_ARGUMENT) {
      EXPECT_EQ(BadFieldOf(r.status), c.field) << c.name;
    }
    if (c.code == grpc::StatusCode::NOT_FOUND) {
      EXPECT_EQ(info->reason(), "SESSION_NOT_FOUND");
    }
  }
  // Far over the limit: gRPC itself refuses the message before it is buffered.
  pb::GenerateRequest huge = Greedy(std::string(3 << 20, 'a'), 5);
  EXPECT_EQ(RunGenerate(stub_.get(), huge).status.error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Still serving.
  StreamResult ok = RunGenerate(stub_.get(), Greedy("Hello", 5));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_EQ(ok.ids.size(), 5u);
}

TEST_F(GenerateE2eTest, DetokenizeRejectsOutOfRangeIds) {
  pb::DetokenizeRequest req;
  req.add_token_ids(24281);
  req.add_token_ids(65536);
  pb::DetokenizeResponse resp;
  grpc::ClientContext ctx;
  grpc::Status st = stub_->Detokenize(&ctx, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(BadFieldOf(st), "token_ids[1]");
}

TEST_F(GenerateE2eTest, MetricsCountTokensAndOutcomes) {
  const std::string text = HttpGet(server_->metrics_port(), "/metrics");
  const double prompt = Metric(text, "modrwkv_prompt_tokens_total");
  const double generated = Metric(text, "modrwkv_generated_tokens_total");
  const double length = Metric(text, "modrwkv_requests_finished_total{reason=\"length\"}");
  const double ok = Metric(text, "modrwkv_grpc_requests_total{code=\"OK\",method=\"Generate\"}");
  const double invalid =
      Metric(text, "modrwkv_grpc_requests_total{code=\"INVALID_ARGUMENT\",method=\"Generate\"}");
  const double ttft = Metric(text, "modrwkv_time_to_first_token_seconds_count");
  // Series users alert on exist from start-up.
  EXPECT_FALSE(
      std::isnan(Metric(text, "modrwkv_admission_rejections_total{reason=\"queue_full\"}")));
  EXPECT_FALSE(std::isnan(Metric(text, "modrwkv_requests_finished_total{reason=\"error\"}")));
  EXPECT_EQ(Metric(text, "modrwkv_state_slots_total"), 32);
  EXPECT_EQ(Metric(text, "modrwkv_ready"), 1);

  StreamResult r = RunGenerate(stub_.get(), Greedy("Count me", 17));
  ASSERT_TRUE(r.status.ok());
  pb::GenerateRequest bad = Greedy("x", 5);
  bad.mutable_sampling()->set_top_k(-3);
  EXPECT_EQ(RunGenerate(stub_.get(), bad).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  EXPECT_TRUE(Eventually([&] {
    const std::string t = HttpGet(server_->metrics_port(), "/metrics");
    return Metric(t, "modrwkv_grpc_requests_total{code=\"OK\",method=\"Generate\"}") == ok + 1;
  }));
  const std::string after = HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_EQ(Metric(after, "modrwkv_prompt_tokens_total"),
            prompt + r.result->usage().prompt_tokens());
  EXPECT_EQ(Metric(after, "modrwkv_generated_tokens_total"), generated + 17);
  EXPECT_EQ(Metric(after, "modrwkv_requests_finished_total{reason=\"length\"}"), length + 1);
  EXPECT_EQ(
      Metric(after, "modrwkv_grpc_requests_total{code=\"INVALID_ARGUMENT\",method=\"Generate\"}"),
      invalid + 1);
  EXPECT_EQ(Metric(after, "modrwkv_time_to_first_token_seconds_count"), ttft + 1);
  EXPECT_GT(Metric(after, "modrwkv_step_duration_seconds_count"), 0);
  EXPECT_GT(Metric(after, "modrwkv_inter_token_latency_seconds_count"), 0);
}

TEST_F(GenerateE2eTest, EveryRequestIsLoggedWithItsId) {
  grpc::ClientContext ctx;
  ctx.AddMetadata("x-request-id", "e2e-log-check-1");
  auto reader = stub_->Generate(&ctx, Greedy("Log me", 3));
  StreamResult r = Collect(reader.get());
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.result->request_id(), "e2e-log-check-1");
  EXPECT_TRUE(Eventually([&] {
    const std::string log = server_->Log();
    return log.find("request_id=e2e-log-check-1 method=Generate code=OK") != std::string::npos;
  }));
}

// --- servers with their own settings ---

// GenerateRequest.prefix_parts: the state after a shared prefix is cached; a later request with
// the same prefix starts from it (usage.cached_tokens) and answers exactly as a cold run.
TEST(GeneratePrefixCacheE2eTest, APrefixIsCachedAndGivesTheColdAnswer) {
  // Its own server: a cached prefix holds a state slot, which the other tests count.
  ServerProcess::Options o;
  o.args = {"--prefix-cache-min-tokens", "16"};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  std::string prefix;
  for (int i = 0; i < 4; ++i) prefix += "You answer questions about the sea, briefly and kindly. ";
  const auto request = [&](const std::string& question, bool shared) {
    pb::GenerateRequest r = Greedy(prefix, 16);
    r.add_input()->set_text(question);
    if (shared) r.set_prefix_parts(1);
    return r;
  };
  const double hits0 = std::max(0.0, ScrapeMetric(*server, "modrwkv_prefix_cache_hits_total"));
  const StreamResult first = RunGenerate(stub.get(), request("Why is it salty?", true));
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  EXPECT_EQ(first.result->usage().cached_tokens(), 0);
  const StreamResult first_cold = RunGenerate(stub.get(), request("Why is it salty?", false));
  EXPECT_EQ(first.ids, first_cold.ids);

  const StreamResult second = RunGenerate(stub.get(), request("How deep is it?", true));
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  const StreamResult second_cold = RunGenerate(stub.get(), request("How deep is it?", false));
  ASSERT_TRUE(second_cold.status.ok());
  EXPECT_EQ(second.ids, second_cold.ids);
  EXPECT_EQ(second.result->usage().prompt_tokens(), second_cold.result->usage().prompt_tokens());
  EXPECT_GE(second.result->usage().cached_tokens(), 40);  // the prefix's tokens
  EXPECT_LT(second.result->usage().cached_tokens(), second.result->usage().prompt_tokens());
  EXPECT_EQ(ScrapeMetric(*server, "modrwkv_prefix_cache_hits_total"), hits0 + 1);

  // A memory budget smaller than one state keeps nothing: every request is a cold prefill.
  o.args = {"--prefix-cache-min-tokens", "16", "--prefix-cache-memory", "1K"};
  auto small = ServerProcess::Start(o);
  ASSERT_NE(small, nullptr);
  auto small_stub = pb::Inference::NewStub(small->Channel());
  for (int i = 0; i < 2; ++i) {
    const StreamResult r = RunGenerate(small_stub.get(), request("How deep is it?", true));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.result->usage().cached_tokens(), 0);
    EXPECT_EQ(r.ids, second_cold.ids);
  }
}

// Requests that miss the same prefix at the same time share one prefill: the first prefills, the
// others wait for its state and fork it (hits). Whatever the timing, the prefix is prefilled once.
TEST(GeneratePrefixCacheE2eTest, ConcurrentMissesOfOnePrefixShareOnePrefill) {
  ServerProcess::Options o;
  o.args = {"--prefix-cache-min-tokens", "16"};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  std::string prefix;  // long enough that the prefill outlasts the other requests' arrival
  for (int i = 0; i < 300; ++i) prefix += "The tide comes in and the tide goes out. ";
  const auto request = [&](bool shared) {
    pb::GenerateRequest r = Greedy(prefix, 8);
    r.add_input()->set_text(" What moves the sea?");
    if (shared) r.set_prefix_parts(1);
    return r;
  };
  constexpr int kRequests = 4;
  std::vector<StreamResult> results(kRequests);
  {
    std::vector<std::thread> threads;
    for (int i = 0; i < kRequests; ++i) {
      threads.emplace_back([&, i] { results[i] = RunGenerate(stub.get(), request(true)); });
    }
    for (auto& t : threads) t.join();
  }
  const StreamResult cold = RunGenerate(stub.get(), request(false));
  ASSERT_TRUE(cold.status.ok()) << cold.status.error_message();
  int cached = 0;
  for (const StreamResult& r : results) {
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.ids, cold.ids);
    cached += r.result->usage().cached_tokens() > 0;
  }
  EXPECT_EQ(cached, kRequests - 1);
  EXPECT_EQ(ScrapeMetric(*server, "modrwkv_prefix_cache_misses_total"), 1);
  EXPECT_EQ(ScrapeMetric(*server, "modrwkv_prefix_cache_hits_total"), kRequests - 1);
}

TEST(GenerateOverloadE2eTest, FullQueueIsResourceExhaustedWithRetryInfoAndRecovers) {
  ServerProcess::Options o;
  o.args = {"--max-running", "1", "--max-queued-requests", "1"};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  // A occupies the only running place, B the only queue place.
  grpc::ClientContext ctx_a, ctx_b;
  auto a = stub->Generate(&ctx_a, Greedy("A", 1000000));
  pb::GenerateResponse resp;
  ASSERT_TRUE(a->Read(&resp));
  auto b = stub->Generate(&ctx_b, Greedy("B", 5));
  ASSERT_TRUE(Eventually([&] { return ScrapeMetric(*server, "modrwkv_requests_waiting") == 1; }));
  StreamResult c = RunGenerate(stub.get(), Greedy("C", 5));
  EXPECT_EQ(c.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << c.status.error_message();
  auto retry = RetryInfoOf(c.status);
  ASSERT_TRUE(retry.has_value());
  EXPECT_GT(retry->retry_delay().seconds() * 1000 + retry->retry_delay().nanos() / 1000000, 0);
  auto info = ErrorInfoOf(c.status);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->reason(), "QUEUE_FULL");
  EXPECT_EQ(ScrapeMetric(*server, "modrwkv_admission_rejections_total{reason=\"queue_full\"}"), 1);
  EXPECT_EQ(
      ScrapeMetric(*server,
                   "modrwkv_grpc_requests_total{code=\"RESOURCE_EXHAUSTED\",method=\"Generate\"}"),
      1);
  // Once A is gone, B runs and new requests are admitted again.
  ctx_a.TryCancel();
  while (a->Read(&resp)) {
  }
  a->Finish();
  StreamResult rb = Collect(b.get());
  EXPECT_TRUE(rb.status.ok()) << rb.status.error_message();
  EXPECT_EQ(rb.ids.size(), 5u);
  StreamResult d = RunGenerate(stub.get(), Greedy("D", 5));
  EXPECT_TRUE(d.status.ok()) << d.status.error_message();
}

TEST(GenerateSlowReaderE2eTest, AClientThatDoesNotReadIsCutOffAndItsSlotFreed) {
  ServerProcess::Options o;
  o.args = {"--stream-buffer-bytes", "4096"};
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  // A client with a tiny flow-control window that stops reading: the server's writes stall, the
  // output (with 20 logprobs per token, ~200 bytes each) piles up past 4 KiB.
  grpc::ChannelArguments args;
  args.SetInt("grpc.http2.lookahead_bytes", 1024);
  args.SetInt("grpc.http2.bdp_probe", 0);
  args.SetInt("grpc.use_local_subchannel_pool", 1);
  auto channel =
      grpc::CreateCustomChannel(server->target(), grpc::InsecureChannelCredentials(), args);
  auto stub = pb::Inference::NewStub(channel);
  pb::GenerateRequest req = Greedy("Flood", 1000000);
  req.set_logprobs_top_n(20);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub->Generate(&ctx, req);
  // Not reading: wait until the server gave up on us.
  ASSERT_TRUE(Eventually(
      [&] { return ScrapeMetric(*server, "modrwkv_stream_buffer_overflows_total") == 1; },
      std::chrono::seconds(40)));
  EXPECT_TRUE(Eventually([&] {
    return ScrapeMetric(*server, "modrwkv_state_slots_used") == 0 &&
           ScrapeMetric(*server, "modrwkv_requests_finished_total{reason=\"cancelled\"}") == 1;
  }));
  // Reading now: what was sent before the cut, then the error.
  StreamResult r = Collect(reader.get());
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << r.status.error_message();
  auto info = ErrorInfoOf(r.status);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->reason(), "STREAM_BUFFER_OVERFLOW");
  ASSERT_TRUE(r.result.has_value());
  EXPECT_EQ(r.result->finish_reason(), pb::FINISH_REASON_ERROR);
  // Other clients are served normally.
  auto normal = pb::Inference::NewStub(server->Channel());
  EXPECT_TRUE(RunGenerate(normal.get(), Greedy("Fine", 5)).status.ok());
}

}  // namespace
}  // namespace modrwkv::e2e
