// Tests for engine/stop_conditions.cc: stop tokens, max_tokens and streamed stop strings.
#include "engine/text/stop_conditions.h"

#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace modrwkv {
namespace {

using ::testing::HasSubstr;

// Feeds `pieces` and returns everything emitted (including Flush() when no stop matched).
struct Streamed {
  std::string text;
  bool stopped = false;
  int stop_index = -1;
};
Streamed Stream(const std::vector<std::string>& stops, const std::vector<std::string>& pieces) {
  StopMatcher m(stops);
  Streamed out;
  for (const std::string& piece : pieces) {
    StopMatcher::Result r = m.Feed(piece);
    out.text += r.emit;
    if (r.stopped) {
      out.stopped = true;
      out.stop_index = r.stop_index;
      return out;
    }
  }
  out.text += m.Flush();
  return out;
}

TEST(StopMatcherTest, StopStringSpanningChunks) {
  StopMatcher m({"\nUser:"});
  StopMatcher::Result r = m.Feed("Hel");
  EXPECT_EQ(r.emit, "Hel");
  EXPECT_FALSE(r.stopped);
  r = m.Feed("lo\nUs");
  EXPECT_EQ(r.emit, "lo");  // "\nUs" could still become "\nUser:"
  EXPECT_EQ(m.pending_bytes(), 3u);
  r = m.Feed("er:");
  EXPECT_EQ(r.emit, "");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.stop_index, 0);
  EXPECT_TRUE(m.stopped());
  // After the stop nothing more comes out.
  r = m.Feed("more text");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.emit, "");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopMatcherTest, TextAfterTheStopStringIsDropped) {
  Streamed s = Stream({"\nUser:"}, {"Hi there", "\nUser: next", " turn"});
  EXPECT_EQ(s.text, "Hi there");
  EXPECT_TRUE(s.stopped);
}

TEST(StopMatcherTest, PartialMatchThatFailsIsReleased) {
  StopMatcher m({"\nUser:"});
  EXPECT_EQ(m.Feed("Hi\nUs").emit, "Hi");
  EXPECT_EQ(m.Feed("e").emit, "");
  StopMatcher::Result r = m.Feed("d it");
  EXPECT_EQ(r.emit, "\nUsed it");
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(m.pending_bytes(), 0u);
}

TEST(StopMatcherTest, HeldBackBytesAreReleasedAtTheEnd) {
  StopMatcher m({"\nUser:"});
  EXPECT_EQ(m.Feed("abc\nUs").emit, "abc");
  EXPECT_EQ(m.Flush(), "\nUs");
  EXPECT_FALSE(m.stopped());
}

TEST(StopMatcherTest, OverlappingPrefixes) {
  // KMP fallback: "aaab" contains "aab" starting at 1.
  EXPECT_EQ(Stream({"aab"}, {"a", "a", "a", "b", "c"}).text, "a");
  EXPECT_EQ(Stream({"abab"}, {"aba", "bab"}).text, "");
  EXPECT_EQ(Stream({"abac"}, {"ab", "ab", "ac"}).text, "ab");
}

TEST(StopMatcherTest, MultipleStopStrings) {
  Streamed s = Stream({"###", "\n\n", "END"}, {"some te", "xt EN", "D more"});
  EXPECT_EQ(s.text, "some text ");
  EXPECT_EQ(s.stop_index, 2);
  s = Stream({"###", "\n\n", "END"}, {"a\n", "\nb"});
  EXPECT_EQ(s.text, "a");
  EXPECT_EQ(s.stop_index, 1);
  // The first stop string to complete wins, even if another one started earlier.
  s = Stream({"abcd", "bc"}, {"xabcd"});
  EXPECT_EQ(s.text, "xa");
  EXPECT_EQ(s.stop_index, 1);
  // Several complete at the same byte: the longest one is removed.
  s = Stream({":", "User:"}, {"Hi User: x"});
  EXPECT_EQ(s.text, "Hi ");
  EXPECT_EQ(s.stop_index, 1);
  // Held back as a prefix of one string, released when no string can match.
  s = Stream({"<|end|>", "<|im_end|>"}, {"a <|e", "nx"});
  EXPECT_EQ(s.text, "a <|enx");
  EXPECT_FALSE(s.stopped);
}

TEST(StopMatcherTest, StopAtTheVeryFirstBytes) {
  Streamed s = Stream({"Hello"}, {"Hello world"});
  EXPECT_TRUE(s.stopped);
  EXPECT_EQ(s.text, "");
  s = Stream({"Hello"}, {"H", "e", "l", "l", "o", "!"});
  EXPECT_TRUE(s.stopped);
  EXPECT_EQ(s.text, "");
}

TEST(StopMatcherTest, NoStopStringsEmitsEverythingAtOnce) {
  StopMatcher m({});
  EXPECT_EQ(m.Feed("abc").emit, "abc");
  EXPECT_EQ(m.pending_bytes(), 0u);
  StopMatcher empty({""});  // ignored rather than matching everywhere
  EXPECT_EQ(empty.Feed("abc").emit, "abc");
}

TEST(StopMatcherTest, MultiByteCharactersAreNotSplit) {
  // "\xe2\x80\x94" is an em dash; the stop string starts with the same lead byte.
  StopMatcher m(
      {"\xe2\x80\x9c"
       "END"});
  StopMatcher::Result r = m.Feed("a\xe2\x80");
  EXPECT_EQ(r.emit, "a");
  r = m.Feed("\x94");
  EXPECT_EQ(r.emit, "\xe2\x80\x94");
}

// Chunking must not change the result: random texts, random cuts, compared with a plain search
// for the first byte at which a stop string ends.
TEST(StopMatcherTest, ChunkingDoesNotChangeTheResult) {
  const std::vector<std::string> stops = {"aab", "ba\n", "\n\n", "abab"};
  std::mt19937 gen(5);
  const std::string alphabet = "ab\nc";
  for (int trial = 0; trial < 2000; ++trial) {
    std::string text;
    const int len = gen() % 30;
    for (int i = 0; i < len; ++i) text += alphabet[gen() % alphabet.size()];
    // Reference.
    Streamed want{text, false, -1};
    for (size_t end = 1; end <= text.size() && !want.stopped; ++end) {
      size_t best_len = 0;
      for (size_t k = 0; k < stops.size(); ++k) {
        const std::string& s = stops[k];
        if (s.size() <= end && s.size() > best_len &&
            text.compare(end - s.size(), s.size(), s) == 0) {
          best_len = s.size();
          want = {text.substr(0, end - s.size()), true, static_cast<int>(k)};
        }
      }
    }
    std::vector<std::string> pieces;
    for (size_t i = 0; i < text.size();) {
      const size_t n = 1 + gen() % 4;
      pieces.push_back(text.substr(i, n));
      i += n;
    }
    Streamed got = Stream(stops, pieces);
    ASSERT_EQ(got.text, want.text) << "text " << testing::PrintToString(text);
    ASSERT_EQ(got.stopped, want.stopped) << testing::PrintToString(text);
    ASSERT_EQ(got.stop_index, want.stop_index) << testing::PrintToString(text);
  }
}

TEST(StopConditionsTest, ValidateNamesTheField) {
  EXPECT_TRUE(StopConditions{}.Validate(100).ok());
  StopConditions c;
  c.max_tokens = 0;
  EXPECT_THAT(std::string(c.Validate(100).message()), HasSubstr("max_tokens must be >= 1, got 0"));
  c = {};
  c.stop_token_ids = {3, 100};
  EXPECT_THAT(std::string(c.Validate(100).message()),
              HasSubstr("stop_token_ids[1] = 100 is outside the vocabulary [0, 100)"));
  c = {};
  c.stop_strings = {"a", ""};
  EXPECT_THAT(std::string(c.Validate(100).message()), HasSubstr("stop_strings[1] is empty"));
  c = {};
  c.stop_strings.assign(17, "x");
  EXPECT_THAT(std::string(c.Validate(100).message()), HasSubstr("stop_strings has 17 entries"));
  c = {};
  c.stop_strings = {std::string(257, 'x')};
  EXPECT_THAT(std::string(c.Validate(100).message()), HasSubstr("stop_strings[0] is 257 bytes"));
  EXPECT_EQ(c.Validate(100).code(), absl::StatusCode::kInvalidArgument);
}

TEST(StopConditionsTest, ReasonNames) {
  EXPECT_EQ(StopReasonName(StopReason::kStopToken), "stop_token");
  EXPECT_EQ(StopReasonName(StopReason::kStopString), "stop_string");
  EXPECT_EQ(StopReasonName(StopReason::kMaxTokens), "max_tokens");
  EXPECT_EQ(StopReasonName(StopReason::kNone), "none");
}

}  // namespace
}  // namespace modrwkv
