// Token masks over the real World vocabulary: equal to trying every token on its own, and random
// walks through them (any allowed token, any time) always produce a document that parses and
// follows the schema.
#include "engine/grammar/token_constraint.h"

#include <cmath>
#include <random>
#include <string>
#include <thread>

#include "engine/text/tokenizer.h"
#include "gtest/gtest.h"

namespace modrwkv::grammar {
namespace {

using json = nlohmann::json;

std::shared_ptr<const TokenVocabulary> WorldVocab() {
  static const std::shared_ptr<const TokenVocabulary> v = [] {
    auto tok =
        Tokenizer::LoadFile(std::string(MODRWKV_SOURCE_DIR) + "/assets/rwkv_vocab_v20230424.txt");
    EXPECT_TRUE(tok.ok()) << tok.status();
    return std::make_shared<const TokenVocabulary>((*tok)->AllTokenBytes());
  }();
  return v;
}

std::shared_ptr<const TokenConstraint> Constraint(const std::string& schema) {
  std::shared_ptr<const JsonGrammar> g;
  if (schema.empty()) {
    g = JsonGrammar::AnyObject();
  } else {
    auto c = JsonGrammar::FromSchema(json::parse(schema), "schema");
    EXPECT_TRUE(c.ok()) << c.status();
    g = *c;
  }
  return std::make_shared<const TokenConstraint>(g, WorldVocab());
}

// The mask computed the slow way: every token tried from `s` on its own.
TokenMask BruteForce(const TokenConstraint& c, const JsonMatcher::State& s) {
  TokenMask m((c.vocab().size() + 63) / 64, 0);
  for (int32_t id = 0; id < c.vocab().size(); ++id) {
    if (c.vocab().bytes(id).empty()) continue;
    JsonMatcher::State t = s;
    if (c.matcher().Advance(t, c.vocab().bytes(id))) m[id >> 6] |= uint64_t{1} << (id & 63);
  }
  return m;
}

// Walks the grammar drawing uniformly among the allowed tokens (an end token counts as one when
// the document may end) and returns the text; checks every mask against BruteForce on the way
// when `check_masks`.
std::string RandomWalk(const std::shared_ptr<const TokenConstraint>& c, uint64_t seed,
                       bool check_masks, int max_tokens = 400) {
  constexpr int32_t kEnd = 0;
  ConstrainedSequence seq(c, {kEnd});
  JsonMatcher::State state;  // mirrors seq's, to check masks
  std::mt19937_64 rng(seed);
  std::string text;
  std::vector<float> logits(65536);
  for (int step = 0; step < max_tokens && !seq.complete(); ++step) {
    std::fill(logits.begin(), logits.end(), 0.0f);
    seq.MaskLogits(absl::MakeSpan(logits));
    if (check_masks) {
      const TokenMask want = BruteForce(*c, state);
      for (int32_t id = 1; id < 65536; ++id) {
        const bool allowed = std::isfinite(logits[id]);
        EXPECT_EQ(allowed, (want[id >> 6] >> (id & 63) & 1) != 0) << "token " << id;
      }
      EXPECT_EQ(std::isfinite(logits[kEnd]), c->matcher().CanEnd(state));
    }
    std::vector<int32_t> allowed;
    for (int32_t id = 0; id < 65536; ++id) {
      if (std::isfinite(logits[id])) allowed.push_back(id);
    }
    EXPECT_FALSE(allowed.empty()) << "dead end after " << text;
    if (allowed.empty()) break;
    const int32_t tok = allowed[std::uniform_int_distribution<size_t>(0, allowed.size() - 1)(rng)];
    seq.Accept(tok);
    if (tok == kEnd) break;
    text += c->vocab().bytes(tok);
    EXPECT_TRUE(c->matcher().Advance(state, c->vocab().bytes(tok)));
  }
  return text;
}

TEST(TokenConstraintTest, MasksEqualTryingEveryToken) {
  auto c = Constraint(R"({"type": "object", "properties": {
      "name": {"type": "string", "maxLength": 8}, "n": {"type": "integer"},
      "ok": {"type": "boolean"}, "xs": {"type": "array", "items": {"type": "number"},
      "maxItems": 3}}, "required": ["name", "n"]})");
  for (uint64_t seed = 1; seed <= 3; ++seed) RandomWalk(c, seed, /*check_masks=*/true, 40);
  EXPECT_GT(c->stats().computed, 10);
}

// Every random walk that completes gives a document that parses; under a schema the walk must
// complete (its limits bound every value).
TEST(TokenConstraintTest, RandomWalksGiveValidDocuments) {
  auto c = Constraint(R"({"type": "object", "properties": {
      "color": {"enum": ["red", "green", "blue"]},
      "size": {"type": "integer"},
      "label": {"type": "string", "maxLength": 6},
      "point": {"type": "object", "properties": {"x": {"type": "number"},
                "y": {"type": "number"}}, "required": ["x", "y"]},
      "flags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 4}},
      "required": ["color", "size", "point"], "additionalProperties": false})");
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    const std::string text = RandomWalk(c, seed, /*check_masks=*/false);
    const json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
    ASSERT_FALSE(doc.is_discarded()) << text;
    ASSERT_TRUE(doc.is_object()) << text;
    EXPECT_TRUE(doc.contains("color") && doc.contains("size") && doc.contains("point")) << text;
    EXPECT_TRUE(doc["size"].is_number_integer()) << text;
    EXPECT_TRUE(doc["point"]["x"].is_number() && doc["point"]["y"].is_number()) << text;
    if (doc.contains("label")) {
      EXPECT_LE(json(doc["label"]).get<std::string>().size(), 6u * 4) << text;
    }
    for (const auto& [k, v] : doc.items()) {
      EXPECT_TRUE(k == "color" || k == "size" || k == "label" || k == "point" || k == "flags")
          << text;
    }
  }
}

TEST(TokenConstraintTest, JsonModeWalksParseWhenTheyClose) {
  auto c = Constraint("");
  int closed = 0;
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    const std::string text = RandomWalk(c, seed, /*check_masks=*/false, 120);
    const json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) continue;  // still open after 120 tokens
    EXPECT_TRUE(doc.is_object()) << text;
    ++closed;
  }
  EXPECT_GT(closed, 0);
}

// Samplers of one step run on the backend's threads and share a schema's constraint (and its
// mask cache): walks on several threads at once give the documents they give alone.
TEST(TokenConstraintTest, ConcurrentWalksShareTheCache) {
  const std::string schema = R"({"type": "object", "properties": {
      "k": {"enum": ["a", "b"]}, "v": {"type": "array", "items": {"type": "integer"},
      "maxItems": 3}}, "required": ["k", "v"]})";
  std::vector<std::string> alone;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    alone.push_back(RandomWalk(Constraint(schema), seed, /*check_masks=*/false, 60));
  }
  auto shared = Constraint(schema);
  std::vector<std::string> together(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] { together[i] = RandomWalk(shared, i + 1, false, 60); });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(together, alone);
}

TEST(TokenConstraintTest, EndTokensOnlyWhereTheDocumentMayEnd) {
  auto c = Constraint(R"({"type": "integer"})");
  ConstrainedSequence seq(c, {0});
  std::vector<float> logits(65536, 1.0f);
  seq.MaskLogits(absl::MakeSpan(logits));
  EXPECT_FALSE(std::isfinite(logits[0]));  // nothing written yet
  // After "7" the end token is allowed and keeps its logit.
  ConstrainedSequence seven(c, {0});
  int32_t id7 = -1;
  for (int32_t id = 1; id < WorldVocab()->size(); ++id) {
    if (WorldVocab()->bytes(id) == "7") id7 = id;
  }
  ASSERT_GE(id7, 0);
  seven.Accept(id7);
  std::fill(logits.begin(), logits.end(), 1.0f);
  seven.MaskLogits(absl::MakeSpan(logits));
  EXPECT_EQ(logits[0], 1.0f);
  EXPECT_FALSE(seven.complete());
  seven.Accept(0);
  EXPECT_TRUE(seven.complete());
  // Every end token keeps its logit, however many there are.
  std::vector<int32_t> many_ends;
  for (int32_t t = 100; t < 140; ++t) many_ends.push_back(t);
  ConstrainedSequence many(c, many_ends);
  many.Accept(id7);
  std::fill(logits.begin(), logits.end(), 1.0f);
  many.MaskLogits(absl::MakeSpan(logits));
  for (int32_t t : many_ends) EXPECT_EQ(logits[t], 1.0f) << t;
  // With no end token, a number that may end ends at once.
  ConstrainedSequence no_end(c, {});
  no_end.Accept(id7);
  EXPECT_TRUE(no_end.complete());
}

}  // namespace
}  // namespace modrwkv::grammar
