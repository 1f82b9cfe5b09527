// A JSON Schema (the subset structured output supports) compiled into a graph of grammar nodes
// that the byte-level matcher (json_matcher.h) walks. Also the "any JSON object" grammar of JSON
// mode. Immutable after Compile; thread-safe to share. See docs/structured-output.md.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace modrwkv::grammar {

// A byte trie over a set of texts: property keys (escaped, with the closing quote) and literal
// values (enum / const members, true / false / null, as compact JSON).
struct ByteTrie {
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;  // sorted by byte
    int32_t terminal = -1;  // index of the text that ends here, -1 if none
    uint64_t subtree = 0;   // bit i: text i (< 64) ends in this subtree (property keys only)
  };
  std::vector<Node> nodes{Node{}};  // nodes[0] is the root

  void Insert(std::string_view text, int32_t index);
  // The child of `node` along `byte`, or -1.
  int32_t Child(int32_t node, uint8_t byte) const;
};

enum class NodeKind : uint8_t {
  kObject,  // properties (a closed set) or, without properties, free keys
  kArray,
  kString,
  kNumber,
  kInteger,
  kLiteral,  // one of a set of JSON texts (enum, const, boolean, null)
  kUnion,    // alternatives told apart by their first byte (type lists, anyOf, "any value")
};

struct GrammarNode {
  NodeKind kind = NodeKind::kUnion;
  // kObject with properties: keys as they must be written (JSON-escaped, no quotes), the node of
  // each value, the required ones as a bit set, and the key trie (escaped key + '"').
  std::vector<std::string> keys;
  std::vector<int32_t> values;
  uint64_t required = 0;
  int32_t key_trie = -1;
  // kObject without properties: any keys, each value matching `additional`.
  int32_t additional = -1;
  // kArray
  int32_t items = -1;
  uint32_t min_items = 0, max_items = std::numeric_limits<uint32_t>::max();
  // kString: lengths in code points (an escape counts as one)
  uint32_t min_length = 0, max_length = std::numeric_limits<uint32_t>::max();
  // kLiteral
  int32_t literal_trie = -1;
  // kUnion: the alternatives, and for each first byte the alternative it starts (-1 = none)
  std::vector<int32_t> alternatives;
  std::vector<int16_t> first_byte;  // [256] for kUnion
};

class JsonGrammar {
 public:
  // Containers nest at most this deep (the matcher's stack); a schema that needs more is refused.
  static constexpr int kMaxDepth = 32;
  static constexpr int kMaxProperties = 64;  // per object schema
  static constexpr int kMaxNodes = 4096;     // per schema, after $ref expansion

  // JSON mode: any JSON object.
  static std::shared_ptr<const JsonGrammar> AnyObject();
  // A JSON Schema. Errors are INVALID_ARGUMENT (malformed schema) or UNIMPLEMENTED (a keyword
  // this server does not enforce, e.g. "pattern"), both naming the schema location under
  // `field` (e.g. "response_format.json_schema.schema.properties.age.minimum").
  static absl::StatusOr<std::shared_ptr<const JsonGrammar>> FromSchema(const nlohmann::json& schema,
                                                                       std::string_view field);

  const GrammarNode& node(int32_t i) const { return nodes_[i]; }
  const ByteTrie& trie(int32_t i) const { return tries_[i]; }
  int32_t root() const { return root_; }

 private:
  friend class SchemaCompiler;
  std::vector<GrammarNode> nodes_;
  std::vector<ByteTrie> tries_;
  int32_t root_ = -1;
};

}  // namespace modrwkv::grammar
