// libFuzzer harness for engine/grammar (structured output): each input is a JSON Schema, a NUL
// byte, and a document. Seeds: tests/fuzz/seeds/json_schema_fuzz.
// Invariants: no crash; a refused schema is INVALID_ARGUMENT or UNIMPLEMENTED naming a field under
// "schema"; for a compiled one (or JSON mode when the schema part is empty), a document the
// matcher takes whole and may end is JSON that parses, and the token mask of every state along the
// document equals trying each token of a small vocabulary on its own.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "engine/base/errors.h"
#include "tests/test_paths.h"
// The sources under test are compiled in (instrumented with the harness, whichever build).
#include "engine/grammar/constraint_cache.cc"
#include "engine/grammar/json_grammar.cc"
#include "engine/grammar/json_matcher.cc"
#include "engine/grammar/token_constraint.cc"
#include "engine/text/tokenizer.cc"
#include "engine/text/utf8.cc"

namespace {

using modrwkv::grammar::ConstraintCache;
using modrwkv::grammar::JsonMatcher;
using modrwkv::grammar::TokenConstraint;
using modrwkv::grammar::TokenMask;
using modrwkv::grammar::TokenVocabulary;

void Check(bool ok, std::string_view what = "") {
  if (ok) return;
  std::fprintf(stderr, "%s\n",
               absl::CHexEscape(absl::string_view(what.data(), what.size())).c_str());
  __builtin_trap();
}

// The first 2,000 ids of the World vocabulary (single bytes, punctuation, digits, common words):
// small enough to check every mask by brute force.
std::shared_ptr<const TokenVocabulary> SmallVocab() {
  static const std::shared_ptr<const TokenVocabulary> v = [] {
    auto tok = modrwkv::Tokenizer::LoadFile(modrwkv::testing_paths::WorldVocab());
    Check(tok.ok(), "vocabulary");
    std::vector<std::string> bytes(2000);
    for (int32_t id = 1; id < 2000; ++id) bytes[id] = std::string((*tok)->TokenBytes(id));
    return std::make_shared<const TokenVocabulary>(std::move(bytes));
  }();
  return v;
}

void CheckMask(const TokenConstraint& c, const JsonMatcher::State& s) {
  const std::shared_ptr<const TokenMask> mask = c.MaskFor(s);
  for (int32_t id = 0; id < c.vocab().size(); ++id) {
    bool want = false;
    if (!c.vocab().bytes(id).empty()) {
      JsonMatcher::State t = s;
      want = c.matcher().Advance(t, c.vocab().bytes(id));
    }
    Check(want == (((*mask)[id >> 6] >> (id & 63) & 1) != 0), "mask");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t nul = in.find('\0');
  const std::string_view schema = in.substr(0, nul);
  const std::string_view doc = nul == std::string_view::npos ? "" : in.substr(nul + 1);
  ConstraintCache cache(SmallVocab(), 1);
  std::shared_ptr<const TokenConstraint> c;
  if (schema.empty()) {
    c = cache.JsonObject();
  } else {
    auto r = cache.ForSchema(schema, "schema");
    if (!r.ok()) {
      Check(r.status().code() == absl::StatusCode::kInvalidArgument ||
                r.status().code() == absl::StatusCode::kUnimplemented,
            r.status().ToString());
      Check(
          !r.status().message().empty() && absl::StartsWith(modrwkv::FieldOf(r.status()), "schema"),
          r.status().ToString());
      return 0;
    }
    c = *r;
  }
  JsonMatcher::State s;
  CheckMask(*c, s);
  size_t taken = 0;
  for (; taken < doc.size() && taken < 256; ++taken) {
    if (!c->matcher().Advance(s, static_cast<uint8_t>(doc[taken]))) break;
    if (taken % 16 == 15) CheckMask(*c, s);
  }
  if (taken == doc.size() && c->matcher().CanEnd(s)) {
    const nlohmann::json j = nlohmann::json::parse(doc, nullptr, /*allow_exceptions=*/false);
    Check(!j.is_discarded(), doc);
  }
  return 0;
}
