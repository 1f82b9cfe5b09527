// The byte-level matcher: documents a schema accepts and refuses, byte by byte, and the schema
// compiler's refusals.
#include "engine/grammar/json_matcher.h"

#include <string>

#include "engine/base/errors.h"
#include "engine/grammar/json_grammar.h"
#include "gtest/gtest.h"

namespace modrwkv::grammar {
namespace {

using json = nlohmann::json;

std::shared_ptr<const JsonGrammar> Compile(const std::string& schema) {
  auto g = JsonGrammar::FromSchema(json::parse(schema), "schema");
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? *g : nullptr;
}

// Whether `doc` is a complete document (every byte taken and the end reachable).
bool Accepts(const JsonGrammar& g, std::string_view doc) {
  JsonMatcher m(&g);
  JsonMatcher::State s;
  return m.Advance(s, doc) && m.CanEnd(s);
}

// Whether `doc` is a valid prefix (every byte taken).
bool Prefix(const JsonGrammar& g, std::string_view doc) {
  JsonMatcher m(&g);
  JsonMatcher::State s;
  return m.Advance(s, doc);
}

TEST(JsonMatcherTest, JsonModeAcceptsObjectsOnly) {
  auto g = JsonGrammar::AnyObject();
  EXPECT_TRUE(Accepts(*g, R"({})"));
  EXPECT_TRUE(Accepts(*g, R"({"a": [1, 2.5e-3, -0, true, null, "x\"\u00e9"], "b": {"c": {}}})"));
  EXPECT_TRUE(Accepts(*g, "{ \"k\" : \"v\" }"));
  EXPECT_FALSE(Prefix(*g, R"([1])"));
  EXPECT_FALSE(Prefix(*g, R"("x")"));
  EXPECT_FALSE(Prefix(*g, R"({"a": 01})"));  // leading zero
  EXPECT_FALSE(Prefix(*g, R"({"a": 1.})"));
  EXPECT_FALSE(Prefix(*g, R"( {})"));  // the answer starts with its value
  EXPECT_FALSE(Prefix(*g, R"({"a": tru })"));
  EXPECT_FALSE(Prefix(*g, R"({"a": "\q"})"));     // bad escape
  EXPECT_FALSE(Prefix(*g, "{\"a\": \"x\ny\"}"));  // raw control character
  EXPECT_FALSE(Prefix(*g, R"({"a": 1,})"));
  EXPECT_FALSE(Prefix(*g, R"({"a" 1})"));
  EXPECT_FALSE(Prefix(*g, R"({} )"));  // nothing after the document
  EXPECT_FALSE(Accepts(*g, R"({"a": )"));
}

TEST(JsonMatcherTest, StringsAreValidUtf8) {
  auto g = Compile(R"({"type": "string"})");
  EXPECT_TRUE(Accepts(*g, "\"caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80\""));
  EXPECT_FALSE(Prefix(*g, "\"\xC0\xAF\""));          // overlong
  EXPECT_FALSE(Prefix(*g, "\"\xE0\x80\xAF\""));      // overlong 3-byte
  EXPECT_FALSE(Prefix(*g, "\"\xED\xA0\x80\""));      // a surrogate
  EXPECT_FALSE(Prefix(*g, "\"\xF4\x90\x80\x80\""));  // above U+10FFFF
  EXPECT_FALSE(Prefix(*g, "\"\x80\""));              // a lone continuation byte
  EXPECT_FALSE(Prefix(*g, "\"\xC3\""));              // cut inside a character
  EXPECT_TRUE(Prefix(*g, "\"\xC3"));                 // ... which may still go on
  // Escaped UTF-16 surrogates only in pairs.
  EXPECT_TRUE(Accepts(*g, R"("\ud83d\uDE00 \u00e9 \uFFFF")"));
  EXPECT_FALSE(Prefix(*g, R"("\ud83d")"));
  EXPECT_FALSE(Prefix(*g, R"("\ud83dx)"));
  EXPECT_FALSE(Prefix(*g, R"("\ud83d\u0041)"));
  EXPECT_FALSE(Prefix(*g, R"("\ude00)"));
}

TEST(JsonMatcherTest, ObjectsWriteListedPropertiesOnceAndTheRequiredOnes) {
  auto g = Compile(R"({"type": "object",
      "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                     "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2}},
      "required": ["name", "age"], "additionalProperties": false})");
  EXPECT_TRUE(Accepts(*g, R"({"name": "Ann", "age": 31})"));
  EXPECT_TRUE(Accepts(*g, R"({"age":31,"tags":["a","b"],"name":""})"));
  EXPECT_FALSE(Accepts(*g, R"({"name": "Ann"})"));                // age missing
  EXPECT_FALSE(Prefix(*g, R"({"name": "Ann", "name": "B")"));     // twice
  EXPECT_FALSE(Prefix(*g, R"({"nick")"));                         // not listed
  EXPECT_FALSE(Prefix(*g, R"({"age": 3.5)"));                     // not an integer
  EXPECT_FALSE(Prefix(*g, R"({"age": 3, "tags": ["a", "b", )"));  // maxItems
  EXPECT_FALSE(Prefix(*g, R"({"name": 5)"));
  EXPECT_TRUE(Prefix(*g, R"({"na)"));
}

TEST(JsonMatcherTest, EnumsConstsUnionsAndLengths) {
  auto g = Compile(R"({"type": "object", "properties": {
      "color": {"enum": ["red", "green", 1, 12, null]},
      "kind": {"const": "x"},
      "maybe": {"type": ["string", "null"], "minLength": 2, "maxLength": 3},
      "n": {"anyOf": [{"type": "number"}, {"type": "boolean"}]}},
      "required": ["color"]})");
  EXPECT_TRUE(Accepts(*g, R"({"color": "green"})"));
  EXPECT_TRUE(Accepts(*g, R"({"color": 1, "kind": "x"})"));
  EXPECT_TRUE(Accepts(*g, R"({"color": 12})"));
  EXPECT_TRUE(Accepts(*g, R"({"color": null, "maybe": null, "n": false})"));
  EXPECT_TRUE(Accepts(*g, R"({"color": "red", "maybe": "ab", "n": -1.5E+2})"));
  EXPECT_TRUE(Accepts(*g, R"({"color": "red", "maybe": "\u00e9\n\u00e9"})"));  // 3 code points
  EXPECT_FALSE(Prefix(*g, R"({"color": "blue")"));
  EXPECT_FALSE(Prefix(*g, R"({"color": 123)"));
  EXPECT_FALSE(Prefix(*g, R"({"color": "red", "maybe": "a")"));    // minLength
  EXPECT_FALSE(Prefix(*g, R"({"color": "red", "maybe": "abcd)"));  // maxLength
  EXPECT_FALSE(Prefix(*g, R"({"color": "red", "kind": "y)"));
}

TEST(JsonMatcherTest, TopLevelScalarsAndRefs) {
  auto g = Compile(R"({"type": "integer"})");
  JsonMatcher m(g.get());
  JsonMatcher::State s;
  ASSERT_TRUE(m.Advance(s, "-12"));
  EXPECT_TRUE(m.CanEnd(s));
  EXPECT_FALSE(JsonMatcher::Complete(s));         // a number may go on
  EXPECT_FALSE(Prefix(*g, "12345678901234567"));  // the digit limit

  auto r = Compile(R"({"$defs": {"P": {"type": "object", "properties": {"x": {"type": "number"}},
      "required": ["x"]}}, "type": "array", "items": {"$ref": "#/$defs/P"}, "minItems": 1})");
  EXPECT_TRUE(Accepts(*r, R"([{"x": 1}, {"x": 2}])"));
  EXPECT_FALSE(Prefix(*r, R"([])"));
  EXPECT_FALSE(Prefix(*r, R"([{"y")"));
}

TEST(JsonMatcherTest, WhitespaceIsOneSpaceAtMost) {
  auto g = JsonGrammar::AnyObject();
  EXPECT_TRUE(Accepts(*g, "{ \"a\" : 1 , \"b\": [ 2 ] }"));
  EXPECT_FALSE(Prefix(*g, "{  "));  // one space, not two
  EXPECT_FALSE(Prefix(*g, "{\n"));
  EXPECT_FALSE(Prefix(*g, "{\t"));
}

TEST(JsonMatcherTest, NestingIsBoundedInJsonMode) {
  auto g = JsonGrammar::AnyObject();
  std::string deep(JsonGrammar::kMaxDepth - 2, '[');  // with the object: one frame left
  EXPECT_TRUE(Prefix(*g, "{\"a\":" + deep));
  EXPECT_FALSE(Prefix(*g, "{\"a\":" + deep + "["));
  EXPECT_TRUE(Prefix(*g, "{\"a\":" + deep + "1"));  // a scalar still fits
}

TEST(JsonGrammarTest, RefusesWhatItDoesNotEnforceNamingTheKeyword) {
  struct Case {
    const char* schema;
    absl::StatusCode code;
    const char* field;
  };
  const Case cases[] = {
      {R"({"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}})",
       absl::StatusCode::kUnimplemented, "schema.properties.age.minimum"},
      {R"({"type": "string", "pattern": "^a"})", absl::StatusCode::kUnimplemented,
       "schema.pattern"},
      {R"({"type": "objekt"})", absl::StatusCode::kInvalidArgument, "schema.type"},
      {R"({"type": "object", "properties": {"a": {}}, "required": ["b"]})",
       absl::StatusCode::kInvalidArgument, "schema.required"},
      {R"({"$defs": {"N": {"type": "object", "properties": {"n": {"$ref": "#/$defs/N"}}}},
          "$ref": "#/$defs/N"})",
       absl::StatusCode::kUnimplemented, "schema.$ref.properties.n.$ref"},
      {R"({"$ref": "#/$defs/Missing"})", absl::StatusCode::kInvalidArgument, "schema.$ref"},
      {R"({"anyOf": [{"type": "object"}, {"type": "object", "properties": {}}]})",
       absl::StatusCode::kUnimplemented, "schema.anyOf"},
      {R"({"type": "object", "properties": {"a": {}}, "additionalProperties": true})",
       absl::StatusCode::kUnimplemented, "schema.additionalProperties"},
      {R"(5)", absl::StatusCode::kInvalidArgument, "schema"},
  };
  for (const Case& c : cases) {
    auto g = JsonGrammar::FromSchema(json::parse(c.schema), "schema");
    ASSERT_FALSE(g.ok()) << c.schema;
    EXPECT_EQ(g.status().code(), c.code) << c.schema << ": " << g.status();
    EXPECT_EQ(FieldOf(g.status()), c.field) << c.schema << ": " << g.status();
  }
}

TEST(JsonGrammarTest, RefusesSchemasNestedPastTheStack) {
  json s = {{"type", "string"}};
  for (int i = 0; i < JsonGrammar::kMaxDepth + 1; ++i) s = {{"type", "array"}, {"items", s}};
  auto g = JsonGrammar::FromSchema(s, "schema");
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace modrwkv::grammar
