// Tests for engine/utf8.cc: validation, code point encoding and U+FFFD substitution of maximal
// subparts, checked against CPython's bytes.decode("utf-8", "replace") golden output.
#include "engine/text/utf8.h"

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace modrwkv {
namespace {

const std::string kFffd(kUtf8Replacement);

TEST(Utf8Test, IsValidUtf8) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii \x01\x7f"));
  EXPECT_TRUE(IsValidUtf8("\xC3\xA9 \xE4\xB8\xAD \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF"));
  EXPECT_FALSE(IsValidUtf8("\x80"));              // lone continuation
  EXPECT_FALSE(IsValidUtf8("\xC3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xE0\x9F\xBF"));      // overlong 3-byte
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate U+D800
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // U+110000
  EXPECT_FALSE(IsValidUtf8("\xF5\x80\x80\x80"));  // never a lead byte
  EXPECT_FALSE(IsValidUtf8(std::string("ok\xFF", 3)));
}

TEST(Utf8Test, AppendCodepointUtf8) {
  std::string s;
  EXPECT_TRUE(AppendCodepointUtf8(0x41, &s));
  EXPECT_TRUE(AppendCodepointUtf8(0xE9, &s));
  EXPECT_TRUE(AppendCodepointUtf8(0x4E2D, &s));
  EXPECT_TRUE(AppendCodepointUtf8(0x1F600, &s));
  EXPECT_EQ(s, "A\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80");
  EXPECT_FALSE(AppendCodepointUtf8(0xD800, &s));
  EXPECT_FALSE(AppendCodepointUtf8(0xDFFF, &s));
  EXPECT_FALSE(AppendCodepointUtf8(0x110000, &s));
  EXPECT_EQ(s.size(), 10u);  // failures append nothing
}

// The example of Unicode 15 §3.9 Table 3-8 (and the WHATWG decoder): one U+FFFD per maximal
// subpart.
TEST(Utf8Test, MaximalSubpartsTable3_8) {
  const std::string in = "\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64";
  EXPECT_EQ(ReplaceInvalidUtf8(in),
            "a" + kFffd + kFffd + kFffd + "b" + kFffd + "c" + kFffd + kFffd + "d");
}

TEST(Utf8Test, ReplacementCases) {
  EXPECT_EQ(ReplaceInvalidUtf8("\xF0\x9F\x98"), kFffd);  // truncated 4-byte: one
  EXPECT_EQ(ReplaceInvalidUtf8("\xF0\x9F\x98\x41"), kFffd + "A");
  EXPECT_EQ(ReplaceInvalidUtf8("\xE0\x80"), kFffd + kFffd);              // E0 80 is never valid
  EXPECT_EQ(ReplaceInvalidUtf8("\xED\xA0\x80"), kFffd + kFffd + kFffd);  // surrogate
  EXPECT_EQ(ReplaceInvalidUtf8("\xC3\xA9"), "\xC3\xA9");                 // valid is untouched
  EXPECT_EQ(ReplaceInvalidUtf8(std::string("a\0b", 3)), std::string("a\0b", 3));
}

TEST(Utf8Test, NonFinalHoldsBackOnlyAValidIncompleteSuffix) {
  std::string out;
  EXPECT_EQ(AppendUtf8Replacing("ab\xF0\x9F", /*final=*/false, &out), 2u);
  EXPECT_EQ(out, "ab");
  out.clear();
  // F0 41: can never complete, so it is not held back.
  EXPECT_EQ(AppendUtf8Replacing("\xF0\x41", /*final=*/false, &out), 2u);
  EXPECT_EQ(out, kFffd + "A");
  out.clear();
  EXPECT_EQ(AppendUtf8Replacing("\xFF", /*final=*/false, &out), 1u);
  EXPECT_EQ(out, kFffd);
  out.clear();
  EXPECT_EQ(AppendUtf8Replacing("x\xE4\xB8", /*final=*/true, &out), 3u);
  EXPECT_EQ(out, "x" + kFffd);
}

// Golden cases from tools/golden/gen_tokenizer_fixtures.py: CPython's "replace" error handler.
TEST(Utf8Test, MatchesCPythonReplaceGolden) {
  const std::string path = MODRWKV_GOLDEN_DIR "/tokenizer/utf8_replace.txt";
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in) << "missing golden file " << path
                  << " (regenerate with tools/golden/gen_tokenizer_fixtures.py)";
  std::string line;
  int cases = 0, failures = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f = absl::StrSplit(line, '\t');
    ASSERT_EQ(f.size(), 3u) << line;
    std::string input, expected;
    ASSERT_TRUE(absl::Base64Unescape(f[1], &input)) << f[0];
    ASSERT_TRUE(absl::Base64Unescape(f[2], &expected)) << f[0];
    ++cases;
    const std::string got = ReplaceInvalidUtf8(input);
    EXPECT_TRUE(IsValidUtf8(got)) << f[0];
    if (got != expected && ++failures <= 10) {
      ADD_FAILURE() << f[0] << ": input " << absl::CHexEscape(input) << " gave "
                    << absl::CHexEscape(got) << ", CPython gives " << absl::CHexEscape(expected);
    }
  }
  EXPECT_EQ(failures, 0);
  EXPECT_GE(cases, 2000) << "golden file looks truncated";
}

}  // namespace
}  // namespace modrwkv
