// Tests for engine/tokenizer.cc: the world vocab against the official tokenizer's golden output,
// vocab parsing (every error path), decoding and the streaming detokenizer.
#include "engine/text/tokenizer.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/text/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_paths.h"

namespace modrwkv {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string kFffd(kUtf8Replacement);

std::string WorldVocabPath() { return testing_paths::WorldVocab(); }

// Loaded once; the tokenizer is immutable and shared by all tests. Null (with the reason in
// *error) when the vocab is missing: tests then fail loudly instead of skipping.
const Tokenizer* World(std::string* error) {
  static std::string load_error;
  static const Tokenizer* tok = [] {
    const std::string path = WorldVocabPath();
    auto t = Tokenizer::LoadFile(path);
    if (!t.ok()) {
      load_error =
          absl::StrCat("cannot load the world vocab (expected at ", path,
                       " (../shared or assets/), or set MODRWKV_VOCAB): ", t.status().ToString());
      return static_cast<const Tokenizer*>(nullptr);
    }
    return static_cast<const Tokenizer*>(t->release());  // lives for the whole test binary
  }();
  *error = load_error;
  return tok;
}

#define ASSERT_WORLD_TOKENIZER(var)                 \
  std::string var##_error;                          \
  const Tokenizer* var##_ptr = World(&var##_error); \
  ASSERT_NE(var##_ptr, nullptr) << var##_error;     \
  const Tokenizer& var = *var##_ptr

// Ids 1..256 are the single bytes (id = byte + 1), as in the world vocab.
std::string ByteVocab(std::string_view line_end = "\n") {
  std::string v;
  for (int b = 0; b < 256; ++b) {
    absl::StrAppend(&v, absl::StrFormat("%d b'\\x%02x' 1", b + 1, b), std::string(line_end));
  }
  return v;
}

std::vector<int32_t> ByteIds(std::string_view bytes) {
  std::vector<int32_t> ids;
  for (unsigned char c : bytes) ids.push_back(c + 1);
  return ids;
}

std::string StreamAll(const Tokenizer& tok, const std::vector<int32_t>& ids, bool* all_valid) {
  StreamingDetokenizer detok(&tok);
  std::string text;
  *all_valid = true;
  for (int32_t id : ids) {
    std::string delta = detok.Push(id);
    *all_valid = *all_valid && IsValidUtf8(delta);
    text += delta;
  }
  std::string tail = detok.Flush();
  *all_valid = *all_valid && IsValidUtf8(tail);
  return text + tail;
}

// ---- World vocab ----

TEST(TokenizerWorldTest, LoadsTheWholeVocab) {
  ASSERT_WORLD_TOKENIZER(tok);
  EXPECT_EQ(tok.vocab_size(), 65530);  // ids 1..65529
  EXPECT_EQ(tok.num_tokens(), 65529);
  EXPECT_EQ(tok.TokenBytes(1), std::string_view("\0", 1));
  EXPECT_EQ(tok.TokenBytes(256), "\xFF");
  EXPECT_EQ(tok.TokenBytes(257), "\t\t");
  EXPECT_EQ(tok.TokenBytes(0), "");
  EXPECT_EQ(tok.TokenBytes(-5), "");
  EXPECT_EQ(tok.TokenBytes(65530), "");
  EXPECT_EQ(tok.TokenBytes(65529).size(), 128u);
  EXPECT_FALSE(tok.IsValidId(0));
  EXPECT_FALSE(tok.IsValidId(-1));
  EXPECT_TRUE(tok.IsValidId(1));
  EXPECT_TRUE(tok.IsValidId(65529));
  EXPECT_FALSE(tok.IsValidId(65530));
}

TEST(TokenizerWorldTest, ArchitectureExamples) {
  ASSERT_WORLD_TOKENIZER(tok);
  EXPECT_THAT(tok.Encode("User: hi\n\nAssistant:"),
              ElementsAre(24281, 59, 4571, 261, 5585, 41693, 59));
  EXPECT_THAT(tok.Encode("\026User: What is unusual about this image?\027\026Assistant:"),
              ElementsAre(23, 24281, 59, 30031, 4600, 53238, 37598, 32234, 38744, 64, 24, 23, 5585,
                          41693, 59));
  EXPECT_TRUE(tok.Encode("").empty());
}

struct GoldenCase {
  std::string name, input;
  std::vector<int32_t> ids;
};

std::vector<GoldenCase> ReadEncodeGolden() {
  const std::string path = MODRWKV_GOLDEN_DIR "/tokenizer/encode_cases.txt";
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "missing golden file " << path;
  std::vector<GoldenCase> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f = absl::StrSplit(line, '\t');
    if (f.size() != 3) {
      ADD_FAILURE() << "bad golden line: " << line.substr(0, 100);
      continue;
    }
    GoldenCase c;
    c.name = f[0];
    EXPECT_TRUE(absl::Base64Unescape(f[1], &c.input)) << c.name;
    for (absl::string_view id : absl::StrSplit(f[2], ' ', absl::SkipEmpty())) {
      c.ids.push_back(std::stoi(std::string(id)));
    }
    cases.push_back(std::move(c));
  }
  return cases;
}

// Thousands of inputs (prose, code, CJK, emoji, control bytes, invalid UTF-8, long runs, random
// token concatenations) encoded by the official TRIE_TOKENIZER; see tools/golden/.
TEST(TokenizerWorldTest, MatchesOfficialTokenizerGolden) {
  ASSERT_WORLD_TOKENIZER(tok);
  const std::vector<GoldenCase> cases = ReadEncodeGolden();
  ASSERT_GE(cases.size(), 5000u) << "golden file looks truncated";
  int failures = 0;
  for (const GoldenCase& c : cases) {
    const std::vector<int32_t> got = tok.Encode(c.input);
    if (got != c.ids && ++failures <= 10) {
      ADD_FAILURE() << c.name << ": input " << absl::CHexEscape(c.input.substr(0, 200))
                    << "\n  got      " << absl::StrJoin(got, " ") << "\n  official "
                    << absl::StrJoin(c.ids, " ");
    }
    auto decoded = tok.Decode(c.ids);
    ASSERT_TRUE(decoded.ok()) << c.name << ": " << decoded.status();
    EXPECT_EQ(*decoded, c.input) << c.name;
  }
  EXPECT_EQ(failures, 0) << "of " << cases.size() << " cases";
}

// Streaming the golden ids gives valid UTF-8 deltas whose concatenation is the U+FFFD-replaced
// input; one token at a time and, for invalid inputs, one byte token at a time.
TEST(TokenizerWorldTest, StreamingGoldenEqualsReplacedDecode) {
  ASSERT_WORLD_TOKENIZER(tok);
  const std::vector<GoldenCase> cases = ReadEncodeGolden();
  ASSERT_FALSE(cases.empty());
  int invalid_inputs = 0;
  for (const GoldenCase& c : cases) {
    const std::string expected = ReplaceInvalidUtf8(c.input);
    bool valid = false;
    EXPECT_EQ(StreamAll(tok, c.ids, &valid), expected) << c.name;
    EXPECT_TRUE(valid) << c.name;
    if (!IsValidUtf8(c.input)) {
      ++invalid_inputs;
      EXPECT_EQ(StreamAll(tok, ByteIds(c.input), &valid), expected) << c.name;
      EXPECT_TRUE(valid) << c.name;
    }
  }
  EXPECT_GE(invalid_inputs, 100);
}

TEST(TokenizerWorldTest, ConcurrentEncodeIsConsistent) {
  ASSERT_WORLD_TOKENIZER(tok);
  std::string text;
  for (int i = 0; i < 200; ++i) absl::StrAppend(&text, "Line ", i, ": 你好, world! 🚀\n");
  const std::vector<int32_t> expected = tok.Encode(text);
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < 20; ++r) mismatches[t] += tok.Encode(text) != expected;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_THAT(mismatches, ElementsAre(0, 0, 0, 0));
}

TEST(TokenizerWorldTest, DecodeUnknownIdNamesIt) {
  ASSERT_WORLD_TOKENIZER(tok);
  for (int32_t bad : {0, -3, 65530, 70000}) {
    auto r = tok.Decode({24281, 59, bad, 59});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(r.status().message()),
                HasSubstr(absl::StrCat("token id ", bad, " at position 2")));
  }
  auto ok = tok.Decode({24281, 59});
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, "User:");
}

// ---- Encoding on small vocabs ----

TEST(TokenizerEncodeTest, GreedyLongestMatchFallsBackToShorterTokens) {
  auto tok = Tokenizer::LoadFromString(ByteVocab() + "257 'ab' 2\n258 'abcd' 4\n259 'bcde' 4\n");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const Tokenizer& t = **tok;
  EXPECT_THAT(t.Encode("abcd"), ElementsAre(258));
  EXPECT_THAT(t.Encode("abcx"), ElementsAre(257, 'c' + 1, 'x' + 1));  // no "abc": back to "ab"
  EXPECT_THAT(t.Encode("abcde"), ElementsAre(258, 'e' + 1));          // greedy, not optimal
  EXPECT_THAT(t.Encode("xbcde"), ElementsAre('x' + 1, 259));
  EXPECT_THAT(t.Encode(std::string("\0\xFF", 2)), ElementsAre(1, 256));
}

// Reference: at each position try every token length, longest first.
std::vector<int32_t> NaiveGreedy(const Tokenizer& tok, std::string_view s) {
  std::vector<std::pair<std::string_view, int32_t>> toks;
  for (int32_t id = 0; id < tok.vocab_size(); ++id) {
    if (tok.IsValidId(id)) toks.emplace_back(tok.TokenBytes(id), id);
  }
  std::vector<int32_t> out;
  size_t i = 0;
  while (i < s.size()) {
    size_t best_len = 0;
    int32_t best = -1;
    for (const auto& [bytes, id] : toks) {
      // Ties (equal bytes) go to the later id, which the vocab below lists later.
      if (bytes.size() >= best_len && s.substr(i, bytes.size()) == bytes) {
        best_len = bytes.size();
        best = id;
      }
    }
    out.push_back(best);
    i += best_len;
  }
  return out;
}

TEST(TokenizerEncodeTest, RandomVocabsMatchNaiveGreedy) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 30; ++trial) {
    std::string vocab = ByteVocab();
    int32_t id = 257;
    for (int k = 0; k < 60; ++k) {  // tokens over a 3-letter alphabet, so they overlap a lot
      std::string t;
      const int len = 2 + static_cast<int>(rng() % 7);
      for (int j = 0; j < len; ++j) t.push_back("abc"[rng() % 3]);
      absl::StrAppend(&vocab, id++, " '", t, "' ", t.size(), "\n");
    }
    auto tok = Tokenizer::LoadFromString(vocab);
    ASSERT_TRUE(tok.ok()) << tok.status();
    for (int k = 0; k < 20; ++k) {
      std::string s;
      const int len = static_cast<int>(rng() % 40);
      for (int j = 0; j < len; ++j) s.push_back("abcd"[rng() % 4]);
      EXPECT_EQ((*tok)->Encode(s), NaiveGreedy(**tok, s)) << "trial " << trial << " input " << s;
    }
  }
}

TEST(TokenizerEncodeTest, DuplicateBytesLaterLineWinsLikeOfficial) {
  auto tok = Tokenizer::LoadFromString(ByteVocab() + "300 'ab' 2\n257 'ab' 2\n");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT((*tok)->Encode("ab"), ElementsAre(257));
  EXPECT_EQ((*tok)->TokenBytes(300), "ab");  // still decodable
  EXPECT_EQ((*tok)->vocab_size(), 301);
}

// ---- Vocab parsing ----

TEST(TokenizerVocabTest, PythonLiteralForms) {
  const std::string extra =
      "257 '\\u4e2d' 3\n"  // \u: UTF-8 encoded
      "258 '\\U0001F600' 4\n"
      "259 '\\xe9' 2\n"        // \x in a str is a code point (U+00E9), not a byte
      "260 b'\\xe9\\x00' 2\n"  // \x in bytes is a byte
      "261 \"it's\" 4\n"       // double quotes
      "262 '\\'\\\"\\\\' 3\n"  // escaped quotes and backslash
      "263 '\\t\\n\\r\\0\\a\\b\\f\\v' 8\n"
      "264 '\\101\\7' 2\n"  // octal
      "265 'é中' 5\n"       // raw UTF-8 in a str
      "266 '\\q' 2\n"       // unknown escape kept verbatim, like Python
      "267 b'\\u1234' 6\n"  // \u is not an escape in bytes
      "268 u'x y' 3\n"      // u prefix, space inside the literal
      "269 B'\\377' 1\n";
  auto tok = Tokenizer::LoadFromString(ByteVocab() + extra);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const Tokenizer& t = **tok;
  EXPECT_EQ(t.TokenBytes(257), "\xE4\xB8\xAD");
  EXPECT_EQ(t.TokenBytes(258), "\xF0\x9F\x98\x80");
  EXPECT_EQ(t.TokenBytes(259), "\xC3\xA9");
  EXPECT_EQ(t.TokenBytes(260), std::string_view("\xE9\0", 2));
  EXPECT_EQ(t.TokenBytes(261), "it's");
  EXPECT_EQ(t.TokenBytes(262), "'\"\\");
  EXPECT_EQ(t.TokenBytes(263), std::string_view("\t\n\r\0\a\b\f\v", 8));
  EXPECT_EQ(t.TokenBytes(264), "A\x07");
  EXPECT_EQ(t.TokenBytes(265), "\xC3\xA9\xE4\xB8\xAD");
  EXPECT_EQ(t.TokenBytes(266), "\\q");
  EXPECT_EQ(t.TokenBytes(267), "\\u1234");
  EXPECT_EQ(t.TokenBytes(268), "x y");
  EXPECT_EQ(t.TokenBytes(269), "\xFF");
}

TEST(TokenizerVocabTest, ToleratesCrlfBomAndMissingFinalNewline) {
  const std::string extra = "257 'ab' 2\n258 'abc' 3";
  auto lf = Tokenizer::LoadFromString(ByteVocab() + extra + "\n");
  auto crlf = Tokenizer::LoadFromString(ByteVocab("\r\n") + "257 'ab' 2\r\n258 'abc' 3\r\n");
  auto bom = Tokenizer::LoadFromString("\xEF\xBB\xBF" + ByteVocab() + extra);
  ASSERT_TRUE(lf.ok()) << lf.status();
  ASSERT_TRUE(crlf.ok()) << crlf.status();
  ASSERT_TRUE(bom.ok()) << bom.status();
  for (const auto* t : {&lf, &crlf, &bom}) {
    EXPECT_EQ((**t)->vocab_size(), 259);
    EXPECT_EQ((**t)->TokenBytes(258), "abc");  // no '\r' in the token
    EXPECT_THAT((**t)->Encode("abcab"), ElementsAre(258, 257));
  }
}

struct BadVocab {
  std::string name;
  std::string text;      // appended after the 256 byte lines unless `replace`
  std::string expected;  // substring of the error message
  bool replace = false;  // `text` is the whole vocab
};

class TokenizerBadVocabTest : public ::testing::TestWithParam<BadVocab> {};

TEST_P(TokenizerBadVocabTest, FailsNamingLineAndProblem) {
  const BadVocab& p = GetParam();
  auto tok = Tokenizer::LoadFromString(p.replace ? p.text : ByteVocab() + p.text);
  ASSERT_FALSE(tok.ok()) << "accepted: " << absl::CHexEscape(p.text);
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr(p.expected));
}

INSTANTIATE_TEST_SUITE_P(
    AllErrors, TokenizerBadVocabTest,
    ::testing::Values(
        BadVocab{"Empty", "", "vocab is empty", true},
        BadVocab{"BlankLine", "257 'ab' 2\n\n258 'cd' 2\n", "line 258: empty line"},
        BadVocab{"TwoFields", "257 'ab'\n", "line 257: fewer than 3 fields"},
        BadVocab{"OneField", "257\n", "line 257: fewer than 3 fields"},
        BadVocab{"IdNotNumber", "x7 'ab' 2\n", "line 257: id 'x7' is not a decimal number"},
        BadVocab{"NegativeId", "-7 'ab' 2\n", "id '-7' is not a decimal number"},
        BadVocab{"IdTooLarge", "99999999999 'ab' 2\n", "id 99999999999 is larger than the maximum"},
        BadVocab{"LengthNotNumber", "257 'ab' two\n", "byte length 'two' is not a decimal"},
        BadVocab{"LengthMissing", "257 'ab' \n", "byte length is missing"},
        BadVocab{"LengthMismatch", "257 'ab' 3\n",
                 "literal decodes to 2 bytes but the line says 3"},
        BadVocab{"StrUtf8Length", "257 '\\xe9' 1\n", "decodes to 2 bytes but the line says 1"},
        BadVocab{"Unterminated", "257 'ab 2\n", "line 257: unterminated literal"},
        BadVocab{"BackslashAtEnd", "257 'ab\\' 2\n", "unterminated literal"},
        BadVocab{"NoQuotes", "257 ab 2\n", "must be a quoted python str or bytes literal"},
        BadVocab{"RawPrefix", "257 r'ab' 2\n", "must be a quoted python str or bytes literal"},
        BadVocab{"TextAfterQuote", "257 'a'b 2\n", "unexpected text after the closing quote"},
        BadVocab{"TruncatedHex", "257 '\\x4' 1\n", "truncated \\x escape"},
        BadVocab{"TruncatedU", "257 '\\u12' 1\n", "truncated \\u escape"},
        BadVocab{"Surrogate", "257 '\\ud800' 3\n", "a surrogate and cannot be UTF-8 encoded"},
        BadVocab{"BeyondUnicode", "257 '\\U00110000' 4\n", "beyond U+10FFFF"},
        BadVocab{"NamedEscape", "257 '\\N{DASH}' 3\n", "\\N{...} escapes are not supported"},
        BadVocab{"NonAsciiBytes", "257 b'\xC3\xA9' 2\n", "bytes literal contains a non-ASCII"},
        BadVocab{"OctalTooLargeForBytes", "257 b'\\777' 1\n", "larger than a byte"},
        BadVocab{"InvalidUtf8Line", "257 '\xFF' 1\n", "line 257: not valid UTF-8"},
        BadVocab{"RawCarriageReturn", "257 'a\rb' 3\n", "raw control byte 0x0d"},
        BadVocab{"EmptyToken", "257 '' 0\n", "line 257: empty token"},
        BadVocab{"DuplicateId", "257 'ab' 2\n257 'cd' 2\n",
                 "line 258: duplicate id 257 (first defined on line 257)"},
        BadVocab{"MissingSingleByte", "1 'a' 1\n2 'b' 1\n", "no token for the single byte 0x00",
                 true}),
    [](const ::testing::TestParamInfo<BadVocab>& info) { return info.param.name; });

TEST(TokenizerVocabTest, MissingByteNamed) {
  std::string vocab;
  for (int b = 0; b < 256; ++b) {
    if (b != 0x41) absl::StrAppend(&vocab, absl::StrFormat("%d b'\\x%02x' 1\n", b + 1, b));
  }
  auto tok = Tokenizer::LoadFromString(vocab);
  ASSERT_FALSE(tok.ok());
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr("single byte 0x41"));
}

TEST(TokenizerVocabTest, LoadFileErrorsNameThePath) {
  auto missing = Tokenizer::LoadFile("/nonexistent/vocab.txt");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("/nonexistent/vocab.txt"));

  const std::string path =
      (std::filesystem::temp_directory_path() / "modrwkv_tokenizer_test_bad_vocab.txt").string();
  {
    std::ofstream f(path, std::ios::binary);
    f << ByteVocab() << "257 'ab' 9\n";
  }
  auto bad = Tokenizer::LoadFile(path);
  std::filesystem::remove(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr(path + ": line 257:"));
}

// ---- Streaming detokenizer ----

class StreamingDetokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tok = Tokenizer::LoadFromString(ByteVocab() + "257 '\\U0001F600' 4\n");
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = *std::move(tok);
  }
  std::unique_ptr<Tokenizer> tok_;
};

TEST_F(StreamingDetokenizerTest, EmojiSplitAcrossByteTokens) {
  StreamingDetokenizer d(tok_.get());
  EXPECT_EQ(d.Push('H' + 1), "H");
  EXPECT_EQ(d.Push(0xF0 + 1), "");  // U+1F600 = F0 9F 98 80
  EXPECT_EQ(d.pending_bytes(), 1u);
  EXPECT_EQ(d.Push(0x9F + 1), "");
  EXPECT_EQ(d.Push(0x98 + 1), "");
  EXPECT_EQ(d.pending_bytes(), 3u);
  EXPECT_EQ(d.Push(0x80 + 1), "\xF0\x9F\x98\x80");
  EXPECT_EQ(d.pending_bytes(), 0u);
  EXPECT_EQ(d.Push(257), "\xF0\x9F\x98\x80");  // whole-emoji token
  EXPECT_EQ(d.Flush(), "");
}

TEST_F(StreamingDetokenizerTest, InvalidBytesBecomeReplacementCharacters) {
  StreamingDetokenizer d(tok_.get());
  EXPECT_EQ(d.Push(0xFF + 1), kFffd);  // can never start a character: emitted at once
  EXPECT_EQ(d.Push(0xC3 + 1), "");     // could be the start of é
  EXPECT_EQ(d.Push('A' + 1), kFffd + "A");
  EXPECT_EQ(d.Push(0xE0 + 1), "");
  EXPECT_EQ(d.Push(0x80 + 1), kFffd + kFffd);  // E0 80 is never valid: two maximal subparts
  EXPECT_EQ(d.Push(0x80 + 1), kFffd);          // lone continuation byte
}

TEST_F(StreamingDetokenizerTest, FlushResolvesDanglingSequence) {
  StreamingDetokenizer d(tok_.get());
  EXPECT_EQ(d.Push('x' + 1), "x");
  EXPECT_EQ(d.Push(0xF0 + 1), "");
  EXPECT_EQ(d.Push(0x9F + 1), "");
  EXPECT_EQ(d.Flush(), kFffd);  // one U+FFFD for the truncated character
  EXPECT_EQ(d.pending_bytes(), 0u);
  EXPECT_EQ(d.Flush(), "");
  EXPECT_EQ(d.Push('y' + 1), "y");  // reusable after Flush
}

TEST_F(StreamingDetokenizerTest, UnknownIdsAddNothing) {
  StreamingDetokenizer d(tok_.get());
  EXPECT_EQ(d.Push(0xC3 + 1), "");
  EXPECT_EQ(d.Push(0), "");
  EXPECT_EQ(d.Push(99999), "");
  EXPECT_EQ(d.Push(0xA9 + 1), "\xC3\xA9");  // the held-back byte was not disturbed
}

TEST_F(StreamingDetokenizerTest, RandomByteStreamsEqualOneShotReplacement) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<int32_t> ids;
    const int n = static_cast<int>(rng() % 24);
    for (int k = 0; k < n; ++k) ids.push_back(rng() % 8 == 0 ? 257 : 1 + rng() % 256);
    auto bytes = tok_->Decode(ids);
    ASSERT_TRUE(bytes.ok());
    bool valid = false;
    EXPECT_EQ(StreamAll(*tok_, ids, &valid), ReplaceInvalidUtf8(*bytes))
        << absl::CHexEscape(*bytes);
    EXPECT_TRUE(valid);
  }
}

}  // namespace
}  // namespace modrwkv
