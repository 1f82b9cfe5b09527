// The stream outbox: coalescing, one write in flight, the slow-reader cut-off, Finish once and
// only when the owner allows it, and a gone client.
#include "server/stream_outbox.h"

#include "gtest/gtest.h"

namespace modrwkv::server {
namespace {

namespace pb = ::modrwkv::v1;
using Outbox = StreamOutbox<pb::ChatResponse>;
using Step = Outbox::Step;

TokenEvent Tokens(std::vector<int32_t> ids, std::string text) {
  TokenEvent e;
  e.tokens = std::move(ids);
  e.text = std::move(text);
  return e;
}

pb::ChatResponse TurnEnd() {
  pb::ChatResponse m;
  m.mutable_turn_end()->set_finish_reason(pb::FINISH_REASON_LENGTH);
  return m;
}

TEST(StreamOutboxTest, TokensCoalesceWhileAWriteIsInFlight) {
  Outbox box(1 << 20);
  EXPECT_FALSE(box.AppendTokens(Tokens({1}, "a")));
  Step s = box.Next(true);
  ASSERT_EQ(s.kind, Step::kWrite);
  EXPECT_EQ(box.message()->chunk().text(), "a");
  // While it is written, more tokens pile up into one chunk; nothing else is started.
  EXPECT_FALSE(box.AppendTokens(Tokens({2}, "b")));
  EXPECT_FALSE(box.AppendTokens(Tokens({3}, "c")));
  EXPECT_EQ(box.Next(true).kind, Step::kNone);
  EXPECT_FALSE(box.WriteDone(true));
  s = box.Next(true);
  ASSERT_EQ(s.kind, Step::kWrite);
  EXPECT_EQ(box.message()->chunk().text(), "bc");
  EXPECT_EQ(box.message()->chunk().token_ids_size(), 2);
}

// Several choices (GenerateRequest.n): each coalesces into its own chunk, the chunks take
// turns, and a message that ends one choice follows that choice's chunk only.
TEST(StreamOutboxTest, ChoicesCoalesceSeparatelyAndTakeTurns) {
  using GenerateOutbox = StreamOutbox<pb::GenerateResponse>;
  GenerateOutbox box(1 << 20);
  box.AppendTokens(Tokens({1}, "a"), 0);
  ASSERT_EQ(box.Next(true).kind, GenerateOutbox::Step::kWrite);  // "a" in flight
  box.AppendTokens(Tokens({2}, "b"), 0);
  box.AppendTokens(Tokens({3}, "x"), 2);
  box.AppendTokens(Tokens({4}, "c"), 0);
  box.AppendTokens(Tokens({5}, "y"), 2);
  pb::GenerateResponse end2;
  end2.mutable_result()->set_choice(2);
  box.PushAfterChoice(2, end2);
  box.WriteDone(true);
  std::vector<std::pair<int, std::string>> written;
  for (GenerateOutbox::Step s = box.Next(true); s.kind == GenerateOutbox::Step::kWrite;
       s = box.Next(true)) {
    const pb::GenerateResponse& m = *box.message();
    written.emplace_back(m.has_chunk() ? m.chunk().choice() : 100 + m.result().choice(),
                         m.has_chunk() ? m.chunk().text() : "");
    box.WriteDone(true);
  }
  EXPECT_EQ(written, (std::vector<std::pair<int, std::string>>{{2, "xy"}, {102, ""}, {0, "bc"}}));
}

TEST(StreamOutboxTest, CompleteMessagesFollowTheOpenChunkInOrder) {
  Outbox box(1 << 20);
  box.AppendTokens(Tokens({1}, "x"));
  box.Push(TurnEnd());
  ASSERT_EQ(box.Next(true).kind, Step::kWrite);
  EXPECT_TRUE(box.message()->has_chunk());
  box.WriteDone(true);
  ASSERT_EQ(box.Next(true).kind, Step::kWrite);
  EXPECT_TRUE(box.message()->has_turn_end());
  box.WriteDone(true);
  EXPECT_EQ(box.Next(true).kind, Step::kNone);  // not ending yet
}

TEST(StreamOutboxTest, FinishesOnceAfterTheLastWriteAndOnlyWhenAllowed) {
  Outbox box(1 << 20);
  box.Push(TurnEnd());
  box.End(grpc::Status::OK);
  box.End(grpc::Status(grpc::StatusCode::INTERNAL, "later"));  // the first status wins
  ASSERT_EQ(box.Next(true).kind, Step::kWrite);
  EXPECT_EQ(box.Next(true).kind, Step::kNone);  // a write is in flight
  box.WriteDone(true);
  EXPECT_EQ(box.Next(/*may_finish=*/false).kind, Step::kNone);  // engine work outstanding
  Step s = box.Next(true);
  ASSERT_EQ(s.kind, Step::kFinish);
  EXPECT_TRUE(s.status.ok());
  EXPECT_EQ(box.Next(true).kind, Step::kNone);  // exactly once
}

TEST(StreamOutboxTest, ASlowReaderIsCutOffOnce) {
  Outbox box(/*backlog_limit_bytes=*/20);
  ASSERT_FALSE(box.AppendTokens(Tokens({1}, "0123456789")));  // 10 + 5 bytes
  EXPECT_TRUE(box.AppendTokens(Tokens({2}, "abcdef")));       // past 20: dropped
  EXPECT_TRUE(box.overflowed());
  EXPECT_FALSE(box.AppendTokens(Tokens({3}, "z")));  // ignored from now on, reported once
  EXPECT_EQ(box.Next(true).kind, Step::kNone);       // nothing left to write
}

TEST(StreamOutboxTest, AGoneClientDropsOutputAndEndsCancelled) {
  Outbox box(1 << 20);
  box.AppendTokens(Tokens({1}, "a"));
  ASSERT_EQ(box.Next(true).kind, Step::kWrite);
  box.AppendTokens(Tokens({2}, "b"));
  box.Push(TurnEnd());
  EXPECT_TRUE(box.WriteDone(false));  // the write failed: the client is gone
  EXPECT_FALSE(box.ClientGone());     // reported once
  box.End(grpc::Status::OK);          // too late: the stream already ends CANCELLED
  EXPECT_FALSE(box.AppendTokens(Tokens({3}, "c")));
  Step s = box.Next(true);
  ASSERT_EQ(s.kind, Step::kFinish);
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::CANCELLED);
}

}  // namespace
}  // namespace modrwkv::server
