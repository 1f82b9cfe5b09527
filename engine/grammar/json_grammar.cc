// JSON Schema -> grammar nodes. The supported subset and the reasons for each refusal are in
// docs/structured-output.md; everything else that can change what a valid answer is gets refused
// by name rather than silently ignored.
#include "engine/grammar/json_grammar.h"

#include <algorithm>
#include <array>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/base/errors.h"
#include "engine/base/status_macros.h"

namespace modrwkv::grammar {

using json = nlohmann::json;

void ByteTrie::Insert(std::string_view text, int32_t index) {
  int32_t cur = 0;
  for (const char ch : text) {
    const auto b = static_cast<uint8_t>(ch);
    int32_t next = Child(cur, b);
    if (next < 0) {
      next = static_cast<int32_t>(nodes.size());
      nodes.emplace_back();
      auto& ch_list = nodes[cur].children;
      ch_list.insert(std::upper_bound(ch_list.begin(), ch_list.end(), std::make_pair(b, -1)),
                     {b, next});
    }
    if (index < 64) nodes[cur].subtree |= uint64_t{1} << index;
    cur = next;
  }
  if (index < 64) nodes[cur].subtree |= uint64_t{1} << index;
  nodes[cur].terminal = index;
}

int32_t ByteTrie::Child(int32_t node, uint8_t byte) const {
  const auto& c = nodes[node].children;
  auto it = std::lower_bound(c.begin(), c.end(), std::make_pair(byte, int32_t{-1}));
  return it != c.end() && it->first == byte ? it->second : -1;
}

namespace {

// Validation keywords whose meaning the matcher does not enforce: refused, so that an answer is
// never claimed to follow a schema it may break.
constexpr std::array kUnsupported = {
    "pattern",
    "patternProperties",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minProperties",
    "maxProperties",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "prefixItems",
    "additionalItems",
    "not",
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "$dynamicRef",
    "$recursiveRef",
};

// Keywords that only annotate (JSON Schema 2020-12 treats "format" as an annotation too).
constexpr std::array kAnnotations = {
    "title",       "description",     "default",          "examples", "$schema",   "$id",
    "$comment",    "format",          "deprecated",       "readOnly", "writeOnly", "$defs",
    "definitions", "contentEncoding", "contentMediaType", "$anchor",  "strict",
};

bool IsAnnotation(std::string_view key) {
  return std::find(kAnnotations.begin(), kAnnotations.end(), key) != kAnnotations.end();
}

std::string TypeName(const json& j) { return j.type_name(); }

}  // namespace

class SchemaCompiler {
 public:
  SchemaCompiler(const json& root, std::string_view field) : root_(root), field_(field) {
    g_ = std::shared_ptr<JsonGrammar>(new JsonGrammar());
  }

  absl::StatusOr<std::shared_ptr<const JsonGrammar>> CompileRoot() {
    MODRWKV_ASSIGN_OR_RETURN(Compiled c, Compile(root_, std::string(field_), 0));
    g_->root_ = c.node;
    return std::shared_ptr<const JsonGrammar>(std::move(g_));
  }

  // The grammar of any JSON object (JSON mode).
  std::shared_ptr<const JsonGrammar> AnyObject() {
    const int32_t any = AnyValue();
    g_->root_ = nodes()[any].alternatives[0];  // the free object
    return std::shared_ptr<const JsonGrammar>(std::move(g_));
  }

 private:
  struct Compiled {
    int32_t node;
    int height;  // containers this value nests at most (any values count 0: their depth is
                 // bounded at run time)
  };

  std::vector<GrammarNode>& nodes() { return g_->nodes_; }

  absl::StatusOr<int32_t> NewNode(GrammarNode n, const std::string& path) {
    if (nodes().size() >= static_cast<size_t>(JsonGrammar::kMaxNodes)) {
      return InvalidFieldError(path, absl::StrCat(path, ": the schema expands to more than ",
                                                  JsonGrammar::kMaxNodes, " nodes"));
    }
    nodes().push_back(std::move(n));
    return static_cast<int32_t>(nodes().size() - 1);
  }

  int32_t NewTrie(const std::vector<std::string>& texts) {
    ByteTrie t;
    for (size_t i = 0; i < texts.size(); ++i) t.Insert(texts[i], static_cast<int32_t>(i));
    g_->tries_.push_back(std::move(t));
    return static_cast<int32_t>(g_->tries_.size() - 1);
  }

  // The shared "any JSON value" union (made once per grammar; its containers refer back to it).
  int32_t AnyValue() {
    if (any_ >= 0) return any_;
    any_ = static_cast<int32_t>(nodes().size());
    nodes().emplace_back();  // the union, filled below
    GrammarNode obj;
    obj.kind = NodeKind::kObject;
    obj.additional = any_;
    GrammarNode arr;
    arr.kind = NodeKind::kArray;
    arr.items = any_;
    GrammarNode str;
    str.kind = NodeKind::kString;
    GrammarNode num;
    num.kind = NodeKind::kNumber;
    GrammarNode lit;
    lit.kind = NodeKind::kLiteral;
    lit.literal_trie = NewTrie({"true", "false", "null"});
    std::vector<int32_t> alts;
    for (GrammarNode* n : {&obj, &arr, &str, &num, &lit}) {
      nodes().push_back(std::move(*n));
      alts.push_back(static_cast<int32_t>(nodes().size() - 1));
    }
    GrammarNode u;
    u.kind = NodeKind::kUnion;
    u.alternatives = alts;
    u.first_byte.assign(256, -1);
    for (size_t a = 0; a < alts.size(); ++a) {
      for (int b : FirstBytes(alts[a])) u.first_byte[b] = static_cast<int16_t>(a);
    }
    nodes()[any_] = std::move(u);
    return any_;
  }

  std::vector<int> FirstBytes(int32_t i) {
    const GrammarNode& n = nodes()[i];
    switch (n.kind) {
      case NodeKind::kObject:
        return {'{'};
      case NodeKind::kArray:
        return {'['};
      case NodeKind::kString:
        return {'"'};
      case NodeKind::kNumber:
      case NodeKind::kInteger:
        return {'-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'};
      case NodeKind::kLiteral: {
        std::vector<int> out;
        for (const auto& [b, child] : g_->tries_[n.literal_trie].nodes[0].children)
          out.push_back(b);
        return out;
      }
      case NodeKind::kUnion: {
        std::vector<int> out;
        for (int b = 0; b < 256; ++b) {
          if (n.first_byte[b] >= 0) out.push_back(b);
        }
        return out;
      }
    }
    return {};
  }

  absl::Status Refuse(const std::string& path, absl::string_view what) {
    return WithField(absl::UnimplementedError(absl::StrCat(path, ": ", what)), path);
  }
  absl::Status Bad(const std::string& path, absl::string_view what) {
    return InvalidFieldError(path, absl::StrCat(path, ": ", what));
  }

  absl::StatusOr<Compiled> Compile(const json& s, const std::string& path, int depth) {
    if (s.is_boolean()) {
      if (!s.get<bool>()) return Bad(path, "the schema false accepts nothing");
      return Compiled{AnyValue(), 0};
    }
    if (!s.is_object()) {
      return Bad(path, absl::StrCat("a schema must be an object or a boolean, got ", TypeName(s)));
    }
    for (const char* k : kUnsupported) {
      if (s.contains(k)) {
        return Refuse(absl::StrCat(path, ".", k),
                      absl::StrCat("\"", k, "\" is not supported by structured output"));
      }
    }
    if (auto it = s.find("$ref"); it != s.end()) return CompileRef(s, *it, path, depth);
    if (auto it = s.find("allOf"); it != s.end()) {
      if (!it->is_array() || it->size() != 1 || s.contains("type") || s.contains("anyOf") ||
          s.contains("oneOf")) {
        return Refuse(path + ".allOf", "only an allOf with a single member is supported");
      }
      return Compile((*it)[0], path + ".allOf[0]", depth);
    }
    if (s.contains("enum") || s.contains("const")) return CompileLiteral(s, path);
    for (const char* k : {"anyOf", "oneOf"}) {
      if (auto it = s.find(k); it != s.end()) {
        if (s.contains("type")) {
          return Refuse(path, absl::StrCat("\"type\" next to \"", k, "\" is not supported"));
        }
        if (!it->is_array() || it->empty()) {
          return Bad(absl::StrCat(path, ".", k), "must be a non-empty array of schemas");
        }
        std::vector<Compiled> alts;
        for (size_t i = 0; i < it->size(); ++i) {
          MODRWKV_ASSIGN_OR_RETURN(
              Compiled c, Compile((*it)[i], absl::StrCat(path, ".", k, "[", i, "]"), depth));
          alts.push_back(c);
        }
        return MakeUnion(alts, absl::StrCat(path, ".", k));
      }
    }
    std::vector<std::string> types;
    if (auto it = s.find("type"); it != s.end()) {
      if (it->is_string()) {
        types.push_back(it->get<std::string>());
      } else if (it->is_array() && !it->empty()) {
        for (const json& t : *it) {
          if (!t.is_string()) return Bad(path + ".type", "type names must be strings");
          types.push_back(t.get<std::string>());
        }
      } else {
        return Bad(path + ".type", "must be a type name or a non-empty array of them");
      }
    } else if (s.contains("properties") || s.contains("required") ||
               s.contains("additionalProperties")) {
      types.push_back("object");
    } else if (s.contains("items") || s.contains("minItems") || s.contains("maxItems")) {
      types.push_back("array");
    } else if (s.contains("minLength") || s.contains("maxLength")) {
      types.push_back("string");
    } else {
      return Compiled{AnyValue(), 0};
    }
    std::vector<Compiled> alts;
    for (const std::string& t : types) {
      MODRWKV_ASSIGN_OR_RETURN(Compiled c, CompileType(s, t, path, depth));
      alts.push_back(c);
    }
    if (alts.size() == 1) return alts[0];
    return MakeUnion(alts, path + ".type");
  }

  absl::StatusOr<Compiled> CompileType(const json& s, const std::string& t, const std::string& path,
                                       int depth) {
    GrammarNode n;
    if (t == "object") return CompileObject(s, path, depth);
    if (t == "array") return CompileArray(s, path, depth);
    if (t == "string") {
      n.kind = NodeKind::kString;
      MODRWKV_RETURN_IF_ERROR(Count(s, "minLength", path, &n.min_length));
      MODRWKV_RETURN_IF_ERROR(Count(s, "maxLength", path, &n.max_length));
      if (n.min_length > n.max_length) return Bad(path, "minLength is greater than maxLength");
    } else if (t == "number") {
      n.kind = NodeKind::kNumber;
    } else if (t == "integer") {
      n.kind = NodeKind::kInteger;
    } else if (t == "boolean" || t == "null") {
      n.kind = NodeKind::kLiteral;
      n.literal_trie = t == "null" ? NewTrie({"null"}) : NewTrie({"true", "false"});
    } else {
      return Bad(path + ".type",
                 absl::StrCat("unknown type \"", t,
                              "\" (expected object, array, string, number, integer, boolean or "
                              "null)"));
    }
    MODRWKV_ASSIGN_OR_RETURN(int32_t id, NewNode(std::move(n), path));
    return Compiled{id, 0};
  }

  // A non-negative integer keyword, if present.
  absl::Status Count(const json& s, const char* key, const std::string& path, uint32_t* out) {
    auto it = s.find(key);
    if (it == s.end()) return absl::OkStatus();
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > (1 << 30)) {
      return Bad(absl::StrCat(path, ".", key), "must be a non-negative integer");
    }
    *out = static_cast<uint32_t>(it->get<int64_t>());
    return absl::OkStatus();
  }

  absl::Status CheckDepth(const std::string& path, int depth) {
    if (depth >= JsonGrammar::kMaxDepth - 1) {  // the matcher's rule: json_matcher.cc
      return Refuse(path, absl::StrCat("the schema nests objects and arrays more than ",
                                       JsonGrammar::kMaxDepth, " deep"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Compiled> CompileObject(const json& s, const std::string& path, int depth) {
    MODRWKV_RETURN_IF_ERROR(CheckDepth(path, depth));
    GrammarNode n;
    n.kind = NodeKind::kObject;
    int height = 1;
    const auto props = s.find("properties");
    const auto additional = s.find("additionalProperties");
    if (props == s.end()) {
      if (s.contains("required") && !s["required"].empty()) {
        return Refuse(path + ".required",
                      "required without properties is not supported (list the properties)");
      }
      if (additional == s.end() || (additional->is_boolean() && additional->get<bool>())) {
        n.additional = AnyValue();
      } else if (additional->is_boolean()) {
        n.key_trie = NewTrie({});  // additionalProperties false, no properties: only {}
      } else {
        MODRWKV_ASSIGN_OR_RETURN(Compiled v,
                                 Compile(*additional, path + ".additionalProperties", depth + 1));
        n.additional = v.node;
        height = 1 + v.height;
      }
    } else {
      if (!props->is_object()) return Bad(path + ".properties", "must be an object");
      if (additional != s.end() && !(additional->is_boolean() && !additional->get<bool>())) {
        return Refuse(path + ".additionalProperties",
                      "only false is supported next to properties (the listed properties are "
                      "the only ones generated)");
      }
      if (props->size() > static_cast<size_t>(JsonGrammar::kMaxProperties)) {
        return Refuse(path + ".properties", absl::StrCat("at most ", JsonGrammar::kMaxProperties,
                                                         " properties are supported"));
      }
      std::vector<std::string> trie_texts;
      for (const auto& [name, sub] : props->items()) {
        const std::string sub_path = absl::StrCat(path, ".properties.", name);
        MODRWKV_ASSIGN_OR_RETURN(Compiled v, Compile(sub, sub_path, depth + 1));
        const std::string quoted = json(name).dump();  // "name" with JSON escapes
        n.keys.push_back(quoted.substr(1, quoted.size() - 2));
        trie_texts.push_back(quoted.substr(1));  // escaped name and the closing quote
        n.values.push_back(v.node);
        height = std::max(height, 1 + v.height);
      }
      n.key_trie = NewTrie(trie_texts);
      if (auto req = s.find("required"); req != s.end()) {
        if (!req->is_array()) return Bad(path + ".required", "must be an array of names");
        for (const json& r : *req) {
          if (!r.is_string()) return Bad(path + ".required", "names must be strings");
          const std::string quoted = r.dump();
          auto k = std::find(n.keys.begin(), n.keys.end(), quoted.substr(1, quoted.size() - 2));
          if (k == n.keys.end()) {
            return Bad(path + ".required",
                       absl::StrCat("\"", r.get<std::string>(), "\" is not in properties"));
          }
          n.required |= uint64_t{1} << (k - n.keys.begin());
        }
      }
    }
    MODRWKV_ASSIGN_OR_RETURN(int32_t id, NewNode(std::move(n), path));
    return Compiled{id, height};
  }

  absl::StatusOr<Compiled> CompileArray(const json& s, const std::string& path, int depth) {
    MODRWKV_RETURN_IF_ERROR(CheckDepth(path, depth));
    GrammarNode n;
    n.kind = NodeKind::kArray;
    MODRWKV_RETURN_IF_ERROR(Count(s, "minItems", path, &n.min_items));
    MODRWKV_RETURN_IF_ERROR(Count(s, "maxItems", path, &n.max_items));
    if (n.min_items > n.max_items) return Bad(path, "minItems is greater than maxItems");
    int height = 1;
    if (auto it = s.find("items"); it != s.end()) {
      MODRWKV_ASSIGN_OR_RETURN(Compiled v, Compile(*it, path + ".items", depth + 1));
      n.items = v.node;
      height = 1 + v.height;
    } else {
      n.items = AnyValue();
    }
    MODRWKV_ASSIGN_OR_RETURN(int32_t id, NewNode(std::move(n), path));
    return Compiled{id, height};
  }

  absl::StatusOr<Compiled> CompileLiteral(const json& s, const std::string& path) {
    std::vector<std::string> texts;
    if (auto it = s.find("const"); it != s.end()) texts.push_back(it->dump());
    if (auto it = s.find("enum"); it != s.end()) {
      if (!it->is_array() || it->empty()) return Bad(path + ".enum", "must be a non-empty array");
      for (const json& v : *it) texts.push_back(v.dump());
    }
    if (s.contains("const") && s.contains("enum")) {
      return Refuse(path, "const next to enum is not supported");
    }
    std::sort(texts.begin(), texts.end());
    texts.erase(std::unique(texts.begin(), texts.end()), texts.end());
    for (const std::string& t : texts) {
      if (t.empty()) return Bad(path, "an enum member is empty");
    }
    GrammarNode n;
    n.kind = NodeKind::kLiteral;
    n.literal_trie = NewTrie(texts);
    MODRWKV_ASSIGN_OR_RETURN(int32_t id, NewNode(std::move(n), path));
    return Compiled{id, 0};
  }

  // "#/$defs/Name", "#/definitions/Name" or any JSON pointer into the root document. Each target
  // is compiled once; a reference back into itself (a recursive schema) is refused.
  absl::StatusOr<Compiled> CompileRef(const json& s, const json& ref, const std::string& path,
                                      int depth) {
    for (const auto& [k, v] : s.items()) {
      if (k != "$ref" && !IsAnnotation(k)) {
        return Refuse(absl::StrCat(path, ".", k), "keywords next to $ref are not supported");
      }
    }
    if (!ref.is_string() || ref.get<std::string>().rfind('#', 0) != 0) {
      return Refuse(path + ".$ref", "only references inside the schema (\"#/...\") are supported");
    }
    const std::string target = ref.get<std::string>();
    if (auto it = refs_.find(target); it != refs_.end()) {
      if (depth + it->second.height > JsonGrammar::kMaxDepth) {
        MODRWKV_RETURN_IF_ERROR(CheckDepth(path, JsonGrammar::kMaxDepth));
      }
      return it->second;
    }
    if (in_progress_.contains(target)) {
      return Refuse(path + ".$ref", absl::StrCat("recursive schemas are not supported (", target,
                                                 " refers back to itself)"));
    }
    const json* node = nullptr;
    try {
      node = &root_.at(json::json_pointer(target.substr(1)));
    } catch (const json::exception&) {
      return Bad(path + ".$ref", absl::StrCat("\"", target, "\" names nothing in the schema"));
    }
    in_progress_.insert(target);
    MODRWKV_ASSIGN_OR_RETURN(Compiled c, Compile(*node, path + ".$ref", depth));
    in_progress_.erase(target);
    refs_[target] = c;
    return c;
  }

  // Alternatives must start with different bytes (the matcher picks one at the first byte);
  // nested unions are flattened, integer next to number is number, literal sets merge.
  absl::StatusOr<Compiled> MakeUnion(const std::vector<Compiled>& in, const std::string& path) {
    std::vector<int32_t> flat;
    int height = 0;
    for (const Compiled& c : in) {
      height = std::max(height, c.height);
      const GrammarNode& n = nodes()[c.node];
      if (n.kind == NodeKind::kUnion) {
        flat.insert(flat.end(), n.alternatives.begin(), n.alternatives.end());
      } else {
        flat.push_back(c.node);
      }
    }
    auto has = [&](NodeKind k) {
      return std::any_of(flat.begin(), flat.end(), [&](int32_t i) { return nodes()[i].kind == k; });
    };
    if (has(NodeKind::kNumber)) {
      flat.erase(std::remove_if(flat.begin(), flat.end(),
                                [&](int32_t i) { return nodes()[i].kind == NodeKind::kInteger; }),
                 flat.end());
    }
    std::vector<std::string> literals;
    std::vector<int32_t> kept;
    for (int32_t i : flat) {
      const GrammarNode& n = nodes()[i];
      if (n.kind != NodeKind::kLiteral) {
        kept.push_back(i);
        continue;
      }
      CollectTexts(g_->tries_[n.literal_trie], 0, "", &literals);
    }
    if (!literals.empty()) {
      std::sort(literals.begin(), literals.end());
      literals.erase(std::unique(literals.begin(), literals.end()), literals.end());
      GrammarNode lit;
      lit.kind = NodeKind::kLiteral;
      lit.literal_trie = NewTrie(literals);
      MODRWKV_ASSIGN_OR_RETURN(int32_t id, NewNode(std::move(lit), path));
      kept.push_back(id);
    }
    if (kept.size() == 1) return Compiled{kept[0], height};
    GrammarNode u;
    u.kind = NodeKind::kUnion;
    u.first_byte.assign(256, -1);
    for (size_t a = 0; a < kept.size(); ++a) {
      for (int b : FirstBytes(kept[a])) {
        if (u.first_byte[b] >= 0) {
          return Refuse(path,
                        absl::StrCat("alternatives that can start with the same character ('",
                                     std::string(1, static_cast<char>(b)), "') are not supported"));
        }
        u.first_byte[b] = static_cast<int16_t>(a);
      }
    }
    u.alternatives = std::move(kept);
    MODRWKV_ASSIGN_OR_RETURN(int32_t id, NewNode(std::move(u), path));
    return Compiled{id, height};
  }

  static void CollectTexts(const ByteTrie& t, int32_t node, const std::string& prefix,
                           std::vector<std::string>* out) {
    if (t.nodes[node].terminal >= 0) out->push_back(prefix);
    for (const auto& [b, child] : t.nodes[node].children) {
      CollectTexts(t, child, prefix + static_cast<char>(b), out);
    }
  }

  const json& root_;
  std::string_view field_;
  std::shared_ptr<JsonGrammar> g_;
  int32_t any_ = -1;
  absl::flat_hash_map<std::string, Compiled> refs_;
  absl::flat_hash_set<std::string> in_progress_;
};

std::shared_ptr<const JsonGrammar> JsonGrammar::AnyObject() {
  static const json kEmpty = json::object();
  static const std::shared_ptr<const JsonGrammar> g = SchemaCompiler(kEmpty, "").AnyObject();
  return g;
}

absl::StatusOr<std::shared_ptr<const JsonGrammar>> JsonGrammar::FromSchema(
    const nlohmann::json& schema, std::string_view field) {
  return SchemaCompiler(schema, field).CompileRoot();
}

}  // namespace modrwkv::grammar
