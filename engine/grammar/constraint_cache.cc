// Schema text -> canonical form (parsed and dumped: key order and spacing do not matter) ->
// compiled constraint.
#include "engine/grammar/constraint_cache.h"

#include "absl/strings/str_cat.h"
#include "engine/base/errors.h"
#include "engine/base/status_macros.h"

namespace modrwkv::grammar {

ConstraintCache::ConstraintCache(std::shared_ptr<const TokenVocabulary> vocab, size_t capacity)
    : vocab_(std::move(vocab)),
      capacity_(capacity < 1 ? 1 : capacity),
      json_object_(std::make_shared<const TokenConstraint>(JsonGrammar::AnyObject(), vocab_)) {}

absl::StatusOr<std::shared_ptr<const TokenConstraint>> ConstraintCache::ForSchema(
    std::string_view schema_json, std::string_view field_view) {
  const std::string field(field_view);
  if (schema_json.size() > kMaxSchemaBytes) {
    return InvalidFieldError(
        field, absl::StrCat(field, ": the schema has ", schema_json.size(), " bytes, at most ",
                            kMaxSchemaBytes, " are allowed"));
  }
  const nlohmann::json schema =
      nlohmann::json::parse(schema_json, nullptr, /*allow_exceptions=*/false);
  if (schema.is_discarded()) {
    return InvalidFieldError(field, absl::StrCat(field, ": the schema is not valid JSON"));
  }
  const std::string key = schema.dump();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = index_.find(key); it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      ++hits_;
      return it->second->second;
    }
    ++misses_;
  }
  MODRWKV_ASSIGN_OR_RETURN(std::shared_ptr<const JsonGrammar> g,
                           JsonGrammar::FromSchema(schema, field));
  auto c = std::make_shared<const TokenConstraint>(std::move(g), vocab_);
  std::lock_guard<std::mutex> lock(mu_);
  if (index_.contains(key)) return index_[key]->second;  // compiled meanwhile by another call
  lru_.emplace_front(key, c);
  index_[key] = lru_.begin();
  while (lru_.size() > capacity_) {
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
  return c;
}

ConstraintCache::Stats ConstraintCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {hits_, misses_, lru_.size()};
}

}  // namespace modrwkv::grammar
