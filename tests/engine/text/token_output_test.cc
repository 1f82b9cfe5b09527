// The per-sequence output protocol: stop tokens (not emitted, beat the length limit), max_tokens,
// stop strings split across tokens, and the UTF-8-safe flush at the end.
#include "engine/text/token_output.h"

#include "gtest/gtest.h"
#include "tests/test_paths.h"

namespace modrwkv {
namespace {

class TokenOutputTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    tok_ = Tokenizer::LoadFile(testing_paths::WorldVocab()).value().release();
  }
  static void TearDownTestSuite() { delete tok_; }

  // Pushes `tokens` until a stop; returns the text and the reason.
  static std::pair<std::string, StopReason> Run(const StopConditions& stop,
                                                const std::vector<int32_t>& tokens,
                                                int* emitted = nullptr) {
    TokenOutput out(tok_, stop, 65536);
    std::string text;
    int n = 0;
    for (int32_t t : tokens) {
      TokenOutput::Result r = out.Push(t);
      text += r.text;
      n += r.token_emitted;
      if (r.stop != StopReason::kNone) {
        if (emitted) *emitted = n;
        return {text, r.stop};
      }
    }
    if (emitted) *emitted = n;
    return {text, StopReason::kNone};
  }

  static std::vector<int32_t> Ids(const std::string& s) { return tok_->Encode(s); }
  static Tokenizer* tok_;
};
Tokenizer* TokenOutputTest::tok_ = nullptr;

TEST_F(TokenOutputTest, StopTokenIsNotEmittedAndBeatsTheLimit) {
  StopConditions c;
  c.max_tokens = 3;
  c.stop_token_ids = {0, 65535, 261};
  std::vector<int32_t> ids = Ids("ab");
  ids.push_back(0);
  int emitted = 0;
  auto [text, why] = Run(c, ids, &emitted);
  EXPECT_EQ(why, StopReason::kStopToken);
  EXPECT_EQ(text, "ab");
  EXPECT_EQ(emitted, static_cast<int>(ids.size()) - 1);
  c.max_tokens = static_cast<int>(ids.size());  // the stop token is also the last allowed one
  EXPECT_EQ(Run(c, ids).second, StopReason::kStopToken);
}

TEST_F(TokenOutputTest, StopTokenOrLimitPerToken) {
  StopConditions c;
  c.stop_token_ids = {0, 7};
  c.max_tokens = 3;
  TokenOutput out(tok_, c, 65536);
  EXPECT_EQ(out.Push(5).stop, StopReason::kNone);
  EXPECT_EQ(out.Push(7).stop, StopReason::kStopToken);
  TokenOutput at_limit(tok_, c, 65536);
  EXPECT_EQ(at_limit.Push(5).stop, StopReason::kNone);
  EXPECT_EQ(at_limit.Push(5).stop, StopReason::kNone);
  EXPECT_EQ(at_limit.Push(0).stop, StopReason::kStopToken);  // a stop token beats the limit
  TokenOutput at_limit2(tok_, c, 65536);
  at_limit2.Push(5);
  at_limit2.Push(5);
  EXPECT_EQ(at_limit2.Push(5).stop, StopReason::kMaxTokens);
  c.max_tokens = 1;
  EXPECT_EQ(TokenOutput(tok_, c, 65536).Push(5).stop, StopReason::kMaxTokens);
}

TEST_F(TokenOutputTest, MaxTokensEndsTheLoopAfterExactlyThatMany) {
  StopConditions c;
  c.max_tokens = 4;
  TokenOutput out(tok_, c, 65536);
  StopReason reason = StopReason::kNone;
  while (reason == StopReason::kNone) reason = out.Push(5).stop;
  EXPECT_EQ(reason, StopReason::kMaxTokens);
  EXPECT_EQ(out.generated(), 4);
}

TEST_F(TokenOutputTest, LengthLimitFlushesHeldBackText) {
  StopConditions c;
  c.max_tokens = 2;
  c.stop_strings = {"xyz"};
  // "x" might begin the stop string, so it is held back until the stream ends.
  std::vector<int32_t> ids = {tok_->Encode("a")[0], tok_->Encode("x")[0]};
  auto [text, why] = Run(c, ids);
  EXPECT_EQ(why, StopReason::kMaxTokens);
  EXPECT_EQ(text, "ax");
}

TEST_F(TokenOutputTest, StopStringAcrossTokensCutsTheText) {
  StopConditions c;
  c.max_tokens = 100;
  c.stop_strings = {"\n\nUser"};
  std::vector<int32_t> ids;
  for (const char* piece : {"Hello", "\n", "\n", "Us", "er", " more"}) {
    for (int32_t t : Ids(piece)) ids.push_back(t);
  }
  auto [text, why] = Run(c, ids);
  EXPECT_EQ(why, StopReason::kStopString);
  EXPECT_EQ(text, "Hello");
}

TEST_F(TokenOutputTest, SplitUtf8CharacterIsHeldUntilComplete) {
  StopConditions c;
  c.max_tokens = 100;
  const std::string snow = "\xE2\x98\x83";  // U+2603, three single-byte tokens (id = byte + 1)
  TokenOutput out(tok_, c, 65536);
  EXPECT_EQ(out.Push(0xE2 + 1).text, "");
  EXPECT_EQ(out.Push(0x98 + 1).text, "");
  EXPECT_EQ(out.Push(0x83 + 1).text, snow);
}

TEST_F(TokenOutputTest, AThousandStopTokensCostNoMoreThanOne) {
  StopConditions c;
  c.max_tokens = 1 << 20;
  for (int i = 0; i < StopConditions::kMaxStopTokenIds; ++i) c.stop_token_ids.push_back(60000 + i);
  ASSERT_TRUE(c.Validate(65536).ok());
  c.stop_token_ids.push_back(1);
  EXPECT_FALSE(c.Validate(65536).ok());  // over the cap, named
  EXPECT_EQ(c.Validate(65536).message().find("stop_token_ids has 1025 entries"), 0u);
  c.stop_token_ids.pop_back();
  TokenOutput out(tok_, c, 65536);
  EXPECT_EQ(out.Push(60999).stop, StopReason::kStopToken);
  TokenOutput out2(tok_, c, 65536);
  EXPECT_EQ(out2.Push(59999).stop, StopReason::kNone);
}

}  // namespace
}  // namespace modrwkv
