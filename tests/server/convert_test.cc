// Proto -> engine request translation (validation naming request fields, chat template, default
// stop tokens and bans) and engine events -> proto.
#include "server/convert.h"

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "encoders/multimodal/media_router.h"
#include "engine/base/errors.h"
#include "engine/text/utf8.h"
#include "gtest/gtest.h"

namespace modrwkv::server {
namespace {

class ConvertTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    tok_ = Tokenizer::LoadFile(std::string(MODRWKV_SOURCE_DIR) + "/assets/rwkv_vocab_v20230424.txt")
               .value()
               .release();
  }
  static void TearDownTestSuite() { delete tok_; }
  void SetUp() override {
    ctx_.tokenizer = tok_;
    ctx_.model_vocab = 65536;
    ctx_.max_prompt_tokens = 100;
    ctx_.chat_template = "<{text}>";
  }
  static constexpr auto kNoDeadline = std::chrono::system_clock::time_point::max();
  static Tokenizer* tok_;
  TranslationContext ctx_;
};
Tokenizer* ConvertTest::tok_ = nullptr;

TEST_F(ConvertTest, PartsBecomePromptPartsInOrder) {
  pb::GenerateRequest req;
  req.add_input()->set_text("User: hi");
  req.add_input()->mutable_tokens()->add_ids(0);
  req.add_input()->set_text("");  // contributes nothing
  auto r = ToEngineRequest(req, ctx_, kNoDeadline);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->prompt.size(), 2u);
  EXPECT_EQ(r->prompt[0].tokens, (std::vector<int32_t>{24281, 59, 4571}));
  EXPECT_EQ(r->prompt[1].tokens, (std::vector<int32_t>{0}));
  EXPECT_EQ(r->deadline, absl::InfiniteFuture());
  EXPECT_FALSE(r->session.has_value());
}

TEST_F(ConvertTest, DefaultsStopAtEndOfTextAndBanIdsWithoutBytes) {
  pb::GenerateRequest req;
  req.add_input()->set_text("x");
  auto r = ToEngineRequest(req, ctx_, kNoDeadline);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stop.stop_token_ids, (std::vector<int32_t>{0}));
  EXPECT_EQ(r->stop.max_tokens, 256);
  EXPECT_EQ(r->sampling.temperature, 1.0f);
  EXPECT_EQ(r->sampling.logprobs_top_n, -1);
  // 65530..65535 have no bytes in the World vocab.
  EXPECT_EQ(r->sampling.banned_tokens,
            (std::vector<int32_t>{65530, 65531, 65532, 65533, 65534, 65535}));
  req.mutable_stop()->set_ignore_end_of_text(true);
  req.mutable_stop()->add_stop_token_ids(7);
  req.mutable_sampling()->set_top_k(5);
  req.set_logprobs_top_n(2);
  r = ToEngineRequest(req, ctx_, kNoDeadline);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stop.stop_token_ids, (std::vector<int32_t>{7}));
  EXPECT_EQ(r->sampling.top_k, 5);
  EXPECT_EQ(r->sampling.logprobs_top_n, 2);
}

TEST_F(ConvertTest, ErrorsNameTheRequestField) {
  struct Case {
    std::function<void(pb::GenerateRequest*)> mutate;
    absl::StatusCode code;
    std::string message_start;
  };
  const std::vector<Case> cases = {
      {[](pb::GenerateRequest* r) { r->clear_input(); }, absl::StatusCode::kInvalidArgument,
       "input is empty"},
      {[](pb::GenerateRequest* r) { r->add_input(); }, absl::StatusCode::kInvalidArgument,
       "input[1] has no kind"},
      {[](pb::GenerateRequest* r) { r->add_input()->mutable_tokens()->add_ids(65536); },
       absl::StatusCode::kInvalidArgument, "input[1].tokens.ids[0] = 65536"},
      {[](pb::GenerateRequest* r) {
         for (int i = 0; i < 100; ++i) r->add_input()->mutable_tokens()->add_ids(1);
       },
       absl::StatusCode::kInvalidArgument, "input has"},
      {[](pb::GenerateRequest* r) { r->add_input()->mutable_audio(); },
       absl::StatusCode::kUnimplemented, "input[1].audio"},
      {[](pb::GenerateRequest* r) { r->add_input()->mutable_time_series(); },
       absl::StatusCode::kUnimplemented, "input[1].time_series"},
      {[](pb::GenerateRequest* r) { r->set_session_id("zz"); }, absl::StatusCode::kInvalidArgument,
       "session_id must be 32 hex digits"},
      {[](pb::GenerateRequest* r) { r->mutable_sampling()->set_min_p(2); },
       absl::StatusCode::kInvalidArgument, "sampling.min_p"},
      {[](pb::GenerateRequest* r) { (*r->mutable_sampling()->mutable_logit_bias())[-1] = 1; },
       absl::StatusCode::kInvalidArgument, "sampling.logit_bias"},
      {[](pb::GenerateRequest* r) { r->set_logprobs_top_n(-1); },
       absl::StatusCode::kInvalidArgument, "logprobs_top_n"},
      {[](pb::GenerateRequest* r) { r->mutable_stop()->add_stop_strings(""); },
       absl::StatusCode::kInvalidArgument, "stop.stop_strings[0]"},
      {[](pb::GenerateRequest* r) { r->mutable_timeout(); }, absl::StatusCode::kInvalidArgument,
       "timeout"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    pb::GenerateRequest req;
    req.add_input()->set_text("x");
    cases[i].mutate(&req);
    auto r = ToEngineRequest(req, ctx_, kNoDeadline);
    ASSERT_FALSE(r.ok()) << i;
    EXPECT_EQ(r.status().code(), cases[i].code) << i << ": " << r.status();
    EXPECT_EQ(r.status().message().substr(0, cases[i].message_start.size()), cases[i].message_start)
        << i << ": " << r.status();
  }
}

TEST_F(ConvertTest, ChoicePlanChecksNAndThePrefix) {
  ctx_.max_choices = 4;
  pb::GenerateRequest req;
  req.add_input()->set_text("system");
  req.add_input()->mutable_tokens()->add_ids(5);
  req.add_input()->set_text("question");
  auto plan = ToChoicePlan(req, ctx_);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->n, 1);
  EXPECT_EQ(plan->prefix_parts, 0u);
  req.set_n(4);
  req.set_prefix_parts(2);
  plan = ToChoicePlan(req, ctx_);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->n, 4);
  EXPECT_EQ(plan->prefix_parts, 2u);
  // An empty part has no engine prompt part: the prefix counts the engine's parts, so it covers
  // the same tokens ("system" and [5]), not the question (found by convert_fuzz).
  {
    pb::GenerateRequest with_empty;
    with_empty.add_input()->set_text("");
    *with_empty.add_input() = req.input(0);
    with_empty.add_input()->mutable_tokens();  // no ids
    *with_empty.add_input() = req.input(1);
    *with_empty.add_input() = req.input(2);
    with_empty.set_prefix_parts(4);
    auto p = ToChoicePlan(with_empty, ctx_);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->prefix_parts, 2u);
    auto engine = ToEngineRequest(with_empty, ctx_, kNoDeadline);
    ASSERT_TRUE(engine.ok()) << engine.status();
    ASSERT_EQ(engine->prompt.size(), 3u);
    EXPECT_EQ(engine->prompt[1].tokens, (std::vector<int32_t>{5}));
  }

  struct Case {
    std::function<void(pb::GenerateRequest*)> mutate;
    std::string message_start;
  };
  const std::vector<Case> cases = {
      {[](pb::GenerateRequest* r) { r->set_n(0); }, "n = 0 is outside [1, 4]"},
      {[](pb::GenerateRequest* r) { r->set_n(5); }, "n = 5 is outside [1, 4]"},
      {[](pb::GenerateRequest* r) {
         r->set_n(2);
         r->set_session_id(std::string(32, 'a'));
       },
       "n must be 1 with a session_id"},
      {[](pb::GenerateRequest* r) { r->set_prefix_parts(3); }, "prefix_parts = 3 must leave"},
      {[](pb::GenerateRequest* r) { r->set_prefix_parts(-2); }, "prefix_parts = -2 must leave"},
      {[](pb::GenerateRequest* r) {
         r->mutable_input(1)->mutable_image()->set_data("x");
         r->set_prefix_parts(2);
       },
       "prefix_parts = 2 covers input[1], which is not a text or token part"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    pb::GenerateRequest bad = req;
    bad.clear_n();
    bad.clear_prefix_parts();
    cases[i].mutate(&bad);
    auto r = ToChoicePlan(bad, ctx_);
    ASSERT_FALSE(r.ok()) << i;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << i;
    EXPECT_EQ(r.status().message().substr(0, cases[i].message_start.size()), cases[i].message_start)
        << i << ": " << r.status();
  }
  // With a session, n = 1 is fine.
  req.set_n(1);
  req.set_session_id(std::string(32, 'a'));
  EXPECT_TRUE(ToChoicePlan(req, ctx_).ok());
}

TEST_F(ConvertTest, DeadlineIsTheSoonerOfTimeoutAndGrpcDeadline) {
  pb::GenerateRequest req;
  req.add_input()->set_text("x");
  req.mutable_timeout()->set_seconds(10);
  const absl::Time before = absl::Now();
  auto r = ToEngineRequest(req, ctx_, kNoDeadline);
  ASSERT_TRUE(r.ok());
  EXPECT_GE(r->deadline, before + absl::Seconds(10));
  EXPECT_LE(r->deadline, absl::Now() + absl::Seconds(10));
  const auto soon = std::chrono::system_clock::now() + std::chrono::seconds(1);
  r = ToEngineRequest(req, ctx_, soon);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->deadline, absl::FromChrono(soon));
}

TEST_F(ConvertTest, MaxTokensIsCappedAndDefaultedByTheServer) {
  pb::GenerateRequest req;
  req.add_input()->set_text("hi");
  EXPECT_EQ(ToEngineRequest(req, ctx_, kNoDeadline)->stop.max_tokens, 256);  // engine default
  ctx_.max_tokens_limit = 100;
  ctx_.default_max_tokens = 40;
  EXPECT_EQ(ToEngineRequest(req, ctx_, kNoDeadline)->stop.max_tokens, 40);
  req.mutable_stop()->set_max_tokens(100);
  EXPECT_EQ(ToEngineRequest(req, ctx_, kNoDeadline)->stop.max_tokens, 100);
  req.mutable_stop()->set_max_tokens(101);
  absl::Status st = ToEngineRequest(req, ctx_, kNoDeadline).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("stop.max_tokens = 101"), std::string::npos) << st;
  EXPECT_NE(st.message().find("max-tokens-limit"), std::string::npos) << st;
  pb::ChatRequest turn;
  turn.set_text("hi");
  SessionId sid;
  EXPECT_EQ(ToEngineChatTurn(turn, sid, ctx_, kNoDeadline)->stop.max_tokens, 40);
  turn.mutable_stop()->set_max_tokens(500);
  EXPECT_EQ(ToEngineChatTurn(turn, sid, ctx_, kNoDeadline).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ConvertTest, DefaultTimeoutAppliesOnlyWhenTheClientSetNoDeadline) {
  ctx_.default_timeout = absl::Seconds(10);
  pb::GenerateRequest req;
  req.add_input()->set_text("hi");
  const absl::Time t0 = absl::Now();
  absl::Time d = ToEngineRequest(req, ctx_, kNoDeadline)->deadline;
  EXPECT_GE(d, t0 + absl::Seconds(10));
  EXPECT_LE(d, absl::Now() + absl::Seconds(10));
  // A gRPC deadline is the client's own: no default on top.
  const auto grpc_deadline = std::chrono::system_clock::now() + std::chrono::hours(1);
  d = ToEngineRequest(req, ctx_, grpc_deadline)->deadline;
  EXPECT_EQ(d, absl::FromChrono(grpc_deadline));
  // As is the request's timeout.
  req.mutable_timeout()->set_seconds(100);
  d = ToEngineRequest(req, ctx_, kNoDeadline)->deadline;
  EXPECT_GE(d, t0 + absl::Seconds(100));
}

TEST_F(ConvertTest, ChatTurnAppliesTheTemplateStopsAtTurnEndAndBansEndOfText) {
  pb::ChatRequest req;
  req.set_text("hi");
  const SessionId sid = SessionId::Random();
  auto r = ToEngineChatTurn(req, sid, ctx_, kNoDeadline);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->prompt[0].tokens, tok_->Encode("<hi>"));
  EXPECT_EQ(r->session, sid);
  EXPECT_EQ(r->stop.stop_token_ids, (std::vector<int32_t>{24}));
  EXPECT_EQ(r->sampling.banned_tokens.back(), 0);
  req.set_raw(true);
  r = ToEngineChatTurn(req, sid, ctx_, kNoDeadline);
  EXPECT_EQ(r->prompt[0].tokens, tok_->Encode("hi"));
  req.set_text("");
  EXPECT_EQ(ToEngineChatTurn(req, sid, ctx_, kNoDeadline).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ConvertTest, ChatTurnTooLongNamesTheTextField) {
  pb::ChatRequest req;
  req.set_text(std::string(200, 'x') + " y z");
  ctx_.max_prompt_tokens = 3;
  auto r = ToEngineChatTurn(req, SessionId::Random(), ctx_, kNoDeadline);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  // ChatRequest has no `input`: the error names the field the client sent.
  EXPECT_EQ(FieldOf(r.status()), "text");
  EXPECT_TRUE(absl::StartsWith(r.status().message(), "text has ")) << r.status();
}

TEST_F(ConvertTest, BadSessionIdIsQuotedAsValidUtf8) {
  // 63 bytes, then a 3-byte character across the 64-byte quoting limit.
  const std::string id = std::string(63, 'g') + "\xe2\x82\xac" + "tail";
  auto r = ParseSessionId(id, "session_id");
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FieldOf(r.status()), "session_id");
  EXPECT_TRUE(IsValidUtf8(std::string(r.status().message()))) << r.status();
  EXPECT_NE(r.status().message().find(std::string(63, 'g') + "'"), absl::string_view::npos);
}

TEST_F(ConvertTest, BansThatLeaveNoTokenWithTheServersOwnAreRefusedNamingTheField) {
  // The 256 single bytes (ids 1..256) on a 260-row model: ids 257..259 have no text.
  std::string vocab;
  for (int b = 0; b < 256; ++b) vocab += absl::StrFormat("%d b'\\x%02x' 1\n", b + 1, b);
  auto small = Tokenizer::LoadFromString(vocab);
  ASSERT_TRUE(small.ok()) << small.status();
  TranslationContext ctx = ctx_;
  ctx.tokenizer = small->get();
  ctx.model_vocab = 260;
  // Every id with text banned: only the ids without bytes remain, and the server bans those.
  pb::GenerateRequest req;
  req.add_input()->set_text("AB");
  for (int32_t id = 0; id < 257; ++id) req.mutable_sampling()->add_banned_token_ids(id);
  auto r = ToEngineRequest(req, ctx, kNoDeadline);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FieldOf(r.status()), "sampling.banned_token_ids");
  // One text token left: fine, and the engine accepts what it gets.
  req.mutable_sampling()->mutable_banned_token_ids()->RemoveLast();
  r = ToEngineRequest(req, ctx, kNoDeadline);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->sampling.Validate(ctx.model_vocab).ok());
  // A chat turn also bans 0: leaving only 0 is refused there.
  pb::ChatRequest chat;
  chat.set_text("AB");
  for (int32_t id = 1; id < 257; ++id) chat.mutable_sampling()->add_banned_token_ids(id);
  auto c = ToEngineChatTurn(chat, SessionId::Random(), ctx, kNoDeadline);
  ASSERT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FieldOf(c.status()), "sampling.banned_token_ids");
}

TEST_F(ConvertTest, BansAtTheEnginesBoundWithTheServersOwnAreRefusedNamingTheField) {
  // The engine bounds the list (SamplerConfig::kMaxBannedTokens); the server's own bans (the ids
  // past the World vocabulary) count too, so a full client list is refused here, not at
  // scheduling.
  pb::GenerateRequest req;
  req.add_input()->set_text("hi");
  for (int32_t id = 1; id <= SamplerConfig::kMaxBannedTokens; ++id) {
    req.mutable_sampling()->add_banned_token_ids(id);
  }
  auto r = ToEngineRequest(req, ctx_, kNoDeadline);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FieldOf(r.status()), "sampling.banned_token_ids");
  // Room for the server's own: accepted, and the engine accepts it as is.
  const int server_bans = ctx_.model_vocab - tok_->vocab_size();
  for (int i = 0; i < server_bans; ++i)
    req.mutable_sampling()->mutable_banned_token_ids()->RemoveLast();
  r = ToEngineRequest(req, ctx_, kNoDeadline);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->sampling.Validate(ctx_.model_vocab).ok());
}

TEST_F(ConvertTest, TokenEventsCoalesceIntoOneChunk) {
  pb::TokenChunk chunk;
  TokenEvent a{{5, 6}, "ab", {}};
  TokenEvent b{{7}, "c", {SampleResult{-0.5f, {{7, -0.5f}, {8, -1.0f}}}}};
  const size_t bytes = AppendTokenEvent(a, &chunk) + AppendTokenEvent(b, &chunk);
  EXPECT_EQ(chunk.text(), "abc");
  EXPECT_EQ(chunk.token_ids_size(), 3);
  ASSERT_EQ(chunk.logprobs_size(), 1);
  EXPECT_EQ(chunk.logprobs(0).token_id(), 7);
  EXPECT_EQ(chunk.logprobs(0).top_size(), 2);
  EXPECT_EQ(bytes, 3u + 5 * 3 + 10 * 3);
}

TEST_F(ConvertTest, FinishEventsMapToReasonsStatusesAndUsage) {
  FinishEvent e;
  e.reason = EndReason::kStopString;
  e.prompt_tokens = 4;
  e.generated_tokens = 9;
  e.time_to_first_token = absl::Milliseconds(1500);
  e.total_time = absl::Seconds(2);
  EXPECT_EQ(ToProto(e.reason), pb::FINISH_REASON_STOP_STRING);
  EXPECT_TRUE(RpcStatusOf(e, false).ok());
  pb::Usage u;
  FillUsage(e, &u);
  EXPECT_EQ(u.prompt_tokens(), 4);
  EXPECT_EQ(u.generated_tokens(), 9);
  EXPECT_EQ(u.time_to_first_token().seconds(), 1);
  EXPECT_EQ(u.time_to_first_token().nanos(), 500000000);
  e.time_to_first_token = absl::InfiniteDuration();
  pb::Usage none;
  FillUsage(e, &none);
  EXPECT_FALSE(none.has_time_to_first_token());

  e.reason = EndReason::kDeadline;
  EXPECT_TRUE(RpcStatusOf(e, false).ok());  // the request's own timeout: a normal end
  EXPECT_EQ(RpcStatusOf(e, true).code(), absl::StatusCode::kDeadlineExceeded);
  e.reason = EndReason::kCancelled;
  EXPECT_EQ(RpcStatusOf(e, false).code(), absl::StatusCode::kCancelled);
  e.reason = EndReason::kError;
  EXPECT_EQ(RpcStatusOf(e, false).code(), absl::StatusCode::kInternal);
  e.status = absl::ResourceExhaustedError("x");
  EXPECT_EQ(RpcStatusOf(e, false).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(StreamOverflowError(4096).code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(ConvertTest, AudioPartsWaitForTheEncoderNamedByTheirField) {
  pb::GenerateRequest req;
  req.add_input()->mutable_audio()->set_data("clip bytes");
  req.add_input()->set_text("x");
  std::vector<PendingMedia> media;
  // Without an audio encoder: UNIMPLEMENTED, naming the part.
  auto r = ToEngineRequest(req, ctx_, kNoDeadline, &media);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kUnimplemented) << r.status();
  EXPECT_EQ(FieldOf(r.status()), "input[0].audio");
  ctx_.audio = AudioTranslation{/*max_clips=*/2, /*max_bytes=*/16};
  r = ToEngineRequest(req, ctx_, kNoDeadline, &media);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(media.size(), 1u);
  EXPECT_EQ(media[0].kind, encoders::kAudioKind);
  EXPECT_EQ(media[0].field, "input[0].audio");
  EXPECT_EQ(media[0].part, 0u);
  EXPECT_EQ(*media[0].bytes, "clip bytes");
  ASSERT_EQ(r->prompt.size(), 2u);
  EXPECT_TRUE(r->prompt[0].tokens.empty() && r->prompt[0].embeddings.empty());  // filled later
  // Limits, each naming the part and the flag.
  req.mutable_input(0)->mutable_audio()->set_data(std::string(17, 'x'));
  media.clear();
  r = ToEngineRequest(req, ctx_, kNoDeadline, &media);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FieldOf(r.status()), "input[0].audio");
  EXPECT_TRUE(absl::StrContains(r.status().message(), "max-audio-bytes")) << r.status();
  req.mutable_input(0)->mutable_audio()->set_data("");
  r = ToEngineRequest(req, ctx_, kNoDeadline, &media);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  req.mutable_input(0)->mutable_audio()->set_data("a");
  for (int i = 0; i < 2; ++i) req.add_input()->mutable_audio()->set_data("b");
  media.clear();
  r = ToEngineRequest(req, ctx_, kNoDeadline, &media);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FieldOf(r.status()), "input[3].audio");
  EXPECT_TRUE(absl::StrContains(r.status().message(), "max-audio-per-request")) << r.status();
}

// A series part counts its rows against max_prompt_tokens before it is encoded: a patch per row
// with the WaveNet, a patch per row and channel with the Timer (rows_per_patch).
TEST_F(ConvertTest, SeriesPartsCountTheirRowsAgainstThePromptBound) {
  pb::GenerateRequest req;
  pb::TimeSeriesInput* ts = req.add_input()->mutable_time_series();
  for (int i = 0; i < 40; ++i) ts->add_values(static_cast<float>(i % 7));
  ts->set_channels(2);  // 20 steps: 5 patches of 4
  req.add_input()->set_text("x");
  ctx_.max_prompt_tokens = 10;
  SeriesTranslation st;
  st.channels = 2;
  st.patch = 4;
  st.max_length = 64;
  ctx_.series = st;
  std::vector<PendingMedia> media;
  auto r = ToEngineRequest(req, ctx_, kNoDeadline, &media);  // 5 rows + 1 token
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(media.size(), 1u);
  EXPECT_EQ(media[0].kind, encoders::kSeriesKind);
  ctx_.series->rows_per_patch = 2;  // 10 rows + 1 token > 10
  media.clear();
  r = ToEngineRequest(req, ctx_, kNoDeadline, &media);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "has 11 tokens")) << r.status();
}

TEST_F(ConvertTest, ChatTurnClipsGoWhereTheTemplateSaysElseBeforeTheText) {
  ctx_.audio = AudioTranslation{};
  pb::ChatRequest req;
  req.set_text("hi");
  req.add_audio()->set_data("clip");
  std::vector<PendingMedia> media;
  auto r = ToEngineChatTurn(req, SessionId::Random(), ctx_, kNoDeadline, &media);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(media.size(), 1u);
  EXPECT_EQ(media[0].field, "audio[0]");
  EXPECT_EQ(media[0].part, 0u);  // no marker: the clip first
  EXPECT_EQ(r->prompt.back().tokens, tok_->Encode("<hi>"));
  ctx_.chat_template = "A{audio}B{text}";
  media.clear();
  r = ToEngineChatTurn(req, SessionId::Random(), ctx_, kNoDeadline, &media);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->prompt.size(), 3u);
  EXPECT_EQ(r->prompt[0].tokens, tok_->Encode("A"));
  EXPECT_EQ(media.at(0).part, 1u);
  EXPECT_EQ(r->prompt[2].tokens, tok_->Encode("Bhi"));
  // A bad clip of a chat turn names the turn's field.
  req.mutable_audio(0)->set_data("");
  r = ToEngineChatTurn(req, SessionId::Random(), ctx_, kNoDeadline, &media);
  EXPECT_EQ(FieldOf(r.status()), "audio[0]");
}

}  // namespace
}  // namespace modrwkv::server
